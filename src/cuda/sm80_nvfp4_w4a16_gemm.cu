// NVFP4 W4A16 GEMM for sm_80 and newer (built for sm_80, sm_90a, sm_100a, sm_120a): Y = X . W^T with W in
// NVFP4 (tile layout, format/nvfp4_tile_layout.h) and X, Y in BF16. This file holds the entry points of
// nvfp4_gemm.h, which pick a variant (cuda/gemm_heuristics.h) and launch it: the decode kernels for a few
// tokens (sm80_nvfp4_w4a16_decode.cu), the tensor-core kernel below for more, wgmma on sm_90a
// (sm90_nvfp4_w4a16_wgmma.cu), or a dequantization to BF16 and cuBLAS.
//
// The kernels compute Y^T = W . X^T on mma.sync.m16n8k16: W is the A operand, dequantized in registers.
// Dequantization (cuda/nvfp4_dequant.cuh) is exact; the epilogue multiplies by tensor_scale x 2^7.
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

// ---------------------------------------------------------------------------------------------------------
// Tensor-core kernel (M > 16). Block tile: BN = WARPS_N*RA*16 weight rows x BM = WARPS_M*NT*8 tokens. X
// chunks (BM x 64) are staged in shared memory by cp.async, STAGES deep, XOR-swizzled so the 16-byte B loads
// are conflict-free. Each warp loads its own weight rows straight into registers, PF chunks ahead (staging
// them in shared memory with X instead was measured slower: kernel-notes #15). K may be split across
// blockIdx.z; the last block of a tile to finish sums the partials in split order (deterministic).
template <int WARPS_N, int WARPS_M, int RA, int NT, int STAGES, int PF>
__global__ void __launch_bounds__(WARPS_N* WARPS_M * 32)
    nvfp4_w4a16_mma_kernel(const __nv_bfloat16* __restrict__ x, int m, int k, int64_t ldx,
                           const uint4* __restrict__ wq, const uint16_t* __restrict__ wsc, int row_tiles,
                           int kchunks, float alpha, __nv_bfloat16* __restrict__ y, int64_t ldy,
                           float* __restrict__ partials, int* __restrict__ counters, int n_valid) {
  ptx::griddep_enter();
  constexpr int BM = WARPS_M * NT * 8;
  constexpr int THREADS = WARPS_N * WARPS_M * 32;
  extern __shared__ __align__(16) uint8_t smem[];
  uint32_t* lut = reinterpret_cast<uint32_t*>(smem);
  uint8_t* xs = smem + 1024;  // STAGES x BM x 128 bytes

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_n = warp % WARPS_N, warp_m = warp / WARPS_N;
  const int m0 = blockIdx.y * BM;
  const int splits = gridDim.z, split = blockIdx.z;
  const int c_begin = static_cast<int>(static_cast<int64_t>(split) * kchunks / splits);
  const int c_end = static_cast<int>(static_cast<int64_t>(split + 1) * kchunks / splits);

  init_scale_lut(lut);

  auto load_stage = [&](int stage, int c) {
    uint8_t* base = xs + stage * BM * 128;
    for (int id = threadIdx.x; id < BM * 8; id += THREADS) {
      const int t = id / 8, q = id % 8;
      const int kk = c * 64 + q * 8;
      const bool ok = m0 + t < m && kk < k;
      const __nv_bfloat16* src = ok ? x + static_cast<int64_t>(m0 + t) * ldx + kk : x;
      ptx::cp_async_16(ptx::smem_addr(base + t * 128 + ((q ^ (t & 7)) * 16)), src, ok ? 16 : 0);
    }
  };

  int tiles[RA];
  bool valid[RA];
#pragma unroll
  for (int ra = 0; ra < RA; ++ra) {
    tiles[ra] = (blockIdx.x * WARPS_N + warp_n) * RA + ra;
    valid[ra] = tiles[ra] < row_tiles;
  }
  auto wptr = [&](int ra, int c) { return wq + (static_cast<int64_t>(tiles[ra]) * kchunks + c) * 32 + lane; };
  auto sptr = [&](int ra, int c) {
    return wsc + (static_cast<int64_t>(tiles[ra]) * kchunks + c) * 32 + lane;
  };

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (c_begin + s < c_end) load_stage(s, c_begin + s);
    ptx::cp_async_commit();
  }
  uint4 wbuf[PF][RA];
  uint32_t sbuf[PF][RA];
