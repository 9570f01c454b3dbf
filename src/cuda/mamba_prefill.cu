// Mamba-2 prefill across tokens: the chunked SSD scan (as in mamba_ssm's ssd_combined: chunk cumsum, chunk
// states, state passing, chunk outputs) and the causal conv1d. The old warp-per-row scan walks every token of
// a row in sequence; here only the state pass between chunks is sequential (t / chunk steps), the rest are
// small matrix products per (chunk, head): on tensor cores where the shapes allow (chunk_state and chunk_out,
// FP32 accumulation), FP32 CUDA-core forms otherwise.
#include "cuda/mamba_prefill.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>

#include "common/error.h"
#include "cuda/check.h"
#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"

namespace fp4lab {

namespace {

using namespace dev;
constexpr int kThreads = 256;
constexpr int kMaxChunk = 128, kMaxState = 128, kMaxHeadDim = 128;
constexpr int kSegTokens = 2048;  // long prompts run in segments of this many tokens (bounded workspace)

// One launch group: `chunks` chunks of up to `chunk` tokens. One sequence (batched = false): chunk ci is
// tokens [ci * chunk, ..) of its t. Several (batched prefill): tab[ci] = {first token row, rows} of chunk
// ci, and sequence s of the group owns chunks seqs[s] = [first, end), its state at states[s]. The tables
// travel in the kernel parameters (__grid_constant__, read in place): no upload per layer.
struct Dims {
  int t, heads, hp, ns, groups, chunk, chunks;
  bool batched = false;
  int2 tab[kSsdMaxGroupChunks] = {};
  int2 seqs[kSsdMaxGroupChunks] = {};
  float* states[kSsdMaxGroupChunks] = {};
  __device__ int hpg() const { return heads / groups; }
  __device__ int2 span(int ci) const {
    return batched ? tab[ci] : make_int2(ci * chunk, min(chunk, t - ci * chunk));
  }
};

// The workspace's lc part, rounded up to whole 16-byte units so that sc after it is aligned for float4.
int64_t lc_floats(int64_t heads, int64_t chunks, int64_t chunk) {
  return (heads * chunks * chunk + 3) / 4 * 4;
}

// Warp 0 of a chunk_state block: the inclusive scan of dt * A over the chunk's q tokens (each lane over
// kMaxChunk / 32 consecutive tokens), into shared lcs and the workspace lc.
__device__ __forceinline__ void chunk_log_decay(const bf16* dt, const float* a_log, const Dims& d, int ci,
                                                int h, int i0, int q, float* lcs, float* lc) {
  const float a = -__expf(a_log[h]);
  constexpr int kPer = kMaxChunk / 32;
  const int lane = threadIdx.x;
  float v[kPer], run = 0.0f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = lane * kPer + k;
    run += i < q ? ld(dt + static_cast<int64_t>(i0 + i) * d.heads + h) * a : 0.0f;
    v[k] = run;
  }
  float before = run;  // exclusive prefix of the lane totals
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const float other = __shfl_up_sync(0xffffffffu, before, o);
    if (lane >= o) before += other;
  }
  before -= run;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = lane * kPer + k;
    if (i < q) {
      lcs[i] = before + v[k];
      lc[(static_cast<int64_t>(h) * d.chunks + ci) * d.chunk + i] = before + v[k];
    }
  }
}

// Per (chunk, head): the cumulative log-decay inside the chunk (lc), and the chunk's own contribution to the
// state at its end, sc[p][n] = sum_j exp(lc[last] - lc[j]) dt_j x_j[p] B_j[n] (a [P x q] . [q x N] product).
// TP: head_dim rows per warp (>= head_dim / 8), fixed at compile time so no FMA slot goes to padding.
template <int TP>
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_state_kernel(const bf16* x, const bf16* b, const bf16* dt, const float* a_log,
                           const __grid_constant__ Dims d, float* lc, float* sc) {
  __shared__ float lcs[kMaxChunk];
  __shared__ float xs[32][kMaxHeadDim];
  __shared__ __align__(16) float bs[32][kMaxState];
  const int ci = blockIdx.x, h = blockIdx.y, g = h / d.hpg();
  const int2 sp = d.span(ci);
  const int i0 = sp.x, q = sp.y;
  const int64_t xw = static_cast<int64_t>(d.heads) * d.hp, bw = static_cast<int64_t>(d.groups) * d.ns;
  if (threadIdx.x < 32) chunk_log_decay(dt, a_log, d, ci, h, i0, q, lcs, lc);
  __syncthreads();
  const float last = lcs[q - 1];
  const int n0 = (threadIdx.x % 32) * 4, pb = threadIdx.x / 32;
  float acc[TP][4] = {};
  for (int j0 = 0; j0 < q; j0 += 32) {
    const int jn = min(32, q - j0);
    for (int e = threadIdx.x; e < jn * d.hp; e += kThreads) {
      const int jj = e / d.hp, p = e % d.hp, j = j0 + jj;
      const float w = __expf(last - lcs[j]) * ld(dt + static_cast<int64_t>(i0 + j) * d.heads + h);
      xs[jj][p] = w * ld(x + static_cast<int64_t>(i0 + j) * xw + static_cast<int64_t>(h) * d.hp + p);
    }
    for (int e = threadIdx.x; e < jn * d.ns; e += kThreads) {
      const int jj = e / d.ns, n = e % d.ns;
      bs[jj][n] = ld(b + static_cast<int64_t>(i0 + j0 + jj) * bw + static_cast<int64_t>(g) * d.ns + n);
    }
    __syncthreads();
    if (n0 < d.ns)
      for (int jj = 0; jj < jn; ++jj) {
        const float4 bv = *reinterpret_cast<const float4*>(&bs[jj][n0]);
#pragma unroll
        for (int k = 0; k < TP; ++k)
          if (pb * TP + k < d.hp) {
            const float a = xs[jj][pb * TP + k];
            acc[k][0] += a * bv.x;
            acc[k][1] += a * bv.y;
            acc[k][2] += a * bv.z;
            acc[k][3] += a * bv.w;
          }
      }
    __syncthreads();
  }
  if (n0 >= d.ns) return;
  float* out = sc + (static_cast<int64_t>(h) * d.chunks + ci) * d.hp * d.ns;
#pragma unroll
  for (int k = 0; k < TP; ++k) {
    const int p = pb * TP + k;
    if (p < d.hp)
      *reinterpret_cast<float4*>(out + static_cast<int64_t>(p) * d.ns + n0) =
          make_float4(acc[k][0], acc[k][1], acc[k][2], acc[k][3]);
  }
}

