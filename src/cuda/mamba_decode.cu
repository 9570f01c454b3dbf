// Mamba-2 kernels of the CUDA engine backend for decode and short prompts: dt softplus, the rolling conv1d,
// the sequential selective scan (one warp per state row), the batched one-token state update and the gated
// RMSNorm. Long prompts run the chunked forms in mamba_prefill.cu. CPU twins: src/cpu/ops.cpp.
#include "cuda/engine_kernels.cuh"

#include <cmath>

namespace fp4lab {

using namespace dev;

__global__ void softplus_dt_kernel(const bf16* proj, int64_t rows, int64_t pcols, int64_t col0,
                                   const float* bias, float lo, float hi, bf16* dt, int64_t nh) {
  // Constants before the programmatic-launch wait, so their load overlaps the previous kernel (decode: one
  // element per thread; kernel-notes #43).
  const int64_t i0 = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const float b0 = i0 < rows * nh ? bias[i0 % nh] : 0.0f;
  ptx::griddep_enter();
  for (int64_t i = i0; i < rows * nh; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = ld(proj + (i / nh) * pcols + col0 + i % nh) + (i == i0 ? b0 : bias[i % nh]);
    const float sp = v > 20.0f ? v : log1pf(__expf(v));
    dt[i] = __float2bfloat16_rn(fminf(fmaxf(sp, lo), hi));
  }
}

// One thread per channel, tokens in order, rolling FP32 state of the last kernel-1 inputs; token i's inputs
// at in + i * in_ld, its outputs at out + i * out_ld (in place when they are the same).
// Batched (grid.y = sequence): row y is that sequence's one new token, its state from the table.
__global__ void conv1d_silu_kernel(const bf16* in, int64_t in_ld, bf16* out, int64_t out_ld, int t, int ch,
                                   int kernel, const float* w, const float* b, float* state_one,
                                   float* const* state_tab) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= ch) return;
  // The filter taps and bias (constants) before the programmatic-launch wait (kernel-notes #43).
  float taps[8];
  for (int j = 0; j < kernel; ++j) taps[j] = w[c * kernel + j];
  const float bias = b ? b[c] : 0.0f;
  ptx::griddep_enter();
  float* state = state_tab ? state_tab[blockIdx.y] : state_one;
  if (state_tab) in += blockIdx.y * in_ld, out += blockIdx.y * out_ld;
  const int hist = kernel - 1;
  float win[8];
  for (int j = 0; j < hist; ++j) win[j] = state[c * hist + j];
  for (int i = 0; i < t; ++i) {
    win[hist] = ld(in + i * in_ld + c);
    float acc = bias;
    for (int j = 0; j < kernel; ++j) acc += taps[j] * win[j];
    for (int j = 0; j < hist; ++j) win[j] = win[j + 1];
    out[i * out_ld + c] = __float2bfloat16_rn(silu(acc));
  }
  for (int j = 0; j < hist; ++j) state[c * hist + j] = win[j];
}

// Selective scan over t tokens of one sequence: one warp per (head, channel p); each lane keeps its share of
// the state row (entries n = lane + 32 j) in registers across tokens and the C-weighted sum is a shuffle
// reduction, so a token costs no block-wide synchronization. Tokens stay sequential within a row (the chunked
// SSD form would expose parallelism across tokens too); rows run in parallel. ns <= 32 * kScanMaxPerLane.
__global__ void __launch_bounds__(kScanWarps * 32)
    ssm_scan_kernel(const bf16* x, const bf16* b, const bf16* c, const bf16* dt, const float* a_log,
                    const float* d, int t, int heads, int hp, int ns, int groups, float* state, bf16* y) {
  const int row = blockIdx.x * kScanWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= heads * hp) return;
  const int h = row / hp, g = h / (heads / groups);
  // The head's constants before the programmatic-launch wait (kernel-notes #43).
  const float a = -__expf(a_log[h]), dh = d[h];
  ptx::griddep_enter();
  const int64_t xw = static_cast<int64_t>(heads) * hp, bw = static_cast<int64_t>(groups) * ns;
  float* sp = state + static_cast<int64_t>(row) * ns;
  float S[kScanMaxPerLane];
#pragma unroll
  for (int j = 0; j < kScanMaxPerLane; ++j) {
    const int n = lane + 32 * j;
    S[j] = n < ns ? sp[n] : 0.0f;
  }
  for (int i = 0; i < t; ++i) {
    const float dth = ld(dt + static_cast<int64_t>(i) * heads + h);
    const float xv = ld(x + i * xw + row);
    const float decay = __expf(dth * a), dx = dth * xv;
    const bf16* bs = b + i * bw + static_cast<int64_t>(g) * ns;
    const bf16* cs = c + i * bw + static_cast<int64_t>(g) * ns;
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < kScanMaxPerLane; ++j) {
      const int n = lane + 32 * j;
      if (n < ns) {
        S[j] = S[j] * decay + dx * ld(bs + n);
        acc += S[j] * ld(cs + n);
      }
    }
    for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) y[i * xw + row] = __float2bfloat16_rn(acc + dh * xv);
  }
