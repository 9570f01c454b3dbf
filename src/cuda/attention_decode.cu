// Decode-time attention of the CUDA engine backend (one block per query head and key split, flash-decoding
// combine), RoPE, and the KV-cache bookkeeping. Prefill attention runs on tensor cores in
// sm80_flash_attention.cu. CPU twin: cpu::attention, cpu::rope_apply.
#include "cuda/attention_decode.h"

#include "common/error.h"
#include "cuda/check.h"
#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"

#include <cmath>

namespace fp4lab {

using namespace dev;

// Rotary embedding of the pair (a, b) = (x[f], x[f + hd/2]) by the angle whose cosine and sine are (cs, sn),
// with the roundings pinned (explicit products and fused multiply-adds), so that every kernel that rotates
// gets the same bits.
__device__ __forceinline__ float2 rope_pair(float a, float b, float cs, float sn) {
  return make_float2(__fmaf_rn(a, cs, -__fmul_rn(b, sn)), __fmaf_rn(b, cs, __fmul_rn(a, sn)));
}

// The first step of attention for t new rows: RoPE on q (in place) and k, and k, v appended to the KV
// cache, in one launch (three before). One sequence: row tt sits at position *pos_one + tt, caches kc/vc.
// Batched decode (pos_tab set): row tt is one token of sequence tt, with its own position and caches.
// inv_freq == nullptr: no rotary embedding (Nemotron-H attention). One thread per (row, head slot, pair f):
// head slots [0, nh) are q, [nh, nh + nkv) k, then nkv of v (copied, pairs f and f + hd/2).
__global__ void rope_kv_append_kernel(bf16* q, const bf16* k, const bf16* v, int t, int nh, int nkv, int hd,
                                      const float* inv_freq, const int* pos_one, const int* const* pos_tab,
                                      bf16* kc_one, bf16* vc_one, bf16* const* kc_tab, bf16* const* vc_tab) {
  ptx::griddep_enter();
  const int half = hd / 2, slots = nh + 2 * nkv;
  const int64_t n = static_cast<int64_t>(t) * slots * half;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int f = static_cast<int>(i % half);
    const int slot = static_cast<int>((i / half) % slots);
    const int tt = static_cast<int>(i / (int64_t{half} * slots));
    const int pos = pos_tab ? *pos_tab[tt] : *pos_one + tt;
    const int64_t kv_row = static_cast<int64_t>(nkv) * hd;
    if (slot >= nh + nkv) {  // v: copied
      const int64_t src = tt * kv_row + static_cast<int64_t>(slot - nh - nkv) * hd + f;
      bf16* vc = (pos_tab ? vc_tab[tt] : vc_one) + static_cast<int64_t>(pos) * kv_row + (src - tt * kv_row);
      vc[0] = v[src];
      vc[half] = v[src + half];
      continue;
    }
    const bool is_q = slot < nh;
    const bf16* src = is_q ? q + (static_cast<int64_t>(tt) * nh + slot) * hd
                           : k + tt * kv_row + static_cast<int64_t>(slot - nh) * hd;
    float a = ld(src + f), b = ld(src + f + half);
    if (inv_freq) {
      float sn, cs;
      sincosf(static_cast<float>(pos) * inv_freq[f], &sn, &cs);
      const float2 r = rope_pair(a, b, cs, sn);
      a = r.x, b = r.y;
    }
    bf16* dst = is_q ? q + (static_cast<int64_t>(tt) * nh + slot) * hd
                     : (pos_tab ? kc_tab[tt] : kc_one) + static_cast<int64_t>(pos) * kv_row +
                           static_cast<int64_t>(slot - nh) * hd;
    dst[f] = __float2bfloat16_rn(a);
    dst[f + half] = __float2bfloat16_rn(b);
  }
}