// chunk_state on tensor cores (head_dim HP of 16 .. 128, state size 128): the same
// [P x q] . [q x N] product as mma.sync m16n8k16 with FP32 accumulation. B is BF16 already (exact); the
// weighted x (w_j x_j[p], FP32) is split into a BF16 high part and a BF16 remainder and both are multiplied,
// so each product keeps ~16 significant bits, FP32-level for the state it feeds (one rounding of the whole
// operand to BF16 would have put 2^-9 errors into the state that every later token reads). 8 warps, each 16
// of the 128 state columns and all HP rows (4 warps, 32 columns each, ran 313 us per 2048-token group with
// only 8 warps per SM to hide the fills' latency).
constexpr int kStateWarps = 8;
template <int HP>
constexpr size_t kChunkStateSmem = (2 * HP * (kMaxChunk + 8) + kMaxChunk * (kMaxState + 8)) * 2;
template <int HP>
__global__ void __launch_bounds__(kStateWarps * 32)
    ssd_chunk_state_mma_kernel(const bf16* x, const bf16* b, const bf16* dt, const float* a_log,
                               const __grid_constant__ Dims d, float* lc, float* sc) {
  constexpr int LDA = kMaxChunk + 8, LDB = kMaxState + 8, MT = HP / 16;  // padded rows: no bank conflicts
  extern __shared__ __align__(16) unsigned char state_smem[];
  bf16* sHi = reinterpret_cast<bf16*>(state_smem);  // [HP][LDA]: row p holds w_j x_j[p] over j, high part
  bf16* sLo = sHi + HP * LDA;                       // [HP][LDA]: its remainder
  bf16* sB = sLo + HP * LDA;                        // [kMaxChunk][LDB]: B rows of the chunk
  __shared__ float lcs[kMaxChunk], ws[kMaxChunk];
  const int ci = blockIdx.x, h = blockIdx.y, g = h / d.hpg();
  const int2 sp = d.span(ci);
  const int i0 = sp.x, q = sp.y, q16 = (q + 15) / 16 * 16;
  const int64_t xw = static_cast<int64_t>(d.heads) * HP, bw = static_cast<int64_t>(d.groups) * d.ns;
  const int tid = threadIdx.x, nthr = kStateWarps * 32;
  if (tid < 32) chunk_log_decay(dt, a_log, d, ci, h, i0, q, lcs, lc);
  __syncthreads();
  const float last = lcs[q - 1];
  for (int j = tid; j < q; j += nthr)
    ws[j] = __expf(last - lcs[j]) * ld(dt + static_cast<int64_t>(i0 + j) * d.heads + h);
  __syncthreads();
  // Rows past the chunk's tokens are zeros on both sides (0 x garbage could be NaN).
  for (int e = tid; e < q16 * (HP / 2); e += nthr) {
    const int j = e / (HP / 2), p = (e % (HP / 2)) * 2;
    float v0 = 0.0f, v1 = 0.0f;
    if (j < q) {
      const __nv_bfloat162 xv = *reinterpret_cast<const __nv_bfloat162*>(
          x + static_cast<int64_t>(i0 + j) * xw + int64_t{h} * HP + p);
      v0 = ws[j] * __low2float(xv);
      v1 = ws[j] * __high2float(xv);
    }
    const bf16 h0 = __float2bfloat16_rn(v0), h1 = __float2bfloat16_rn(v1);
    sHi[p * LDA + j] = h0;
    sHi[(p + 1) * LDA + j] = h1;
    sLo[p * LDA + j] = __float2bfloat16_rn(v0 - __bfloat162float(h0));
    sLo[(p + 1) * LDA + j] = __float2bfloat16_rn(v1 - __bfloat162float(h1));
  }
  const int np2 = d.ns / 2;
  for (int e = tid; e < q16 * np2; e += nthr) {
    const int j = e / np2, n = (e % np2) * 2;
    uint32_t v = 0;
    if (j < q)
      v = *reinterpret_cast<const uint32_t*>(b + static_cast<int64_t>(i0 + j) * bw + int64_t{g} * d.ns + n);
    *reinterpret_cast<uint32_t*>(sB + j * LDB + n) = v;
  }
  __syncthreads();
  const int warp = tid / 32, lane = tid % 32, mi = lane / 8;
  const int n0 = warp * 16;  // this warp's 16 state columns (the state size is 128)
  float acc[MT][2][4] = {};
  for (int ks = 0; ks < q16 / 16; ++ks) {
    uint32_t bf[4];
    ptx::ldmatrix_x4_trans(
        bf, ptx::smem_addr(sB + (ks * 16 + (mi % 2) * 8 + lane % 8) * LDB + n0 + (mi / 2) * 8));
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t ah[4], al[4];
      const int off = (mt * 16 + lane % 16) * LDA + ks * 16 + (lane / 16) * 8;
      ptx::ldmatrix_x4(ah, ptx::smem_addr(sHi + off));
      ptx::ldmatrix_x4(al, ptx::smem_addr(sLo + off));
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        ptx::mma_bf16_16816(acc[mt][nt], ah, bf[2 * nt], bf[2 * nt + 1]);
        ptx::mma_bf16_16816(acc[mt][nt], al, bf[2 * nt], bf[2 * nt + 1]);
      }
    }
  }
  float* out = sc + (static_cast<int64_t>(h) * d.chunks + ci) * HP * d.ns;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int p = mt * 16 + lane / 4 + half * 8, n = n0 + nt * 8 + (lane % 4) * 2;
        *reinterpret_cast<float2*>(out + static_cast<int64_t>(p) * d.ns + n) =
            make_float2(acc[mt][nt][half * 2], acc[mt][nt][half * 2 + 1]);
      }
}

