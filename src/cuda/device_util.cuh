// Small device helpers shared by the engine's kernel files.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

namespace fp4lab::dev {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ld(const bf16* p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ float silu(float v) {
  return v / (1.0f + __expf(-v));
}
// Mamba's dt: softplus(v) (linear past 20), clamped to [lo, hi].
__device__ __forceinline__ float softplus_clamped(float v, float lo, float hi) {
  return fminf(fmaxf(v > 20.0f ? v : log1pf(__expf(v)), lo), hi);
}
// v rounded to BF16 and back: where a fused kernel keeps in registers what the separate kernels store.
__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
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

// Eight consecutive BF16 values through one 16-byte access (p 16-byte aligned).
__device__ __forceinline__ void load8(const bf16* p, float (&v)[8]) {
  const uint4 r = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __low2float(h[i]);
    v[2 * i + 1] = __high2float(h[i]);
  }
}
__device__ __forceinline__ void store8(bf16* p, const float (&v)[8]) {
  uint4 r;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = r;
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ float ldx(const void* p, int64_t i, bool f32) {
  return f32 ? static_cast<const float*>(p)[i] : __bfloat162float(static_cast<const bf16*>(p)[i]);
}

// Host side: whether p allows 16-byte accesses (the 8-value forms of the kernels).
inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Host side: calls f(std::integral_constant<int, V>) for the V of Vs equal to v (the values a kernel template
// is built for); false, calling nothing, for any other v.
template <int... Vs, class F>
bool with_value(int v, F&& f) {
  return ((v == Vs ? (f(std::integral_constant<int, Vs>{}), true) : false) || ...);
}

}  // namespace fp4lab::dev