#pragma unroll
  for (int p = 0; p < PF; ++p)
#pragma unroll
    for (int ra = 0; ra < RA; ++ra)
      if (c_begin + p < c_end && valid[ra]) {
        wbuf[p][ra] = ptx::ldg_stream_v4(wptr(ra, c_begin + p));
        sbuf[p][ra] = ptx::ldg_stream_u16(sptr(ra, c_begin + p));
      }

  float acc[RA][NT][4] = {};
  for (int c0 = c_begin; c0 < c_end; c0 += PF) {
#pragma unroll
    for (int p = 0; p < PF; ++p) {
      const int c = c0 + p;
      if (c < c_end) {
        ptx::cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage (c - c_begin) % STAGES is visible; the stage refilled below is free
        const int cn = c + STAGES - 1;
        if (cn < c_end) load_stage((cn - c_begin) % STAGES, cn);
        ptx::cp_async_commit();

        uint4 w[RA];
        uint32_t s_lo[RA], s_hi[RA];
        const int stage = (c - c_begin) % STAGES;
#pragma unroll
        for (int ra = 0; ra < RA; ++ra) {
          w[ra] = wbuf[p][ra];
          scale_pairs(lut, sbuf[p][ra], s_lo[ra], s_hi[ra]);
          if (c + PF < c_end && valid[ra]) {
            wbuf[p][ra] = ptx::ldg_stream_v4(wptr(ra, c + PF));
            sbuf[p][ra] = ptx::ldg_stream_u16(sptr(ra, c + PF));
          }
        }
        const uint8_t* base = xs + stage * BM * 128;
#pragma unroll
        for (int jp = 0; jp < 2; ++jp) {  // pairs of k16 steps: one 16-byte load per token tile
          uint32_t b[NT][4];
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            // Lane (token t, c) wants X[t][16c + 8jp .. +7], the 16-byte unit 2c + jp of the staged row.
            const int t = warp_m * NT * 8 + nt * 8 + (lane >> 2);
            const int q = 2 * (lane & 3) + jp;
            const uint4 v = ptx::lds_v4(ptx::smem_addr(base + t * 128 + ((q ^ (t & 7)) * 16)));
            b[nt][0] = v.x, b[nt][1] = v.y, b[nt][2] = v.z, b[nt][3] = v.w;
          }
#pragma unroll
          for (int jj = 0; jj < 2; ++jj) {
            const int j = 2 * jp + jj;
#pragma unroll
            for (int ra = 0; ra < RA; ++ra) {
              if (!valid[ra]) continue;
              const uint32_t words[4] = {w[ra].x, w[ra].y, w[ra].z, w[ra].w};
              uint32_t a[4];
              dequant_step(words[j], s_lo[ra], s_hi[ra], a);
#pragma unroll
              for (int nt = 0; nt < NT; ++nt)
                ptx::mma_bf16_16816(acc[ra][nt], a, b[nt][2 * jj], b[nt][2 * jj + 1]);
            }
          }
        }
      }
    }
  }
  ptx::cp_async_wait<0>();

  // Epilogue. Thread element (ra, nt, i): row = tile*16 + lane/4 (+8 for i >= 2), token = 2*(lane%4) + (i &
  // 1).
  const int tok_base = m0 + warp_m * NT * 8 + 2 * (lane % 4);
  auto for_each = [&](auto&& f) {
#pragma unroll
    for (int ra = 0; ra < RA; ++ra) {
      if (!valid[ra]) continue;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int row = tiles[ra] * 16 + lane / 4 + (i >= 2 ? 8 : 0);
          const int t = tok_base + nt * 8 + (i & 1);
          if (t < m) f(acc[ra][nt][i], row, t);
        }
    }
  };
  const int64_t n = static_cast<int64_t>(row_tiles) * 16;
  if (splits == 1) {
    for_each([&](float v, int row, int t) {
      if (row < n_valid) y[t * ldy + row] = __float2bfloat16_rn(v * alpha);
    });
    return;
  }
  splitk_finish(for_each, partials, counters, split, splits, m, n, n_valid, alpha, y, ldy);
}

