// The decode-shaped NVFP4 W4A16 kernels for sm_80 and newer (built for sm_80, sm_90a, sm_100a, sm_120a): Y =
// X . W^T for a few tokens (M <= 64), W in NVFP4 (tile layout, format/nvfp4_tile_layout.h), X and Y in BF16.
// Like the tensor-core GEMM of sm80_nvfp4_w4a16_gemm.cu they compute Y^T = W . X^T on mma.sync.m16n8k16 with
// W as the A operand, dequantized in registers, so the 16-row tile of the instruction is filled by weight
// rows even for a single token. Launched through launch_decode_variant (sm80_nvfp4_w4a16_decode.h).
#include <cuda_bf16.h>

#include <algorithm>
#include <span>
#include <string>

#include "cuda/check.h"
#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "cuda/nvfp4_gemm.h"
#include "cuda/nvfp4_dequant.cuh"
#include "cuda/ptx.cuh"
#include "cuda/sm80_nvfp4_w4a16_decode.h"

namespace fp4lab {

namespace {

// B fragments of the four k16 steps for one token: X[t][16c .. 16c+15] (tile-layout k order), two 16-byte
// loads; zeros past M or K.
__device__ __forceinline__ void load_b_frags(const __nv_bfloat16* px, bool ok, uint32_t (&b)[4][2]) {
  uint4 v0 = make_uint4(0, 0, 0, 0), v1 = v0;
  if (ok) {
    v0 = ptx::ldg_v4(px);
    v1 = ptx::ldg_v4(px + 8);
  }
  b[0][0] = v0.x, b[0][1] = v0.y, b[1][0] = v0.z, b[1][1] = v0.w;
  b[2][0] = v1.x, b[2][1] = v1.y, b[3][0] = v1.z, b[3][1] = v1.w;
}

// Blocks per SM the decode kernel's register budget is fitted to. The one-token-tile, one-row-tile form: 4
// resident blocks of 8 warps (<= 64 registers) measured best (5 blocks at 48 registers was slower,
// kernel-notes #14b), the same budget per thread for 4 and 16 warps. Two or four tiles with one row tile, or
// two row tiles of one token tile: the budget of the earlier loop (111-127 registers, 2 blocks of 8 warps);
// without a cap the reworked loop compiled to 255 registers, one block per SM.
template <int NT, int RA, int WARPS>
constexpr int kDecodeMinBlocks = NT* RA == 1                             ? 32 / WARPS
                                 : (NT* RA == 2 || (NT == 4 && RA == 1)) ? 16 / WARPS
                                                                         : 1;

// ---------------------------------------------------------------------------------------------------------
// Decode kernel (M <= 16). One block per RA 16-row weight tiles; its WARPS warps take interleaved 64-wide
// k-chunks and reduce through shared memory, so even N = 4480 gives ~2 blocks per SM without split-K
// workspace. X fragments come straight from global memory (L1/L2-resident, M x K x 2 bytes); RA > 1 shares
// them between row tiles, which halves the X traffic per weight byte. PF chunks per warp are in flight in
// registers. Tried and measured slower or no faster (kernel-notes #13-#16, #35, #40): deeper register or
// cp.async shared-memory pipelines, X staged in shared memory, other load cache policies, a persistent grid,
// the weights bulk-copied (cp.async.bulk) into a shared-memory ring, the weights prefetched into L2 by the
// kernel before (#67), stream-K runs over one wave (#68). What made it faster was fewer instructions per
// chunk (#41): the kernel is bound by issue, not by the loads in flight; and the number of warps per block
// set so that the tiles fit the resident blocks in as few waves as they can (#30, #69, #70).
// Up to three weights of one K that read the same X (q | k | v, gate | up) in one launch: the blocks are laid
// out weight after weight, each block working for the weight whose range holds its index. A single weight is
// a group of one.
struct DecodeSeg {
  const uint4* wq;
  const uint16_t* wsc;
  __nv_bfloat16* y;
  int64_t ldy;
  float alpha;
  int row_tiles, n_valid, block0;
  // Epilogue activation: none; relu(y)^2 (Nemotron's MLP up projection); or SwiGLU over a gate|up weight
  // interleaved by 8 rows (nvfp4_repack_swiglu_pair_device), alpha for the gate rows, alpha_up for the up
  // rows.
  DecodeAct act;
  float alpha_up;
};
struct DecodeGroup {
  DecodeSeg seg[3];
  int count;
};

// The member of the group block bx works for. Field by field with selects: indexing the parameter array with
// a run-time index would copy it to local memory.
__device__ __forceinline__ DecodeSeg select_seg(const DecodeGroup& g, int bx) {
  const bool s2 = g.count > 2 && bx >= g.seg[2].block0, s1 = !s2 && g.count > 1 && bx >= g.seg[1].block0;
  DecodeSeg r;
  r.wq = s2 ? g.seg[2].wq : s1 ? g.seg[1].wq : g.seg[0].wq;
  r.wsc = s2 ? g.seg[2].wsc : s1 ? g.seg[1].wsc : g.seg[0].wsc;
  r.y = s2 ? g.seg[2].y : s1 ? g.seg[1].y : g.seg[0].y;
  r.ldy = s2 ? g.seg[2].ldy : s1 ? g.seg[1].ldy : g.seg[0].ldy;
  r.alpha = s2 ? g.seg[2].alpha : s1 ? g.seg[1].alpha : g.seg[0].alpha;
  r.row_tiles = s2 ? g.seg[2].row_tiles : s1 ? g.seg[1].row_tiles : g.seg[0].row_tiles;
  r.n_valid = s2 ? g.seg[2].n_valid : s1 ? g.seg[1].n_valid : g.seg[0].n_valid;
  r.block0 = s2 ? g.seg[2].block0 : s1 ? g.seg[1].block0 : g.seg[0].block0;
  r.act = s2 ? g.seg[2].act : s1 ? g.seg[1].act : g.seg[0].act;
  r.alpha_up = s2 ? g.seg[2].alpha_up : s1 ? g.seg[1].alpha_up : g.seg[0].alpha_up;
  return r;
}

// Stores one 16-row x 8-token fragment of a finished tile (this lane's c0..c3, unscaled sums): scaled, the
// epilogue activation applied, BF16. Lane (tok = lane / 4, c4 = lane % 4) holds rows tok and tok + 8 of
// tokens t0 = nt * 8 + 2 * c4 and t0 + 1.
__device__ __forceinline__ void store_fragment(const DecodeSeg& sg, int tile, int nt, float (&v)[4], int m) {
  const int lane = threadIdx.x % 32, c4 = lane % 4, tok = lane / 4;
  const int t0 = nt * 8 + 2 * c4;
  __nv_bfloat16* __restrict__ y = sg.y;
  const int64_t ldy = sg.ldy;
  if (sg.act == DecodeAct::Swiglu) {
    // c0, c1: gate row tok of the tile; c2, c3: the same row of up. Output column tile * 8 + tok.
    const int col = tile * 8 + tok;
    if (2 * col >= sg.n_valid) return;
#pragma unroll
    for (int i = 0; i < 2; ++i)
      if (t0 + i < m)
        y[static_cast<int64_t>(t0 + i) * ldy + col] =
            __float2bfloat16_rn(dev::silu(v[i] * sg.alpha) * (v[i + 2] * sg.alpha_up));
    return;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] *= sg.alpha;
    if (sg.act == DecodeAct::Relu2) {
      v[i] = fmaxf(v[i], 0.0f);
      v[i] *= v[i];
    }
  }
  // c0,c1: row tok, tokens 2*c4, 2*c4+1; c2,c3: row tok+8.
  const int row = tile * 16 + tok;
  const bool r0 = row < sg.n_valid, r8 = row + 8 < sg.n_valid;
  if (t0 < m) {
    if (r0) y[static_cast<int64_t>(t0) * ldy + row] = __float2bfloat16_rn(v[0]);
    if (r8) y[static_cast<int64_t>(t0) * ldy + row + 8] = __float2bfloat16_rn(v[2]);
  }
  if (t0 + 1 < m) {
    if (r0) y[static_cast<int64_t>(t0 + 1) * ldy + row] = __float2bfloat16_rn(v[1]);
    if (r8) y[static_cast<int64_t>(t0 + 1) * ldy + row + 8] = __float2bfloat16_rn(v[3]);
  }
}

// The decode kernels' end: the warps' accumulators (two per token tile, even and odd k16 steps) summed across
// warps in warp order (deterministic), then stored (store_fragment).
template <int RA, int NT, int WARPS>
__device__ __forceinline__ void decode_reduce_store(const float (&acc)[RA][NT][2][4],
                                                    float (&red)[WARPS][RA * NT * 4][32], const DecodeSeg& sg,
                                                    int tile0, int m) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int ra = 0; ra < RA; ++ra)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        red[warp][(ra * NT + nt) * 4 + i][lane] = acc[ra][nt][0][i] + acc[ra][nt][1][i];
  __syncthreads();
  // Each warp finishes a share of the RA x NT fragments.
  for (int f = warp; f < RA * NT; f += WARPS) {
    const int ra = f / NT, nt = f % NT;
    if (tile0 + ra >= sg.row_tiles) continue;
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float sum = 0.0f;
      for (int w2 = 0; w2 < WARPS; ++w2) sum += red[w2][f * 4 + i][lane];
      v[i] = sum;
    }
    store_fragment(sg, tile0 + ra, nt, v, m);
  }
}

