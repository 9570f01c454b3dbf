// Mamba-2 kernels of the CUDA engine backend for decode and short prompts: dt softplus, the rolling conv1d,
// the sequential selective scan (one warp per state row), the batched one-token state update and the gated
// RMSNorm, and the decode step that does all of these in two kernels. Long prompts run the chunked forms in
// mamba_prefill.cu. CPU twins: src/cpu/reference.cpp.
#include "cuda/mamba_decode.h"

#include "common/error.h"
#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"

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
    dt[i] = __float2bfloat16_rn(softplus_clamped(v, lo, hi));
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
// ran at a quarter of the copy rate on prompt-sized inputs). Block (row, group) = blockIdx.x; also the norm
// of the two-kernel decode step (mamba_step_norm_kernel).
template <class AfterWait>
__device__ __forceinline__ void gated_rmsnorm8_block(bf16* y, const bf16* z, int64_t z_ld, const float* w,
                                                     int64_t width, int groups, float eps,
                                                     AfterWait&& after_wait) {
  const int64_t row = blockIdx.x / groups, g = blockIdx.x % groups, gs = width / groups;
  const int64_t i = threadIdx.x * int64_t{8};
  const bool in = i < gs;
  bf16* yr = y + row * width + g * gs;
  const bf16* zr = z + row * z_ld + g * gs;
  float v[8] = {}, zv[8] = {}, wv[8] = {};
  if (in) load8(w + g * gs + i, wv);  // constants before the programmatic-launch wait (kernel-notes #43)
  ptx::griddep_enter();
  after_wait();  // the caller's own work, whose loads then fly with these
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
  if (in) {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = wv[e] * (v[e] * inv);
    store8(yr + i, v);
  }
}

__global__ void __launch_bounds__(1024)
    gated_rmsnorm8_kernel(bf16* y, const bf16* z, int64_t z_ld, const float* w, int64_t width, int groups,
                          float eps) {
  gated_rmsnorm8_block(y, z, z_ld, w, width, groups, eps, [] {});
}

static bool gated_rmsnorm8_fits(int64_t width, int groups, int64_t z_ld, const void* y, const void* z) {
  if (groups <= 0) return false;
  const int64_t gs = width / groups;
  return gs % 8 == 0 && gs / 8 <= 1024 && width % 8 == 0 && z_ld % 8 == 0 && aligned16(y) && aligned16(z);
}

static int gated_rmsnorm8_threads(int64_t width, int groups) {
  return static_cast<int>((width / groups / 8 + 31) / 32 * 32);
}

namespace {

// The conv channel of group g's B (t < ns) or C (t - ns) entry: xBC is x [di] | B [gn] | C [gn].
__device__ __forceinline__ int64_t bc_channel(int t, int ns, int g, int64_t di, int64_t gn) {
  return t < ns ? di + int64_t{g} * ns + t : di + gn + int64_t{g} * ns + (t - ns);
}

}  // namespace

