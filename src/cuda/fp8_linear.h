// FP8 E4M3 linear layers on the GPU: Y[M, N] = X[M, K] . (W[N, K] x scale)^T with BF16 activations. Three
// ways to run one, picked by CudaOps::fp8_matmul:
//  - W8A16 GEMV for decode rows (sm80_fp8_w8a16_gemv.cu): the codes stream once, are turned into FP32 in
//    registers and multiplied with the BF16 activations in FP32; the scale is applied to the sums.
//  - W8A8 on FP8 tensor cores (sm_89+, cuBLASLt): the activations quantized per tensor (amax / 448) first.
//  - W8A16 for any GPU and shape: the codes turned into BF16 (exact: E4M3 fits BF16), then cuBLAS BF16 with
//    the scale as alpha (per-row scales applied to the output columns after).
// CPU twin: cpu::linear on the exactly dequantized weights (fp8_dequantize_ref).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_memory.h"
#include "cuda/run_options.h"  // kFp8GemvMaxRows

namespace fp4lab {

using bf16_raw = uint16_t;

// An FP8 weight on the GPU as the kernels take it (not owning: a whole Fp8DeviceWeight or some of its rows).
struct Fp8Weight {
  const uint8_t* codes = nullptr;     // E4M3 [n, k]
  const float* scales = nullptr;      // FP32 [1] (per tensor) or [n] (per output row)
  const float* row_scales = nullptr;  // FP32 [n]: every row's scale (a per-tensor one repeated), for W8A8
  bool per_row = false;
  float tensor_scale = 0;  // the per-tensor scale on the host (per_row: 0)
  int64_t n = 0, k = 0;
};

// An FP8 weight resident on the GPU.
struct Fp8DeviceWeight {
  int64_t n = 0, k = 0;
  DeviceBuffer codes;       // E4M3 [n, k]
  DeviceBuffer scales;      // FP32 [1] (per tensor) or [n] (per output row)
  DeviceBuffer row_scales;  // FP32 [n]: every row's scale
  bool per_row = false;
  float tensor_scale = 0;  // the per-tensor scale on the host (per_row: 0)
  size_t bytes() const { return codes.bytes + scales.bytes + row_scales.bytes; }
  // Rows [r0, r0 + rows) (all of them by default).
  Fp8Weight view(int64_t r0 = 0, int64_t rows = -1) const {
    return {codes.as<uint8_t>() + r0 * k,
            scales.as<float>() + (per_row ? r0 : 0),
            row_scales.as<float>() + r0,
            per_row,
            tensor_scale,
            rows < 0 ? n - r0 : rows,
            k};
  }
};

// Shapes the GEMV takes: 1 <= m <= kFp8GemvMaxRows, k a multiple of 16 (16-byte rows of codes), x and the
// codes 16-byte aligned, ldx a multiple of 8.
bool fp8_gemv_supported(int64_t m, int64_t k, int64_t ldx, const void* x, const void* codes);
// The number of warps (1, 2 or 4) that split K for each pair of rows (the BF16 GEMV's rule on 16-code
// chunks).
int fp8_gemv_split(int64_t m, int64_t n, int64_t k, int sm_count);
// W8A16 GEMV, BF16 out with row stride ldy, FP32 sums. Launched with programmatic dependent launch.
void fp8_w8a16_gemv(const bf16_raw* x, int64_t m, int64_t ldx, const Fp8Weight& w, bf16_raw* y, int64_t ldy,
                    int split, cudaStream_t stream);

// BF16 [m, k] (row stride ldx) -> E4M3 [m, k] contiguous with one scale per row (the row's amax / 448, as
// fp8_quantize_ref on that row) in scales[m] (device): the per-token activations of a W8A8 product, one
// launch, a block per row.
void fp8_quantize_rows(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, float* scales,
                       cudaStream_t stream);
// The same with one scale for the whole tensor (amax / 448, as fp8_quantize_ref): two launches, the first
// finding the amax (its last block writes the scale), the second writing the codes. state: FP32 [3] on the
// device, zero before the first call (the scale, then two words the kernels use and leave at zero); the scale
// is state[0] afterwards. Needs k and ldx multiples of 8, x 16-byte aligned, k <= 32768
// (fp8_quantize_tensor_supported).
bool fp8_quantize_tensor_supported(const bf16_raw* x, int64_t k, int64_t ldx);
void fp8_quantize_tensor(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, float* state,
                         cudaStream_t stream);
// FP32 [n] on the device: the scale of every row of w, a per-tensor one repeated
// (Fp8DeviceWeight::row_scales).
DeviceBuffer fp8_row_scales(const float* scales, bool per_row, int64_t n, cudaStream_t stream);

// E4M3 codes -> their BF16 values, unscaled (exact).
void fp8_codes_to_bf16(const uint8_t* codes, int64_t count, bf16_raw* out, cudaStream_t stream);
// y[r, c] *= scales[c] for r < m, c < n (row stride ldy): per-row weight scales on a product's outputs.
void scale_columns_bf16(bf16_raw* y, int64_t m, int64_t n, int64_t ldy, const float* scales,
                        cudaStream_t stream);

}  // namespace fp4lab