template <int NT, int RA, int WARPS, int PF>
__global__ void __launch_bounds__(WARPS * 32, kDecodeMinBlocks<NT, RA, WARPS>)
    nvfp4_w4a16_decode_kernel(const __nv_bfloat16* __restrict__ x, int m, int k, int64_t ldx, int kchunks,
                              const DecodeGroup g) {
  __shared__ uint32_t lut[256];
  __shared__ float red[WARPS][RA * NT * 4][32];
  init_scale_lut(lut);

  const DecodeSeg sg = select_seg(g, blockIdx.x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int tile0 = (blockIdx.x - sg.block0) * RA;
  const int c4 = lane % 4, tok = lane / 4;
  // This warp's chunks are warp, warp + WARPS, ...; nfull of them lie wholly inside K. A last chunk cut by K
  // (K % 64 != 0) is done after the loop, with its X columns past K masked.
  const int kfull = k / 64;
  const int nfull = kfull > warp ? (kfull - warp + WARPS - 1) / WARPS : 0;
  constexpr int kWStep = WARPS * 32;  // uint4 (codes) and uint16 (scales) between a warp's consecutive chunks
  constexpr int kXStep = WARPS * 64;  // X elements between a warp's consecutive chunks
  // Running pointers, advanced once per PF chunks, so a chunk's addresses are these plus immediates: the
  // 64-bit index math per chunk had been a quarter of the loop's instructions (SASS, kernel-notes #41).
  const uint4* wp[RA];
  const uint16_t* sp[RA];
#pragma unroll
  for (int ra = 0; ra < RA; ++ra) {
    const int64_t t =
        min(tile0 + ra, sg.row_tiles - 1);  // a missing second tile re-reads the first, unstored
    wp[ra] = sg.wq + (t * kchunks + warp) * 32 + lane;
    sp[ra] = sg.wsc + (t * kchunks + warp) * 32 + lane;
  }
  // Token rows past M read row M - 1, so every lane loads X without a predicate or zero fill; the epilogue
  // never stores those columns.
  const __nv_bfloat16* xp[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
    xp[nt] = x + static_cast<int64_t>(min(nt * 8 + tok, m - 1)) * ldx + 16 * c4 + warp * 64;

  // Even and odd k16 steps accumulate apart: a chunk's four MMAs form two independent chains instead of one
  // (2-3.5% faster at M = 32, kernel-notes #39); the two are added before the cross-warp reduction.
  float acc[RA][NT][2][4] = {};
  auto chunk = [&](const uint4(&w)[RA], const uint32_t(&sc)[RA], const uint32_t(&b)[NT][4][2]) {
#pragma unroll
    for (int ra = 0; ra < RA; ++ra) {
      const uint32_t words[4] = {w[ra].x, w[ra].y, w[ra].z, w[ra].w};
      uint32_t s_lo, s_hi;
      scale_pairs(lut, sc[ra], s_lo, s_hi);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t a[4];
        dequant_step(words[j], s_lo, s_hi, a);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) ptx::mma_bf16_16816(acc[ra][nt][j & 1], a, b[nt][j][0], b[nt][j][1]);
      }
    }
  };
  uint4 wbuf[PF][RA];
  uint32_t sbuf[PF][RA];
#pragma unroll
  for (int p = 0; p < PF; ++p)
    if (p < nfull)
#pragma unroll
      for (int ra = 0; ra < RA; ++ra) {
        wbuf[p][ra] = ptx::ldg_stream_v4(wp[ra] + p * kWStep);
        sbuf[p][ra] = ptx::ldg_stream_u16(sp[ra] + p * kWStep);
      }
  // Everything above reads only the weights: under programmatic launch it overlaps the previous kernel.
  ptx::griddep_enter();
  __syncthreads();  // the scale LUT is ready
  auto consume = [&](int p) {
    uint32_t b[NT][4][2];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) load_b_frags(xp[nt] + p * kXStep, true, b[nt]);
    chunk(wbuf[p], sbuf[p], b);
  };
  auto refill = [&](int p) {
#pragma unroll
    for (int ra = 0; ra < RA; ++ra) {
      wbuf[p][ra] = ptx::ldg_stream_v4(wp[ra] + (PF + p) * kWStep);
      sbuf[p][ra] = ptx::ldg_stream_u16(sp[ra] + (PF + p) * kWStep);
    }
  };
  auto advance = [&] {
#pragma unroll
    for (int ra = 0; ra < RA; ++ra) wp[ra] += PF * kWStep, sp[ra] += PF * kWStep;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) xp[nt] += PF * kXStep;
  };
  int j = 0;
  // Steady state, while every refill is inside this warp's chunks: no predicates. A slot is refilled, PF
  // chunks ahead, right after its chunk is consumed (refilling before made the compiler copy the slot
  // registers at every chunk).
  for (; j + 2 * PF <= nfull; j += PF) {
#pragma unroll
    for (int p = 0; p < PF; ++p) consume(p), refill(p);
    advance();
  }
  // At most 2 PF - 1 chunks left: PF of them in the slots, refilled only where one remains behind them.
