// NVFP4 W4A16 GEMM on Hopper's warpgroup MMA (sm_90a): Y = X . W^T for prompt-sized and large-batch M, where
// mma.sync cannot keep the tensor cores busy (kernel-notes #78).
//
// As in the mma.sync kernels, the kernel computes Y^T = W . X^T with the weights as the A operand,
// dequantized in registers straight from the tile layout (format/nvfp4_tile_layout.h): the A fragment of
// wgmma.m64nNk16 is, warp by warp, the A fragment of mma.sync.m16n8k16, so warp w of a warpgroup dequantizes
// row tile w of the block's 64 rows with the decode kernels' dequant_step. The activations are the B operand,
// read by the tensor cores from shared memory. The tile layout sums k in a permuted order (step j of a
// 64-wide chunk takes k = 16c + 4j + 0..3 for c = 0..3), so B must be staged in that order too: a first pass
// (permute_x_kernel) writes X once into the "B image", per 64-wide chunk and 8 tokens the 1 KB that the
// wgmma descriptors read (no swizzle: four k16 steps x two 8x8 core matrices, token rows of 16 bytes); the
// main kernel then copies a block's images of one chunk, contiguous, into a shared-memory stage with one bulk
// copy.
//
// Pipeline per block (one or two warpgroups, 64 weight rows each x BN tokens, K optionally split over
// blockIdx.z): weight words and scales are loaded PF chunks ahead into registers, B images STAGES - 2 chunks
// ahead into shared memory; a chunk's A fragments are dequantized, its four wgmmas issued and waited for
// (wgmma.wait_group 0: see the comment at the wait for why nothing may run while they are in flight).
#include <cuda_bf16.h>

#include <algorithm>
#include <vector>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "cuda/nvfp4_dequant.cuh"
#include "cuda/nvfp4_gemm.h"
#include "cuda/ptx.cuh"
#include "cuda/sm90_wgmma.cuh"