template <int WARPS_N, int WARPS_M, int RA, int NT, int STAGES, int PF>
void launch_mma(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& w, bf16_raw* y,
                int64_t ldy, float alpha, int splits, GemmWorkspace& ws, cudaStream_t stream) {
  constexpr int BN = WARPS_N * RA * 16, BM = WARPS_M * NT * 8;
  auto kern = nvfp4_w4a16_mma_kernel<WARPS_N, WARPS_M, RA, NT, STAGES, PF>;
  const int smem = 1024 + STAGES * BM * 128;
  allow_dynamic_smem(kern, smem);
  const int row_tiles = static_cast<int>(w.geom.row_tiles());
  dim3 grid(static_cast<unsigned>((w.geom.n + BN - 1) / BN), static_cast<unsigned>((m + BM - 1) / BM),
            static_cast<unsigned>(splits));
  const SplitKBuffers sk =
      splitk_buffers(ws, splits, m, w.geom.n, static_cast<size_t>(grid.x) * grid.y, stream);
  launch_kernel(kern, grid, WARPS_N * WARPS_M * 32, smem, stream, reinterpret_cast<const __nv_bfloat16*>(x),
                static_cast<int>(m), static_cast<int>(w.geom.k), ldx, w.weights.as<uint4>(),
                w.scales.as<uint16_t>(), row_tiles, static_cast<int>(w.geom.kchunks()), alpha,
                reinterpret_cast<__nv_bfloat16*>(y), ldy, sk.partials, sk.counters,
                static_cast<int>(w.n_valid));
}

}  // namespace

