// Small device helpers shared by the engine's kernel files.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace fp4lab::dev {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ld(const bf16* p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ float silu(float v) {
  return v / (1.0f + __expf(-v));
}

// Block-wide sum for blockDim.x <= 1024 (multiple of 32).
__device__ inline float block_sum(float v) {
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

__device__ __forceinline__ float ldx(const void* p, int64_t i, bool f32) {
  return f32 ? static_cast<const float*>(p)[i] : __bfloat162float(static_cast<const bf16*>(p)[i]);
}

}  // namespace fp4lab::dev
