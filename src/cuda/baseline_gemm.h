// The baselines NVFP4 is measured against, in the same binary: BF16 through cuBLAS, FP8 E4M3 (per-tensor
// scales) through cuBLASLt, native W4A4 NVFP4 through cuBLASLt's block-scaled FP4 GEMM (Blackwell only), and
// a read-only kernel over the same bytes as the memory ceiling.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "cuda/nvfp4_gemm.h"

namespace fp4lab {

// Y[M, N] = X[M, K] . W[N, K]^T, all BF16 row-major.
void cublas_bf16_gemm(void* cublas_handle, const bf16_raw* x, int64_t m, const bf16_raw* w, int64_t n,
                      int64_t k, bf16_raw* y, cudaStream_t stream);

// cuBLASLt matmul with its descriptors and algorithm cached per shape. kind: FP8 E4M3 with per-tensor scales,
// or NVFP4 W4A4 with per-16 E4M3 block scales in the 128x4 swizzled layout (needs sm_100/sm_120 and a binary
// built for it).
class LtGemm {
 public:
  // Fp8RowWise: FP8 E4M3 with one scale per row of W and per row of X (cuBLASLt's outer-vector scaling,
  // cuBLAS 12.9+ on sm_89/sm_90): a_scale FP32 [n], x_scale FP32 [m].
  enum class Kind { Fp8E4M3, Nvfp4, Fp8RowWise };
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  // Fp8E4M3: a_scale/b_scale are device float pointers (dequant multipliers). Nvfp4: device pointers to
  // swizzled block scales, alpha carries both tensor scales.
  void run(Kind kind, const void* w, const void* w_scale, const void* x, const void* x_scale, int64_t m,
           int64_t n, int64_t k, float alpha, bf16_raw* y, cudaStream_t stream);

 private:
  struct Plan;
  Plan& plan(Kind kind, int64_t m, int64_t n, int64_t k);
  void* handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<std::tuple<int, int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_;
};

// The practical read ceiling for a buffer of this size: a kernel that only streams the bytes of a and b
// (16-byte loads, 4 in flight per thread, a grid sized to the GPU) and does no math. Timed like the GEMMs, it
// shows what one launch over so many bytes can reach on this GPU, launch ramp and tail included, which the
// steady-state copy bandwidth does not. a, b: 16-byte aligned, sizes multiples of 16. sink: one word per
// block (device).
void stream_read_reference(const void* a, size_t a_bytes, const void* b, size_t b_bytes, uint32_t* sink,
                           int sm_count, cudaStream_t stream);
constexpr int kStreamReadBlocksPerSm = 4;

// FP8 E4M3 quantization of a BF16 tensor with a per-tensor scale (amax/448) written to *scale (device). With
// given_amax, *scale holds the amax to use on entry (a scale shared with other tensors) instead of x's own.
void fp8_quantize_bf16(const bf16_raw* x, int64_t n, uint8_t* out, float* scale, cudaStream_t stream,
                       bool given_amax = false);

}  // namespace fp4lab