// The cache and the key range [lo, hi) of one split for query row tt: batched rows are one new token of their
// own sequence (tables indexed by tt), otherwise row tt of one sequence sits at position *pos_one + tt. Split
// sizes are whole multiples of `step` keys, so every warp starts on its own group.
struct DecodeSpan {
  const bf16 *kc, *vc;
  int lo, hi, pos;  // pos: the newest key's position (the new token's)
};
template <bool kBatched>
__device__ __forceinline__ DecodeSpan decode_span(int tt, const bf16* kc_one, const bf16* vc_one,
                                                  const bf16* const* kc_tab, const bf16* const* vc_tab,
                                                  const int* pos_one, const int* const* pos_tab, int step) {
  const int len = kBatched ? *pos_tab[tt] + 1 : *pos_one + tt + 1;
  const int split = blockIdx.y, splits = gridDim.y;
  const int per_split = (len + splits * step - 1) / (splits * step) * step;
  const int lo = split * per_split;
  return {kBatched ? kc_tab[tt] : kc_one, kBatched ? vc_tab[tt] : vc_one, lo, min(len, lo + per_split),
          len - 1};
}

// One block per (query token, head, split). Each warp walks a strided subset of the block's keys with an
// online softmax (FP32), lanes splitting the head dimension; the warps' partial results are merged at the
// end. With one split the block owns all visible keys and writes the output; with S > 1 (flash-decoding: long
// contexts and few query heads would leave most SMs idle) split s owns the s-th slice of the visible keys,
// sized on the device from the current length, and writes its (max, sum, unnormalized accumulator) for
// attention_combine.
// Batched: query row tt is the single new token of sequence tt, with its own caches and position (tables
// indexed by tt); otherwise all rows belong to one sequence and row tt sits at position pos + tt.
template <bool kBatched>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const bf16* q, const bf16* kc_one, const bf16* vc_one, int nh, int nkv, int hd,
                     const int* pos_one, bf16* out, const bf16* const* kc_tab, const bf16* const* vc_tab,
                     const int* const* pos_tab, float* part) {
  ptx::griddep_enter();
  const int tt = blockIdx.x / nh, h = blockIdx.x % nh, kh = h / (nh / nkv);
  const int split = blockIdx.y, splits = gridDim.y;
  constexpr int kGroup = kAttnWarps * kAttnUnroll;
  [[maybe_unused]] const auto [kc, vc, lo, hi, newest] =
      decode_span<kBatched>(tt, kc_one, vc_one, kc_tab, vc_tab, pos_one, pos_tab, kGroup);
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

// Flash-decoding merge of one output element: partials [splits][hd accumulator, max, sum] of one (query,
// head), dimension d. Shared by the combine kernel and the GQA kernel's last split, so both give the same
// bits.
// __ldcg: the partials of other blocks of the same grid are read past L1.
__device__ __forceinline__ float merge_splits(const float* base, int splits, int hd, int d) {
  float gm = -INFINITY;
  for (int s = 0; s < splits; ++s) gm = fmaxf(gm, __ldcg(base + s * (hd + 2) + hd));
  float gl = 0.0f, v = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = __ldcg(base + s * (hd + 2) + hd);
    if (ms != -INFINITY) {
      const float f = __expf(ms - gm);
      gl += __ldcg(base + s * (hd + 2) + hd + 1) * f;
      v += __ldcg(base + s * (hd + 2) + d) * f;
    }
  }
  return v / gl;
}