// Sequential over a sequence's chunks, parallel over every state entry (and, batched, over the sequences:
// blockIdx.y): sc[chunk] becomes the state entering that chunk; the state ends as the state after the
// sequence's last token of the group.
// Four consecutive entries per thread (float4; the state size is a multiple of 4). A thread's chunk
// contributions and decays, kPassChunks at a time, are all loaded before the chain that uses them (they do
// not depend on it), so the chain is arithmetic: loading them one step at a time cost a memory round trip per
// chunk (ncu, H200: 875 us per layer for a 2048-token prompt's 16 chunks).
constexpr int kPassChunks = 16;
__global__ void ssd_state_pass_kernel(const __grid_constant__ Dims d, const float* lc, float* sc,
                                      float* state) {
  const int64_t pn = static_cast<int64_t>(d.hp) * d.ns;
  const int64_t idx = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) * 4;
  if (idx >= d.heads * pn) return;
  const int h = static_cast<int>(idx / pn);
  const int64_t rem = idx % pn;
  int c0 = 0, c1 = d.chunks;
  if (d.batched) {
    c0 = d.seqs[blockIdx.y].x;
    c1 = d.seqs[blockIdx.y].y;
    state = d.states[blockIdx.y];
  }
  float4 run = *reinterpret_cast<const float4*>(state + idx);
  for (int cb = c0; cb < c1; cb += kPassChunks) {
    const int n = min(kPassChunks, c1 - cb);
    float4 own[kPassChunks];
    float decay[kPassChunks];
#pragma unroll
    for (int k = 0; k < kPassChunks; ++k)
      if (k < n) {
        const int ci = cb + k;
        own[k] = *reinterpret_cast<const float4*>(sc + (static_cast<int64_t>(h) * d.chunks + ci) * pn + rem);
        decay[k] = __expf(lc[(static_cast<int64_t>(h) * d.chunks + ci) * d.chunk + d.span(ci).y - 1]);
      }
#pragma unroll
    for (int k = 0; k < kPassChunks; ++k)
      if (k < n) {
        *reinterpret_cast<float4*>(sc + (static_cast<int64_t>(h) * d.chunks + cb + k) * pn + rem) = run;
        run.x = run.x * decay[k] + own[k].x;
        run.y = run.y * decay[k] + own[k].y;
        run.z = run.z * decay[k] + own[k].z;
        run.w = run.w * decay[k] + own[k].w;
      }
  }
  *reinterpret_cast<float4*>(state + idx) = run;
}

// Per (chunk, group): C_i . B_j for every pair of the chunk, shared by the group's heads.
__global__ void __launch_bounds__(kThreads)
    ssd_cb_kernel(const bf16* b, const bf16* c, const __grid_constant__ Dims d, float* cb) {
  __shared__ float cs[kMaxChunk][33], bsh[kMaxChunk][33];
  const int ci = blockIdx.x, g = blockIdx.y;
  const int2 sp = d.span(ci);
  const int i0 = sp.x, q = sp.y;
  const int64_t bw = static_cast<int64_t>(d.groups) * d.ns;
  const int ti = threadIdx.x / 16, tj = threadIdx.x % 16, ra = (d.chunk + 15) / 16;
  float acc[8][8] = {};
  for (int n0 = 0; n0 < d.ns; n0 += 32) {
    for (int e = threadIdx.x; e < d.chunk * 32; e += kThreads) {
      const int i = e / 32, nn = e % 32, n = n0 + nn;
      const bool ok = i < q && n < d.ns;
      const int64_t off = static_cast<int64_t>(i0 + i) * bw + static_cast<int64_t>(g) * d.ns + n;
      cs[i][nn] = ok ? ld(c + off) : 0.0f;
      bsh[i][nn] = ok ? ld(b + off) : 0.0f;
    }
    __syncthreads();
    for (int nn = 0; nn < 32; ++nn) {
      float cv[8], bv[8];
#pragma unroll
      for (int a = 0; a < 8; ++a) {
        cv[a] = a < ra && ti + 16 * a < d.chunk ? cs[ti + 16 * a][nn] : 0.0f;
        bv[a] = a < ra && tj + 16 * a < d.chunk ? bsh[tj + 16 * a][nn] : 0.0f;
      }
#pragma unroll
      for (int a = 0; a < 8; ++a)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[a][e] += cv[a] * bv[e];
    }
    __syncthreads();
  }
  float* out = cb + (static_cast<int64_t>(g) * d.chunks + ci) * d.chunk * d.chunk;
#pragma unroll
  for (int a = 0; a < 8; ++a)
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int i = ti + 16 * a, j = tj + 16 * e;
      if (a < ra && e < ra && i < d.chunk && j < d.chunk) out[i * d.chunk + j] = acc[a][e];
    }
}

