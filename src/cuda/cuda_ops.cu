// CUDA backend kernels for the engine's element-wise, normalization, attention and Mamba-2 ops. Each has its
// CPU twin in src/cpu/ops.cpp; tests/test_engine_gpu.cpp compares whole models against the CPU backend.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "cpu/ops.h"
#include "cuda/baseline_gemm.h"
#include "cuda/check.h"
#include "cuda/flash_attention.h"
#include "cuda/mamba_prefill.h"
#include "cuda/cuda_ops.h"
#if FP4LAB_HAVE_NCCL
#include <nccl.h>
#endif
#include "cuda/random_fill.h"

namespace fp4lab {

namespace {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ld(const bf16* p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ float silu(float v) {
  return v / (1.0f + __expf(-v));
}

// Block-wide sum for blockDim.x <= 1024 (multiple of 32).
__device__ float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  __syncthreads();
  if (l == 0) part[w] = v;
  __syncthreads();
  float s = 0.0f;
  for (int i = 0; i < static_cast<int>((blockDim.x + 31) / 32); ++i) s += part[i];
  return s;
}

// table holds ids [first, first + rows) (a vocab-parallel shard, or all of them); other ids read as zeros.
__global__ void embed_kernel(const int* tokens, int t, const bf16* table, int64_t first, int64_t rows,
                             int64_t h, float* x) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < t * h;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = tokens[i / h] - first;
    x[i] = r >= 0 && r < rows ? ld(table + r * h + i % h) : 0.0f;
  }
}

// The CUDA twin of cpu::gather_vocab_shards: [ranks][rows][shard] gathered logits -> [rows][vocab].
__global__ void gather_vocab_kernel(const float* gathered, int64_t rows, int64_t shard, int64_t vocab,
                                    float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * vocab;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / vocab, v = i % vocab;
    out[i] = gathered[((v / shard) * rows + r) * shard + v % shard];
  }
}

__device__ __forceinline__ float ldx(const void* p, int64_t i, bool f32) {
  return f32 ? static_cast<const float*>(p)[i] : __bfloat162float(static_cast<const bf16*>(p)[i]);
}

// One block per row: y = w * x / sqrt(mean(x^2) + eps). With `add` (the residual stream, FP32 x), first
// x += add, written back: the residual add of the previous layer fused into this norm (one launch and one
// pass over x fewer, the same FP32 arithmetic as add then norm). Each thread keeps its (up to 16) values in
// registers between the two passes.
__global__ void rmsnorm_kernel(void* x, bool x_f32, const bf16* add, const float* w, int64_t width, float eps,
                               bf16* y) {
  constexpr int kMax = 16;
  const int64_t base = blockIdx.x * width;
  bf16* yr = y + base;
  float* xf = static_cast<float*>(x);
  float v[kMax];
  float ss = 0.0f;
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    v[e] = i < width ? ldx(x, base + i, x_f32) : 0.0f;
    if (add && i < width) {
      v[e] += __bfloat162float(add[base + i]);
      xf[base + i] = v[e];
    }
    ss += v[e] * v[e];
  }
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kMax) * blockDim.x; i < width; i += blockDim.x) {
    float t = ldx(x, base + i, x_f32);
    if (add) {
      t += __bfloat162float(add[base + i]);
      xf[base + i] = t;
    }
    ss += t * t;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(width) + eps);
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    if (i < width) yr[i] = __float2bfloat16_rn(w[i] * (v[e] * inv));
  }
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kMax) * blockDim.x; i < width; i += blockDim.x)
    yr[i] = __float2bfloat16_rn(w[i] * (ldx(x, base + i, x_f32) * inv));
}

// Rotary embedding in place. One sequence: row tt sits at position *pos_one + tt. Batched decode (pos_tab
// set): row tt is one token of sequence tt, at that sequence's own position.
__global__ void rope_kernel(bf16* x, int t, int heads, int hd, const int* pos_one, const int* const* pos_tab,
                            const float* inv_freq) {
  const int half = hd / 2;
  const int64_t n = static_cast<int64_t>(t) * heads * half;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int f = static_cast<int>(i % half);
    const int64_t th = i / half;
    const int tt = static_cast<int>(th / heads);
    const int pos = pos_tab ? *pos_tab[tt] : *pos_one + tt;
    float s, c;
    sincosf(static_cast<float>(pos) * inv_freq[f], &s, &c);
    bf16* v = x + th * hd;
    const float a = ld(v + f), b = ld(v + f + half);
    v[f] = __float2bfloat16_rn(a * c - b * s);
    v[f + half] = __float2bfloat16_rn(b * c + a * s);
  }
}

// One block per (query token, head, split). Each warp walks a strided subset of the block's keys with an
// online softmax (FP32), lanes splitting the head dimension; the warps' partial results are merged at the
// end. With one split the block owns all visible keys and writes the output; with S > 1 (flash-decoding: long
// contexts and few query heads would leave most SMs idle) split s owns the s-th slice of the visible keys,
// sized on the device from the current length, and writes its (max, sum, unnormalized accumulator) for
// attention_combine.
constexpr int kAttnWarps = 8;
constexpr int kAttnMaxDimsPerLane = 8;  // head_dim <= 256
constexpr int kAttnUnroll = 4;          // keys per warp iteration: their loads are in flight together
constexpr int kAttnMaxSplits = 32;
// Batched: query row tt is the single new token of sequence tt, with its own caches and position (tables
// indexed by tt); otherwise all rows belong to one sequence and row tt sits at position pos + tt.
template <bool kBatched>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const bf16* q, const bf16* kc_one, const bf16* vc_one, int nh, int nkv, int hd,
                     const int* pos_one, bf16* out, const bf16* const* kc_tab, const bf16* const* vc_tab,
                     const int* const* pos_tab, float* part) {
  const int tt = blockIdx.x / nh, h = blockIdx.x % nh, kh = h / (nh / nkv);
  const int split = blockIdx.y, splits = gridDim.y;
  const bf16* kc = kBatched ? kc_tab[tt] : kc_one;
  const bf16* vc = kBatched ? vc_tab[tt] : vc_one;
  const int len = kBatched ? *pos_tab[tt] + 1 : *pos_one + tt + 1;
  // This split's keys: whole warp-iteration groups, so every warp starts on its own group.
  constexpr int kGroup = kAttnWarps * kAttnUnroll;
  const int per_split = (len + splits * kGroup - 1) / (splits * kGroup) * kGroup;
  const int lo = split * per_split, hi = min(len, lo + per_split);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int per_lane = (hd + 31) / 32;
  const float scale = rsqrtf(static_cast<float>(hd));
  float qv[kAttnMaxDimsPerLane], acc[kAttnMaxDimsPerLane];
  const bf16* qp = q + (static_cast<int64_t>(tt) * nh + h) * hd;
#pragma unroll
  for (int e = 0; e < kAttnMaxDimsPerLane; ++e) {
    const int d = lane + 32 * e;
    qv[e] = (e < per_lane && d < hd) ? ld(qp + d) * scale : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t kstride = static_cast<int64_t>(nkv) * hd;
  const bf16* kbase = kc + static_cast<int64_t>(kh) * hd;
  const bf16* vbase = vc + static_cast<int64_t>(kh) * hd;
  for (int j0 = lo + warp * kAttnUnroll; j0 < hi; j0 += kGroup) {
    float kv[kAttnUnroll][kAttnMaxDimsPerLane], vv[kAttnUnroll][kAttnMaxDimsPerLane];
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u)
#pragma unroll
      for (int e = 0; e < kAttnMaxDimsPerLane; ++e) {
        const int d = lane + 32 * e, j = j0 + u;
        const bool ok = j < hi && e < per_lane && d < hd;
        kv[u][e] = ok ? ld(kbase + j * kstride + d) : 0.0f;
        vv[u][e] = ok ? ld(vbase + j * kstride + d) : 0.0f;
      }
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u) {
      if (j0 + u >= hi) break;
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < kAttnMaxDimsPerLane; ++e) s += qv[e] * kv[u][e];
      for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
      const float mn = fmaxf(m, s);
      const float corr = __expf(m - mn), p = __expf(s - mn);
      l = l * corr + p;
#pragma unroll
      for (int e = 0; e < kAttnMaxDimsPerLane; ++e) acc[e] = acc[e] * corr + p * vv[u][e];
      m = mn;
    }
  }
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps], sm_acc[kAttnWarps][kAttnMaxDimsPerLane * 32];
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < kAttnMaxDimsPerLane; ++e) sm_acc[warp][lane + 32 * e] = acc[e];
  __syncthreads();
  float gm = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) gm = fmaxf(gm, sm_m[w]);
  float gl = 0.0f;
  for (int w = 0; w < kAttnWarps; ++w) gl += sm_m[w] == -INFINITY ? 0.0f : sm_l[w] * __expf(sm_m[w] - gm);
  // Partials: [query_head][split][hd accumulator, max, sum]; an empty split leaves max = -inf.
  float* pp = splits > 1 ? part + (static_cast<int64_t>(blockIdx.x) * splits + split) * (hd + 2) : nullptr;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w)
      if (sm_m[w] != -INFINITY) v += sm_acc[w][d] * __expf(sm_m[w] - gm);
    if (splits > 1)
      pp[d] = v;
    else
      out[(static_cast<int64_t>(tt) * nh + h) * hd + d] = __float2bfloat16_rn(v / gl);
  }
  if (splits > 1 && threadIdx.x == 0) pp[hd] = gm, pp[hd + 1] = gl;
}