#pragma unroll
  for (int p = 0; p < PF; ++p)
    if (j + p < nfull) {
      consume(p);
      if (j + PF + p < nfull) refill(p);
    }
  j += PF;
  advance();
#pragma unroll
  for (int p = 0; p < PF - 1; ++p)
    if (j + p < nfull) consume(p);
  if (kfull < kchunks && warp == kfull % WARPS) {  // the chunk cut by K
    uint4 w[RA];
    uint32_t sc[RA];
#pragma unroll
    for (int ra = 0; ra < RA; ++ra) {
      const int64_t t = min(tile0 + ra, sg.row_tiles - 1);
      w[ra] = ptx::ldg_stream_v4(sg.wq + (t * kchunks + kfull) * 32 + lane);
      sc[ra] = ptx::ldg_stream_u16(sg.wsc + (t * kchunks + kfull) * 32 + lane);
    }
    uint32_t b[NT][4][2];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int64_t row = min(nt * 8 + tok, m - 1);
      load_b_frags(x + row * ldx + kfull * 64 + 16 * c4, kfull * 64 + 16 * c4 < k, b[nt]);
    }
    chunk(w, sc, b);
  }
  decode_reduce_store<RA, NT, WARPS>(acc, red, sg, tile0, m);
}

// ---------------------------------------------------------------------------------------------------------
// Shared-X decode kernel (17 <= M <= 32 on the wide layers, kernel-notes #46). decode32 gives each 16-row
// tile its own block, whose warps load their X fragments from L1/L2: 4 KB per 64-wide chunk against 544
// bytes of weights, so 470 MB of X loads against 62 MB of weights for Llama gate_up at M = 32 (ncu: L1
// throughput 80%, long-scoreboard stalls half of its 10.6 cycles per instruction). Here a block of WR warps
// owns WR row tiles, one per warp, each warp going through every k-chunk of its tile; the block stages X in
// shared memory, G chunks per stage and S stages deep (cp.async), and all its warps read it there: the L2
// reads of X / WR. The weights go straight to registers, PF = G chunks ahead, with the decode kernel's
// dequantization and MMAs; no cross-warp reduction; one barrier per stage. Under ncu it is then bound by
// issue at ~14 resident warps per SM (128 registers): 6.5 cycles per instruction, no dominant stall.
constexpr int kXsTokens = 32, kXsChunks = 4, kXsStages = 3;
constexpr int kXsStageBytes = kXsChunks * kXsTokens * 128;