// Per (chunk, head, 64-row slice of the chunk): y_i = exp(lc_i) C_i . S_in + sum_{j <= i} exp(lc_i - lc_j)
// (C_i . B_j) dt_j x_j + D x_i.
// KP: head_dim columns per thread (>= head_dim / 16), fixed at compile time like chunk_state's TP.
template <int KP>
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_out_kernel(const bf16* x, const bf16* c, const bf16* dt, const float* dvec,
                         const __grid_constant__ Dims d, const float* lc, const float* sc, const float* cb,
                         bf16* y) {
  __shared__ float lcs[kMaxChunk], dts[kMaxChunk];
  __shared__ float r1[64][33];            // C rows, then the decay-masked C.B rows
  __shared__ float r2[kMaxHeadDim * 33];  // S_in [P][33], then x rows [32][P + 1]
  const int ci = blockIdx.x, h = blockIdx.y, g = h / d.hpg(), rb = blockIdx.z * 64;
  const int2 sp = d.span(ci);
  const int i0 = sp.x, q = sp.y;
  if (rb >= q) return;
  const int64_t xw = static_cast<int64_t>(d.heads) * d.hp, bw = static_cast<int64_t>(d.groups) * d.ns;
  for (int i = threadIdx.x; i < q; i += kThreads) {
    lcs[i] = lc[(static_cast<int64_t>(h) * d.chunks + ci) * d.chunk + i];
    dts[i] = ld(dt + static_cast<int64_t>(i0 + i) * d.heads + h);
  }
  const int ri = threadIdx.x / 16, pj = threadIdx.x % 16;
  const int rows = min(64, q - rb);
  float acc[4][KP] = {};
  // Inter-chunk: C_i . S_in[p], over the state in slices of 32.
  const float* sin = sc + (static_cast<int64_t>(h) * d.chunks + ci) * d.hp * d.ns;
  for (int n0 = 0; n0 < d.ns; n0 += 32) {
    __syncthreads();
    for (int e = threadIdx.x; e < 64 * 32; e += kThreads) {
      const int r = e / 32, nn = e % 32, n = n0 + nn;
      r1[r][nn] = r < rows && n < d.ns
                      ? ld(c + static_cast<int64_t>(i0 + rb + r) * bw + static_cast<int64_t>(g) * d.ns + n)
                      : 0.0f;
    }
    for (int e = threadIdx.x; e < d.hp * 32; e += kThreads) {
      const int p = e / 32, nn = e % 32, n = n0 + nn;
      r2[p * 33 + nn] = n < d.ns ? sin[static_cast<int64_t>(p) * d.ns + n] : 0.0f;
    }
    __syncthreads();
    for (int nn = 0; nn < 32; ++nn) {
      float cv[4], sv[KP];
#pragma unroll
      for (int a = 0; a < 4; ++a) cv[a] = r1[ri + 16 * a][nn];
#pragma unroll
      for (int k = 0; k < KP; ++k) sv[k] = pj + 16 * k < d.hp ? r2[(pj + 16 * k) * 33 + nn] : 0.0f;
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int k = 0; k < KP; ++k) acc[a][k] += cv[a] * sv[k];
    }
  }
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int r = ri + 16 * a;
    const float f = r < rows ? __expf(lcs[rb + r]) : 0.0f;
#pragma unroll
    for (int k = 0; k < KP; ++k) acc[a][k] *= f;
  }
  // Intra-chunk: the causal, decay-weighted C.B against the chunk's inputs, keys in slices of 32.
  const float* cbg = cb + (static_cast<int64_t>(g) * d.chunks + ci) * d.chunk * d.chunk;
  const int jmax = rb + rows;
  for (int j0 = 0; j0 < jmax; j0 += 32) {
    __syncthreads();
    for (int e = threadIdx.x; e < 64 * 32; e += kThreads) {
      const int r = e / 32, jj = e % 32, i = rb + r, j = j0 + jj;
      r1[r][jj] =
          r < rows && j <= i && j < q ? cbg[i * d.chunk + j] * __expf(lcs[i] - lcs[j]) * dts[j] : 0.0f;
    }
    for (int e = threadIdx.x; e < 32 * d.hp; e += kThreads) {
      const int jj = e / d.hp, p = e % d.hp, j = j0 + jj;
      r2[jj * (d.hp + 1) + p] =
          j < q ? ld(x + static_cast<int64_t>(i0 + j) * xw + static_cast<int64_t>(h) * d.hp + p) : 0.0f;
    }
    __syncthreads();
    for (int jj = 0; jj < 32; ++jj) {
      float mv[4], xv[KP];
#pragma unroll
      for (int a = 0; a < 4; ++a) mv[a] = r1[ri + 16 * a][jj];
#pragma unroll
      for (int k = 0; k < KP; ++k) xv[k] = pj + 16 * k < d.hp ? r2[jj * (d.hp + 1) + pj + 16 * k] : 0.0f;
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int k = 0; k < KP; ++k) acc[a][k] += mv[a] * xv[k];
    }
  }
  const float dh = dvec[h];
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int r = ri + 16 * a;
    if (r >= rows) continue;
    const int64_t row = static_cast<int64_t>(i0 + rb + r) * xw + static_cast<int64_t>(h) * d.hp;
#pragma unroll
    for (int k = 0; k < KP; ++k) {
      const int p = pj + 16 * k;
      if (p < d.hp) y[row + p] = __float2bfloat16_rn(acc[a][k] + dh * ld(x + row + p));
    }
  }
}