namespace {
// DequantBlas's first pass with the decode kernels' dequantization: a warp per (row tile, 64-wide chunk),
// whose lane (g, c4) holds codes k = 16 c4 .. 16 c4 + 15 of the chunk for rows g and g + 8 (step s of
// dequant_step: registers 0 / 2 are row g at k = 16 c4 + 4 s + 0..1 / 2..3, registers 1 / 3 row g + 8), so
// each lane has 32 contiguous bytes per row and a warp 16 full 128-byte row segments (stored as whole 32-byte
// sectors after a swap between lane pairs, below). The values keep
// dequant_step's 2^-7 (exact in BF16); the cuBLAS call's alpha undoes it.
__global__ void __launch_bounds__(256)
    dequant_bf16_kernel(const uint4* __restrict__ wq, const uint16_t* __restrict__ wsc, int64_t units,
                        int kchunks, int64_t k, __nv_bfloat16* __restrict__ out) {
  __shared__ uint32_t lut[256];
  init_scale_lut(lut);
  __syncthreads();
  const int lane = threadIdx.x % 32, g = lane / 4, c4 = lane % 4;
  for (int64_t u = blockIdx.x * int64_t{8} + threadIdx.x / 32; u < units; u += int64_t{gridDim.x} * 8) {
    // K is a multiple of 16: a lane's 16 codes are all inside or all padding. Padding lanes still convert
    // (the tiled weight is stored whole, so the loads are in bounds) for the shuffles below, and store
    // nothing.
    const int64_t tile = u / kchunks, kk = (u % kchunks) * 64 + 16 * c4;
    const uint4 w = ptx::ldg_stream_v4(wq + u * 32 + lane);
    uint32_t s_lo, s_hi;
    scale_pairs(lut, ptx::ldg_stream_u16(wsc + u * 32 + lane), s_lo, s_hi);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    uint32_t r0[8], r8[8];
#pragma unroll
    for (int st = 0; st < 4; ++st) {
      uint32_t a[4];
      dequant_step(words[st], s_lo, s_hi, a);
      r0[2 * st] = a[0], r0[2 * st + 1] = a[2], r8[2 * st] = a[1], r8[2 * st + 1] = a[3];
    }
    // Lane c4 holds elements [kk, kk + 16) of rows g and g + 8 (halves H0, H1 of 16 bytes), but one 16-byte
    // store per lane fills only half of each 32-byte sector per instruction (ncu: L2-bound at 81% with DRAM
    // at 40%). The lanes of a pair (c4 = 2p: E0 E1; 2p + 1: O0 O1) swap E1 for O0, so each store instruction
    // writes whole sectors: E0 | E1 first (even lane E0, odd lane E1), then O0 | O1.
    const bool odd = c4 & 1;
    uint32_t s0[8], s8[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t got0 = __shfl_xor_sync(0xffffffffu, odd ? r0[i] : r0[4 + i], 1);
      const uint32_t got8 = __shfl_xor_sync(0xffffffffu, odd ? r8[i] : r8[4 + i], 1);
      s0[i] = odd ? got0 : r0[i], s0[4 + i] = odd ? r0[4 + i] : got0;
      s8[i] = odd ? got8 : r8[i], s8[4 + i] = odd ? r8[4 + i] : got8;
    }
    const int64_t pair0 = kk - 16 * (c4 & 1);  // the pair's first element
    __nv_bfloat16* row0 = out + (tile * 16 + g) * k;
    __nv_bfloat16* row8 = out + (tile * 16 + g + 8) * k;
    if (pair0 + 16 < k) {  // both lanes of the pair inside K
      const int64_t at = pair0 + (odd ? 8 : 0);
      reinterpret_cast<uint4*>(row0 + at)[0] = make_uint4(s0[0], s0[1], s0[2], s0[3]);
      reinterpret_cast<uint4*>(row0 + at + 16)[0] = make_uint4(s0[4], s0[5], s0[6], s0[7]);
      reinterpret_cast<uint4*>(row8 + at)[0] = make_uint4(s8[0], s8[1], s8[2], s8[3]);
      reinterpret_cast<uint4*>(row8 + at + 16)[0] = make_uint4(s8[4], s8[5], s8[6], s8[7]);
    } else if (kk < k) {  // K ends inside the pair: the even lane stores its own 32 bytes
      reinterpret_cast<uint4*>(row0 + kk)[0] = make_uint4(r0[0], r0[1], r0[2], r0[3]);
      reinterpret_cast<uint4*>(row0 + kk + 8)[0] = make_uint4(r0[4], r0[5], r0[6], r0[7]);
      reinterpret_cast<uint4*>(row8 + kk)[0] = make_uint4(r8[0], r8[1], r8[2], r8[3]);
      reinterpret_cast<uint4*>(row8 + kk + 8)[0] = make_uint4(r8[4], r8[5], r8[6], r8[7]);
    }
  }
}
}  // namespace

void nvfp4_dequant_tiled_to_bf16(const Nvfp4DeviceWeight& w, bf16_raw* out, cudaStream_t stream) {
  const int64_t units = w.geom.row_tiles() * w.geom.kchunks();
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((units + 7) / 8, 132 * 16));
  launch_kernel(dequant_bf16_kernel, blocks, 256, 0, stream, w.weights.as<uint4>(), w.scales.as<uint16_t>(),
                units, static_cast<int>(w.geom.kchunks()), w.geom.k, reinterpret_cast<__nv_bfloat16*>(out));
}