template <int WR>
__global__ void __launch_bounds__(WR * 32, 8 / WR * 2)
    nvfp4_w4a16_xs_kernel(const __nv_bfloat16* __restrict__ x, int m, int k, int64_t ldx, int kchunks,
                          const DecodeGroup g) {
  // PF = G: four chunks of weights in flight per warp. Eight (two stages' worth) measured 5% slower on
  // gate_up: the kernel does not wait on the weight stream (kernel-notes #46).
  constexpr int NT = kXsTokens / 8, G = kXsChunks, S = kXsStages, PF = G, THREADS = WR * 32;
  __shared__ uint32_t lut[256];
  extern __shared__ __align__(16) uint8_t xs[];  // S stages of G chunks x 32 tokens x 128 bytes
  init_scale_lut(lut);
  const DecodeSeg sg = select_seg(g, blockIdx.x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int tile = (blockIdx.x - sg.block0) * WR + warp;
  // A warp past the last tile re-reads it (unstored): it still takes part in the stage barriers.
  const int64_t tl = min(tile, sg.row_tiles - 1);
  const uint4* wp = sg.wq + tl * kchunks * 32 + lane;
  const uint16_t* sp = sg.wsc + tl * kchunks * 32 + lane;
  uint4 wbuf[PF];
  uint32_t sbuf[PF];
#pragma unroll
  for (int p = 0; p < PF; ++p)
    if (p < kchunks) {
      wbuf[p] = ptx::ldg_stream_v4(wp + p * 32);
      sbuf[p] = ptx::ldg_stream_u16(sp + p * 32);
    }
  ptx::griddep_enter();

  // Stage `stage` <- chunks grp * G .. grp * G + G - 1 of X: token rows of 128 bytes, their 16-byte units
  // XOR-swizzled by the row so that the B-fragment loads below are conflict-free; zeros past M and K.
  auto load_stage = [&](int stage, int grp) {
    uint8_t* base = xs + stage * kXsStageBytes;
    for (int id = threadIdx.x; id < G * kXsTokens * 8; id += THREADS) {
      const int j = id / (kXsTokens * 8), t = (id / 8) % kXsTokens, q = id % 8;
      const int kk = (grp * G + j) * 64 + q * 8;
      const bool ok = t < m && kk < k;
      const __nv_bfloat16* src = ok ? x + static_cast<int64_t>(t) * ldx + kk : x;
      ptx::cp_async_16(ptx::smem_addr(base + (j * kXsTokens + t) * 128 + ((q ^ (t & 7)) * 16)), src,
                       ok ? 16 : 0);
    }
  };
  const int groups = (kchunks + G - 1) / G;
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < groups) load_stage(s, s);
    ptx::cp_async_commit();
  }

  // Even and odd k16 steps accumulate apart, as in the decode kernel.
  float acc[NT][2][4] = {};
  const int c4 = lane % 4, tok = lane / 4;
  // Chunk p of the stage at `base`, weights from slot p; refilled PF chunks ahead when `refill`.
  auto consume = [&](const uint8_t* base, int p, bool refill) {
    const uint4 w = wbuf[p];
    uint32_t s_lo, s_hi;
    scale_pairs(lut, sbuf[p], s_lo, s_hi);
    if (refill) {
      wbuf[p] = ptx::ldg_stream_v4(wp + (PF + p) * 32);
      sbuf[p] = ptx::ldg_stream_u16(sp + (PF + p) * 32);
    }
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int jp = 0; jp < 2; ++jp) {  // pairs of k16 steps: one 16-byte load per token tile
      uint32_t b[NT][4];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        // Lane (token t, c4) wants X[t][16 c4 + 8 jp .. + 7], the 16-byte unit 2 c4 + jp of the staged row.
        const int t = nt * 8 + tok, q = 2 * c4 + jp;
        const uint4 v = ptx::lds_v4(ptx::smem_addr(base + (p * kXsTokens + t) * 128 + ((q ^ (t & 7)) * 16)));
        b[nt][0] = v.x, b[nt][1] = v.y, b[nt][2] = v.z, b[nt][3] = v.w;
      }
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        uint32_t a[4];
        dequant_step(words[2 * jp + jj], s_lo, s_hi, a);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) ptx::mma_bf16_16816(acc[nt][jj], a, b[nt][2 * jj], b[nt][2 * jj + 1]);
      }
    }
  };
  for (int grp = 0; grp < groups; ++grp) {
    ptx::cp_async_wait<S - 2>();
    __syncthreads();  // stage grp is visible to all; every warp is done with the stage refilled next
    if (grp + S - 1 < groups) load_stage((grp + S - 1) % S, grp + S - 1);
    ptx::cp_async_commit();
    const uint8_t* base = xs + (grp % S) * kXsStageBytes;
    const int c0 = grp * G;
    if (c0 + G + PF <= kchunks) {  // steady state: every chunk and refill inside K, no predicates
#pragma unroll
      for (int p = 0; p < G; ++p) consume(base, p, true);
    } else {
#pragma unroll
      for (int p = 0; p < G; ++p)
        if (c0 + p < kchunks) consume(base, p, c0 + PF + p < kchunks);
    }
    wp += G * 32;
    sp += G * 32;
  }
  ptx::cp_async_wait<0>();
  if (tile >= sg.row_tiles) return;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = acc[nt][0][i] + acc[nt][1][i];
    store_fragment(sg, tile, nt, v, m);
  }
}