// The same output on tensor cores (mma.sync m16n8k16, BF16 operands, FP32 accumulation), for head_dim HP and
// state sizes that are multiples of 16: 4 warps x 16 rows of the 64-row slice, HP / 8 column tiles each. The
// two products are the intra-kernel GEMMs of the FP32 form: C . S_in^T (S_in rounded to BF16 on its way into
// shared memory) and the decay-masked C.B (computed in FP32, rounded to BF16) times the chunk's x. The state
// itself stays FP32 (the state pass, and chunk_state's split operands); only y, a BF16 output, sees the
// rounding.
constexpr int kOutWarps = 4;
template <int HP>
constexpr size_t kChunkOutSmem = (64 * (kMaxChunk + 8) + HP * (kMaxState + 8) + kMaxChunk * (HP + 8)) * 2;
template <int HP>
__global__ void __launch_bounds__(kOutWarps * 32)
    ssd_chunk_out_mma_kernel(const bf16* x, const bf16* c, const bf16* dt, const float* dvec,
                             const __grid_constant__ Dims d, const float* lc, const float* sc,
                             const float* cb, bf16* y) {
  constexpr int LDA = kMaxChunk + 8, LDS = kMaxState + 8, LDX = HP + 8;  // padded rows: no bank conflicts
  extern __shared__ __align__(16) unsigned char out_smem[];
  bf16* sA = reinterpret_cast<bf16*>(out_smem);  // [64][LDA]: C rows, then the masked C.B rows
  bf16* sS = sA + 64 * LDA;                      // [HP][LDS]: S_in, row p holds state entries n
  bf16* sX = sS + HP * LDS;                      // [kMaxChunk][LDX]: x rows of the chunk
  __shared__ float lcs[kMaxChunk], dts[kMaxChunk];
  const int ci = blockIdx.x, h = blockIdx.y, g = h / d.hpg(), rb = blockIdx.z * 64;
  const int2 sp = d.span(ci);
  const int i0 = sp.x, q = sp.y;
  if (rb >= q) return;
  const int64_t xw = static_cast<int64_t>(d.heads) * HP, bw = static_cast<int64_t>(d.groups) * d.ns;
  const int rows = min(64, q - rb), jmax = rb + rows, j16 = (jmax + 15) / 16 * 16;
  const int tid = threadIdx.x, nthr = kOutWarps * 32;
  for (int i = tid; i < q; i += nthr) {
    lcs[i] = lc[(static_cast<int64_t>(h) * d.chunks + ci) * d.chunk + i];
    dts[i] = ld(dt + static_cast<int64_t>(i0 + i) * d.heads + h);
  }
  // C rows of the slice (zero past the chunk), pairs of BF16 at a time.
  const int np2 = d.ns / 2;
  for (int e = tid; e < 64 * np2; e += nthr) {
    const int r = e / np2, n = (e % np2) * 2;
    uint32_t v = 0;
    if (r < rows)
      v = *reinterpret_cast<const uint32_t*>(c + static_cast<int64_t>(i0 + rb + r) * bw +
                                             static_cast<int64_t>(g) * d.ns + n);
    *reinterpret_cast<uint32_t*>(sA + r * LDA + n) = v;
  }
  const float* sin = sc + (static_cast<int64_t>(h) * d.chunks + ci) * HP * d.ns;
  for (int e = tid; e < HP * np2; e += nthr) {
    const int p = e / np2, n = (e % np2) * 2;
    const float2 v = *reinterpret_cast<const float2*>(sin + static_cast<int64_t>(p) * d.ns + n);
    *reinterpret_cast<__nv_bfloat162*>(sS + p * LDS + n) = __floats2bfloat162_rn(v.x, v.y);
  }
  for (int e = tid; e < j16 * (HP / 2);
       e += nthr) {  // rows past the keys are zeros: 0 x garbage could be NaN
    const int j = e / (HP / 2), p = (e % (HP / 2)) * 2;
    uint32_t v = 0;
    if (j < jmax)
      v = *reinterpret_cast<const uint32_t*>(x + static_cast<int64_t>(i0 + j) * xw +
                                             static_cast<int64_t>(h) * HP + p);
    *reinterpret_cast<uint32_t*>(sX + j * LDX + p) = v;
  }
  __syncthreads();
  const int warp = tid / 32, lane = tid % 32, mi = lane / 8;
  float acc1[HP / 8][4] = {}, acc2[HP / 8][4] = {};
  for (int ks = 0; ks < d.ns / 16; ++ks) {  // C . S_in^T over the state
    uint32_t a[4];
    ptx::ldmatrix_x4(a, ptx::smem_addr(sA + (warp * 16 + lane % 16) * LDA + ks * 16 + (lane / 16) * 8));
#pragma unroll
    for (int np = 0; np < HP / 16; ++np) {
      uint32_t b[4];
      ptx::ldmatrix_x4(
          b, ptx::smem_addr(sS + (np * 16 + (mi / 2) * 8 + lane % 8) * LDS + ks * 16 + (mi % 2) * 8));
      ptx::mma_bf16_16816(acc1[2 * np], a, b[0], b[1]);
      ptx::mma_bf16_16816(acc1[2 * np + 1], a, b[2], b[3]);
    }
  }
  __syncthreads();  // sA is rewritten with the masked C.B rows
  const float* cbg = cb + (static_cast<int64_t>(g) * d.chunks + ci) * d.chunk * d.chunk;
  for (int e = tid; e < 64 * j16; e += nthr) {
    const int r = e / j16, j = e % j16, i = rb + r;
    const float m = r < rows && j <= i ? cbg[i * d.chunk + j] * __expf(lcs[i] - lcs[j]) * dts[j] : 0.0f;
    sA[r * LDA + j] = __float2bfloat16_rn(m);
  }
  __syncthreads();
  // Causal: this warp's rows see keys below rb + warp * 16 + 16 only.
  const int kk_end = min(j16, rb + warp * 16 + 16) / 16;
  for (int kk = 0; kk < kk_end; ++kk) {
    uint32_t a[4];
    ptx::ldmatrix_x4(a, ptx::smem_addr(sA + (warp * 16 + lane % 16) * LDA + kk * 16 + (lane / 16) * 8));
#pragma unroll
    for (int dp = 0; dp < HP / 16; ++dp) {
      uint32_t b[4];
      ptx::ldmatrix_x4_trans(
          b, ptx::smem_addr(sX + (kk * 16 + (mi % 2) * 8 + lane % 8) * LDX + dp * 16 + (mi / 2) * 8));
      ptx::mma_bf16_16816(acc2[2 * dp], a, b[0], b[1]);
      ptx::mma_bf16_16816(acc2[2 * dp + 1], a, b[2], b[3]);
    }
  }
  const float dh = dvec[h];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = warp * 16 + lane / 4 + half * 8;
    if (r >= rows) continue;
    const int i = rb + r;
    const float f = __expf(lcs[i]);
    const int64_t row = static_cast<int64_t>(i0 + i) * xw + static_cast<int64_t>(h) * HP;
#pragma unroll
    for (int nt = 0; nt < HP / 8; ++nt) {
      const int p = nt * 8 + (lane % 4) * 2;
      const __nv_bfloat162 xv = *reinterpret_cast<const __nv_bfloat162*>(x + row + p);
      const float v0 = acc1[nt][half * 2] * f + acc2[nt][half * 2] + dh * __low2float(xv);
      const float v1 = acc1[nt][half * 2 + 1] * f + acc2[nt][half * 2 + 1] + dh * __high2float(xv);
      *reinterpret_cast<__nv_bfloat162*>(y + row + p) = __floats2bfloat162_rn(v0, v1);
    }
  }
}