// Decode attention for GQA, one block per (query token, KV head, split): the G query heads that share a KV
// head are handled together, so each K/V row is read once (not G times) and with 16-byte loads (8 dims per
// lane, HD / 8 lanes per key, 32 / (HD / 8) keys per warp at a time). Each key group keeps its own online
// softmax per head; a warp's groups are merged by shuffles, then the warps through shared memory. Same
// outputs and split partials as attention_kernel.
// With knew / vnew (decode, one new row per query token): the first step of attention is done here instead
// of by rope_kv_append_kernel, one launch fewer per layer. q is then not rotated yet: each block rotates the
// rows of its heads as it loads them (inv_freq; null: no RoPE), and the block whose split holds the new
// position rotates the new k and writes it and v into the caches before it reads them. Same bits as the two
// kernels (rope_pair, the same BF16 roundings).
template <int HD, int G, bool kBatched>
__global__ void __launch_bounds__(kGqaWarps * 32, G <= 5 ? 2 : 1)
    attention_gqa_kernel(const bf16* q, const bf16* kc_one, const bf16* vc_one, int nh, int nkv,
                         const int* pos_one, bf16* out, const bf16* const* kc_tab, const bf16* const* vc_tab,
                         const int* const* pos_tab, float* part, int* done, const bf16* knew,
                         const bf16* vnew, const float* inv_freq) {
  // Two keys per lane in flight per iteration (four measured slower: the longer key step leaves splits
  // uneven or empty at short contexts, kernel-notes #32).
  constexpr int kLpk = HD / 8, kKpw = 32 / kLpk, kGroups = kGqaWarps * kKpw, kUnroll = 2;
  const int tt = blockIdx.x / nkv, kh = blockIdx.x % nkv;
  const int split = blockIdx.y, splits = gridDim.y;
  constexpr int kStep = kGroups * kUnroll;
  const auto [kc, vc, lo, hi, pos] =
      decode_span<kBatched>(tt, kc_one, vc_one, kc_tab, vc_tab, pos_one, pos_tab, kStep);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gi = warp * kKpw + lane / kLpk, dl = lane % kLpk;  // key group, and this lane's 8 dims
  const int64_t kstride = static_cast<int64_t>(nkv) * HD;
  constexpr int kHalf = HD / 2, kFreqRegs = (kHalf + 31) / 32;
  const bool rope = knew && inv_freq;
  // Everything up to the programmatic-launch wait reads only what the kernel before this one (the q|k|v
  // projection, or the RoPE / append kernel) does not write: the position (moved on at the end of the
  // previous step), the RoPE frequencies, and the cache rows of the first key step except the newest
  // position's, which is this step's. So the position's round trip, the first K/V loads from DRAM and the
  // sines overlap that kernel's tail.
  const bf16* kbase = kc + static_cast<int64_t>(kh) * HD + dl * 8;
  const bf16* vbase = vc + static_cast<int64_t>(kh) * HD + dl * 8;
  uint4 kr[kUnroll], vr[kUnroll];
  const auto load_kv = [&](int j0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + gi + u * kGroups;
      const bool ok = j < hi;
      kr[u] = ok ? *reinterpret_cast<const uint4*>(kbase + j * kstride) : make_uint4(0, 0, 0, 0);
      vr[u] = ok ? *reinterpret_cast<const uint4*>(vbase + j * kstride) : make_uint4(0, 0, 0, 0);
    }
  };
  load_kv(lo);
  // RoPE angles of the new position: lane l of every warp holds frequencies f = l + 32 r (8 per lane would be
  // needed otherwise; the lanes fetch theirs by shuffles).
  float cs_f[kFreqRegs] = {}, sn_f[kFreqRegs] = {};
  if (rope)