void nvfp4_w4a16_gemm(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& w, bf16_raw* y,
                      int64_t ldy, float alpha, GemmWorkspace& ws, cudaStream_t stream,
                      const W4A16Plan* plan) {
  if (m <= 0) return;
  if (w.geom.n % 16 || w.geom.k % 16)
    throw Error("nvfp4 gemm: the tiled weight must have N and K multiples of 16");
  if (ldx < w.geom.k || ldy < w.n_valid || (ldx % 8))
    throw Error("nvfp4 gemm: leading dimensions must cover K/N and keep 16-byte rows (ldx % 8 == 0)");
  if (reinterpret_cast<uintptr_t>(x) % 16) throw Error("nvfp4 gemm: X must be 16-byte aligned");
  const W4A16Plan p = plan ? *plan : choose_w4a16_plan(m, w.geom.n, w.geom.k, ws.sm_count(), ws.wgmma());
  const float a = alpha * w.tensor_scale * kEpilogueBias;
  if (launch_decode_variant(p, x, m, ldx, {{&w}, {y}, {ldy}, {a}, 1}, ws.sm_count(), stream)) return;
  switch (p.variant) {
    case W4A16Variant::Mma32:
      launch_mma<4, 1, 2, 4, 4, 2>(x, m, ldx, w, y, ldy, a, p.splits, ws, stream);
      break;
    case W4A16Variant::Mma64:
      launch_mma<4, 1, 2, 8, 4, 2>(x, m, ldx, w, y, ldy, a, p.splits, ws, stream);
      break;
    case W4A16Variant::Mma128:
      launch_mma<4, 2, 2, 8, 4, 2>(x, m, ldx, w, y, ldy, a, p.splits, ws, stream);
      break;
    case W4A16Variant::Wgmma32:
    case W4A16Variant::Wgmma64:
    case W4A16Variant::Wgmma128:
    case W4A16Variant::Wgmma256:
      nvfp4_w4a16_wgmma(p, x, m, ldx, w, y, ldy, a, ws, stream);
      break;
    case W4A16Variant::DequantBlas: {
      bf16_raw* wd = ws.dequant_scratch(static_cast<size_t>(w.geom.n * w.geom.k));
      nvfp4_dequant_tiled_to_bf16(w, wd, stream);
      auto h = static_cast<cublasHandle_t>(ws.cublas_handle());
      CUBLAS_CHECK(cublasSetStream(h, stream));
      const float beta = 0.0f, al = a;  // with kEpilogueBias: the scratch holds values x 2^-7
      CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.n_valid), static_cast<int>(m),
                                static_cast<int>(w.geom.k), &al, wd, CUDA_R_16BF, static_cast<int>(w.geom.k),
                                x, CUDA_R_16BF, static_cast<int>(ldx), &beta, y, CUDA_R_16BF,
                                static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      break;
    }
    default:  // the decode variants, launched above
      break;
  }
}

namespace {
// What the decode kernels ask of one weight and the operands around it (16-row tiles, 16-byte X rows);
// nvfp4_w4a16_gemm throws on the same conditions, the optional entry points below decline instead.
bool decode_operands_ok(const bf16_raw* x, int64_t ldx, const Nvfp4DeviceWeight& w, int64_t ldy) {
  return w.geom.n % 16 == 0 && w.geom.k % 16 == 0 && ldx >= w.geom.k && ldy >= w.n_valid && ldx % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0;
}
}  // namespace

bool nvfp4_w4a16_gemm_relu2(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& w,
                            bf16_raw* y, int64_t ldy, GemmWorkspace& ws, cudaStream_t stream) {
  if (m <= 0 || !decode_operands_ok(x, ldx, w, ldy)) return false;
  const W4A16Plan p = choose_w4a16_plan(m, w.geom.n, w.geom.k, ws.sm_count(), ws.wgmma());
  DecodeTargets t{{&w}, {y}, {ldy}, {w.tensor_scale * kEpilogueBias}, 1, DecodeAct::Relu2};
  return launch_decode_variant(p, x, m, ldx, t, ws.sm_count(), stream);
}

namespace {
// y[t][j] = silu(gs * z[t][gate column of j]) * (us * z[t][up column of j]), z the interleaved GEMM output.
__global__ void swiglu_interleaved_kernel(const __nv_bfloat16* __restrict__ z, int64_t m, int64_t n, float gs,
                                          float us, __nv_bfloat16* __restrict__ y, int64_t ldy) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / n, j = i % n;
    const int64_t zc = (j / 8) * 16 + j % 8;
    const float g = __bfloat162float(z[t * 2 * n + zc]) * gs,
                u = __bfloat162float(z[t * 2 * n + zc + 8]) * us;
    y[t * ldy + j] = __float2bfloat16_rn(dev::silu(g) * u);
  }
}
// The same with 16-byte accesses (ldy a multiple of 8, y aligned): 8 outputs per thread read one 16-byte run
// of gate and the next of up (columns 16 u .. 16 u + 15 of z). Rows in blockIdx.y: no per-element division
// (the scalar form, with two 64-bit divisions per output, was several times slower than the bytes).
__global__ void swiglu_interleaved8_kernel(const __nv_bfloat16* __restrict__ z, int64_t m, int64_t n8,
                                           float gs, float us, __nv_bfloat16* __restrict__ y, int64_t ldy) {
  ptx::griddep_enter();
  for (int64_t t = blockIdx.y; t < m; t += gridDim.y)
    for (int64_t u = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; u < n8;
         u += int64_t{gridDim.x} * blockDim.x) {
      float g[8], up[8];
      dev::load8(z + t * 16 * n8 + 16 * u, g);
      dev::load8(z + t * 16 * n8 + 16 * u + 8, up);
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] = dev::silu(g[e] * gs) * (up[e] * us);
      dev::store8(y + t * ldy + 8 * u, g);
    }
}
}  // namespace