// One thread per (channel, run of kConvRun tokens) of one sequence (blockIdx.z picks it from the table): the
// last K - 1 inputs slide through registers, so each input is read once per run and each output costs K FMAs
// (one thread per output with the taps re-read took 17 µs per 128 tokens x 12288 channels on the H200). Taps
// before the sequence's first token come from its rolling state.
constexpr int kConvRun = 16;
struct ConvGroup {
  ConvSeq seq[kConvMaxSeqs];
};
template <int K>
__global__ void __launch_bounds__(kThreads)
    conv1d_prefill_kernel(const bf16* __restrict__ in, int ch, const float* __restrict__ w,
                          const float* __restrict__ bias, const __grid_constant__ ConvGroup g,
                          bf16* __restrict__ out) {
  constexpr int H = K - 1;
  const ConvSeq& sq = g.seq[blockIdx.z];
  const int c = blockIdx.x * blockDim.x + threadIdx.x, i0 = blockIdx.y * kConvRun;
  if (c >= ch || i0 >= sq.rows) return;
  float wk[K];
#pragma unroll
  for (int k = 0; k < K; ++k) wk[k] = w[c * K + k];
  const float b0 = bias ? bias[c] : 0.0f;
  const bf16* src = in + sq.row0 * ch + c;
  bf16* dst = out + sq.row0 * ch + c;
  float win[H > 0 ? H : 1];
#pragma unroll
  for (int j = 0; j < H; ++j) {
    const int i = i0 - H + j;
    win[j] = i >= 0 ? ld(src + static_cast<int64_t>(i) * ch) : sq.state[c * H + H + i];
  }
  const int n = min(kConvRun, sq.rows - i0);
  for (int r = 0; r < n; ++r) {
    const float x = ld(src + static_cast<int64_t>(i0 + r) * ch);
    float acc = b0 + wk[H] * x;
#pragma unroll
    for (int j = 0; j < H; ++j) acc += wk[j] * win[j];
    dst[static_cast<int64_t>(i0 + r) * ch] = __float2bfloat16_rn(silu(acc));
#pragma unroll
    for (int j = 0; j + 1 < H; ++j) win[j] = win[j + 1];
    if constexpr (H > 0) win[H - 1] = x;
  }
}

// After the outputs: each sequence's state becomes the last kernel - 1 inputs of (old state ++ its new
// tokens), oldest first. Entry j reads old entry rows + j > j, so walking j upwards in one thread is safe in
// place.
__global__ void conv1d_state_kernel(const bf16* in, int ch, int hist, const __grid_constant__ ConvGroup g) {
  const ConvSeq& sq = g.seq[blockIdx.y];
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= ch) return;
  const int t = sq.rows;
  for (int j = 0; j < hist; ++j)
    sq.state[c * hist + j] =
        t + j < hist ? sq.state[c * hist + t + j] : ld(in + (sq.row0 + t + j - hist) * int64_t{ch} + c);
}

unsigned grid_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

// The head dims the tensor-core kernels are built for (the FP32 kernels run the others).
template <class F>
bool with_mma_head_dim(int hp, F&& f) {
  return with_value<16, 32, 64, 80, 128>(hp, std::forward<F>(f));
}

