// GPTQ on the NVFP4 grid on the GPU (`fp4lab quantize --method gptq` where CUDA is present): the same
// algorithm as format/nvfp4_gptq.h, its spec, with the Hessians accumulated from the CUDA backend's
// activations, the inverse factor computed by a blocked Cholesky in FP64 (cuBLAS), and the column loop in
// FP32: a kernel quantizes a block of columns of every row (rows are independent), and one cuBLAS GEMM pushes
// the block's errors onto the columns after it (GPTQ's lazy batch update). The CPU path runs in FP64 and
// takes hours on an 8B model; this one minutes.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <span>
#include <vector>

#include "cuda/device_memory.h"
#include "format/nvfp4_gptq.h"

namespace fp4lab {

using bf16_raw = uint16_t;

// h += X^T X for X BF16 [m, k] (row stride ldx), h FP32 [k, k] (both triangles), FP32 accumulation.
void gptq_accumulate_hessian(void* cublas, const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, float* h,
                             cudaStream_t s);
// *amax_bits = max(*amax_bits, max |x|) for X BF16 [m, k] (row stride ldx), as the bits of a non-negative
// float (which order like the floats).
void bf16_absmax_accumulate(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, unsigned* amax_bits,
                            cudaStream_t s);

// nvfp4_search_tensor_scale (format/nvfp4.h, its spec) with the candidates' errors measured on the device:
// the same candidates, rows and tie rule; the error sums differ from the CPU's only in their order. An 8B
// model's 224 groups take seconds here, minutes on the CPU.
float nvfp4_search_tensor_scale_device(std::span<const Nvfp4Matrix> group, Nvfp4ScaleRule rule,
                                       cudaStream_t s, int64_t sample_rows = kNvfp4SearchSampleRows);

class GptqDevice {
 public:
  explicit GptqDevice(cudaStream_t s);
  ~GptqDevice();
  GptqDevice(const GptqDevice&) = delete;
  GptqDevice& operator=(const GptqDevice&) = delete;

  // gptq_upper_factor's U for the FP32 Hessian h [k, k] on the device: FP32 [k, k] row-major, zeros below
  // the diagonal; dead: one byte per column, 1 where the diagonal was not positive.
  DeviceBuffer upper_factor(const float* h, int64_t k, double damp, std::vector<uint8_t>& dead);

  struct Result {
    Nvfp4Tensor q;
    // trace((W - Q) H (W - Q)^T) on the undamped h: GPTQ's Q, and round-to-nearest's under the same rule and
    // tensor scale (nvfp4_output_error's figure).
    double error = 0, rtn_error = 0;
  };
  // nvfp4_quantize_gptq for w (host, [rows, cols] row-major) with the Hessian h (device, FP32 [cols, cols]).
  // dequant (device, BF16 [rows, cols], or null): the quantized values, for the layers calibrated after this
  // one.
  Result quantize(std::span<const float> w, int64_t rows, int64_t cols, float tensor_scale, const float* h,
                  const GptqOptions& o, bf16_raw* dequant);

 private:
  // In place: the lower Cholesky factor of a (FP64 [n, n], column-major, lower triangle used); the strict
  // upper triangle of the diagonal blocks is zeroed, the rest of it left. False where a pivot is not
  // positive.
  bool cholesky_lower(double* a, int64_t n);
  // trace(D H D^T) for D = w0 - dequantized(packed, scales), on the device.
  double output_error(const float* w0, const uint8_t* packed, const uint8_t* scales, float tensor_scale,
                      int64_t rows, int64_t cols, const float* h);
  void* blas_ = nullptr;  // cublasHandle_t
  cudaStream_t s_ = nullptr;
};

}  // namespace fp4lab
