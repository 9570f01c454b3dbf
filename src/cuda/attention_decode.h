// Host entry points of the decode attention kernels (attention_decode.cu) that tests call directly.
#pragma once
#include <cuda_runtime.h>

#include "cuda/nvfp4_gemm.h"  // bf16_raw

namespace fp4lab {

// Decode attention with the query heads of a KV head in one block (each K/V row read once, 16-byte loads):
// head_dim 32, 64 or 128 and 1, 2, 4, 5 or 8 query heads per KV head. Grid: (rows x nkv, splits). Batched
// when kc_tab is set (row i is sequence i's token, its caches and position from the tables), else one
// sequence (kc, vc, *pos_one). With splits > 1 it writes partials for launch_attention_combine.
bool gqa_attention_supported(int nh, int nkv, int hd);
// The general decode attention (any head_dim up to 256 and any group size): one block per query head and key
// split, same batching and partials as above. Grid: (rows x nh, splits).
void launch_attention_decode(dim3 grid, cudaStream_t stream, const bf16_raw* q, const bf16_raw* kc,
                             const bf16_raw* vc, int nh, int nkv, int hd, const int* pos_one, bf16_raw* out,
                             const bf16_raw* const* kc_tab, const bf16_raw* const* vc_tab,
                             const int* const* pos_tab, float* part);
// Decode only (one new row per query token): the kernel does the first step of attention itself, RoPE on q
// and on the new k (inv_freq [head_dim / 2]; null: none) and k, v [rows, nkv x head_dim] written into the
// caches at the new position, instead of a launch of rope_kv_append_kernel before it. q is then not rotated.
struct GqaAppend {
  const bf16_raw *k, *v;
  const float* inv_freq;
};
// done: with splits > 1, zeroed ints, one per block column (rows x nkv): the last split of each merges the
// partials itself (left at zero again); nullptr leaves the merge to launch_attention_combine.
void launch_attention_gqa(dim3 grid, cudaStream_t stream, const bf16_raw* q, const bf16_raw* kc,
                          const bf16_raw* vc, int nh, int nkv, int hd, const int* pos_one, bf16_raw* out,
                          const bf16_raw* const* kc_tab, const bf16_raw* const* vc_tab,
                          const int* const* pos_tab, float* part, int* done = nullptr,
                          const GqaAppend* append = nullptr);
// Merges the split partials [query_heads][splits][hd + 2] into out [query_heads, hd].
void launch_attention_combine(int query_heads, int splits, int hd, const float* part, bf16_raw* out,
                              cudaStream_t stream);

}  // namespace fp4lab