#pragma unroll
    for (int r = 0; r < kFreqRegs; ++r)
      if (lane + 32 * r < kHalf)
        sincosf(static_cast<float>(pos) * inv_freq[lane + 32 * r], &sn_f[r], &cs_f[r]);
  ptx::griddep_enter();
  // The block whose split holds the new position writes the new k (rotated) and v into the caches before its
  // loop reads them: thread e < HD / 2 pair e of k, HD / 2 <= e < HD pair e - HD / 2 of v, loaded here so
  // that the loads fly with q's.
  const bool owner = knew && lo <= pos && pos < hi;  // block-uniform
  __shared__ __align__(16) bf16 sm_new[2][HD];       // the new k (rotated) and v, as written to the caches
  const int e_pair = threadIdx.x % kHalf;
  float na = 0.0f, nb = 0.0f;
  if (owner && threadIdx.x < HD) {
    const bf16* src = (threadIdx.x < kHalf ? knew : vnew) + static_cast<int64_t>(tt) * kstride + kh * HD;
    na = ld(src + e_pair), nb = ld(src + e_pair + kHalf);
  }
  const float scale = rsqrtf(static_cast<float>(HD));
  float qv[G][8], acc[G][8], m[G], l[G];
  // This lane's 8 dims d = 8 dl + i and, to rotate them, the 8 they pair with (d +- HD / 2).
  const bool first_half = dl * 8 < kHalf;
  float cs8[8], sn8[8];
  if (rope)
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int f = (dl * 8 + i) % kHalf;
#pragma unroll
      for (int r = 0; r < kFreqRegs; ++r) {
        const float c = __shfl_sync(0xffffffffu, cs_f[r], f % 32),
                    sn = __shfl_sync(0xffffffffu, sn_f[r], f % 32);
        if (f / 32 == r) cs8[i] = c, sn8[i] = sn;
      }
    }
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const bf16* qh = q + (static_cast<int64_t>(tt) * nh + kh * G + g) * HD;
    const uint4 raw = *reinterpret_cast<const uint4*>(qh + dl * 8);
    const bf16* e = reinterpret_cast<const bf16*>(&raw);
    float x[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = __bfloat162float(e[i]);
    if (rope) {
      const uint4 rawp = *reinterpret_cast<const uint4*>(qh + (first_half ? dl * 8 + kHalf : dl * 8 - kHalf));
      const bf16* ep = reinterpret_cast<const bf16*>(&rawp);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float p = __bfloat162float(ep[i]);
        const float2 r = first_half ? rope_pair(x[i], p, cs8[i], sn8[i]) : rope_pair(p, x[i], cs8[i], sn8[i]);
        x[i] = round_bf16(first_half ? r.x : r.y);  // as rope_kv_append stores it
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      qv[g][i] = x[i] * scale;
      acc[g][i] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  if (owner) {
    if (threadIdx.x < HD) {
      if (threadIdx.x < kHalf && inv_freq) {
        float c = cs_f[0], sn = sn_f[0];  // frequency e_pair = lane + 32 warp: this lane's register `warp`
#pragma unroll
        for (int r = 1; r < kFreqRegs; ++r)
          if (warp == r) c = cs_f[r], sn = sn_f[r];
        const float2 rot = rope_pair(na, nb, c, sn);
        na = rot.x, nb = rot.y;
      }
      bf16* cache = const_cast<bf16*>(threadIdx.x < kHalf ? kc : vc) + pos * kstride + kh * HD;
      const bf16 a = __float2bfloat16_rn(na), b = __float2bfloat16_rn(nb);
      cache[e_pair] = a;
      cache[e_pair + kHalf] = b;
      sm_new[threadIdx.x / kHalf][e_pair] = a;
      sm_new[threadIdx.x / kHalf][e_pair + kHalf] = b;
    }
    __syncthreads();  // the block's own global stores are visible to its threads after the barrier
  }
  // The newest position's row was prefetched stale: the owner block takes it from the copy it just made in
  // shared memory; without the fused append, the kernel before this one wrote it, so it is read again.
#pragma unroll
  for (int u = 0; u < kUnroll; ++u)
    if (lo + gi + u * kGroups == pos) {
      if (owner) {
        kr[u] = *reinterpret_cast<const uint4*>(&sm_new[0][dl * 8]);
        vr[u] = *reinterpret_cast<const uint4*>(&sm_new[1][dl * 8]);
      } else if (!knew) {
        kr[u] = *reinterpret_cast<const uint4*>(kbase + pos * kstride);
        vr[u] = *reinterpret_cast<const uint4*>(vbase + pos * kstride);
      }
    }
  // Warp-uniform trip count: the shuffles below need every lane.
  for (int j0 = lo; j0 < hi; j0 += kStep) {
    if (j0 != lo) load_kv(j0);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool ok = j0 + gi + u * kGroups < hi;
      const bf16* ke = reinterpret_cast<const bf16*>(&kr[u]);
      const bf16* ve = reinterpret_cast<const bf16*>(&vr[u]);
      float kf[8], vf[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        kf[i] = __bfloat162float(ke[i]);
        vf[i] = __bfloat162float(ve[i]);
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) s += qv[g][i] * kf[i];
#pragma unroll
        for (int o = 1; o < kLpk; o *= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (ok) {
          const float mn = fmaxf(m[g], s);
          const float corr = __expf(m[g] - mn), pr = __expf(s - mn);
          l[g] = l[g] * corr + pr;
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[g][i] = acc[g][i] * corr + pr * vf[i];
          m[g] = mn;
        }
      }
    }
  }
  // The warp's kKpw key groups merged first, through shuffles (lanes of one dimension slice are kLpk apart),
  // so that shared memory holds one (max, sum, accumulator) per warp: with 8 warps the per-group form would
  // need up to 64 KB.
#pragma unroll
  for (int o = kLpk; o < 32; o *= 2)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], o), lo = __shfl_xor_sync(0xffffffffu, l[g], o);
      const float mn = fmaxf(m[g], mo);
      const float fs = m[g] == -INFINITY ? 0.0f : __expf(m[g] - mn);
      const float fo = mo == -INFINITY ? 0.0f : __expf(mo - mn);
      l[g] = l[g] * fs + lo * fo;