namespace fp4lab {

namespace {

constexpr int kImageBytes = 1024;  // one B image: 8 tokens x 64 k of BF16

// X [M, K] (row stride ldx) -> B images [kchunks][groups][1 KB]: group g holds tokens 8g .. 8g + 7 (zeros
// past M and past K). Inside an image, step j's core matrix q (k-slots 8q .. 8q + 7) starts at (2j + q) x
// 128, token row r at + 16 r, and k = 16c + 4j + 2q + h (h = 0, 1) at + 4c + 2h: a lane (r, c) reads the
// 32 bytes X[t][16c .. 16c + 15] and stores them as eight 4-byte pairs; a warp stores each 128-byte core
// matrix whole.
__global__ void __launch_bounds__(256)
    permute_x_kernel(const __nv_bfloat16* __restrict__ x, int m, int k, int64_t ldx, uint8_t* __restrict__ xp,
                     int groups, int kchunks) {
  ptx::griddep_enter();
  const int lane = threadIdx.x % 32, r = lane / 4, c4 = lane % 4;
  const int64_t units = static_cast<int64_t>(kchunks) * groups;
  for (int64_t u = blockIdx.x * int64_t{8} + threadIdx.x / 32; u < units; u += int64_t{gridDim.x} * 8) {
    const int c = static_cast<int>(u / groups), g = static_cast<int>(u % groups);
    const int t = g * 8 + r, kk = c * 64 + c4 * 16;
    uint4 v0 = make_uint4(0, 0, 0, 0), v1 = v0;
    if (t < m && kk < k) {  // K is a multiple of 16: a lane's 16 values are all inside or all past it
      v0 = ptx::ldg_v4(x + static_cast<int64_t>(t) * ldx + kk);
      v1 = ptx::ldg_v4(x + static_cast<int64_t>(t) * ldx + kk + 8);
    }
    const uint32_t pair[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};  // pair 2j + q
    uint8_t* img = xp + u * kImageBytes + r * 16 + c4 * 4;
#pragma unroll
    for (int i = 0; i < 8; ++i) *reinterpret_cast<uint32_t*>(img + i * 128) = pair[i];
  }
}

// Block: WGS warpgroups (4 warps each, one 16-row tile per warp: 64 x WGS weight rows) x BN tokens; the
// warpgroups share the B stages. blockIdx.x: the token block (fastest, so the blocks that run together share
// weight rows and read them from DRAM once), blockIdx.y: the row block, blockIdx.z: the K split (the last
// block of a tile to finish adds the partials in split order: deterministic).
template <int BN, int WGS, int STAGES, int PF>
__global__ void __launch_bounds__(WGS * 128)
    nvfp4_w4a16_wgmma_kernel(const uint8_t* __restrict__ xp, int groups, int m, const uint4* __restrict__ wq,
                             const uint16_t* __restrict__ wsc, int row_tiles, int kchunks, float alpha,
                             __nv_bfloat16* __restrict__ y, int64_t ldy, float* __restrict__ partials,
                             int* __restrict__ counters, int n_valid) {
#ifdef FP4LAB_WGMMA_ENABLED
  constexpr int kStageBytes = BN / 8 * kImageBytes;
  constexpr int kAcc = BN / 2;
  extern __shared__ __align__(1024) uint8_t smem[];
  uint32_t* lut = reinterpret_cast<uint32_t*>(smem + STAGES * kStageBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + STAGES * kStageBytes + 1024);  // one per stage

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr int kThreads = WGS * 128, kRows = WGS * 64;
  const int tile = blockIdx.y * (kRows / 16) + warp;
  const bool valid = tile < row_tiles;
  const int splits = gridDim.z, split = blockIdx.z;
  const int c_begin = static_cast<int>(static_cast<int64_t>(split) * kchunks / splits);
  const int c_end = static_cast<int>(static_cast<int64_t>(split + 1) * kchunks / splits);

  // Weights first: no kernel writes them, so their loads may overlap the previous kernel (PDL).
  const uint4* wp = wq + static_cast<int64_t>(valid ? tile : 0) * kchunks * 32 + lane;
  const uint16_t* sp = wsc + static_cast<int64_t>(valid ? tile : 0) * kchunks * 32 + lane;
  uint4 wbuf[PF];
  uint32_t sbuf[PF];
#pragma unroll
  for (int p = 0; p < PF; ++p) {
    wbuf[p] = make_uint4(0, 0, 0, 0);
    sbuf[p] = 0;
    if (valid && c_begin + p < c_end) {
      wbuf[p] = ptx::ldg_stream_v4(wp + (c_begin + p) * 32);
      sbuf[p] = ptx::ldg_stream_u16(sp + (c_begin + p) * 32);
    }
  }
  init_scale_lut(lut);
  ptx::griddep_enter();  // the B images come from the permute pass just before

  // B stages arrive by bulk copy (the copy engine writes through the async proxy that wgmma reads through,
  // so no proxy fence is needed; with 16-byte cp.async, the fence before every wgmma waited for the copies
  // still in flight, a round trip per chunk). full[s] completes when stage s holds its chunk.
  const uint8_t* xsrc = xp + static_cast<int64_t>(blockIdx.x) * kStageBytes;
  const int64_t chunk_stride = static_cast<int64_t>(groups) * kImageBytes;
  const uint32_t stage0 = ptx::smem_addr(smem);
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) ptx::mbar_init(ptx::smem_addr(&full[s]), 1);
    ptx::fence_mbar_init();
  }
  __syncthreads();                           // the scale table and the barriers
  auto load_stage = [&](int stage, int c) {  // thread 0 only
    const uint32_t bar = ptx::smem_addr(&full[stage]);
    ptx::mbar_expect_tx(bar, kStageBytes);
    ptx::bulk_copy_g2s(stage0 + stage * kStageBytes, xsrc + c * chunk_stride, kStageBytes, bar);
  };
  if (threadIdx.x == 0)
    for (int s = 0; s < STAGES - 2; ++s)
      if (c_begin + s < c_end) load_stage(s, c_begin + s);

  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;
  uint32_t a[4][4];  // a chunk's A fragments: four k16 steps