// Merges the splits of each (query, head): the log-sum-exp rescaling of flash-decoding. One block per
// (query, head), threads over the head dimension.
__global__ void attention_combine_kernel(const float* part, int splits, int hd, bf16* out) {
  const float* base = part + static_cast<int64_t>(blockIdx.x) * splits * (hd + 2);
  float gm = -INFINITY;
  for (int s = 0; s < splits; ++s) gm = fmaxf(gm, base[s * (hd + 2) + hd]);
  float gl = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = base[s * (hd + 2) + hd];
    if (ms != -INFINITY) gl += base[s * (hd + 2) + hd + 1] * __expf(ms - gm);
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = base[s * (hd + 2) + hd];
      if (ms != -INFINITY) v += base[s * (hd + 2) + d] * __expf(ms - gm);
    }
    out[static_cast<int64_t>(blockIdx.x) * hd + d] = __float2bfloat16_rn(v / gl);
  }
}

// Appends t rows of K and V at the device-side position (captured graphs replay it at every step).
__global__ void kv_append_kernel(const bf16* k, const bf16* v, int64_t n, int64_t row, const int* pos_dev,
                                 bf16* kc, bf16* vc) {
  const int64_t off = static_cast<int64_t>(*pos_dev) * row;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    kc[off + i] = k[i];
    vc[off + i] = v[i];
  }
}

__global__ void kv_append_batch_kernel(const bf16* k, const bf16* v, int rows, int64_t row,
                                       const int* const* pos_tab, bf16* const* kc_tab, bf16* const* vc_tab) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * row;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int r = static_cast<int>(i / row);
    const int64_t off = static_cast<int64_t>(*pos_tab[r]) * row + i % row;
    kc_tab[r][off] = k[i];
    vc_tab[r][off] = v[i];
  }
}

__global__ void pos_add_kernel(int* pos, int t) {
  *pos += t;
}

__global__ void pos_add_batch_kernel(int* const* pos_tab, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) *pos_tab[i] += 1;
}

__global__ void add_f32_kernel(float* x, const bf16* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    x[i] += ld(y + i);
}

__global__ void add_kernel(bf16* x, const bf16* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    x[i] = __float2bfloat16_rn(ld(x + i) + ld(y + i));
}

__global__ void silu_mul_kernel(const bf16* g, const bf16* u, bf16* o, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    o[i] = __float2bfloat16_rn(silu(ld(g + i)) * ld(u + i));
}

__global__ void relu2_kernel(bf16* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = fmaxf(ld(x + i), 0.0f);
    x[i] = __float2bfloat16_rn(v * v);
  }
}

__global__ void columns_kernel(const bf16* src, int64_t rows, int64_t scols, int64_t col0, bf16* dst,
                               int64_t dcols) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * dcols;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = src[(i / dcols) * scols + col0 + i % dcols];
}

__global__ void softplus_dt_kernel(const bf16* proj, int64_t rows, int64_t pcols, int64_t col0,
                                   const float* bias, float lo, float hi, bf16* dt, int64_t nh) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * nh;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = ld(proj + (i / nh) * pcols + col0 + i % nh) + bias[i % nh];
    const float sp = v > 20.0f ? v : log1pf(__expf(v));
    dt[i] = __float2bfloat16_rn(fminf(fmaxf(sp, lo), hi));
  }
}

// One thread per channel, tokens in order, rolling FP32 state of the last kernel-1 inputs.
// Batched (grid.y = sequence): row y of xbc is that sequence's one new token, its state from the table.
__global__ void conv1d_silu_kernel(bf16* xbc, int t, int ch, int kernel, const float* w, const float* b,
                                   float* state_one, float* const* state_tab) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= ch) return;
  float* state = state_tab ? state_tab[blockIdx.y] : state_one;
  if (state_tab) xbc += static_cast<int64_t>(blockIdx.y) * ch;
  const int hist = kernel - 1;
  float win[8];
  for (int j = 0; j < hist; ++j) win[j] = state[c * hist + j];
  for (int i = 0; i < t; ++i) {
    bf16* v = xbc + static_cast<int64_t>(i) * ch + c;
    win[hist] = ld(v);
    float acc = b ? b[c] : 0.0f;
    for (int j = 0; j < kernel; ++j) acc += w[c * kernel + j] * win[j];
    for (int j = 0; j < hist; ++j) win[j] = win[j + 1];
    *v = __float2bfloat16_rn(silu(acc));
  }
  for (int j = 0; j < hist; ++j) state[c * hist + j] = win[j];
}

// Selective scan over t tokens of one sequence: one warp per (head, channel p); each lane keeps its share of
// the state row (entries n = lane + 32 j) in registers across tokens and the C-weighted sum is a shuffle
// reduction, so a token costs no block-wide synchronization. Tokens stay sequential within a row (the chunked
// SSD form would expose parallelism across tokens too); rows run in parallel. ns <= 32 * kScanMaxPerLane.
constexpr int kScanWarps = 8;
constexpr int kScanMaxPerLane = 8;
__global__ void __launch_bounds__(kScanWarps * 32)
    ssm_scan_kernel(const bf16* x, const bf16* b, const bf16* c, const bf16* dt, const float* a_log,
                    const float* d, int t, int heads, int hp, int ns, int groups, float* state, bf16* y) {
  const int row = blockIdx.x * kScanWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= heads * hp) return;
  const int h = row / hp, g = h / (heads / groups);
  const int64_t xw = static_cast<int64_t>(heads) * hp, bw = static_cast<int64_t>(groups) * ns;
  float* sp = state + static_cast<int64_t>(row) * ns;
  float S[kScanMaxPerLane];