#pragma unroll
      for (int i = 0; i < 8; ++i)
        acc[g][i] = acc[g][i] * fs + __shfl_xor_sync(0xffffffffu, acc[g][i], o) * fo;
      m[g] = mn;
    }
  __shared__ float sm_m[kGqaWarps][G], sm_l[kGqaWarps][G], sm_acc[kGqaWarps][G][HD];
  if (lane == 0)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
  if (lane < kLpk)
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int i = 0; i < 8; ++i) sm_acc[warp][g][dl * 8 + i] = acc[g][i];
  __syncthreads();
  for (int e = threadIdx.x; e < G * HD; e += kGqaWarps * 32) {
    const int g = e / HD, d = e % HD, h = kh * G + g;
    float gm = -INFINITY;
    for (int w = 0; w < kGqaWarps; ++w) gm = fmaxf(gm, sm_m[w][g]);
    float gl = 0.0f, v = 0.0f;
    for (int w = 0; w < kGqaWarps; ++w)
      if (sm_m[w][g] != -INFINITY) {
        const float f = __expf(sm_m[w][g] - gm);
        gl += sm_l[w][g] * f;
        v += sm_acc[w][g][d] * f;
      }
    const int64_t qi =
        static_cast<int64_t>(tt) * nh + h;  // the query head's index, as attention_kernel's blocks
    if (splits > 1) {
      float* pp = part + (qi * splits + split) * (HD + 2);
      pp[d] = v;
      if (d == 0) pp[HD] = gm, pp[HD + 1] = gl;
    } else {
      out[qi * HD + d] = __float2bfloat16_rn(v / gl);
    }
  }
  if (splits == 1 || !done) return;
  // The last split block of this (token, KV head) to finish merges all splits (one launch fewer than a
  // separate combine); done[] counts finished splits and is left at zero for the next launch.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(&done[blockIdx.x], 1) == splits - 1;
    if (last) done[blockIdx.x] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The same arithmetic as merge_splits, staged so that the partials cost one round trip to L2 per kBatch
  // splits (the loop over splits had one per split: each load waited behind the previous one's FMA): the
  // first batch of accumulators is loaded with the splits' (max, sum) pairs, before their factors exist.
  constexpr int kThreads = kGqaWarps * 32, kElems = (G * HD + kThreads - 1) / kThreads;
  constexpr int kBatch = kElems > 2 ? 4 : 8;  // within the register budget of two blocks per SM up to G = 5
  float pv[kElems][kBatch];
  const auto load_batch = [&](int s0) {
#pragma unroll
    for (int k = 0; k < kElems; ++k) {
      const int e = threadIdx.x + k * kThreads;
      const int64_t qi = static_cast<int64_t>(tt) * nh + kh * G + e / HD;
#pragma unroll
      for (int c = 0; c < kBatch; ++c)
        pv[k][c] =
            e < G * HD && s0 + c < splits ? __ldcg(part + (qi * splits + s0 + c) * (HD + 2) + e % HD) : 0.0f;
    }
  };
  load_batch(0);
  __shared__ float sm_ms[G][kAttnMaxSplits], sm_f[G][kAttnMaxSplits], sm_gl[G];
  for (int i = threadIdx.x; i < G * splits; i += kThreads) {
    const int64_t qi = static_cast<int64_t>(tt) * nh + kh * G + i / splits;
    sm_ms[i / splits][i % splits] = __ldcg(part + (qi * splits + i % splits) * (HD + 2) + HD);
    sm_f[i / splits][i % splits] = __ldcg(part + (qi * splits + i % splits) * (HD + 2) + HD + 1);
  }
  __syncthreads();
  if (threadIdx.x < G) {
    const int g = threadIdx.x;
    float gm = -INFINITY;
    for (int sp = 0; sp < splits; ++sp) gm = fmaxf(gm, sm_ms[g][sp]);
    float gl = 0.0f;
    for (int sp = 0; sp < splits; ++sp) {
      const float f = sm_ms[g][sp] != -INFINITY ? __expf(sm_ms[g][sp] - gm) : 0.0f;
      gl += sm_f[g][sp] * f;  // sm_f held the split's sum; it becomes the split's factor
      sm_f[g][sp] = f;
    }
    sm_gl[g] = gl;
  }
  __syncthreads();
  float v[kElems] = {};
  for (int s0 = 0; s0 < splits; s0 += kBatch) {
    if (s0 > 0) load_batch(s0);
#pragma unroll
    for (int k = 0; k < kElems; ++k) {
      const int g = min((threadIdx.x + k * kThreads) / HD, G - 1);
#pragma unroll
      for (int c = 0; c < kBatch; ++c)  // splits in order: the same sum as merge_splits
        if (s0 + c < splits && sm_ms[g][s0 + c] != -INFINITY) v[k] += pv[k][c] * sm_f[g][s0 + c];
    }
  }