  for (int c0 = c_begin; c0 < c_end; c0 += PF) {
#pragma unroll
    for (int p = 0; p < PF; ++p) {
      const int c = c0 + p;
      if (c < c_end) {
        // The previous chunk's wgmmas have completed (the wait below): the A registers and its stage are
        // free.
        ptx::wgmma_fence_operands(acc);
        ptx::wgmma_fence_operands(a);
        uint32_t s_lo, s_hi;
        scale_pairs(lut, sbuf[p], s_lo, s_hi);
        const uint32_t words[4] = {wbuf[p].x, wbuf[p].y, wbuf[p].z, wbuf[p].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) dequant_step(words[j], s_lo, s_hi, a[j]);
        if (valid && c + PF < c_end) {
          wbuf[p] = ptx::ldg_stream_v4(wp + (c + PF) * 32);
          sbuf[p] = ptx::ldg_stream_u16(sp + (c + PF) * 32);
        }
        __syncthreads();  // every warp is past chunk c - 1: the stage of chunk c - 2 may be refilled
        const int i = c - c_begin;
        if (threadIdx.x == 0 && c + STAGES - 2 < c_end) load_stage((i + STAGES - 2) % STAGES, c + STAGES - 2);
        ptx::mbar_wait(ptx::smem_addr(&full[i % STAGES]), (i / STAGES) & 1);

        const uint32_t stage = stage0 + (i % STAGES) * kStageBytes;
        ptx::wgmma_fence();
#pragma unroll
        for (int j = 0; j < 4; ++j)
          ptx::wgmma_bf16_rs<BN>(acc, a[j], ptx::wgmma_desc(stage + j * 256, 128, kImageBytes), 1);
        ptx::wgmma_commit();
        // This chunk's wgmmas complete before anything else runs. They read A from registers asynchronously,
        // and ptxas does not keep a register that the PTX shows dead after the issue reserved until the group
        // completes: from n64 on (more accumulators, more pressure) it gave the A registers of an MMA in
        // flight to the next chunk's dequantization, and results were wrong where n32 was right (kernel-notes
        // #80). The overlap of dequantization and MMA now comes from the other blocks on the SM.
        ptx::wgmma_wait<0>();
      }
    }
  }
  ptx::wgmma_fence_operands(acc);

  // Accumulator (i, h, e) = acc[4i + 2h + e]: weight row tile*16 + lane/4 + 8h, token 8i + 2(lane%4) + e of
  // the block (the mma.sync C layout, repeated over the BN/8 token groups).
  const int tok0 = blockIdx.x * BN + 2 * (lane % 4);
  const int row0 = tile * 16 + lane / 4;
  auto for_each = [&](auto&& f) {
    if (!valid) return;
#pragma unroll
    for (int i = 0; i < BN / 8; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int t = tok0 + 8 * i + e;
          if (t < m) f(acc[4 * i + 2 * h + e], row0 + 8 * h, t);
        }
  };
  const int64_t n = static_cast<int64_t>(row_tiles) * 16;
  if (splits == 1) {
    // Through shared memory (the stages are free once every warp is past its last wait): each token's
    // outputs leave as kRows x 2 contiguous bytes instead of 2-byte stores scattered over 4 tokens per
    // instruction.
    constexpr int kPitch = kRows + 8;  // BF16 per staged token; the 8 spread the fragment stores over banks
    static_assert(BN * kPitch * 2 <= STAGES * kStageBytes, "the staged outputs fit in the stages");
    __nv_bfloat16* st = reinterpret_cast<__nv_bfloat16*>(smem);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < BN / 8; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          st[(8 * i + 2 * (lane % 4) + e) * kPitch + warp * 16 + lane / 4 + 8 * h] =
              __float2bfloat16_rn(acc[4 * i + 2 * h + e] * alpha);
    __syncthreads();
    const int row_base = blockIdx.y * kRows;
    const bool whole =
        row_base + kRows <= n_valid && ldy % 8 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
    for (int u = threadIdx.x; u < BN * kRows / 8; u += kThreads) {
      const int tl = u / (kRows / 8), q = u % (kRows / 8);
      const int t = blockIdx.x * BN + tl;
      if (t >= m) break;  // u only grows: so does the token
      const __nv_bfloat16* src = st + tl * kPitch + q * 8;
      __nv_bfloat16* dst = y + t * ldy + row_base + q * 8;
      if (whole) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
      } else {
        for (int e = 0; e < 8; ++e)
          if (row_base + q * 8 + e < n_valid) dst[e] = src[e];
      }
    }
    return;
  }
  splitk_finish(for_each, partials, counters, split, splits, m, n, n_valid, alpha, y, ldy);
