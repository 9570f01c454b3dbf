// Launchers of the decode attention kernels (attention_decode.cu): RoPE with the KV-cache append, the decode
// attention in its per-head and GQA forms with flash-decoding splits, their combine, and the position
// counters. Prefill attention runs on tensor cores (flash_attention.h). CPU twins: cpu::attention,
// cpu::rope_apply.
#pragma once
#include <cuda_runtime.h>

#include "cuda/nvfp4_gemm.h"  // bf16_raw

namespace fp4lab {

constexpr int kAttnWarps = 8;
constexpr int kAttnMaxDimsPerLane = 8;  // head_dim <= 256
constexpr int kAttnUnroll = 4;          // keys per warp iteration: their loads are in flight together
constexpr int kAttnMaxSplits = 32;
// Warps of the GQA decode attention block. Its per-warp work is a chain of dependent instructions: 4 warps
// (one per scheduler) took ~12 µs per Llama-8B layer at short contexts, 8 take ~9.5 µs; 16 (for up to 4 query
// heads per KV head) measured no faster at batch 1 and 9% slower at batch 32 (kernel-notes #36). Shared
// memory holds one accumulator per warp and query head: 32 KB at 8 heads of 128.
constexpr int kGqaWarps = 8;

// Where the keys and values of a step's rows live. One sequence: its caches [capacity, nkv x head_dim] and
// its position counter, row r of the step at position *pos + r. A batch (the tables set): row r is the one
// new token of sequence r, with caches k_tab[r], v_tab[r] and position *pos_tab[r].
struct KvCaches {
  bf16_raw* k = nullptr;
  bf16_raw* v = nullptr;
  const int* pos = nullptr;
  bf16_raw* const* k_tab = nullptr;
  bf16_raw* const* v_tab = nullptr;
  const int* const* pos_tab = nullptr;

  bool batched() const { return k_tab != nullptr; }
  static KvCaches one(bf16_raw* k, bf16_raw* v, const int* pos) {
    KvCaches c;
    c.k = k, c.v = v, c.pos = pos;
    return c;
  }
  static KvCaches tables(bf16_raw* const* k, bf16_raw* const* v, const int* const* pos) {
    KvCaches c;
    c.k_tab = k, c.v_tab = v, c.pos_tab = pos;
    return c;
  }
};

// The first step of attention for `rows` new rows, in one launch: RoPE on q (in place) and k (inv_freq
// [head_dim / 2]; null: none, as Nemotron-H's attention), and k, v [rows, nkv x head_dim] written into the
// caches at each row's position.
struct RopeKvAppendArgs {
  bf16_raw* q = nullptr;  // [rows, nh x head_dim]
  const bf16_raw* k = nullptr;
  const bf16_raw* v = nullptr;
  int rows = 0, nh = 0, nkv = 0, hd = 0;
  const float* inv_freq = nullptr;
  KvCaches kv;
};
void launch_rope_kv_append(const RopeKvAppendArgs& a, cudaStream_t stream);

// Decode only (one new row per query token): the GQA kernel does the first step of attention itself, RoPE
// on q and the new k and k, v written into the caches at the new position, instead of a launch of
// launch_rope_kv_append before it. q is then not rotated.
struct GqaAppend {
  const bf16_raw *k, *v;
  const float* inv_freq;
};

struct AttentionDecodeArgs {
  const bf16_raw* q = nullptr;  // [rows, nh x head_dim]
  int nh = 0, nkv = 0, hd = 0;
  KvCaches kv;
  bf16_raw* out = nullptr;  // [rows, nh x head_dim]
  // With splits > 1 (grid.y): FP32 partials [rows x nh][splits][head_dim + 2] for launch_attention_combine.
  float* part = nullptr;
  // GQA only, with splits > 1: zeroed ints, one per block column (rows x nkv): the last split of each merges
  // the partials itself (left at zero again); null leaves the merge to launch_attention_combine.
  int* done = nullptr;
  const GqaAppend* append = nullptr;  // GQA only
};

// Decode attention with the query heads of a KV head in one block (each K/V row read once, 16-byte loads):
// head_dim 32, 64 or 128 and 1, 2, 4, 5 or 8 query heads per KV head. Grid: (rows x nkv, splits).
bool gqa_attention_supported(int nh, int nkv, int hd);
void launch_attention_gqa(dim3 grid, const AttentionDecodeArgs& a, cudaStream_t stream);
// The general decode attention (any head_dim up to 256 and any group size): one block per query head and key
// split. Grid: (rows x nh, splits).
void launch_attention_decode(dim3 grid, const AttentionDecodeArgs& a, cudaStream_t stream);
// Merges the split partials [query_heads][splits][hd + 2] into out [query_heads, hd].
void launch_attention_combine(int query_heads, int splits, int hd, const float* part, bf16_raw* out,
                              cudaStream_t stream);

// The position counters after a step: *pos += t (one sequence), or *pos_tab[i] += 1 for i < n (a batch).
void launch_pos_add(int* pos, int t, cudaStream_t stream);
void launch_pos_add_batch(int* const* pos_tab, int n, cudaStream_t stream);

}  // namespace fp4lab