#pragma unroll
  for (int j = 0; j < kScanMaxPerLane; ++j) {
    const int n = lane + 32 * j;
    if (n < ns) sp[n] = S[j];
  }
}

// One decode token for each of several sequences (grid.y = sequence): one warp per (head, channel p), lanes
// striding over the state entries, so each warp streams its contiguous FP32 state row once and reduces with
// shuffles. This is the memory-bound part of batched Mamba decode: every sequence's whole state is read and
// written once per token. x, b, c: columns of one [B, xbc_ld] buffer (the conv output x | B | C).
__global__ void __launch_bounds__(kSsmStepWarps * 32)
    ssm_step_batch_kernel(const bf16* x, const bf16* b, const bf16* c, int64_t xbc_ld, const bf16* dt,
                          const float* a_log, const float* d, int heads, int hp, int ns, int groups,
                          float* const* state_tab, bf16* y) {
  const int row = blockIdx.x * kSsmStepWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= heads * hp) return;
  const int seq = blockIdx.y;
  const int h = row / hp, g = h / (heads / groups);
  const float a = -__expf(a_log[h]), dh = d[h];  // constants: loaded before the wait (kernel-notes #43)
  ptx::griddep_enter();
  const int64_t xw = static_cast<int64_t>(heads) * hp;
  const float dth = ld(dt + static_cast<int64_t>(seq) * heads + h);
  const float xv = ld(x + seq * xbc_ld + row);
  const float decay = __expf(dth * a);
  const bf16* bs = b + seq * xbc_ld + static_cast<int64_t>(g) * ns;
  const bf16* cs = c + seq * xbc_ld + static_cast<int64_t>(g) * ns;
  float* sp = state_tab[seq] + static_cast<int64_t>(row) * ns;
  float acc = 0.0f;
  for (int n = lane; n < ns; n += 32) {
    const float S = sp[n] * decay + dth * xv * ld(bs + n);
    sp[n] = S;
    acc += S * ld(cs + n);
  }
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) y[seq * xw + row] = __float2bfloat16_rn(acc + dh * xv);
}

// One block per (row, group): y = rmsnorm(y * silu(z)) * w over the group's channels (z's rows z_ld apart:
// the in_proj output read in place). Values stay in registers (up to kMax per thread) and every load precedes
// the in-place stores, as in rmsnorm_kernel.
__global__ void gated_rmsnorm_kernel(bf16* y, const bf16* z, int64_t z_ld, const float* w, int64_t width,
                                     int groups, float eps) {
  constexpr int kMax = 8;
  const int64_t row = blockIdx.x / groups, g = blockIdx.x % groups, gs = width / groups;
  bf16* yr = y + row * width + g * gs;
  const bf16* zr = z + row * z_ld + g * gs;
  const float* wg = w + g * gs;
  float v[kMax], wv[kMax];
  // The norm weights (constants) before the programmatic-launch wait, as in rmsnorm_kernel (kernel-notes
  // #43).
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    wv[e] = i < gs ? wg[i] : 0.0f;
  }
  ptx::griddep_enter();
  float ss = 0.0f;
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    const bool in = i < gs;
    const float yv = in ? ld(yr + i) : 0.0f, zv = in ? ld(zr + i) : 0.0f;
    v[e] = yv * silu(zv);
    ss += v[e] * v[e];
  }
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kMax) * blockDim.x; i < gs; i += blockDim.x) {
    const float t = ld(yr + i) * silu(ld(zr + i));
    ss += t * t;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(gs) + eps);
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kMax) * blockDim.x; i < gs; i += blockDim.x)
    yr[i] = __float2bfloat16_rn(wg[i] * (ld(yr + i) * silu(ld(zr + i)) * inv));
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    if (i < gs) yr[i] = __float2bfloat16_rn(wv[e] * (v[e] * inv));
  }
}

// gated_rmsnorm_kernel for groups of gs / 8 <= blockDim.x 16-byte units (gs, z_ld multiples of 8): each
// thread's 8 values are consecutive, so y, z and w move in 16-byte accesses (the strided form's 2-byte ones
// ran at a quarter of the copy rate on prompt-sized inputs).
__global__ void __launch_bounds__(1024)
    gated_rmsnorm8_kernel(bf16* y, const bf16* z, int64_t z_ld, const float* w, int64_t width, int groups,
                          float eps) {
  const int64_t row = blockIdx.x / groups, g = blockIdx.x % groups, gs = width / groups;
  const int64_t i = threadIdx.x * int64_t{8};
  const bool in = i < gs;
  bf16* yr = y + row * width + g * gs;
  const bf16* zr = z + row * z_ld + g * gs;
  float v[8] = {}, zv[8] = {}, wv[8] = {};
  if (in) load8(w + g * gs + i, wv);  // constants before the programmatic-launch wait (kernel-notes #43)
  ptx::griddep_enter();
  if (in) {
    load8(yr + i, v);
    load8(zr + i, zv);
  }
  float ss = 0.0f;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    v[e] *= silu(zv[e]);
    ss += v[e] * v[e];
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(gs) + eps);
  if (!in) return;
#pragma unroll
  for (int e = 0; e < 8; ++e) v[e] = wv[e] * (v[e] * inv);
  store8(yr + i, v);
}

}  // namespace fp4lab