#else
  __trap();  // launched only where wgmma_supported() said yes
#endif
}

// One m64n32k16 wgmma on known operands, with the operand conventions the kernel above relies on: A from
// registers in the mma.sync fragment layout, A[m][k] = (k == m % 16); B K-major without swizzle, core matrix
// (k half q, token group G) at q * 128 + G * 1024 bytes, token row at 16 (t % 8), k at 2 (k % 8), holding
// B[k][t] = (k + 16 (t % 8)) * 2^(t / 8) (exact in BF16). Writes D [64][32]; D[m][t] must be B[m % 16][t].
__global__ void wgmma_convention_kernel(float* d_out) {
#ifdef FP4LAB_WGMMA_ENABLED
  __shared__ __align__(1024) __nv_bfloat16 sb[4 * 512];
  for (int i = threadIdx.x; i < 4 * 512; i += blockDim.x) sb[i] = __float2bfloat16(0.0f);
  __syncthreads();
  for (int idx = threadIdx.x; idx < 16 * 32; idx += blockDim.x) {
    const int k = idx / 32, t = idx % 32;
    const int off = (k / 8) * 128 + (t / 8) * kImageBytes + 16 * (t % 8) + 2 * (k % 8);
    sb[off / 2] = __float2bfloat16(float(k + 16 * (t % 8)) * float(1 << (t / 8)));
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // generic-proxy stores, read by wgmma
  __syncthreads();
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  auto pair = [](float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  };
  // Row r's k slots 2c, 2c + 1 (registers 0, 1) and 2c + 8, 2c + 9 (registers 2, 3); rows g and g + 8.
  auto a_of = [](int r, int k) { return k == r % 16 ? 1.0f : 0.0f; };
  const uint32_t a[4] = {
      pair(a_of(g, 2 * c), a_of(g, 2 * c + 1)), pair(a_of(g + 8, 2 * c), a_of(g + 8, 2 * c + 1)),
      pair(a_of(g, 2 * c + 8), a_of(g, 2 * c + 9)), pair(a_of(g + 8, 2 * c + 8), a_of(g + 8, 2 * c + 9))};
  float acc[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) acc[i] = 0.0f;
  ptx::wgmma_fence();
  ptx::wgmma_bf16_rs<32>(acc, a, ptx::wgmma_desc(ptx::smem_addr(sb), 128, kImageBytes), 1);
  ptx::wgmma_commit();
  ptx::wgmma_wait<0>();
  ptx::wgmma_fence_operands(acc);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        d_out[(16 * w + g + 8 * h) * 32 + 8 * i + 2 * c + e] = acc[4 * i + 2 * h + e];
#else
  __trap();
#endif
}

// Whether this binary carries sm_90a code for the kernel above (set on the device by the probe).
__global__ void wgmma_probe_kernel(int* out) {
#ifdef FP4LAB_WGMMA_ENABLED
  *out = 1;
#else
  *out = 0;
#endif
}

template <int BN, int WGS, int STAGES, int PF>
void launch_wgmma(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& w, bf16_raw* y,
                  int64_t ldy, float alpha, int splits, GemmWorkspace& ws, cudaStream_t stream) {
  const int kchunks = static_cast<int>(w.geom.kchunks());
  const int tblocks = static_cast<int>((m + BN - 1) / BN);
  const int groups = tblocks * (BN / 8);
  auto* xp =
      reinterpret_cast<uint8_t*>(ws.b_image_scratch(static_cast<size_t>(kchunks) * groups * kImageBytes));
  const int64_t units = static_cast<int64_t>(kchunks) * groups;
  launch_kernel(permute_x_kernel, static_cast<unsigned>(std::min<int64_t>((units + 7) / 8, 132 * 16)), 256, 0,
                stream, reinterpret_cast<const __nv_bfloat16*>(x), static_cast<int>(m),
                static_cast<int>(w.geom.k), ldx, xp, groups, kchunks);

  auto kern = nvfp4_w4a16_wgmma_kernel<BN, WGS, STAGES, PF>;
  const int smem = STAGES * (BN / 8) * kImageBytes + 1024 + STAGES * 8;
  allow_dynamic_smem(kern, smem);
  const int row_tiles = static_cast<int>(w.geom.row_tiles());
  const dim3 grid(static_cast<unsigned>(tblocks),
                  static_cast<unsigned>((row_tiles + 4 * WGS - 1) / (4 * WGS)),
                  static_cast<unsigned>(splits));
  const SplitKBuffers sk =
      splitk_buffers(ws, splits, m, w.geom.n, static_cast<size_t>(grid.x) * grid.y, stream);
  launch_kernel(kern, grid, WGS * 128, smem, stream, static_cast<const uint8_t*>(xp), groups,
                static_cast<int>(m), w.weights.as<uint4>(), w.scales.as<uint16_t>(), row_tiles, kchunks,
                alpha, reinterpret_cast<__nv_bfloat16*>(y), ldy, sk.partials, sk.counters,
                static_cast<int>(w.n_valid));
}

}  // namespace