// The kernel parameter of the targets, each weight's blocks after the previous one's, tiles_per_block row
// tiles per block; blocks: the grid size.
DecodeGroup decode_group(const DecodeTargets& t, int tiles_per_block, int& blocks) {
  DecodeGroup g{};
  g.count = t.count;
  blocks = 0;
  for (int i = 0; i < t.count; ++i) {
    const int row_tiles = static_cast<int>(t.w[i]->geom.row_tiles());
    g.seg[i] = {t.w[i]->weights.as<uint4>(),
                t.w[i]->scales.as<uint16_t>(),
                reinterpret_cast<__nv_bfloat16*>(t.y[i]),
                t.ldy[i],
                t.alpha[i],
                row_tiles,
                static_cast<int>(t.w[i]->n_valid),
                blocks,
                t.act,
                t.alpha_up};
    blocks += (row_tiles + tiles_per_block - 1) / tiles_per_block;
  }
  return g;
}

template <int NT, int RA, int WARPS>
void launch_decode(const bf16_raw* x, int64_t m, int64_t ldx, const DecodeTargets& t, cudaStream_t stream) {
  constexpr int PF = 4;
  int blocks = 0;
  const DecodeGroup g = decode_group(t, RA, blocks);
  launch_kernel(nvfp4_w4a16_decode_kernel<NT, RA, WARPS, PF>, static_cast<unsigned>(blocks), WARPS * 32, 0,
                stream, reinterpret_cast<const __nv_bfloat16*>(x), static_cast<int>(m),
                static_cast<int>(t.w[0]->geom.k), ldx, static_cast<int>(t.w[0]->geom.kchunks()), g);
}

