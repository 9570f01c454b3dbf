// The Mamba-2 mixer's decode step between in_proj and out_proj in two kernels instead of four, for one new
// token of each of `rows` sequences: (1) conv1d + SiLU of xBC, softplus(dt) and the selective state update,
// a block per 16 state rows, each convolving its group's B and C channels itself; (2) the gated RMSNorm,
// which also moves the B and C conv states on (every block of (1) has read them by then). A separate kernel
// of a decode step costs mostly its latency. CPU twin: cpu::mamba_decode_step. Kernels: mamba_decode.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/reference.h"    // SsmShape
#include "cuda/nvfp4_gemm.h"  // bf16_raw

namespace fp4lab {

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