bool wgmma_supported() {
  static thread_local int known_device = -1, available = 0;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (dev == known_device) return available;
  known_device = dev;
  int major = 0, minor = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  available = 0;
  if (major == 9 && minor == 0) {
    DeviceBuffer flag(sizeof(int));
    CUDA_CHECK(cudaMemset(flag.ptr, 0, sizeof(int)));
    wgmma_probe_kernel<<<1, 1>>>(flag.as<int>());
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemcpy(&available, flag.ptr, sizeof(int), cudaMemcpyDeviceToHost));
  }
  return available;
}

int wgmma_convention_mismatches() {
  if (!wgmma_supported()) throw Error("wgmma convention check: needs an sm_90 GPU and the sm_90a target");
  DeviceBuffer d(64 * 32 * sizeof(float));
  wgmma_convention_kernel<<<1, 128>>>(d.as<float>());
  CUDA_CHECK(cudaGetLastError());
  std::vector<float> h(64 * 32);
  CUDA_CHECK(cudaMemcpy(h.data(), d.ptr, d.bytes, cudaMemcpyDeviceToHost));
  int bad = 0;
  for (int m = 0; m < 64; ++m)
    for (int t = 0; t < 32; ++t) bad += h[m * 32 + t] != float(m % 16 + 16 * (t % 8)) * float(1 << (t / 8));
  return bad;
}

void nvfp4_w4a16_wgmma(const W4A16Plan& p, const bf16_raw* x, int64_t m, int64_t ldx,
                       const Nvfp4DeviceWeight& w, bf16_raw* y, int64_t ldy, float alpha, GemmWorkspace& ws,
                       cudaStream_t stream) {
  if (!wgmma_supported())
    throw Error("nvfp4 gemm: the wgmma kernels need an sm_90 GPU and a build with the sm_90a target");
  // rows_per_block 128: two warpgroups per block share the B stages (half the shared-memory traffic per
  // weight row); otherwise one.
  const bool two = p.rows_per_block == 128;
  switch (p.variant) {
    case W4A16Variant::Wgmma32:
      two ? launch_wgmma<32, 2, 6, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream)
          : launch_wgmma<32, 1, 6, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream);
      break;
    case W4A16Variant::Wgmma64:
      two ? launch_wgmma<64, 2, 6, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream)
          : launch_wgmma<64, 1, 6, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream);
      break;
    case W4A16Variant::Wgmma128:
      two ? launch_wgmma<128, 2, 6, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream)
          : launch_wgmma<128, 1, 6, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream);
      break;
    case W4A16Variant::Wgmma256:
      two ? launch_wgmma<256, 2, 4, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream)
          : launch_wgmma<256, 1, 4, 4>(x, m, ldx, w, y, ldy, alpha, p.splits, ws, stream);
      break;
    default:
      throw Error("nvfp4 gemm: not a wgmma variant");
  }
}

}  // namespace fp4lab
