// The BF16 linear layer at decode batch sizes: Y[M, N] = X[M, K] . W[N, K]^T for M <= kBf16GemvMaxRows, a
// kernel that streams W once with 16-byte loads. cuBLAS runs some of these shapes as a split-K GEMM plus a
// separate reduce (Nemotron-H's BF16 attention projections, 7168 x 4480 and 4480 x 5120, at about two thirds
// of the copy bandwidth: kernel-notes #71). CPU twin: cpu::linear.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/run_options.h"  // kBf16GemvMaxRows

namespace fp4lab {

using bf16_raw = uint16_t;

// Shapes the kernel takes: 1 <= m <= kBf16GemvMaxRows, k a multiple of 8 (16-byte rows), x, w 16-byte
// aligned with ldx a multiple of 8.
bool bf16_gemv_supported(int64_t m, int64_t k, int64_t ldx, const void* x, const void* w);
// The number of warps (1, 2 or 4) that split K for each pair of rows, from the shape and the GPU's SM count.
int bf16_gemv_split(int64_t n, int64_t k, int sm_count);
// The rule behind it, shared with the FP8 GEMV (same block shape): rows in pairs, `chunks` 16-byte loads per
// row, `unroll` of them in flight per warp and step.
int gemv_split_rule(int64_t n, int64_t chunks, int unroll, int sm_count);
// All BF16 row-major, FP32 sums; y has row stride ldy; split as bf16_gemv_split gives it (or forced, for
// measurements). Launched with programmatic dependent launch (the first weight loads come before the wait).
void bf16_gemv(const bf16_raw* x, int64_t m, int64_t ldx, const bf16_raw* w, int64_t n, int64_t k,
               bf16_raw* y, int64_t ldy, int split, cudaStream_t stream);
// The same with FP32 outputs (the BF16 lm_head's logits).
void bf16_gemv(const bf16_raw* x, int64_t m, int64_t ldx, const bf16_raw* w, int64_t n, int64_t k, float* y,
               int64_t ldy, int split, cudaStream_t stream);

}  // namespace fp4lab
