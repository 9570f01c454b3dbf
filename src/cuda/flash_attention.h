// Tensor-core attention for prefill (sm_80+: mma.sync BF16 with FP32 accumulation, flash-attention style:
// the scores never leave registers). Its CPU reference twin is cpu::attention.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

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

}  // namespace fp4lab