#pragma unroll
  for (int j = 0; j < kScanMaxPerLane; ++j) {
    const int n = lane + 32 * j;
    S[j] = n < ns ? sp[n] : 0.0f;
  }
  const float a = -__expf(a_log[h]), dh = d[h];
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
// written once per token.
constexpr int kSsmStepWarps = 8;
__global__ void __launch_bounds__(kSsmStepWarps * 32)
    ssm_step_batch_kernel(const bf16* x, const bf16* b, const bf16* c, const bf16* dt, const float* a_log,
                          const float* d, int heads, int hp, int ns, int groups, float* const* state_tab,
                          bf16* y) {
  const int row = blockIdx.x * kSsmStepWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= heads * hp) return;
  const int seq = blockIdx.y;
  const int h = row / hp, g = h / (heads / groups);
  const int64_t xw = static_cast<int64_t>(heads) * hp, bw = static_cast<int64_t>(groups) * ns;
  const float dth = ld(dt + static_cast<int64_t>(seq) * heads + h);
  const float xv = ld(x + seq * xw + row);
  const float decay = __expf(dth * -__expf(a_log[h]));
  const bf16* bs = b + seq * bw + static_cast<int64_t>(g) * ns;
  const bf16* cs = c + seq * bw + static_cast<int64_t>(g) * ns;
  float* sp = state_tab[seq] + static_cast<int64_t>(row) * ns;
  float acc = 0.0f;
  for (int n = lane; n < ns; n += 32) {
    const float S = sp[n] * decay + dth * xv * ld(bs + n);
    sp[n] = S;
    acc += S * ld(cs + n);
  }
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) y[seq * xw + row] = __float2bfloat16_rn(acc + d[h] * xv);
}

// One block per (row, group): y = rmsnorm(y * silu(z)) * w over the group's channels.
__global__ void gated_rmsnorm_kernel(bf16* y, const bf16* z, const float* w, int64_t width, int groups,
                                     float eps) {
  const int64_t row = blockIdx.x / groups, g = blockIdx.x % groups, gs = width / groups;
  bf16* yr = y + row * width + g * gs;
  const bf16* zr = z + row * width + g * gs;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < gs; i += blockDim.x) {
    const float v = ld(yr + i) * silu(ld(zr + i));
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(gs) + eps);
  for (int64_t i = threadIdx.x; i < gs; i += blockDim.x) {
    const float v = ld(yr + i) * silu(ld(zr + i));
    yr[i] = __float2bfloat16_rn(w[g * gs + i] * (v * inv));
  }
}

__global__ void bias_kernel(bf16* y, const float* bias, int64_t rows, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = __float2bfloat16_rn(ld(y + i) + bias[i % n]);
}

// Greedy decoding on the device: one block per row, the first index of the maximum (as std::max_element), so
// only B ids cross PCIe instead of B x vocab FP32 logits.
__global__ void __launch_bounds__(1024) argmax_rows_kernel(const float* logits, int64_t cols, int* out) {
  const float* row = logits + blockIdx.x * cols;
  float best = -INFINITY;
  int64_t bi = cols;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = row[i];
    if (v > best || (v == best && i < bi)) best = v, bi = i;
  }
  for (int o = 16; o > 0; o /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
  }
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = best, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    best = lane < static_cast<int>(blockDim.x / 32) ? sv[lane] : -INFINITY;
    bi = lane < static_cast<int>(blockDim.x / 32) ? si[lane] : cols;
    for (int o = 16; o > 0; o /= 2) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
    }
    // All -inf or NaN rows fall back to index 0, as max_element does when nothing compares greater.
    if (lane == 0) out[blockIdx.x] = bi < cols ? static_cast<int>(bi) : 0;
  }
}

__global__ void bf16_to_f32_kernel(const bf16* src, int64_t n, float* dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

__global__ void f32_to_bf16_kernel(const float* src, int64_t n, bf16* dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

}  // namespace

struct CudaOps::OpTimer {
  CudaOps* ops;
  size_t index = 0;
  OpTimer(CudaOps* o, const char* name) : ops(o) {
    if (ops->profile_) {
      index = ops->pending_.size();
      ops->prof_begin(name);
    }
  }
  ~OpTimer() {
    if (ops->profile_) CUDA_CHECK(cudaEventRecord(ops->pending_[index].b, ops->stream_));
  }
};

void CudaOps::prof_begin(const char* op) {
  PendingEvent e{op, nullptr, nullptr};
  CUDA_CHECK(cudaEventCreate(&e.a));
  CUDA_CHECK(cudaEventCreate(&e.b));
  CUDA_CHECK(cudaEventRecord(e.a, stream_));
  pending_.push_back(e);
}

void CudaOps::prof_collect() {
  for (auto& e : pending_) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e.a, e.b));
    profile_ms_[e.op] += ms;
    cudaEventDestroy(e.a);
    cudaEventDestroy(e.b);
  }
  pending_.clear();
}

CudaOps::CudaOps(int device, bool graphs) : device_(device), graphs_(graphs) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreate(&stream_));
  // cuBLAS gets a fixed workspace so that its calls can be captured in graphs.
  cublas_ws_ = DeviceBuffer(32ull << 20);
  CUBLAS_CHECK(
      cublasSetWorkspace(static_cast<cublasHandle_t>(ws_.cublas_handle()), cublas_ws_.ptr, cublas_ws_.bytes));
}

CudaOps::~CudaOps() {
  if (pinned_tokens_) cudaFreeHost(pinned_tokens_);
  if (pinned_logits_) cudaFreeHost(pinned_logits_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaOps::invalidate_graphs(const char* what) {
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream_, &cs));
  if (cs != cudaStreamCaptureStatusNone)
    throw Error(std::string("internal: ") + what + " would be reallocated during graph capture");
  ++arena_gen_;
}

void CudaOps::ensure_device(DeviceBuffer& b, size_t bytes, const char* what) {
  if (b.bytes >= bytes) return;
  invalidate_graphs(what);
  b = DeviceBuffer(bytes);
}

void CudaOps::ensure_pinned(size_t n) {
  if (n > pinned_logits_cap_) {
    invalidate_graphs("the pinned logits buffer");
    synchronize();  // a copy into the old buffer may still be in flight
    if (pinned_logits_) CUDA_CHECK(cudaFreeHost(pinned_logits_));
    CUDA_CHECK(cudaMallocHost(&pinned_logits_, n * 4));
    pinned_logits_cap_ = n;
  }
}

void CudaOps::logits_async(const Tensor& h, const LinearWeight& head) {
  const size_t n = logits_on_device(h, head);
  ensure_pinned(n);
  CUDA_CHECK(cudaMemcpyAsync(pinned_logits_, logits_dev_.ptr, n * 4, cudaMemcpyDeviceToHost, stream_));
}

void CudaOps::argmax_async(const Tensor& h, const LinearWeight& head) {
  logits_on_device(h, head);
  OpTimer timer_(this, "argmax");
  const int rows = static_cast<int>(logits_rows_);
  ensure_device(argmax_dev_, static_cast<size_t>(rows) * 4, "the argmax buffer");
  if (argmax_host_.size() < static_cast<size_t>(rows)) argmax_host_.resize(static_cast<size_t>(rows));
  argmax_rows_kernel<<<static_cast<unsigned>(rows), 1024, 0, stream_>>>(logits_dev_.as<float>(), logits_cols_,
                                                                        argmax_dev_.as<int>());
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(argmax_host_.data(), argmax_dev_.ptr, static_cast<size_t>(rows) * 4,
                             cudaMemcpyDeviceToHost, stream_));
}

std::vector<int> CudaOps::fetch_argmax() {
  synchronize();
  if (profile_) prof_collect();
  return std::vector<int>(argmax_host_.begin(), argmax_host_.begin() + logits_rows_);
}

