// NVFP4 -> BF16 in registers, shared by the W4A16 kernels (mma.sync and wgmma): the A operand of one k16 step
// from one 32-bit word of the tile layout (format/nvfp4_tile_layout.h) and the lane's two block scales.
//
// Dequantization is exact and costs about 1.5 instructions per weight: a nibble S.EE.M moved to bits 15 and
// 8..6 of a BF16 word is the E2M1 value times 2^-126 (EE=0 lands on BF16 subnormals, which the BF16 multiply
// keeps); one BF16 multiply by (block scale x 2^119), looked up in a 256-entry shared table, gives value x
// scale x 2^-7, exact because E2M1 x E4M3 has at most 6 significant bits. Kernels multiply their FP32 sums by
// tensor_scale x 2^7 (kEpilogueBias). Also the split-K epilogue the tensor-core kernels share.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/nvfp4_gemm.h"
#include "cuda/ptx.cuh"
#include "format/e4m3.h"

namespace fp4lab {
namespace {

constexpr float kScaleBias = 0x1p119f;   // block scales are stored pre-multiplied by 2^119 in the LUT
constexpr float kEpilogueBias = 0x1p7f;  // 2^-126 (nibble trick) x 2^119 (LUT) = 2^-7, undone here

// lut[code] = {bf16(scale x 2^119), same}: the pair an A register's two elements (same row) are multiplied
// by.
__device__ __forceinline__ void init_scale_lut(uint32_t* lut) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    const float s = e4m3_decode(static_cast<uint8_t>(i)) * kScaleBias;
    const uint32_t b = __float_as_uint(s) >> 16;  // exact: E4M3 has 4 significant bits
    lut[i] = b | (b << 16);
  }
}

// One k16 step of the A operand: word q (eight codes, bit order of format/nvfp4_tile_layout.h) and the two
// row scales of this lane. 11 integer instructions + 4 BF16 multiplies for 8 weights.
__device__ __forceinline__ void dequant_step(uint32_t q, uint32_t s_lo, uint32_t s_hi, uint32_t (&a)[4]) {
  constexpr uint32_t kMask = 0x81C081C0u;
  a[0] = ptx::bf16x2_mul(q & kMask, s_lo);
  a[1] = ptx::bf16x2_mul((q << 3) & kMask, s_hi);
  a[2] = ptx::bf16x2_mul((q << 6) & kMask, s_lo);
  a[3] =
      ptx::bf16x2_mul(((q << 1) & 0x80008000u) | ((q >> 5) & 0x01000100u) | ((q >> 4) & 0x00C000C0u), s_hi);
}

// The lane's two block scales (row r0 in the low byte, r0+8 in the high byte) as BF16x2 multipliers.
__device__ __forceinline__ void scale_pairs(const uint32_t* lut, uint32_t s, uint32_t& lo, uint32_t& hi) {
  lo = lut[s & 0xffu];
  hi = lut[(s >> 8) & 0xffu];
}

// The end of a split-K tile, shared by the tensor-core kernels: every block stores its FP32 partial sums
// (for_each visits the thread's (value, row, token) elements), and the last block of the tile to finish
// (atomic counter, left at zero again) adds the splits in split order, so the result does not depend on
// which block finished last. partials: [splits][m][n].
template <class ForEach>
__device__ __forceinline__ void splitk_finish(ForEach&& for_each, float* __restrict__ partials,
                                              int* __restrict__ counters, int split, int splits, int m,
                                              int64_t n, int n_valid, float alpha,
                                              __nv_bfloat16* __restrict__ y, int64_t ldy) {
  for_each([&](float v, int row, int t) { partials[(static_cast<int64_t>(split) * m + t) * n + row] = v; });
  __threadfence();
  __syncthreads();
  __shared__ int is_last;
  const int tile_id = blockIdx.y * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) is_last = atomicAdd(&counters[tile_id], 1) == splits - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for_each([&](float, int row, int t) {
    if (row >= n_valid) return;
    float sum = 0.0f;
    for (int s2 = 0; s2 < splits; ++s2)
      sum += __ldcg(&partials[(static_cast<int64_t>(s2) * m + t) * n + row]);
    y[t * ldy + row] = __float2bfloat16_rn(sum * alpha);
  });
  if (threadIdx.x == 0) counters[tile_id] = 0;
}

// The buffers splitk_finish needs, from the workspace: partials [splits][m][n] and one counter per output
// tile (tiles: the grid's x * y); null where the kernel does not split K.
struct SplitKBuffers {
  float* partials = nullptr;
  int* counters = nullptr;
};
inline SplitKBuffers splitk_buffers(GemmWorkspace& ws, int splits, int64_t m, int64_t n, size_t tiles,
                                    cudaStream_t stream) {
  if (splits <= 1) return {};
  return {ws.partials(static_cast<size_t>(splits) * m * n, stream), ws.counters(tiles, stream)};
}

}  // namespace
}  // namespace fp4lab