// The four kernels of one launch group; x / b / c / dt / y point at the group's first token row (one
// sequence) or at row 0 (batched: the tables hold absolute rows). The per-thread tile widths are the
// smallest instantiated ones that cover head_dim (80 for Nemotron-H: 10 and 5).
template <int TP, int KP>
void launch_group_as(const bf16* x, const bf16* b, const bf16* c, const bf16* dt, const float* a_log,
                     const float* dvec, const Dims& d, int nseq, float* state, void* workspace, bf16* y,
                     cudaStream_t stream) {
  float* lc = static_cast<float*>(workspace);
  float* sc = lc + lc_floats(d.heads, d.chunks, d.chunk);  // 16-byte aligned: the state pass reads float4
  float* cb = sc + int64_t{d.heads} * d.chunks * d.hp * d.ns;
  // The tensor-core chunk_state where the shapes allow it (state size 128: a 16-column slice per warp).
  auto mma_state = [&](auto kernel, size_t smem) {
    allow_dynamic_smem(kernel, smem);
    kernel<<<dim3(d.chunks, d.heads), kStateWarps * 32, smem, stream>>>(x, b, dt, a_log, d, lc, sc);
  };
  const bool state_mma = d.ns == 128 && d.chunk <= kMaxChunk && reinterpret_cast<uintptr_t>(x) % 4 == 0 &&
                         reinterpret_cast<uintptr_t>(b) % 4 == 0;
  if (!state_mma || !with_mma_head_dim(d.hp, [&](auto hp) {
        mma_state(ssd_chunk_state_mma_kernel<hp.value>, kChunkStateSmem<hp.value>);
      }))
    ssd_chunk_state_kernel<TP><<<dim3(d.chunks, d.heads), kThreads, 0, stream>>>(x, b, dt, a_log, d, lc, sc);
  CUDA_CHECK_LAUNCH();
  ssd_cb_kernel<<<dim3(d.chunks, d.groups), kThreads, 0, stream>>>(b, c, d, cb);
  CUDA_CHECK_LAUNCH();
  ssd_state_pass_kernel<<<dim3(grid_for(int64_t{d.heads} * d.hp * d.ns / 4), static_cast<unsigned>(nseq)),
                          kThreads, 0, stream>>>(d, lc, sc, state);
  CUDA_CHECK_LAUNCH();
  const dim3 out_grid(d.chunks, d.heads, (d.chunk + 63) / 64);
  auto mma_out = [&](auto kernel, size_t smem) {
    allow_dynamic_smem(kernel, smem);
    kernel<<<out_grid, kOutWarps * 32, smem, stream>>>(x, c, dt, dvec, d, lc, sc, cb, y);
  };
  // The tensor-core form where the shapes allow it (16-multiples; BF16 pairs need even offsets).
  const bool mma_ok = d.ns % 16 == 0 && d.chunk <= kMaxChunk && reinterpret_cast<uintptr_t>(c) % 4 == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 4 == 0 &&
                      (d.groups * d.ns) % 2 == 0;
  if (!mma_ok || !with_mma_head_dim(d.hp, [&](auto hp) {
        mma_out(ssd_chunk_out_mma_kernel<hp.value>, kChunkOutSmem<hp.value>);
      }))
    ssd_chunk_out_kernel<KP><<<out_grid, kThreads, 0, stream>>>(x, c, dt, dvec, d, lc, sc, cb, y);
  CUDA_CHECK_LAUNCH();
}

void launch_group(const bf16_raw* x_raw, const bf16_raw* b_raw, const bf16_raw* c_raw, const bf16_raw* dt_raw,
                  const float* a_log, const float* dvec, const Dims& d, int nseq, float* state,
                  void* workspace, bf16_raw* y_raw, cudaStream_t stream) {
  const auto* x = reinterpret_cast<const bf16*>(x_raw);
  const auto* b = reinterpret_cast<const bf16*>(b_raw);
  const auto* c = reinterpret_cast<const bf16*>(c_raw);
  const auto* dt = reinterpret_cast<const bf16*>(dt_raw);
  auto* y = reinterpret_cast<bf16*>(y_raw);
  if (d.hp <= 32)
    launch_group_as<4, 2>(x, b, c, dt, a_log, dvec, d, nseq, state, workspace, y, stream);
  else if (d.hp <= 64)
    launch_group_as<8, 4>(x, b, c, dt, a_log, dvec, d, nseq, state, workspace, y, stream);
  else if (d.hp <= 80)
    launch_group_as<10, 5>(x, b, c, dt, a_log, dvec, d, nseq, state, workspace, y, stream);
  else
    launch_group_as<16, 8>(x, b, c, dt, a_log, dvec, d, nseq, state, workspace, y, stream);
}

}  // namespace

bool ssd_chunked_supported(const cpu::SsmShape& s, int chunk) {
  return s.state <= kMaxState && s.state % 4 == 0 && s.head_dim <= kMaxHeadDim && chunk >= 1 &&
         chunk <= kMaxChunk && s.groups > 0 && s.heads % s.groups == 0;
}

size_t ssd_workspace_bytes(int t, const cpu::SsmShape& s, int chunk) {
  const int seg = std::min(t, std::max(chunk, kSegTokens / chunk * chunk));
  return ssd_workspace_bytes_chunks((seg + chunk - 1) / chunk, s, chunk);
}

int ssd_group_chunks(int chunk) {
  return std::clamp(kSegTokens / chunk, 1, kSsdMaxGroupChunks);
}

size_t ssd_workspace_bytes_chunks(int64_t chunks, const cpu::SsmShape& s, int chunk) {
  const int64_t floats = lc_floats(s.heads, chunks, chunk)                   // lc
                         + int64_t{s.heads} * chunks * s.head_dim * s.state  // sc
                         + int64_t{s.groups} * chunks * chunk * chunk;       // cb
  return static_cast<size_t>(floats) * sizeof(float);
}

namespace {
void require_chunked_supported(const cpu::SsmShape& s, int chunk) {
  if (!ssd_chunked_supported(s, chunk))
    throw Error("chunked SSD scan: state " + std::to_string(s.state) + ", head_dim " +
                std::to_string(s.head_dim) + ", chunk " + std::to_string(chunk) + " not supported");
}
}  // namespace

void ssd_chunked_scan(const bf16_raw* x, const bf16_raw* b, const bf16_raw* c, const bf16_raw* dt,
                      const float* a_log, const float* dvec, int t, const cpu::SsmShape& s, int chunk,
                      float* state, bf16_raw* y, void* workspace, cudaStream_t stream) {
  require_chunked_supported(s, chunk);
  const int seg = std::max(chunk, kSegTokens / chunk * chunk);
  const int64_t xw = int64_t{s.heads} * s.head_dim, bw = int64_t{s.groups} * s.state;
  for (int t0 = 0; t0 < t; t0 += seg) {
    Dims d{std::min(seg, t - t0), s.heads, s.head_dim, s.state, s.groups, chunk, 0};
    d.chunks = (d.t + chunk - 1) / chunk;
    const bf16_raw *xs = x + t0 * xw, *bs = b + t0 * bw, *cs = c + t0 * bw, *dts = dt + int64_t{t0} * s.heads;
    launch_group(xs, bs, cs, dts, a_log, dvec, d, 1, state, workspace, y + t0 * xw, stream);
  }
}