size_t CudaOps::logits_on_device(const Tensor& h, const LinearWeight& head) {
  OpTimer timer_(this, "lm_head");
  const DevLinear& d = linears_.at(&head);
  const size_t n = static_cast<size_t>(h.rows * d.n);
  ensure_device(logits_dev_, static_cast<size_t>(h.rows * std::max<int64_t>(d.n, vocab_)) * 4,
                "the logits buffer");
  if (d.nvfp4) {
    Tensor l = alloc(h.rows, d.n);
    linear(h, head, l);
    bf16_to_f32_kernel<<<grid_1d(static_cast<int64_t>(n), 256), 256, 0, stream_>>>(
        reinterpret_cast<const bf16*>(l.data), static_cast<int64_t>(n), logits_dev_.as<float>());
    CUDA_CHECK_LAUNCH();
  } else {
    // BF16 x BF16 with an FP32 result.
    auto hb = static_cast<cublasHandle_t>(ws_.cublas_handle());
    CUBLAS_CHECK(cublasSetStream(hb, stream_));
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(d.n), static_cast<int>(h.rows),
                              static_cast<int>(d.k), &one, d.bf16.ptr, CUDA_R_16BF, static_cast<int>(d.k),
                              h.data, CUDA_R_16BF, static_cast<int>(h.cols), &zero, logits_dev_.ptr,
                              CUDA_R_32F, static_cast<int>(d.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  logits_rows_ = h.rows;
  logits_cols_ = d.n;
  if (vocab_parallel_ && tp_comm_) {
#if FP4LAB_HAVE_NCCL
    // Every rank scored its shard of the vocabulary: gather the shards, then put each row's in id order.
    OpTimer timer_g(this, "all_gather");
    ensure_device(vocab_gather_, n * 4 * static_cast<size_t>(tp_), "the vocab gather buffer");
    const ncclResult_t rc = ncclAllGather(logits_dev_.ptr, vocab_gather_.ptr, n, ncclFloat32,
                                          static_cast<ncclComm_t>(tp_comm_), stream_);
    if (rc != ncclSuccess) throw Error(std::string("NCCL all-gather failed: ") + ncclGetErrorString(rc));
    gather_vocab_kernel<<<grid_1d(h.rows * vocab_, 256), 256, 0, stream_>>>(
        vocab_gather_.as<float>(), h.rows, d.n, vocab_, logits_dev_.as<float>());
    CUDA_CHECK_LAUNCH();
    logits_cols_ = vocab_;
    return static_cast<size_t>(h.rows * vocab_);
#endif
  }
  return n;
}

std::vector<float> CudaOps::fetch_logits() {
  synchronize();
  if (profile_) prof_collect();
  return std::vector<float>(pinned_logits_, pinned_logits_ + logits_rows_ * logits_cols_);
}

void CudaOps::write_rows(Tensor& dst, int64_t from, const Tensor& src) {
  const Tensor view = rows(dst, from, src.rows);
  if (view.data == src.data) return;
  if (src.f32 != dst.f32 || src.cols != dst.cols)
    throw Error("internal: write_rows between different layouts");
  CUDA_CHECK(cudaMemcpyAsync(view.data, src.data,
                             static_cast<size_t>(src.rows * src.cols) * (src.f32 ? 4 : 2),
                             cudaMemcpyDeviceToDevice, stream_));
}

void CudaOps::advance(State& s, int t) {
  s.pos += t;
  pos_add_kernel<<<1, 1, 0, stream_>>>(s.pos_dev.as<int>(), t);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::capture(State& s, const std::function<void()>& body) {
  const int pos_before = s.pos;
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  try {
    body();
  } catch (...) {
    cudaStreamEndCapture(stream_, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
  s.pos = pos_before;  // the captured advance() ran on the host once; replays advance it instead
  GraphExec e;
  const cudaError_t err = cudaGraphInstantiate(&e.exec, g, 0);
  cudaGraphDestroy(g);
  CUDA_CHECK(err);
  e.arena_gen = graph_gen();
  s.graph = std::move(e);
}

std::vector<float> CudaOps::replay(State& s, int token) {
  pinned_tokens_[0] = token;
  CUDA_CHECK(cudaGraphLaunch(s.graph.exec, stream_));
  s.pos += 1;
  return fetch_logits();
}

void CudaOps::synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

const float* CudaOps::dev_f32(const std::vector<float>& host) {
  auto it = f32_.find(host.data());
  if (it != f32_.end()) return it->second.as<float>();
  if (host.empty()) throw Error("internal: an empty weight vector reached the CUDA backend");
  DeviceBuffer b(host.size() * 4);
  CUDA_CHECK(cudaMemcpyAsync(b.ptr, host.data(), host.size() * 4, cudaMemcpyHostToDevice, stream_));
  weight_bytes_ += b.bytes;
  return (f32_[host.data()] = std::move(b)).as<float>();
}

void CudaOps::upload_linear(const LinearWeight& lw, const LinearPlan& plan, uint64_t gen_seed,
                            bool synthetic) {
  DevLinear d;
  d.n = lw.n;
  d.k = lw.k;
  d.nvfp4 = plan.nvfp4;
  // Source in BF16 on the device: the host tensor, or generated from the seed (presets).
  DeviceBuffer src(static_cast<size_t>(lw.n * lw.k * 2));
  if (synthetic) {
    fill_random_bf16(src.as<uint16_t>(), lw.n * lw.k, gen_seed, 0.02f, 0, stream_);
  } else {
    DeviceBuffer f(static_cast<size_t>(lw.n * lw.k * 4));
    CUDA_CHECK(cudaMemcpyAsync(f.ptr, lw.w.data(), f.bytes, cudaMemcpyHostToDevice, stream_));
    f32_to_bf16_kernel<<<grid_1d(lw.n * lw.k, 256), 256, 0, stream_>>>(f.as<float>(), lw.n * lw.k,
                                                                       src.as<bf16>());
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  if (d.nvfp4) {
    if (lw.nvfp4) {
      // Exactly the host's NVFP4 codes and scales (checkpoint or quantized at load).
      auto pk = DeviceBuffer(lw.nvfp4->packed.size()), sc = DeviceBuffer(lw.nvfp4->block_scales.size());
      CUDA_CHECK(cudaMemcpyAsync(pk.ptr, lw.nvfp4->packed.data(), pk.bytes, cudaMemcpyHostToDevice, stream_));
      CUDA_CHECK(
          cudaMemcpyAsync(sc.ptr, lw.nvfp4->block_scales.data(), sc.bytes, cudaMemcpyHostToDevice, stream_));
      d.fp4 = nvfp4_repack_device(pk.as<uint8_t>(), sc.as<uint8_t>(), lw.n, lw.k, lw.nvfp4->tensor_scale,
                                  stream_);
      CUDA_CHECK(cudaStreamSynchronize(stream_));
    } else {
      // Quantized on the device (presets): same codec as the host, per-tensor amax scale.
      DeviceBuffer pk(static_cast<size_t>(lw.n * lw.k / 2)), sc(static_cast<size_t>(lw.n * lw.k / 16)), ts(4);
      nvfp4_quantize_act(src.as<bf16_raw>(), lw.n, lw.k, pk.as<uint8_t>(), sc.as<uint8_t>(), ts.as<float>(),
                         true, stream_);
      float h = 0;
      CUDA_CHECK(cudaMemcpyAsync(&h, ts.ptr, 4, cudaMemcpyDeviceToHost, stream_));
      CUDA_CHECK(cudaStreamSynchronize(stream_));
      d.fp4 = nvfp4_repack_device(pk.as<uint8_t>(), sc.as<uint8_t>(), lw.n, lw.k, h, stream_);
      CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    weight_bytes_ += d.fp4.bytes();
  } else {
    d.bf16 = std::move(src);
    weight_bytes_ += d.bf16.bytes;
  }
  if (!lw.bias.empty()) {
    d.bias = DeviceBuffer(lw.bias.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(d.bias.ptr, lw.bias.data(), d.bias.bytes, cudaMemcpyHostToDevice, stream_));
  }
  linears_[&lw] = std::move(d);
}

void CudaOps::prepare(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  hidden_ = c.hidden_size;
  vocab_ = c.vocab_size;
  vocab_rows_ = w.vocab_rows();
  vocab_parallel_ = w.vocab_parallel();
  const bool synth = w.synthetic && !w.materialized;
  // Plan: weights as they will sit on the GPU, against the free memory, before allocating.
  double need = 2.0 * vocab_rows_ * c.hidden_size;
  for (const auto& p : w.plans) {
    if (p.spec.role == "lm_head" && c.tie_embeddings) continue;
    need += p.nvfp4 ? p.spec.n * p.spec.k * 0.5625 : 2.0 * p.spec.n * p.spec.k;
  }
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (need + (1ull << 30) > static_cast<double>(free_b))
    throw Error("model needs " + std::to_string(need / 1e9).substr(0, 5) +
                " GB of weights on the GPU (plus ~1 GB of "
                "workspace) but only " +
                std::to_string(free_b / 1e9).substr(0, 5) + " GB are free");
  embed_ = DeviceBuffer(static_cast<size_t>(vocab_rows_) * c.hidden_size * 2);
  if (synth) {
    fill_random_bf16(embed_.as<uint16_t>(), vocab_rows_ * c.hidden_size, w.seed * 7 + 1, 0.02f, 0, stream_);
  } else {
    DeviceBuffer f(w.embed.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(f.ptr, w.embed.data(), f.bytes, cudaMemcpyHostToDevice, stream_));
    f32_to_bf16_kernel<<<grid_1d(static_cast<int64_t>(w.embed.size()), 256), 256, 0, stream_>>>(
        f.as<float>(), static_cast<int64_t>(w.embed.size()), embed_.as<bf16>());
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  weight_bytes_ += embed_.bytes;
  uint64_t gen = w.seed * 1000003ull + 17;
  for (const auto& p : w.plans) {
    const LinearWeight* lw = &linear_weight(w, p.spec);
    if (p.spec.role == "lm_head" && c.tie_embeddings) {
      DevLinear d;
      d.n = vocab_rows_;
      d.k = c.hidden_size;
      d.bf16 = DeviceBuffer(embed_.bytes);
      CUDA_CHECK(cudaMemcpyAsync(d.bf16.ptr, embed_.ptr, embed_.bytes, cudaMemcpyDeviceToDevice, stream_));
      linears_[lw] = std::move(d);
      continue;
    }
    upload_linear(*lw, p, ++gen, synth);
  }
  for (const auto& L : w.layers) {
    for (const auto* v : {&L.norm, &L.post_norm, &L.q_norm, &L.k_norm, &L.conv_w, &L.conv_b, &L.a_log, &L.d,
                          &L.dt_bias, &L.gated_norm})
      if (!v->empty()) dev_f32(*v);
  }
  dev_f32(w.final_norm);
  tokens_ = DeviceBuffer(1 << 20);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

size_t CudaOps::state_bytes(const ModelConfig& c, int max_tokens) const {
  size_t b = 0;
  for (auto k : c.layers) {
    if (k == LayerKind::Attention || k == LayerKind::Decoder)
      b += 2ull * max_tokens * c.num_kv_heads * c.head_dim * 2;
    if (k == LayerKind::Mamba)
      b += 4ull * (static_cast<size_t>(c.mamba_conv_dim()) * (c.conv_kernel - 1) +
                   static_cast<size_t>(c.mamba_num_heads) * c.mamba_head_dim * c.ssm_state_size);
  }
  return b;
}

CudaOps::State CudaOps::new_state(const ModelConfig& c, int max_tokens) {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const size_t need = state_bytes(c, max_tokens);
  if (need + (256ull << 20) > free_b)
    throw Error("a sequence of " + std::to_string(max_tokens) + " tokens needs " +
                std::to_string(need >> 20) + " MiB of KV/SSM cache but only " + std::to_string(free_b >> 20) +
                " MiB of GPU memory are free");
  State s;
  s.capacity = max_tokens;
  s.pos_dev = DeviceBuffer(sizeof(int));
  CUDA_CHECK(cudaMemsetAsync(s.pos_dev.ptr, 0, sizeof(int), stream_));
  const size_t L = static_cast<size_t>(c.num_layers);
  s.k.resize(L);
  s.v.resize(L);
  s.conv.resize(L);
  s.ssm.resize(L);
  for (size_t i = 0; i < L; ++i) {
    const auto k = c.layers[i];
    if (k == LayerKind::Attention || k == LayerKind::Decoder) {
      s.k[i] = DeviceBuffer(static_cast<size_t>(max_tokens) * c.num_kv_heads * c.head_dim * 2);
      s.v[i] = DeviceBuffer(s.k[i].bytes);
    }
    if (k == LayerKind::Mamba) {
      s.conv[i] = DeviceBuffer(static_cast<size_t>(c.mamba_conv_dim()) * (c.conv_kernel - 1) * 4);
      s.ssm[i] =
          DeviceBuffer(static_cast<size_t>(c.mamba_num_heads) * c.mamba_head_dim * c.ssm_state_size * 4);
      CUDA_CHECK(cudaMemsetAsync(s.conv[i].ptr, 0, s.conv[i].bytes, stream_));
      CUDA_CHECK(cudaMemsetAsync(s.ssm[i].ptr, 0, s.ssm[i].bytes, stream_));
    }
  }
  return s;
}

void CudaOps::begin_forward() {
  // Several arena blocks were needed last time: replace them by one block of the total size.
  if (arena_.size() > 1) {
    size_t total = 0;
    for (const auto& b : arena_) total += b.bytes;
    synchronize();
    arena_.clear();
    arena_.emplace_back(total);
    ++arena_gen_;
  }
  arena_block_ = 0;
  arena_used_ = 0;
}

CudaOps::Tensor CudaOps::alloc_residual(int64_t rows, int64_t cols) {
  Tensor t = alloc(rows, 2 * cols);  // FP32 takes the room of two BF16 columns
  t.cols = cols;
  t.f32 = true;
  return t;
}

CudaOps::Tensor CudaOps::alloc(int64_t rows, int64_t cols) {
  const size_t bytes = (static_cast<size_t>(rows * cols) * 2 + 255) / 256 * 256;
  if (arena_.empty() || arena_used_ + bytes > arena_[arena_block_].bytes) {
    // Next block, or a new one (only while a new shape is first seen; begin_forward merges them).
    if (!arena_.empty() && arena_block_ + 1 < arena_.size() && arena_[arena_block_ + 1].bytes >= bytes) {
      ++arena_block_;
    } else {
      arena_.emplace_back(std::max<size_t>(bytes, 32ull << 20));
      arena_block_ = arena_.size() - 1;
      ++arena_gen_;  // captured graphs that point into the old blocks must be re-captured
    }
    arena_used_ = 0;
  }
  Tensor t{rows, cols,
           reinterpret_cast<bf16_raw*>(static_cast<uint8_t*>(arena_[arena_block_].ptr) + arena_used_)};
  arena_used_ += bytes;
  return t;
}

void CudaOps::embed(std::span<const int> tokens, const std::vector<float>&, int64_t first_id, Tensor& x) {
  OpTimer timer_(this, "embed");
  ensure_device(tokens_, tokens.size() * 4, "the token buffer");
  if (tokens.size() > pinned_tokens_cap_) {
    invalidate_graphs("the pinned token buffer");
    synchronize();  // the previous copy may still read the old buffer
    if (pinned_tokens_) CUDA_CHECK(cudaFreeHost(pinned_tokens_));
    CUDA_CHECK(cudaMallocHost(&pinned_tokens_, tokens.size() * 4));
    pinned_tokens_cap_ = tokens.size();
  } else {
    synchronize_if_not_capturing();
  }
  std::copy(tokens.begin(), tokens.end(), pinned_tokens_);
  CUDA_CHECK(
      cudaMemcpyAsync(tokens_.ptr, pinned_tokens_, tokens.size() * 4, cudaMemcpyHostToDevice, stream_));
  if (!x.f32) throw Error("internal: embed writes the FP32 residual stream");
  embed_kernel<<<grid_1d(x.rows * x.cols, 256), 256, 0, stream_>>>(
      tokens_.as<int>(), static_cast<int>(x.rows), embed_.as<bf16>(), first_id, vocab_rows_, hidden_,
      x.fdata());
  CUDA_CHECK_LAUNCH();
}

void CudaOps::linear(const Tensor& x, const LinearWeight& w, Tensor& y) {
  auto it = linears_.find(&w);
  if (it == linears_.end()) throw Error("internal: linear layer was not uploaded");
  const DevLinear& d = it->second;
  OpTimer timer_(this, d.nvfp4 ? "linear.nvfp4" : "linear.bf16");
  if (d.nvfp4)
    nvfp4_w4a16_gemm(x.data, x.rows, x.cols, d.fp4, y.data, y.cols, 1.0f, ws_, stream_);
  else
    cublas_bf16_gemm(ws_.cublas_handle(), x.data, x.rows, d.bf16.as<bf16_raw>(), d.n, d.k, y.data, stream_);
  if (d.bias.ptr) {
    bias_kernel<<<grid_1d(y.rows * y.cols, 256), 256, 0, stream_>>>(reinterpret_cast<bf16*>(y.data),
                                                                    d.bias.as<float>(), y.rows, y.cols);
    CUDA_CHECK_LAUNCH();
  }
}

void CudaOps::linear_group(const Tensor& x, std::span<const LinearWeight* const> w,
                           std::span<Tensor* const> y) {
  const Nvfp4DeviceWeight* dw[3];
  bf16_raw* out[3];
  int64_t ld[3];
  bool grouped = w.size() >= 2 && w.size() <= 3 && x.rows <= 8 && !x.f32;
  for (size_t i = 0; grouped && i < w.size(); ++i) {
    const auto it = linears_.find(w[i]);
    if (it == linears_.end()) throw Error("internal: linear layer was not uploaded");
    grouped = it->second.nvfp4 && !it->second.bias.ptr;
    dw[i] = &it->second.fp4;
    out[i] = y[i]->data;
    ld[i] = y[i]->cols;
  }
  if (grouped) {
    OpTimer timer_(this, "linear.nvfp4");
    if (nvfp4_w4a16_gemm_group(x.data, x.rows, x.cols, std::span(dw, w.size()), std::span(out, w.size()),
                               std::span<const int64_t>(ld, w.size()), ws_, stream_))
      return;
  }
  for (size_t i = 0; i < w.size(); ++i) linear(x, *w[i], *y[i]);
}

void CudaOps::rmsnorm(const Tensor& x, const std::vector<float>& w, float eps, Tensor& y) {
  OpTimer timer_(this, "rmsnorm");
  const int threads = static_cast<int>(std::clamp<int64_t>((x.cols / 8 + 31) / 32 * 32, 32, 1024));
  rmsnorm_kernel<<<static_cast<unsigned>(x.rows), threads, 0, stream_>>>(
      x.data, x.f32, nullptr, dev_f32(w), x.cols, eps, reinterpret_cast<bf16*>(y.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::add_rmsnorm(Tensor& x, const Tensor& o, const std::vector<float>& w, float eps, Tensor& y) {
  if (!x.f32 || o.f32 || o.rows != x.rows || o.cols != x.cols)
    throw Error("internal: add_rmsnorm takes the FP32 residual stream and a BF16 layer output of its shape");
  OpTimer timer_(this, "rmsnorm");
  const int threads = static_cast<int>(std::clamp<int64_t>((x.cols / 8 + 31) / 32 * 32, 32, 1024));
  rmsnorm_kernel<<<static_cast<unsigned>(x.rows), threads, 0, stream_>>>(
      x.data, true, reinterpret_cast<const bf16*>(o.data), dev_f32(w), x.cols, eps,
      reinterpret_cast<bf16*>(y.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::rmsnorm_heads(Tensor& x, int heads, const std::vector<float>& w, float eps) {
  OpTimer timer_(this, "rmsnorm");
  const int64_t hd = x.cols / heads;
  rmsnorm_kernel<<<static_cast<unsigned>(x.rows * heads), 64, 0, stream_>>>(
      x.data, false, nullptr, dev_f32(w), hd, eps, reinterpret_cast<bf16*>(x.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::synchronize_if_not_capturing() {
  // The pinned token buffer is rewritten for this forward; an earlier copy from it must have finished.
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream_, &st));
  if (st == cudaStreamCaptureStatusNone) synchronize();
}

void CudaOps::set_rope(int hd, const RopeConfig& r) {
  if (rope_dim_ != hd || rope_cfg_.theta != r.theta || rope_cfg_.type != r.type ||
      rope_cfg_.factor != r.factor) {
    const auto f = cpu::rope_inv_freq(r, hd);
    inv_freq_ = DeviceBuffer(f.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(inv_freq_.ptr, f.data(), f.size() * 4, cudaMemcpyHostToDevice, stream_));
    rope_cfg_ = r;
    rope_dim_ = hd;
  }
}

void CudaOps::rope(Tensor& x, int heads, int hd, const State& s, const RopeConfig& r) {
  OpTimer timer_(this, "rope");
  set_rope(hd, r);
  rope_kernel<<<grid_1d(x.rows * heads * hd / 2, 256), 256, 0, stream_>>>(
      reinterpret_cast<bf16*>(x.data), static_cast<int>(x.rows), heads, hd, s.pos_dev.as<int>(), nullptr,
      inv_freq_.as<float>());
  CUDA_CHECK_LAUNCH();
}

void CudaOps::attention(const Tensor& q, const Tensor& k, const Tensor& v, State& s, size_t layer, int nh,
                        int nkv, int hd, Tensor& out) {
  OpTimer timer_(this, "attention");
  const int64_t row = static_cast<int64_t>(nkv) * hd;
  bf16* kc = s.k[layer].as<bf16>();
  bf16* vc = s.v[layer].as<bf16>();
  kv_append_kernel<<<grid_1d(k.rows * row, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(k.data), reinterpret_cast<const bf16*>(v.data), k.rows * row, row,
      s.pos_dev.as<int>(), kc, vc);
  CUDA_CHECK_LAUNCH();
  if (q.rows > 1 && flash_attention_supported(hd)) {  // prefill on tensor cores
    flash_attention_prefill(q.data, reinterpret_cast<const bf16_raw*>(kc),
                            reinterpret_cast<const bf16_raw*>(vc), s.pos_dev.as<int>(),
                            static_cast<int>(q.rows), nh, nkv, hd, out.data, stream_);
    return;
  }
  launch_attention(q, reinterpret_cast<const bf16_raw*>(kc), reinterpret_cast<const bf16_raw*>(vc),
                   s.pos_dev.as<int>(), nullptr, nullptr, nullptr, nh, nkv, hd, s.capacity, out);
}

int CudaOps::attention_splits(int64_t query_heads, int max_len) {
  if (attn_splits_ > 0) return std::min(attn_splits_, kAttnMaxSplits);
  // Enough blocks for two per SM, and no split shorter than one key group of a block (32 keys). Short
  // contexts gain too: Llama-3.1-8B NVFP4 batch 1 at a 384-token capacity decodes at 185 / 215 / 236 / 246
  // tok/s with 1 / 2 / 4 / 8 splits (H200); the old 512-key minimum kept it at 1.
  const int64_t want = (2 * ws_.sm_count() + query_heads - 1) / query_heads;
  const int64_t by_len = max_len / (kAttnWarps * kAttnUnroll);
  return static_cast<int>(std::clamp<int64_t>(std::min(want, by_len), 1, kAttnMaxSplits));
}

void CudaOps::launch_attention(const Tensor& q, const bf16_raw* kc_raw, const bf16_raw* vc_raw,
                               const int* pos_one, const bf16_raw* const* kc_tab_raw,
                               const bf16_raw* const* vc_tab_raw, const int* const* pos_tab, int nh, int nkv,
                               int hd, int max_len, Tensor& out) {
  const auto* kc = reinterpret_cast<const bf16*>(kc_raw);
  const auto* vc = reinterpret_cast<const bf16*>(vc_raw);
  const auto* kc_tab = reinterpret_cast<const bf16* const*>(kc_tab_raw);
  const auto* vc_tab = reinterpret_cast<const bf16* const*>(vc_tab_raw);
  if (hd > kAttnMaxDimsPerLane * 32)
    throw Error("head_dim " + std::to_string(hd) + " > 256 is not supported by the CUDA attention");
  const int64_t qh = q.rows * nh;
  const int splits = attention_splits(qh, max_len);
  float* part = nullptr;
  if (splits > 1) {
    const size_t bytes = static_cast<size_t>(qh) * splits * (hd + 2) * sizeof(float);
    ensure_device(attn_part_, bytes, "the split-attention workspace");  // sized by the eager first step
    part = attn_part_.as<float>();
  }
  const dim3 grid(static_cast<unsigned>(qh), static_cast<unsigned>(splits));
  auto* o = reinterpret_cast<bf16*>(out.data);
  const auto* qd = reinterpret_cast<const bf16*>(q.data);
  if (kc_tab)
    attention_kernel<true><<<grid, kAttnWarps * 32, 0, stream_>>>(qd, nullptr, nullptr, nh, nkv, hd, nullptr,
                                                                  o, kc_tab, vc_tab, pos_tab, part);
  else
    attention_kernel<false><<<grid, kAttnWarps * 32, 0, stream_>>>(qd, kc, vc, nh, nkv, hd, pos_one, o,
                                                                   nullptr, nullptr, nullptr, part);
  CUDA_CHECK_LAUNCH();
  if (splits > 1) {
    attention_combine_kernel<<<static_cast<unsigned>(qh), 128, 0, stream_>>>(part, splits, hd, o);
    CUDA_CHECK_LAUNCH();
  }
}

void CudaOps::add(Tensor& x, const Tensor& y) {
  OpTimer timer_(this, "elementwise");
  if (x.f32) {
    add_f32_kernel<<<grid_1d(x.rows * x.cols, 256), 256, 0, stream_>>>(
        x.fdata(), reinterpret_cast<const bf16*>(y.data), x.rows * x.cols);
    CUDA_CHECK_LAUNCH();
    return;
  }
  add_kernel<<<grid_1d(x.rows * x.cols, 256), 256, 0, stream_>>>(
      reinterpret_cast<bf16*>(x.data), reinterpret_cast<const bf16*>(y.data), x.rows * x.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::silu_mul(const Tensor& g, const Tensor& u, Tensor& o) {
  OpTimer timer_(this, "elementwise");
  silu_mul_kernel<<<grid_1d(g.rows * g.cols, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(g.data), reinterpret_cast<const bf16*>(u.data),
      reinterpret_cast<bf16*>(o.data), g.rows * g.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::relu2(Tensor& x) {
  OpTimer timer_(this, "elementwise");
  relu2_kernel<<<grid_1d(x.rows * x.cols, 256), 256, 0, stream_>>>(reinterpret_cast<bf16*>(x.data),
                                                                   x.rows * x.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::columns(const Tensor& src, int64_t col0, Tensor& dst) {
  if (src.rows == 1 && !src.f32) {
    // One row: the column range is contiguous, so dst becomes a view instead of a copy (decode steps).
    dst.data = src.data + col0;
    return;
  }
  OpTimer timer_(this, "mamba.split");
  columns_kernel<<<grid_1d(dst.rows * dst.cols, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(src.data), src.rows, src.cols, col0, reinterpret_cast<bf16*>(dst.data),
      dst.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::softplus_dt(const Tensor& proj, int64_t col0, const std::vector<float>& bias, float lo,
                          float hi, Tensor& dt) {
  OpTimer timer_(this, "mamba.split");
  softplus_dt_kernel<<<grid_1d(dt.rows * dt.cols, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(proj.data), proj.rows, proj.cols, col0, dev_f32(bias), lo, hi,
      reinterpret_cast<bf16*>(dt.data), dt.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::causal_conv1d_silu(Tensor& xbc, State& s, size_t layer, int kernel, const std::vector<float>& w,
                                 const std::vector<float>& b) {
  OpTimer timer_(this, "mamba.conv1d");
  if (kernel > 8)
    throw Error("conv kernel " + std::to_string(kernel) + " > 8 is not supported by the CUDA backend");
  const int ch = static_cast<int>(xbc.cols);
  if (xbc.rows > 1) {  // prefill: every (token, channel) at once, out of place
    Tensor out = alloc(xbc.rows, xbc.cols);
    causal_conv1d_silu_prefill(xbc.data, static_cast<int>(xbc.rows), ch, kernel, dev_f32(w),
                               b.empty() ? nullptr : dev_f32(b), s.conv[layer].as<float>(), out.data,
                               stream_);
    xbc.data = out.data;
    return;
  }
  conv1d_silu_kernel<<<static_cast<unsigned>((ch + 127) / 128), 128, 0, stream_>>>(
      reinterpret_cast<bf16*>(xbc.data), static_cast<int>(xbc.rows), ch, kernel, dev_f32(w),
      b.empty() ? nullptr : dev_f32(b), s.conv[layer].as<float>(), nullptr);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::ssm_scan(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                       const std::vector<float>& a_log, const std::vector<float>& d, State& s, size_t layer,
                       cpu::SsmShape sh, int chunk, Tensor& y) {
  OpTimer timer_(this, "mamba.ssm_scan");
  // Prompts run the chunked SSD form; a few tokens (decode) the sequential recurrence.
  if (x.rows > 16 && ssd_chunked_supported(sh, chunk)) {
    const int t = static_cast<int>(x.rows);
    ensure_device(ssd_ws_, ssd_workspace_bytes(t, sh, chunk), "the chunked-scan workspace");
    ssd_chunked_scan(x.data, b.data, c.data, dt.data, dev_f32(a_log), dev_f32(d), t, sh, chunk,
                     s.ssm[layer].as<float>(), y.data, ssd_ws_.ptr, stream_);
    return;
  }
  if (sh.state > 32 * kScanMaxPerLane)
    throw Error("SSM state size " + std::to_string(sh.state) + " > " + std::to_string(32 * kScanMaxPerLane) +
                " is not supported by the CUDA backend");
  const int rows = sh.heads * sh.head_dim;
  ssm_scan_kernel<<<static_cast<unsigned>((rows + kScanWarps - 1) / kScanWarps), kScanWarps * 32, 0,
                    stream_>>>(reinterpret_cast<const bf16*>(x.data), reinterpret_cast<const bf16*>(b.data),
                               reinterpret_cast<const bf16*>(c.data), reinterpret_cast<const bf16*>(dt.data),
                               dev_f32(a_log), dev_f32(d), static_cast<int>(x.rows), sh.heads, sh.head_dim,
                               sh.state, sh.groups, s.ssm[layer].as<float>(),
                               reinterpret_cast<bf16*>(y.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::all_reduce(Tensor& t) {
  if (!tp_comm_) return;
#if FP4LAB_HAVE_NCCL
  OpTimer timer_(this, "all_reduce");
  const ncclResult_t rc =
      ncclAllReduce(t.data, t.data, static_cast<size_t>(t.rows * t.cols), t.f32 ? ncclFloat32 : ncclBfloat16,
                    ncclSum, static_cast<ncclComm_t>(tp_comm_), stream_);
  if (rc != ncclSuccess) throw Error(std::string("NCCL all-reduce failed: ") + ncclGetErrorString(rc));
#else
  throw Error("internal: a tensor-parallel communicator without NCCL");
#endif
}

void CudaOps::begin_batch(std::span<State* const> states) {
  // One table per step: for every layer the B sequences' conv, SSM, K and V cache pointers, then their
  // positions; uploaded once, read by every batched kernel of the step.
  const size_t B = states.size(), L = states.empty() ? 0 : states[0]->k.size();
  const size_t n = 4 * L * B + B;
  if (batch_tab_host_.size() < n) {
    batch_tab_host_.resize(n);
    batch_tab_ = DeviceBuffer(n * sizeof(void*));
  }
  for (size_t l = 0; l < L; ++l)
    for (size_t b = 0; b < B; ++b) {
      State& st = *states[b];
      batch_tab_host_[(4 * l + 0) * B + b] = st.conv[l].ptr;
      batch_tab_host_[(4 * l + 1) * B + b] = st.ssm[l].ptr;
      batch_tab_host_[(4 * l + 2) * B + b] = st.k[l].ptr;
      batch_tab_host_[(4 * l + 3) * B + b] = st.v[l].ptr;
    }
  for (size_t b = 0; b < B; ++b) batch_tab_host_[4 * L * B + b] = states[b]->pos_dev.ptr;
  // Synchronous on purpose: the host table is rewritten by the next step, and the step ends in a sync anyway.
  CUDA_CHECK(cudaMemcpyAsync(batch_tab_.ptr, batch_tab_host_.data(), n * sizeof(void*),
                             cudaMemcpyHostToDevice, stream_));
  batch_size_ = B;
  batch_layers_ = L;
  batch_max_capacity_ = 0;
  for (const State* st : states) batch_max_capacity_ = std::max(batch_max_capacity_, st->capacity);
}

void** CudaOps::batch_table(size_t layer, int kind) const {
  return batch_tab_.as<void*>() + (4 * layer + static_cast<size_t>(kind)) * batch_size_;
}

void CudaOps::rope_batch(Tensor& x, int heads, int hd, const RopeConfig& r) {
  OpTimer timer_(this, "rope");
  set_rope(hd, r);
  rope_kernel<<<grid_1d(x.rows * heads * hd / 2, 256), 256, 0, stream_>>>(
      reinterpret_cast<bf16*>(x.data), static_cast<int>(x.rows), heads, hd, nullptr,
      reinterpret_cast<const int* const*>(batch_tab_.as<void*>() + 4 * batch_layers_ * batch_size_),
      inv_freq_.as<float>());
  CUDA_CHECK_LAUNCH();
}

void CudaOps::attention_batch(const Tensor& q, const Tensor& k, const Tensor& v, size_t layer, int nh,
                              int nkv, int hd, Tensor& out) {
  OpTimer timer_(this, "attention");
  const int64_t row = static_cast<int64_t>(nkv) * hd;
  const auto pos =
      reinterpret_cast<const int* const*>(batch_tab_.as<void*>() + 4 * batch_layers_ * batch_size_);
  kv_append_batch_kernel<<<grid_1d(k.rows * row, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(k.data), reinterpret_cast<const bf16*>(v.data), static_cast<int>(k.rows),
      row, pos, reinterpret_cast<bf16* const*>(batch_table(layer, 2)),
      reinterpret_cast<bf16* const*>(batch_table(layer, 3)));
  CUDA_CHECK_LAUNCH();
  launch_attention(q, nullptr, nullptr, nullptr,
                   reinterpret_cast<const bf16_raw* const*>(batch_table(layer, 2)),
                   reinterpret_cast<const bf16_raw* const*>(batch_table(layer, 3)), pos, nh, nkv, hd,
                   batch_max_capacity_, out);
}

void CudaOps::conv1d_silu_batch(Tensor& xbc, size_t layer, int kernel, const std::vector<float>& w,
                                const std::vector<float>& b) {
  OpTimer timer_(this, "mamba.conv1d");
  if (kernel > 8)
    throw Error("conv kernel " + std::to_string(kernel) + " > 8 is not supported by the CUDA backend");
  const int ch = static_cast<int>(xbc.cols);
  conv1d_silu_kernel<<<dim3(static_cast<unsigned>((ch + 127) / 128), static_cast<unsigned>(xbc.rows)), 128, 0,
                       stream_>>>(reinterpret_cast<bf16*>(xbc.data), 1, ch, kernel, dev_f32(w),
                                  b.empty() ? nullptr : dev_f32(b), nullptr,
                                  reinterpret_cast<float* const*>(batch_table(layer, 0)));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::ssm_step_batch(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                             const std::vector<float>& a_log, const std::vector<float>& d, size_t layer,
                             cpu::SsmShape sh, Tensor& y) {
  OpTimer timer_(this, "mamba.ssm_scan");
  const int rows = sh.heads * sh.head_dim;
  ssm_step_batch_kernel<<<dim3(static_cast<unsigned>((rows + kSsmStepWarps - 1) / kSsmStepWarps),
                               static_cast<unsigned>(x.rows)),
                          kSsmStepWarps * 32, 0, stream_>>>(
      reinterpret_cast<const bf16*>(x.data), reinterpret_cast<const bf16*>(b.data),
      reinterpret_cast<const bf16*>(c.data), reinterpret_cast<const bf16*>(dt.data), dev_f32(a_log),
      dev_f32(d), sh.heads, sh.head_dim, sh.state, sh.groups,
      reinterpret_cast<float* const*>(batch_table(layer, 1)), reinterpret_cast<bf16*>(y.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::advance_batch(std::span<State* const> states) {
  for (State* st : states) ++st->pos;
  pos_add_batch_kernel<<<grid_1d(static_cast<int64_t>(states.size()), 128), 128, 0, stream_>>>(
      reinterpret_cast<int* const*>(batch_tab_.as<void*>() + 4 * batch_layers_ * batch_size_),
      static_cast<int>(states.size()));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::gated_rmsnorm(Tensor& y, const Tensor& z, const std::vector<float>& w, int groups, float eps) {
  OpTimer timer_(this, "mamba.gated_norm");
  gated_rmsnorm_kernel<<<static_cast<unsigned>(y.rows * groups), 256, 0, stream_>>>(
      reinterpret_cast<bf16*>(y.data), reinterpret_cast<const bf16*>(z.data), dev_f32(w), y.cols, groups,
      eps);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp4lab