template <int WR>
void launch_xs(const bf16_raw* x, int64_t m, int64_t ldx, const DecodeTargets& t, cudaStream_t stream) {
  int blocks = 0;
  const DecodeGroup g = decode_group(t, WR, blocks);
  auto kern = nvfp4_w4a16_xs_kernel<WR>;
  constexpr int smem = kXsStages * kXsStageBytes;
  // 48 KB of stages plus the 1 KB scale table: past the default limit, so opted in.
  allow_dynamic_smem(kern, smem);
  launch_kernel(kern, static_cast<unsigned>(blocks), WR * 32, smem, stream,
                reinterpret_cast<const __nv_bfloat16*>(x), static_cast<int>(m),
                static_cast<int>(t.w[0]->geom.k), ldx, static_cast<int>(t.w[0]->geom.kchunks()), g);
}

template <int NT, int RA>
void launch_decode_ra(const W4A16Plan& p, const bf16_raw* x, int64_t m, int64_t ldx, const DecodeTargets& t,
                      cudaStream_t stream) {
  if (p.decode_warps == 4) {
    launch_decode<NT, RA, 4>(x, m, ldx, t, stream);
  } else if (p.decode_warps == 10) {
    // 10 warps: three resident blocks per SM at the 64-register budget (kDecodeMinBlocks), one tile each.
    if constexpr (RA * NT == 1)
      launch_decode<NT, RA, 10>(x, m, ldx, t, stream);
    else
      throw Error("nvfp4 gemm: 10 decode warps take one row x token tile per block");
  } else if (p.decode_warps == 16) {
    // 16 warps: the cross-warp reduction buffer holds 16 x RA x NT x 4 x 32 floats (<= 32 KB here).
    if constexpr (RA * NT <= 4)
      launch_decode<NT, RA, 16>(x, m, ldx, t, stream);
    else
      throw Error("nvfp4 gemm: 16 decode warps take at most 4 row x token tiles per block");
  } else {
    launch_decode<NT, RA, 8>(x, m, ldx, t, stream);
  }
}

