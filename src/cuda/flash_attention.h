// Tensor-core attention for prefill (sm_80+: mma.sync BF16 with FP32 accumulation, flash-attention style:
// the scores never leave registers). Its CPU reference twin is cpu::attention.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "cuda/nvfp4_gemm.h"  // bf16_raw

namespace fp4lab {

// Whether flash_attention_prefill handles this head dimension (the CUDA-core kernel covers the others).
bool flash_attention_supported(int head_dim);

// Causal GQA attention of t new query rows over a KV cache that already holds them: q, out [t, nh, hd]
// (BF16), k/v cache [capacity, nkv, hd] (BF16). *pos0 (on the device) is the position of the first new row,
// so row i sees keys [0, *pos0 + i]. Softmax in FP32 with scale 1/sqrt(hd).
void flash_attention_prefill(const bf16_raw* q, const bf16_raw* kcache, const bf16_raw* vcache,
                             const int* pos0, int t, int nh, int nkv, int hd, bf16_raw* out,
                             cudaStream_t stream);

// Batched prefill: several sequences' new rows, one after another in q and out ([sum of rows, nh, hd]), each
// with its own cache and position, in one launch per kFlashMaxSeqs sequences (the table rides in the kernel
// parameters). Same math per sequence as flash_attention_prefill.
struct FlashSeq {
  int64_t row0;  // the sequence's first row in q / out
  const bf16_raw* kc;
  const bf16_raw* vc;
  const int* pos0;  // on the device: the position of its first new row
  int rows;
};
constexpr int kFlashMaxSeqs = 64;
void flash_attention_prefill_batch(const bf16_raw* q, std::span<const FlashSeq> seqs, int nh, int nkv, int hd,
                                   bf16_raw* out, cudaStream_t stream);

}  // namespace fp4lab