SsdBatchPlan plan_ssd_batch(std::span<const int> rows, int chunk, int group_chunks) {
  if (chunk < 1 || group_chunks < 1 || group_chunks > kSsdMaxGroupChunks)
    throw Error("chunked SSD scan: chunk " + std::to_string(chunk) + " or launch group of " +
                std::to_string(group_chunks) + " chunks out of range");
  SsdBatchPlan p;
  int row0 = 0;
  for (size_t sq = 0; sq < rows.size(); ++sq) {
    for (int i = 0; i < rows[sq]; i += chunk) {
      if (p.groups.empty() || p.groups.back().chunk_end - p.groups.back().chunk_begin == group_chunks) {
        const int c = static_cast<int>(p.chunks.size());
        p.groups.push_back({c, c, static_cast<int>(p.seqs.size()), static_cast<int>(p.seqs.size())});
      }
      SsdBatchPlan::Group& g = p.groups.back();
      // A sequence cut by a group boundary gets an entry in both groups: the second continues from the state
      // the first one left.
      if (g.seq_end == g.seq_begin ||
          p.seq_index[static_cast<size_t>(g.seq_end - 1)] != static_cast<int>(sq)) {
        p.seqs.push_back({g.chunk_end - g.chunk_begin, g.chunk_end - g.chunk_begin});
        p.seq_index.push_back(static_cast<int>(sq));
        ++g.seq_end;
      }
      p.chunks.push_back({row0 + i, std::min(chunk, rows[sq] - i)});
      ++g.chunk_end;
      ++p.seqs.back().y;
    }
    row0 += rows[sq];
  }
  return p;
}

void ssd_chunked_scan_batch(const bf16_raw* x, const bf16_raw* b, const bf16_raw* c, const bf16_raw* dt,
                            const float* a_log, const float* dvec, const SsdBatchPlan& p,
                            std::span<float* const> states, const cpu::SsmShape& s, int chunk, bf16_raw* y,
                            void* workspace, cudaStream_t stream) {
  require_chunked_supported(s, chunk);
  for (const auto& g : p.groups) {
    Dims d{0, s.heads, s.head_dim, s.state, s.groups, chunk, g.chunk_end - g.chunk_begin};
    const int nseq = g.seq_end - g.seq_begin;
    if (d.chunks > kSsdMaxGroupChunks || nseq > kSsdMaxGroupChunks)
      throw Error("internal: chunked-scan launch group larger than " + std::to_string(kSsdMaxGroupChunks));
    d.batched = true;
    for (int i = 0; i < d.chunks; ++i) d.tab[i] = p.chunks[static_cast<size_t>(g.chunk_begin + i)];
    for (int i = 0; i < nseq; ++i) {
      d.seqs[i] = p.seqs[static_cast<size_t>(g.seq_begin + i)];
      d.states[i] = states[static_cast<size_t>(p.seq_index[static_cast<size_t>(g.seq_begin + i)])];
    }
    launch_group(x, b, c, dt, a_log, dvec, d, nseq, nullptr, workspace, y, stream);
  }
}

void causal_conv1d_silu_prefill(const bf16_raw* in, int t, int ch, int kernel, const float* w,
                                const float* bias, float* state, bf16_raw* out, cudaStream_t stream) {
  const ConvSeq one{0, t, state};
  causal_conv1d_silu_prefill_batch(in, std::span(&one, 1), ch, kernel, w, bias, out, stream);
}

namespace {
template <int K>
void launch_conv(const bf16* in, const ConvGroup& g, int n, int most, int ch, const float* w,
                 const float* bias, bf16* out, cudaStream_t stream) {
  const dim3 grid((ch + kThreads - 1) / kThreads, static_cast<unsigned>((most + kConvRun - 1) / kConvRun),
                  static_cast<unsigned>(n));
  conv1d_prefill_kernel<K><<<grid, kThreads, 0, stream>>>(in, ch, w, bias, g, out);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void causal_conv1d_silu_prefill_batch(const bf16_raw* in_raw, std::span<const ConvSeq> seqs, int ch,
                                      int kernel, const float* w, const float* bias, bf16_raw* out_raw,
                                      cudaStream_t stream) {
  if (kernel < 1 || kernel > 8) throw Error("conv1d: kernel " + std::to_string(kernel) + " is not in 1..8");
  const auto* in = reinterpret_cast<const bf16*>(in_raw);
  auto* out = reinterpret_cast<bf16*>(out_raw);
  for (size_t s0 = 0; s0 < seqs.size(); s0 += kConvMaxSeqs) {
    ConvGroup g{};
    const int n = static_cast<int>(std::min<size_t>(kConvMaxSeqs, seqs.size() - s0));
    int most = 1;
    for (int i = 0; i < n; ++i) {
      g.seq[i] = seqs[s0 + static_cast<size_t>(i)];
      most = std::max(most, g.seq[i].rows);
    }
    with_value<1, 2, 3, 4, 5, 6, 7, 8>(kernel, [&](auto k) {  // 1..8, checked above
      launch_conv<k.value>(in, g, n, most, ch, w, bias, out, stream);
    });
    if (kernel > 1) {
      conv1d_state_kernel<<<dim3((ch + kThreads - 1) / kThreads, static_cast<unsigned>(n)), kThreads, 0,
                            stream>>>(in, ch, kernel - 1, g);
      CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace fp4lab
