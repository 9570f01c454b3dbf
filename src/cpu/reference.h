// CPU reference ops of the inference engine (float32). Each is the spec its CUDA twin is tested against.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "io/model_config.h"

namespace fp4lab::cpu {

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, rows of width w.size().
void rmsnorm(std::span<const float> x, std::span<const float> w, float eps, std::span<float> y);

// Inverse frequencies for rotate-half RoPE (default, linear and llama3 scaling as HF transformers computes
// them).
std::vector<float> rope_inv_freq(const RopeConfig& r, int head_dim);
// Rotates heads in place: x [T, heads, head_dim], positions[t].
void rope_apply(std::span<float> x, int heads, int head_dim, std::span<const int> positions,
                std::span<const float> inv_freq);

// Causal GQA attention of T new queries (positions pos0..pos0+T-1) over a cache holding pos0+T keys/values.
// q [T, nh, hd], k/v cache [S, nkv, hd] -> out [T, nh, hd]. Softmax in float32, scale 1/sqrt(hd).
void attention(std::span<const float> q, int t, int nh, int nkv, int hd, std::span<const float> kcache,
               std::span<const float> vcache, int pos0, std::span<float> out);

// What argmax and sample_gumbel return for a row with nothing to pick (every entry NaN, or no entries): no
// id, so that a caller cannot mistake broken logits for token 0.
constexpr int kNoId = -1;
// Index of the first maximum of a row of logits, NaN entries skipped (-inf counts); kNoId when all are NaN
// (greedy decoding; the CUDA twin is argmax_rows_kernel).
int argmax(std::span<const float> row);
// A logit and its id in the order sampling ranks them: the larger logit first, the smaller id among equal
// ones, NaN as -inf.
struct TopLogit {
  float key;
  int id;
};
// How many of a row's largest logits a sampled step brings back from where the logits are, for top_k up to
// it.
constexpr int kTopLogits = 64;
// The min(c, row size) largest of a row, in that order (the CUDA twin: top_logits_rows_kernel's parts,
// merged).
std::vector<TopLogit> top_logits(std::span<const float> row, int c);

// A sample of softmax(row / temperature) (temperature > 0) by the Gumbel-max trick: cpu::argmax of
// row / temperature + gumbel_noise(seed, i) (kNoId when all are NaN). The CUDA twin is argmax_rows_kernel
// with a temperature.
int sample_gumbel(std::span<const float> row, float temperature, uint64_t seed);

void silu_mul(std::span<const float> gate, std::span<const float> up, std::span<float> out);

// Vocab-parallel logits: `gathered` holds every rank's [rows, shard] block in rank order (rank r
// scored ids [r shard, (r+1) shard), the last block padded); out [rows, vocab] drops the padding.
void gather_vocab_shards(std::span<const float> gathered, int64_t rows, int64_t shard, int64_t vocab,
                         std::span<float> out);
void relu2(std::span<float> x);

// Mamba-2 pieces. Depthwise causal conv1d with a rolling state of the last (kernel-1) inputs:
// xbc [T, C] in place -> silu(conv(xbc) + b); state [C, kernel-1].
void causal_conv1d_silu(std::span<float> xbc, int t, int channels, int kernel, std::span<const float> w,
                        std::span<const float> b, std::span<float> state);

struct SsmShape {
  int heads, head_dim, state, groups;
};
// Selective state space update, one token at a time (the decode recurrence). For each token:
// S = S*exp(dt*A) + dt*x*B^T; y = S.C + D*x. x [T, heads*head_dim], B/C [T, groups*state], dt [T, heads]
// (already softplus'ed), state [heads, head_dim, state] float32.
void ssm_scan_sequential(std::span<const float> x, std::span<const float> b, std::span<const float> c,
                         std::span<const float> dt, std::span<const float> a, std::span<const float> d, int t,
                         SsmShape s, std::span<float> state, std::span<float> y);
// The same function computed with the chunked SSD algorithm (intra-chunk quadratic form + inter-chunk state
// passing), as Mamba-2 prefill does.
void ssm_scan_chunked(std::span<const float> x, std::span<const float> b, std::span<const float> c,
                      std::span<const float> dt, std::span<const float> a, std::span<const float> d, int t,
                      SsmShape s, int chunk, std::span<float> state, std::span<float> y);

// y = rmsnorm_per_group(y * silu(z)) * w, groups of y.size()/groups channels per row.
void gated_rmsnorm(std::span<float> y, std::span<const float> z, std::span<const float> w, int groups,
                   float eps);

float softplus(float x);

// One new token of the Mamba-2 mixer between in_proj and out_proj, for one sequence: proj is one row of the
// in_proj output, z [d_inner] | xBC [conv_dim] | dt [heads]; y [d_inner] = gated_rmsnorm(ssm step(conv1d +
// SiLU of xBC, clamp(softplus(dt + dt_bias))), z). conv_state [conv_dim, kernel - 1] and ssm_state [heads,
// head_dim, state] advance by the token. This composition of the ops above is the spec of the CUDA
// backend's two-kernel form (cuda/mamba_decode.h).
struct MambaStepWeights {
  std::span<const float> conv_w, conv_b;     // [conv_dim, kernel], [conv_dim] (may be empty)
  std::span<const float> dt_bias, a_log, d;  // [heads]
  std::span<const float> norm;               // [d_inner]
  int kernel = 4;
  float dt_lo = 0.0f, dt_hi = 0.0f, eps = 1e-5f;
  SsmShape shape{};
};
void mamba_decode_step(std::span<const float> proj, const MambaStepWeights& w, std::span<float> conv_state,
                       std::span<float> ssm_state, std::span<float> y);

}  // namespace fp4lab::cpu