#pragma unroll
  for (int k = 0; k < kElems; ++k) {
    const int e = threadIdx.x + k * kThreads;
    if (e < G * HD)
      out[(static_cast<int64_t>(tt) * nh + kh * G) * HD + e] = __float2bfloat16_rn(v[k] / sm_gl[e / HD]);
  }
}

// The launch arguments of attention_gqa_kernel (batched when kc_tab is set).
struct GqaArgs {
  const bf16 *q, *kc, *vc;
  int nh, nkv;
  const int* pos_one;
  bf16* out;
  const bf16* const* kc_tab;
  const bf16* const* vc_tab;
  const int* const* pos_tab;
  float* part;
  int* done;
  const bf16 *knew, *vnew;  // fused RoPE + cache append (GqaAppend), or null
  const float* inv_freq;
};

template <int HD, int G>
void launch_gqa(dim3 grid, cudaStream_t stream, const GqaArgs& a) {
  if (a.kc_tab)
    launch_kernel(attention_gqa_kernel<HD, G, true>, grid, kGqaWarps * 32, 0, stream, a.q, nullptr, nullptr,
                  a.nh, a.nkv, nullptr, a.out, a.kc_tab, a.vc_tab, a.pos_tab, a.part, a.done, a.knew, a.vnew,
                  a.inv_freq);
  else
    launch_kernel(attention_gqa_kernel<HD, G, false>, grid, kGqaWarps * 32, 0, stream, a.q, a.kc, a.vc, a.nh,
                  a.nkv, a.pos_one, a.out, nullptr, nullptr, nullptr, a.part, a.done, a.knew, a.vnew,
                  a.inv_freq);
}

// Query heads per KV head as a template argument: the per-head accumulators live in registers.
template <int HD>
bool launch_gqa_hd(int g, dim3 grid, cudaStream_t stream, const GqaArgs& a) {
  switch (g) {
    case 1:
      return launch_gqa<HD, 1>(grid, stream, a), true;
    case 2:
      return launch_gqa<HD, 2>(grid, stream, a), true;
    case 4:
      return launch_gqa<HD, 4>(grid, stream, a), true;
    case 5:
      return launch_gqa<HD, 5>(grid, stream, a), true;
    case 8:
      return launch_gqa<HD, 8>(grid, stream, a), true;
    default:
      return false;
  }
}

// Merges the splits of each (query, head): the log-sum-exp rescaling of flash-decoding. One block per
// (query, head), threads over the head dimension.
__global__ void attention_combine_kernel(const float* part, int splits, int hd, bf16* out) {
  ptx::griddep_enter();
  const float* base = part + static_cast<int64_t>(blockIdx.x) * splits * (hd + 2);
  for (int d = threadIdx.x; d < hd; d += blockDim.x)
    out[static_cast<int64_t>(blockIdx.x) * hd + d] = __float2bfloat16_rn(merge_splits(base, splits, hd, d));
}

__global__ void pos_add_kernel(int* pos, int t) {
  ptx::griddep_enter();
  *pos += t;
}

__global__ void pos_add_batch_kernel(int* const* pos_tab, int n) {
  ptx::griddep_enter();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) *pos_tab[i] += 1;
}

