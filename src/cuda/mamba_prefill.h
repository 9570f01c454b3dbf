// Mamba-2 prefill kernels that run across tokens in parallel: the chunked SSD scan (the state-space dual
// form: per-chunk matrix products, a short sequential pass over chunk states) and the causal depthwise
// conv1d. Their CPU reference twins are cpu::ssm_scan_chunked and cpu::causal_conv1d_silu.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <span>
#include <vector>

#include "cpu/reference.h"    // SsmShape
#include "cuda/nvfp4_gemm.h"  // bf16_raw

namespace fp4lab {

// Shapes the chunked kernels take (the sequential warp-per-row scan covers the others): state <= 128 and a
// multiple of 4, head_dim <= 128, chunk <= 256.
bool ssd_chunked_supported(const cpu::SsmShape& s, int chunk);
// Device scratch for ssd_chunked_scan over t tokens (bounded: long sequences run in segments).
size_t ssd_workspace_bytes(int t, const cpu::SsmShape& s, int chunk);

// x [t, heads * head_dim], b/c [t, groups * state], dt [t, heads] (softplus applied), BF16; state [heads,
// head_dim, state] FP32, read as the state before the first token and left as the state after the last;
// y [t, heads * head_dim] = C.S + D x per token.
void ssd_chunked_scan(const bf16_raw* x, const bf16_raw* b, const bf16_raw* c, const bf16_raw* dt,
                      const float* a_log, const float* d, int t, const cpu::SsmShape& s, int chunk,
                      float* state, bf16_raw* y, void* workspace, cudaStream_t stream);

// Batched prefill: sequences of rows[s] tokens, their rows consecutive in x / b / c / dt / y, each with its
// own state. Their chunks (a sequence's last one may be short) run in launch groups of at most group_chunks
// (<= kSsdMaxGroupChunks) chunks, whose tables go in the kernel parameters; the workspace holds one group
// (ssd_workspace_bytes_chunks). A sequence cut by a group boundary carries its state into the next group.
constexpr int kSsdMaxGroupChunks = 64;
struct SsdBatchPlan {
  struct Group {
    int chunk_begin, chunk_end, seq_begin, seq_end;  // ranges of chunks and of seqs / seq_index
  };
  std::vector<int2> chunks;    // per chunk: {first token row, rows}
  std::vector<int2> seqs;      // per (group, sequence): its chunks [first, end) within the group
  std::vector<int> seq_index;  // per (group, sequence): which sequence (whose state it updates)
  std::vector<Group> groups;
};
SsdBatchPlan plan_ssd_batch(std::span<const int> rows, int chunk, int group_chunks);
// The launch group size the engine uses for a chunk length (the chunks of one 2048-token segment).
int ssd_group_chunks(int chunk);
size_t ssd_workspace_bytes_chunks(int64_t chunks, const cpu::SsmShape& s, int chunk);
// states[s]: the FP32 state [heads, head_dim, state] of sequence s, read as its state before its first token
// and left as the state after its last.
void ssd_chunked_scan_batch(const bf16_raw* x, const bf16_raw* b, const bf16_raw* c, const bf16_raw* dt,
                            const float* a_log, const float* d, const SsdBatchPlan& plan,
                            std::span<float* const> states, const cpu::SsmShape& s, int chunk, bf16_raw* y,
                            void* workspace, cudaStream_t stream);

// out [t, ch] = silu(conv(in) + bias) with the rolling state [ch, kernel - 1] (the inputs before the first
// token) prepended; the state then holds the last kernel - 1 inputs. in and out must not overlap.
void causal_conv1d_silu_prefill(const bf16_raw* in, int t, int ch, int kernel, const float* w,
                                const float* bias, float* state, bf16_raw* out, cudaStream_t stream);

// Batched prefill: several sequences' rows one after another in in / out ([sum of rows, ch]), each with its
// own rolling state [ch, kernel - 1], in launches of up to kConvMaxSeqs sequences (the table rides in the
// kernel parameters). Same result per sequence as causal_conv1d_silu_prefill.
struct ConvSeq {
  int64_t row0;  // the sequence's first row in in / out
  int rows;
  float* state;
};
constexpr int kConvMaxSeqs = 64;
void causal_conv1d_silu_prefill_batch(const bf16_raw* in, std::span<const ConvSeq> seqs, int ch, int kernel,
                                      const float* w, const float* bias, bf16_raw* out, cudaStream_t stream);

}  // namespace fp4lab