void nvfp4_w4a16_gemm_swiglu(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& gu,
                             float gate_scale, float up_scale, bf16_raw* y, int64_t ldy, GemmWorkspace& ws,
                             cudaStream_t stream) {
  if (m <= 0) return;
  const int64_t n = gu.n_valid / 2;
  if (gu.n_valid % 16 || gu.tensor_scale != 1.0f || ldy < n)
    throw Error("nvfp4 gemm: the SwiGLU GEMM takes a gate/up pair from nvfp4_repack_swiglu_pair_device");
  if (decode_operands_ok(x, ldx, gu, 2 * n)) {
    const W4A16Plan p = choose_w4a16_plan(m, gu.geom.n, gu.geom.k, ws.sm_count(), ws.wgmma());
    DecodeTargets t{
        {&gu}, {y}, {ldy}, {gate_scale * kEpilogueBias}, 1, DecodeAct::Swiglu, up_scale * kEpilogueBias};
    if (launch_decode_variant(p, x, m, ldx, t, ws.sm_count(), stream)) return;
  }
  bf16_raw* z = ws.swiglu_scratch(static_cast<size_t>(m * 2 * n));
  nvfp4_w4a16_gemm(x, m, ldx, gu, z, 2 * n, 1.0f, ws, stream);
  if (n % 8 == 0 && ldy % 8 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(z) % 16 == 0) {
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((n / 8 + 255) / 256, 64)),
                    static_cast<unsigned>(std::min<int64_t>(m, 65535)));
    launch_kernel(swiglu_interleaved8_kernel, grid, 256, 0, stream, reinterpret_cast<const __nv_bfloat16*>(z),
                  m, n / 8, gate_scale, up_scale, reinterpret_cast<__nv_bfloat16*>(y), ldy);
    return;
  }
  launch_kernel(swiglu_interleaved_kernel, grid_1d(m * n, 256), 256, 0, stream,
                reinterpret_cast<const __nv_bfloat16*>(z), m, n, gate_scale, up_scale,
                reinterpret_cast<__nv_bfloat16*>(y), ldy);
}

bool nvfp4_w4a16_gemm_group(const bf16_raw* x, int64_t m, int64_t ldx,
                            std::span<const Nvfp4DeviceWeight* const> w, std::span<bf16_raw* const> y,
                            std::span<const int64_t> ldy, GemmWorkspace& ws, cudaStream_t stream) {
  if (m <= 0 || m > 32 || w.size() < 2 || w.size() > 3 || y.size() != w.size() || ldy.size() != w.size())
    return false;
  DecodeTargets t{};
  t.count = static_cast<int>(w.size());
  int64_t n_total = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i]->geom.k != w[0]->geom.k || !decode_operands_ok(x, ldx, *w[i], ldy[i])) return false;
    t.w[i] = w[i];
    t.y[i] = y[i];
    t.ldy[i] = ldy[i];
    t.alpha[i] = w[i]->tensor_scale * kEpilogueBias;
    n_total += w[i]->geom.n;
  }
  // The shape the heuristic sees is the group's: one launch over all the rows.
  const W4A16Plan p = choose_w4a16_plan(m, n_total, w[0]->geom.k, ws.sm_count(), ws.wgmma());
  return launch_decode_variant(p, x, m, ldx, t, ws.sm_count(), stream);
}

}  // namespace fp4lab