void launch_rope_kv_append(const RopeKvAppendArgs& a, cudaStream_t stream) {
  launch_kernel(rope_kv_append_kernel, grid_1d(int64_t{a.rows} * (a.nh + 2 * a.nkv) * a.hd / 2, 256), 256, 0,
                stream, reinterpret_cast<bf16*>(a.q), reinterpret_cast<const bf16*>(a.k),
                reinterpret_cast<const bf16*>(a.v), a.rows, a.nh, a.nkv, a.hd, a.inv_freq, a.kv.pos,
                a.kv.pos_tab, reinterpret_cast<bf16*>(a.kv.k), reinterpret_cast<bf16*>(a.kv.v),
                reinterpret_cast<bf16* const*>(a.kv.k_tab), reinterpret_cast<bf16* const*>(a.kv.v_tab));
}

void launch_attention_decode(dim3 grid, const AttentionDecodeArgs& a, cudaStream_t stream) {
  const auto* q = reinterpret_cast<const bf16*>(a.q);
  auto* out = reinterpret_cast<bf16*>(a.out);
  if (a.kv.batched())
    launch_kernel(attention_kernel<true>, grid, kAttnWarps * 32, 0, stream, q, nullptr, nullptr, a.nh, a.nkv,
                  a.hd, nullptr, out, reinterpret_cast<const bf16* const*>(a.kv.k_tab),
                  reinterpret_cast<const bf16* const*>(a.kv.v_tab), a.kv.pos_tab, a.part);
  else
    launch_kernel(attention_kernel<false>, grid, kAttnWarps * 32, 0, stream, q,
                  reinterpret_cast<const bf16*>(a.kv.k), reinterpret_cast<const bf16*>(a.kv.v), a.nh, a.nkv,
                  a.hd, a.kv.pos, out, nullptr, nullptr, nullptr, a.part);
}

bool gqa_attention_supported(int nh, int nkv, int hd) {
  const int g = nkv > 0 && nh % nkv == 0 ? nh / nkv : 0;
  return (hd == 32 || hd == 64 || hd == 128) && (g == 1 || g == 2 || g == 4 || g == 5 || g == 8);
}

void launch_attention_gqa(dim3 grid, const AttentionDecodeArgs& d, cudaStream_t stream) {
  const GqaArgs a{reinterpret_cast<const bf16*>(d.q),
                  reinterpret_cast<const bf16*>(d.kv.k),
                  reinterpret_cast<const bf16*>(d.kv.v),
                  d.nh,
                  d.nkv,
                  d.kv.pos,
                  reinterpret_cast<bf16*>(d.out),
                  reinterpret_cast<const bf16* const*>(d.kv.k_tab),
                  reinterpret_cast<const bf16* const*>(d.kv.v_tab),
                  d.kv.pos_tab,
                  d.part,
                  d.done,
                  d.append ? reinterpret_cast<const bf16*>(d.append->k) : nullptr,
                  d.append ? reinterpret_cast<const bf16*>(d.append->v) : nullptr,
                  d.append ? d.append->inv_freq : nullptr};
  const int g = d.nh / d.nkv;
  const bool ok = d.hd == 128  ? launch_gqa_hd<128>(g, grid, stream, a)
                  : d.hd == 64 ? launch_gqa_hd<64>(g, grid, stream, a)
                               : d.hd == 32 && launch_gqa_hd<32>(g, grid, stream, a);
  if (!ok) throw Error("internal: GQA decode attention launched for an unsupported shape");
}

void launch_attention_combine(int query_heads, int splits, int hd, const float* part, bf16_raw* out,
                              cudaStream_t stream) {
  launch_kernel(attention_combine_kernel, static_cast<unsigned>(query_heads), 128, 0, stream, part, splits,
                hd, reinterpret_cast<bf16*>(out));
}

void launch_pos_add(int* pos, int t, cudaStream_t stream) {
  launch_kernel(pos_add_kernel, 1, 1, 0, stream, pos, t);
}

void launch_pos_add_batch(int* const* pos_tab, int n, cudaStream_t stream) {
  launch_kernel(pos_add_batch_kernel, grid_1d(n, 128), 128, 0, stream, pos_tab, n);
}

}  // namespace fp4lab