// Kernel 1 of the decode step (mamba_decode.h): a block per (16 state rows of one head, sequence).
// Before the programmatic-launch wait, all that does not depend on in_proj: the block's state rows (this
// kernel wrote them a step ago; every kernel between then and the previous one has completed by the time this
// one starts), and each conv channel's bias + taps . history (thread t < 2 state: the group's B | C channel
// t; t < 16: the x channel of row t). After it, one round trip for the token's inputs. Values are rounded to
// BF16 where the separate kernels store BF16 (conv output, dt, y), and summed in their order: the results are
// theirs bit for bit.
template <int NPL>
__global__ void __launch_bounds__(kMambaStepWarps * 32)
    mamba_step_scan_kernel(const __grid_constant__ MambaStepArgs p) {
  constexpr int kRowsPerWarp = kMambaStepRows / kMambaStepWarps;
  __shared__ float s_bc[2 * 32 * NPL];  // conv + SiLU of the group's B | C
  __shared__ float s_x[kMambaStepRows];
  __shared__ float s_dt;
  const int hp = p.shape.head_dim, ns = p.shape.state, K = p.kernel, hist = K - 1;
  const int64_t row0 = int64_t{blockIdx.x} * kMambaStepRows;  // rows h * hp + p, one head (hp % 16 == 0)
  const int h = static_cast<int>(row0 / hp), g = h / (p.shape.heads / p.shape.groups), seq = blockIdx.y;
  const int64_t di = int64_t{p.shape.heads} * hp, gn = int64_t{p.shape.groups} * ns;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  float* conv_st = p.conv_tab ? p.conv_tab[seq] : p.conv_one;
  // Row 2 warp + i, entry n = lane + 32 j at rows[i * ns + 32 j].
  float* rows = (p.ssm_tab ? p.ssm_tab[seq] : p.ssm_one) + (row0 + warp * kRowsPerWarp) * ns + lane;
  float S[kRowsPerWarp][NPL];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
    for (int j = 0; j < NPL; ++j) S[i][j] = lane + 32 * j < ns ? rows[i * ns + 32 * j] : 0.0f;
  const bool bc = tid < 2 * ns, xs = tid < kMambaStepRows;
  const int64_t c_bc = bc_channel(tid, ns, g, di, gn);
  const int64_t c_x = row0 + tid;
  float acc_bc = 0.0f, wl_bc = 0.0f, acc_x = 0.0f, wl_x = 0.0f, win_x[kMaxConvKernel] = {};
  if (bc) {
    acc_bc = p.conv_b ? p.conv_b[c_bc] : 0.0f;
    for (int j = 0; j < hist; ++j) acc_bc += p.conv_w[c_bc * K + j] * conv_st[c_bc * hist + j];
    wl_bc = p.conv_w[c_bc * K + hist];
  }
  if (xs) {
    acc_x = p.conv_b ? p.conv_b[c_x] : 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxConvKernel - 1; ++j)
      if (j < hist) {
        win_x[j] = conv_st[c_x * hist + j];
        acc_x += p.conv_w[c_x * K + j] * win_x[j];
      }
    wl_x = p.conv_w[c_x * K + hist];
  }
  const float a = -__expf(p.a_log[h]), dh = p.d[h], dtb = p.dt_bias[h];
  ptx::griddep_enter();

  const bf16* pr = reinterpret_cast<const bf16*>(p.proj) + int64_t{seq} * p.proj_ld;
  if (bc) s_bc[tid] = round_bf16(silu(acc_bc + wl_bc * ld(pr + di + c_bc)));
  if (xs) {
    const float v = ld(pr + di + c_x);
    s_x[tid] = round_bf16(silu(acc_x + wl_x * v));
    // The x channels' conv state: this block's alone (B and C move on in kernel 2, once every block has
    // read them).
#pragma unroll
    for (int j = 0; j < kMaxConvKernel - 1; ++j)
      if (j < hist) conv_st[c_x * hist + j] = j + 1 < hist ? win_x[j + 1] : v;
  }
  if (tid == 0) {
    const float v = ld(pr + di + 2 * gn + di + h) + dtb;  // dt: after z and xBC
    s_dt = round_bf16(softplus_clamped(v, p.dt_lo, p.dt_hi));
  }
  __syncthreads();

  const float dt = s_dt, decay = __expf(dt * a);
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp * kRowsPerWarp + i;
    const float xv = s_x[r], dx = dt * xv;
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int n = lane + 32 * j;
      if (n < ns) {
        S[i][j] = S[i][j] * decay + dx * s_bc[n];
        rows[i * ns + 32 * j] = S[i][j];
        acc += S[i][j] * s_bc[ns + n];
      }
    }
    for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0)
      reinterpret_cast<bf16*>(p.y)[int64_t{seq} * di + row0 + r] = __float2bfloat16_rn(acc + dh * xv);
  }
}

// Kernel 2 of the decode step: block (sequence, group) moves the group's B and C conv states on by the token
// (right after the wait, so that its loads fly with the norm's), then runs the group's gated norm
// (gated_rmsnorm8_block).
__global__ void __launch_bounds__(1024) mamba_step_norm_kernel(const __grid_constant__ MambaStepArgs p) {
  const int64_t di = int64_t{p.shape.heads} * p.shape.head_dim, gn = int64_t{p.shape.groups} * p.shape.state;
  const bf16* proj = reinterpret_cast<const bf16*>(p.proj);
  const int seq = blockIdx.x / p.shape.groups, g = blockIdx.x % p.shape.groups, ns = p.shape.state;
  const int hist = p.kernel - 1;
  gated_rmsnorm8_block(reinterpret_cast<bf16*>(p.y), proj, p.proj_ld, p.norm, di, p.shape.groups, p.eps, [&] {
    if (hist == 0) return;
    float* conv_st = p.conv_tab ? p.conv_tab[seq] : p.conv_one;
    const bf16* in = proj + int64_t{seq} * p.proj_ld + di;
    for (int t = threadIdx.x; t < 2 * ns; t += blockDim.x) {
      const int64_t c = bc_channel(t, ns, g, di, gn);
      float* st = conv_st + c * hist;
      for (int j = 0; j + 1 < hist; ++j) st[j] = st[j + 1];
      st[hist - 1] = ld(in + c);
    }
  });
}

bool mamba_decode_step_supported(const MambaStepArgs& a) {
  const cpu::SsmShape& s = a.shape;
  if (s.groups <= 0 || s.heads <= 0 || s.heads % s.groups != 0) return false;
  const int64_t di = int64_t{s.heads} * s.head_dim;
  return s.head_dim % kMambaStepRows == 0 && s.state >= 1 && s.state <= 32 * kMambaStepMaxPerLane &&
         a.kernel >= 1 && a.kernel <= kMaxConvKernel &&
         gated_rmsnorm8_fits(di, s.groups, a.proj_ld, a.y, a.proj) && a.rows >= 1 && a.rows <= 65535;
}

