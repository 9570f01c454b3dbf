// Launchers of the Mamba-2 kernels for decode and short prompts (mamba_decode.cu): dt softplus, the rolling
// conv1d + SiLU, the sequential selective scan, the batched one-token state update, the gated RMSNorm, and
// the decode step that does all of these in two kernels. Long prompts run the chunked forms of
// mamba_prefill.h. CPU twins: cpu/reference.h.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/reference.h"    // SsmShape
#include "cuda/nvfp4_gemm.h"  // bf16_raw

namespace fp4lab {

constexpr int kScanWarps = 8;
constexpr int kScanMaxPerLane = 8;  // the sequential scan holds state rows of up to 32 x 8 entries
constexpr int kSsmStepWarps = 8;
constexpr int kMaxConvKernel = 8;
// The two-kernel decode step: 16 state rows per block of 8 warps, state <= 128.
constexpr int kMambaStepRows = 16;
constexpr int kMambaStepWarps = 8;
constexpr int kMambaStepMaxPerLane = 4;

// dt [rows, heads] = softplus(proj[:, col0 : col0 + heads] + bias), clamped to [lo, hi] (proj [rows, pcols]).
void launch_softplus_dt(const bf16_raw* proj, int64_t rows, int64_t pcols, int64_t col0, const float* bias,
                        float lo, float hi, bf16_raw* dt, int64_t heads, cudaStream_t stream);

// Causal conv1d + SiLU with a rolling FP32 state of the last kernel - 1 inputs, one thread per channel.
// One sequence (state_one): its `tokens` rows in order. A batch (state_tab): `seqs` rows, row s the one new
// token of sequence s with state state_tab[s].
struct Conv1dArgs {
  const bf16_raw* in = nullptr;  // token i's channels at in + i * in_ld
  int64_t in_ld = 0;
  bf16_raw* out = nullptr;  // token i's at out + i * out_ld (in place when the same)
  int64_t out_ld = 0;
  int tokens = 1, seqs = 1, channels = 0, kernel = 4;  // kernel <= kMaxConvKernel
  const float* w = nullptr;                            // [channels, kernel]
  const float* b = nullptr;                            // [channels] or null
  float* state_one = nullptr;                          // FP32 [channels, kernel - 1]
  float* const* state_tab = nullptr;
};
void launch_conv1d_silu(const Conv1dArgs& a, cudaStream_t stream);

// The sequential selective scan of one sequence's t tokens: one warp per (head, channel), its state row in
// registers (shape.state <= 32 x kScanMaxPerLane).
struct SsmScanArgs {
  const bf16_raw* x = nullptr;   // [t, heads x head_dim]
  const bf16_raw* b = nullptr;   // [t, groups x state]
  const bf16_raw* c = nullptr;   // [t, groups x state]
  const bf16_raw* dt = nullptr;  // [t, heads]
  const float* a_log = nullptr;  // [heads]
  const float* d = nullptr;      // [heads]
  int t = 0;
  cpu::SsmShape shape{};
  float* state = nullptr;  // FP32 [heads, head_dim, state]
  bf16_raw* y = nullptr;   // [t, heads x head_dim]
};
void launch_ssm_scan(const SsmScanArgs& a, cudaStream_t stream);

// One token of each of `seqs` sequences: xbc [seqs, xbc_ld] holds x | B | C, states from the table.
struct SsmStepBatchArgs {
  const bf16_raw* xbc = nullptr;
  int64_t xbc_ld = 0;
  int seqs = 0;
  const bf16_raw* dt = nullptr;  // [seqs, heads]
  const float* a_log = nullptr;
  const float* d = nullptr;
  cpu::SsmShape shape{};
  float* const* state_tab = nullptr;
  bf16_raw* y = nullptr;  // [seqs, heads x head_dim]
};
void launch_ssm_step_batch(const SsmStepBatchArgs& a, cudaStream_t stream);

// y [rows, width] = rmsnorm(y * silu(z)) * w per group of width / groups channels, z's rows z_ld apart (the
// in_proj output read in place).
void launch_gated_rmsnorm(bf16_raw* y, int64_t rows, int64_t width, const bf16_raw* z, int64_t z_ld,
                          const float* w, int groups, float eps, cudaStream_t stream);

struct MambaStepArgs {
  const bf16_raw* proj = nullptr;  // [rows, proj_ld]: z [d_inner] | xBC [conv_dim] | dt [heads] of each row
  int64_t proj_ld = 0;
  int rows = 0;                   // sequences, one token each
  const float* conv_w = nullptr;  // [conv_dim, kernel]
  const float* conv_b = nullptr;  // [conv_dim] or null
  int kernel = 4;
  const float* dt_bias = nullptr;  // [heads]
  float dt_lo = 0.0f, dt_hi = 0.0f;
  const float* a_log = nullptr;  // [heads]
  const float* d = nullptr;      // [heads]
  const float* norm = nullptr;   // [d_inner]
  float eps = 1e-5f;
  cpu::SsmShape shape{};
  // Row r's states: conv_tab[r] / ssm_tab[r] (batched decode), or conv_one / ssm_one when rows == 1.
  float* conv_one = nullptr;  // FP32 [conv_dim, kernel - 1]
  float* const* conv_tab = nullptr;
  float* ssm_one = nullptr;  // FP32 [heads, head_dim, state]
  float* const* ssm_tab = nullptr;
  bf16_raw* y = nullptr;  // [rows, d_inner]
};

// The two-kernel step takes the shape and buffers: head_dim a multiple of 16, state <= 128, kernel 1..8,
// norm groups of whole 16-byte units (at most 8192 channels); proj, its row stride and y 16-byte aligned.
bool mamba_decode_step_supported(const MambaStepArgs& a);
void mamba_decode_step(const MambaStepArgs& a, cudaStream_t stream);

}  // namespace fp4lab
