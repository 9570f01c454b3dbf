// Launchers of the element-wise and per-row kernels of the CUDA backend (elementwise_kernels.cu): the
// embedding, RMSNorm, residual adds, activations, column copies, bias, dtype conversions and the finiteness
// scans of uploaded weights. Each takes the 16-byte form of its kernel where sizes and alignments allow and
// computes its own grid. CPU twins: cpu/reference.h and CpuOps.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/nvfp4_gemm.h"  // bf16_raw

namespace fp4lab {

// x [rows, hidden] (FP32, the residual stream) = table[tokens[r] - first_id]; the table holds ids
// [first_id, first_id + table_rows) (a vocab-parallel shard, or all of them), other ids read as zeros.
void launch_embed(const int* tokens, int rows, const bf16_raw* table, int64_t first_id, int64_t table_rows,
                  int64_t hidden, float* x, cudaStream_t stream);
// Vocab-parallel logits: gathered [ranks][rows, shard] (an all-gather's output) -> out [rows, vocab].
void launch_gather_vocab(const float* gathered, int64_t rows, int64_t shard, int64_t vocab, float* out,
                         cudaStream_t stream);

struct RmsNormArgs {
  void* x = nullptr;  // [rows, width]: FP32 when x_f32 (the residual stream), else BF16
  bool x_f32 = false;
  const bf16_raw* add = nullptr;  // [rows, width] or null: x += add first and is written back (x FP32)
  const float* w = nullptr;       // [width]
  int64_t rows = 0, width = 0;
  float eps = 1e-5f;
  bf16_raw* y = nullptr;  // [rows, width]
};
// One row per block.
void launch_rmsnorm(const RmsNormArgs& a, cudaStream_t stream);
// The per-head norm of q or k (Qwen3): x [rows, heads x head_dim] in place, w [head_dim], a block of 64
// threads per (row, head).
void launch_rmsnorm_heads(bf16_raw* x, int64_t rows, int heads, int64_t head_dim, const float* w, float eps,
                          cudaStream_t stream);

// x[0, n) += y (BF16): x FP32 (the residual stream) or BF16.
void launch_add(void* x, bool x_f32, const bf16_raw* y, int64_t n, cudaStream_t stream);
// o = silu(g) * u over n elements.
void launch_silu_mul(const bf16_raw* g, const bf16_raw* u, bf16_raw* o, int64_t n, cudaStream_t stream);
// x = relu(x)^2 in place.
void launch_relu2(bf16_raw* x, int64_t n, cudaStream_t stream);
// dst [rows, dcols] = src [rows, scols] columns [col0, col0 + dcols).
void launch_columns(const bf16_raw* src, int64_t rows, int64_t scols, int64_t col0, bf16_raw* dst,
                    int64_t dcols, cudaStream_t stream);
// y [rows, n] += bias [n] (FP32).
void launch_bias(bf16_raw* y, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

void launch_bf16_to_f32(const bf16_raw* src, int64_t n, float* dst, cudaStream_t stream);
void launch_f32_to_bf16(const float* src, int64_t n, bf16_raw* dst, cudaStream_t stream);
void launch_f16_to_bf16(const void* src_f16, int64_t n, bf16_raw* dst, cudaStream_t stream);
// *count += the Inf/NaN values among x[0, n) (BF16 bit patterns); cpu twin: a host scan with std::isfinite
// (weights.cpp finite_or_throw).
void launch_count_nonfinite_bf16(const uint16_t* x, int64_t n, unsigned int* count, cudaStream_t stream);
// The same for E4M3 bytes (NVFP4 block scales), whose only non-finite pattern is NaN (S.1111.111).
void launch_count_nan_e4m3(const uint8_t* x, int64_t n, unsigned int* count, cudaStream_t stream);

}  // namespace fp4lab