void mamba_decode_step(const MambaStepArgs& a, cudaStream_t stream) {
  if (!mamba_decode_step_supported(a) || (a.rows > 1 && (!a.conv_tab || !a.ssm_tab)) ||
      (!a.conv_tab && (!a.conv_one || !a.ssm_one)))
    throw Error("internal: mamba_decode_step called for a shape or buffers it does not take");
  const int64_t di = int64_t{a.shape.heads} * a.shape.head_dim;
  const int npl = a.shape.state <= 32 ? 1 : a.shape.state <= 64 ? 2 : 4;
  with_value<1, 2, 4>(npl, [&](auto v) {
    launch_kernel(mamba_step_scan_kernel<v()>,
                  dim3(static_cast<unsigned>(di / kMambaStepRows), static_cast<unsigned>(a.rows)),
                  kMambaStepWarps * 32, 0, stream, a);
  });
  launch_kernel(mamba_step_norm_kernel, static_cast<unsigned>(a.rows * a.shape.groups),
                gated_rmsnorm8_threads(di, a.shape.groups), 0, stream, a);
}

void launch_softplus_dt(const bf16_raw* proj, int64_t rows, int64_t pcols, int64_t col0, const float* bias,
                        float lo, float hi, bf16_raw* dt, int64_t heads, cudaStream_t stream) {
  launch_kernel(softplus_dt_kernel, grid_1d(rows * heads, 256), 256, 0, stream,
                reinterpret_cast<const bf16*>(proj), rows, pcols, col0, bias, lo, hi,
                reinterpret_cast<bf16*>(dt), heads);
}

void launch_conv1d_silu(const Conv1dArgs& a, cudaStream_t stream) {
  if (a.kernel < 1 || a.kernel > kMaxConvKernel)
    throw Error("conv kernel " + std::to_string(a.kernel) + " is not supported by the CUDA backend (1.." +
                std::to_string(kMaxConvKernel) + ")");
  launch_kernel(conv1d_silu_kernel,
                dim3(static_cast<unsigned>((a.channels + 127) / 128), static_cast<unsigned>(a.seqs)), 128, 0,
                stream, reinterpret_cast<const bf16*>(a.in), a.in_ld, reinterpret_cast<bf16*>(a.out),
                a.out_ld, a.tokens, a.channels, a.kernel, a.w, a.b, a.state_one, a.state_tab);
}

void launch_ssm_scan(const SsmScanArgs& a, cudaStream_t stream) {
  const cpu::SsmShape& sh = a.shape;
  if (sh.state > 32 * kScanMaxPerLane)
    throw Error("SSM state size " + std::to_string(sh.state) + " > " + std::to_string(32 * kScanMaxPerLane) +
                " is not supported by the CUDA backend");
  const int rows = sh.heads * sh.head_dim;
  launch_kernel(ssm_scan_kernel, static_cast<unsigned>((rows + kScanWarps - 1) / kScanWarps), kScanWarps * 32,
                0, stream, reinterpret_cast<const bf16*>(a.x), reinterpret_cast<const bf16*>(a.b),
                reinterpret_cast<const bf16*>(a.c), reinterpret_cast<const bf16*>(a.dt), a.a_log, a.d, a.t,
                sh.heads, sh.head_dim, sh.state, sh.groups, a.state, reinterpret_cast<bf16*>(a.y));
}

void launch_ssm_step_batch(const SsmStepBatchArgs& a, cudaStream_t stream) {
  const cpu::SsmShape& sh = a.shape;
  const int rows = sh.heads * sh.head_dim;
  const int64_t gn = int64_t{sh.groups} * sh.state;
  const bf16* base = reinterpret_cast<const bf16*>(a.xbc);
  launch_kernel(
      ssm_step_batch_kernel,
      dim3(static_cast<unsigned>((rows + kSsmStepWarps - 1) / kSsmStepWarps), static_cast<unsigned>(a.seqs)),
      kSsmStepWarps * 32, 0, stream, base, base + rows, base + rows + gn, a.xbc_ld,
      reinterpret_cast<const bf16*>(a.dt), a.a_log, a.d, sh.heads, sh.head_dim, sh.state, sh.groups,
      a.state_tab, reinterpret_cast<bf16*>(a.y));
}

void launch_gated_rmsnorm(bf16_raw* y, int64_t rows, int64_t width, const bf16_raw* z, int64_t z_ld,
                          const float* w, int groups, float eps, cudaStream_t stream) {
  auto* yb = reinterpret_cast<bf16*>(y);
  const auto* zb = reinterpret_cast<const bf16*>(z);
  // 16-byte accesses where the group, the rows and z's columns allow them (Nemotron-H: 1280-wide groups).
  if (gated_rmsnorm8_fits(width, groups, z_ld, y, z))
    launch_kernel(gated_rmsnorm8_kernel, static_cast<unsigned>(rows * groups),
                  gated_rmsnorm8_threads(width, groups), 0, stream, yb, zb, z_ld, w, width, groups, eps);
  else
    launch_kernel(gated_rmsnorm_kernel, static_cast<unsigned>(rows * groups), 256, 0, stream, yb, zb, z_ld, w,
                  width, groups, eps);
}

}  // namespace fp4lab