template <int NT>
void launch_decode_nt(const W4A16Plan& p, const bf16_raw* x, int64_t m, int64_t ldx, const DecodeTargets& t,
                      cudaStream_t stream) {
  if (p.decode_warps != 4 && p.decode_warps != 8 && p.decode_warps != 10 && p.decode_warps != 16)
    throw Error("nvfp4 gemm: decode_warps must be 4, 8, 10 or 16");
  if constexpr (NT >= 8) {  // the cross-warp reduction buffer of two row tiles would exceed 48 KB
    if (p.rows_per_block != 16) throw Error("nvfp4 gemm: decode64 takes 16 weight rows per block");
    launch_decode_ra<NT, 1>(p, x, m, ldx, t, stream);
  } else if (p.rows_per_block == 32)
    launch_decode_ra<NT, 2>(p, x, m, ldx, t, stream);
  else if (p.rows_per_block == 16)
    launch_decode_ra<NT, 1>(p, x, m, ldx, t, stream);
  else
    throw Error("nvfp4 gemm: rows_per_block must be 16 or 32");
}

}  // namespace

// The decode variants by their token tiles (8 tokens each); false, having launched nothing, for the others.
bool launch_decode_variant(const W4A16Plan& p, const bf16_raw* x, int64_t m, int64_t ldx,
                           const DecodeTargets& t, int sm_count, cudaStream_t stream) {
  auto check_m = [&](int max_m, const char* name) {
    if (m > max_m) throw Error(std::string("nvfp4 gemm: ") + name + " handles M <= " + std::to_string(max_m));
  };
  switch (p.variant) {
    case W4A16Variant::Decode8:
      check_m(8, "decode8");
      launch_decode_nt<1>(p, x, m, ldx, t, stream);
      return true;
    case W4A16Variant::Decode16:
      check_m(16, "decode16");
      launch_decode_nt<2>(p, x, m, ldx, t, stream);
      return true;
    case W4A16Variant::Decode32:
      check_m(32, "decode32");
      launch_decode_nt<4>(p, x, m, ldx, t, stream);
      return true;
    case W4A16Variant::Xs32:
      check_m(32, "xs32");
      if (p.rows_per_block == 128)
        launch_xs<8>(x, m, ldx, t, stream);
      else if (p.rows_per_block == 64)
        launch_xs<4>(x, m, ldx, t, stream);
      else
        throw Error("nvfp4 gemm: xs32 takes 64 or 128 weight rows per block");
      return true;
    case W4A16Variant::Decode64: {
      if (m <= 64) {
        launch_decode_nt<8>(p, x, m, ldx, t, stream);
        return true;
      }
      // Prompt-sized M on the narrower layers (choose_w4a16_plan): one launch per 64 rows, the rest with the
      // decode plan of its size, for the rows of all the targets together.
      int64_t n_total = 0;
      for (int i = 0; i < t.count; ++i) n_total += t.w[i]->geom.n;
      for (int64_t r = 0; r < m; r += 64) {
        const int64_t rows = std::min<int64_t>(64, m - r);
        DecodeTargets tr = t;
        for (int i = 0; i < t.count; ++i) tr.y[i] = t.y[i] + r * t.ldy[i];
        const W4A16Plan q = rows == 64 ? p : choose_decode_plan(rows, n_total, t.w[0]->geom.k, sm_count);
        launch_decode_variant(q, x + r * ldx, rows, ldx, tr, sm_count, stream);
      }
      return true;
    }
    default:
      return false;
  }
}

}  // namespace fp4lab
