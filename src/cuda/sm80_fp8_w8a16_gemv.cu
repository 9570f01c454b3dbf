// FP8 E4M3 W8A16 GEMV for decode (see fp8_linear.h), and the small kernels of the FP8 paths (per-token
// activation quantization, codes to BF16, per-row scales). The GEMV is the BF16 GEMV's structure
// (sm80_bf16_gemv.cu) on codes: a block owns 8 rows, four groups of two rows, each group walked by S warps
// that split K in interleaved 512-byte runs; a lane takes a 16-byte chunk (16 codes) per row and step. The
// codes become FP32 in registers, exactly: on sm_89+ by the hardware conversion (two codes to two FP16 in one
// instruction, FP16 to FP32 on the FP16 pipe), leaving the integer pipe to the loads; on sm_80 in three
// integer operations (sign to bit 31, exponent and mantissa bits to bits 20-26: the value times 2^-120,
// subnormal codes landing on FP32 subnormals, which the FMA keeps: no FTZ in this build, and the sum is
// multiplied by 2^120 at the end).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "cuda/bf16_gemv.h"
#include "cuda/check.h"
#include "cuda/fp8_linear.h"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"
#include "format/e4m3.h"

namespace fp4lab {
namespace {

constexpr int kGroups = 4, kRows = 2;

// Byte B of w as an E4M3 code, returned as FP32 equal to its value times 2^-120.
template <int B>
[[maybe_unused]] __device__ __forceinline__ float e4m3_lowered(uint32_t w) {
  const int32_t t = static_cast<int32_t>(w << (24 - 8 * B));  // the code in bits 24-31
  return __int_as_float((t >> 4) & static_cast<int32_t>(0x87f00000u));
}

// Two codes (the low and high byte of `two`) as FP32, exactly, by the sm_89+ conversion; the low byte in x.
[[maybe_unused]] __device__ __forceinline__ float2 e4m3x2_to_float2(uint32_t two) {
  uint32_t h = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(static_cast<unsigned short>(two)));
#endif
  __half2 v;
  memcpy(&v, &h, sizeof v);
  return __half22float2(v);
}

// What a sum of products of the converted codes is multiplied by to be the sum of the codes' values.
__device__ __forceinline__ float code_unit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  return 1.0f;
#else
  return 0x1p120f;
#endif
}

// The 16 products of one chunk of codes (16 bytes) and the matching 16 BF16 activations (x0, x1), added to
// acc.
__device__ __forceinline__ float dot16(const uint4& w, const uint4& x0, const uint4& x1, float acc) {
  const uint32_t wa[4] = {w.x, w.y, w.z, w.w};
  const uint32_t xa[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t lo = xa[2 * i], hi = xa[2 * i + 1];  // activations 4i, 4i+1 | 4i+2, 4i+3
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    const float2 a = e4m3x2_to_float2(wa[i] & 0xffffu), b = e4m3x2_to_float2(wa[i] >> 16);
    acc = fmaf(a.x, __uint_as_float(lo << 16), acc);
    acc = fmaf(a.y, __uint_as_float(lo & 0xffff0000u), acc);
    acc = fmaf(b.x, __uint_as_float(hi << 16), acc);
    acc = fmaf(b.y, __uint_as_float(hi & 0xffff0000u), acc);
#else
    acc = fmaf(e4m3_lowered<0>(wa[i]), __uint_as_float(lo << 16), acc);
    acc = fmaf(e4m3_lowered<1>(wa[i]), __uint_as_float(lo & 0xffff0000u), acc);
    acc = fmaf(e4m3_lowered<2>(wa[i]), __uint_as_float(hi << 16), acc);
    acc = fmaf(e4m3_lowered<3>(wa[i]), __uint_as_float(hi & 0xffff0000u), acc);
#endif
  }
  return acc;
}

// Chunks of loads in flight per row and warp: fewer as the activation rows take registers.
constexpr int unroll_for(int m) {
  return m <= 2 ? 4 : m <= 4 ? 2 : 1;
}

template <int M, int S>
__global__ void __launch_bounds__(kGroups* S * 32)
    fp8_gemv_kernel(const bf16_raw* __restrict__ x, int64_t ldx, int m_valid, const uint8_t* __restrict__ w,
                    const float* __restrict__ scales, int per_row, int n, int k, bf16_raw* __restrict__ y,
                    int64_t ldy) {
  constexpr int U = unroll_for(M);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = warp / S, part = warp % S;
  const int row0 = (blockIdx.x * kGroups + group) * kRows;
  const int chunks = k / 16;
  // Rows past n read row n - 1 (no predicates in the loop); they are never stored.
  const uint4* wr[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    wr[r] = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(min(row0 + r, n - 1)) * k);
  constexpr int kStep = U * S * 32;
  uint4 wv[U][kRows];
  const auto load_w = [&](int c0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + (u * S + part) * 32 + lane;
#pragma unroll
      for (int r = 0; r < kRows; ++r) wv[u][r] = c < chunks ? ptx::ldg_stream_v4(wr[r] + c) : uint4{};
    }
  };
  // No kernel writes the weights: their first loads overlap the previous kernel's tail.
  load_w(0);
  ptx::griddep_enter();
  float acc[kRows * M] = {};  // row r, token m at r * M + m
  for (int c0 = 0; c0 < chunks; c0 += kStep) {
    if (c0 != 0) load_w(c0);
    uint4 xv[U][M][2];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + (u * S + part) * 32 + lane;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const bool ok = c < chunks && m < m_valid;
        const bf16_raw* p = x + m * ldx + static_cast<int64_t>(c) * 16;
        xv[u][m][0] = ok ? ptx::ldg_v4(p) : uint4{};
        xv[u][m][1] = ok ? ptx::ldg_v4(p + 8) : uint4{};
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m)
          acc[r * M + m] = dot16(wv[u][r], xv[u][m][0], xv[u][m][1], acc[r * M + m]);
  }
  __shared__ float sm_part[kGroups][kRows * M][S];
#pragma unroll
  for (int i = 0; i < kRows * M; ++i) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
    if (S > 1 && lane == 0) sm_part[group][i][part] = acc[i];
  }
  if constexpr (S > 1) __syncthreads();
  if (part != 0 || lane != 0) return;
#pragma unroll
  for (int i = 0; i < kRows * M; ++i) {
    const int r = i / M, m = i % M;
    if (row0 + r >= n || m >= m_valid) continue;
    float v = acc[i];
#pragma unroll
    for (int p = 1; p < S; ++p) v += sm_part[group][i][p];
    // Two multiplies: 2^120 x scale alone would overflow for scales above 2^8.
    v = v * code_unit() * scales[per_row ? row0 + r : 0];
    const __nv_bfloat16 b = __float2bfloat16_rn(v);
    y[m * ldy + row0 + r] = *reinterpret_cast<const bf16_raw*>(&b);
  }
}

template <int M, int S>
void launch(const bf16_raw* x, int64_t ldx, int m, const Fp8Weight& w, bf16_raw* y, int64_t ldy,
            cudaStream_t stream) {
  const int64_t blocks = (w.n + kGroups * kRows - 1) / (kGroups * kRows);
  launch_kernel(fp8_gemv_kernel<M, S>, dim3(static_cast<unsigned>(blocks)), kGroups * S * 32, 0, stream, x,
                ldx, m, w.codes, w.scales, w.per_row ? 1 : 0, static_cast<int>(w.n), static_cast<int>(w.k), y,
                ldy);
}

template <int M>
void launch_split(int split, const bf16_raw* x, int64_t ldx, int m, const Fp8Weight& w, bf16_raw* y,
                  int64_t ldy, cudaStream_t stream) {
  switch (split) {
    case 1:
      return launch<M, 1>(x, ldx, m, w, y, ldy, stream);
    case 2:
      return launch<M, 2>(x, ldx, m, w, y, ldy, stream);
    default:
      return launch<M, 4>(x, ldx, m, w, y, ldy, stream);
  }
}

__global__ void codes_to_bf16_kernel(const uint8_t* __restrict__ codes, int64_t count,
                                     bf16_raw* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const __nv_bfloat16 b = __float2bfloat16_rn(e4m3_decode(codes[i]));  // exact
    out[i] = *reinterpret_cast<const bf16_raw*>(&b);
  }
}

__global__ void scale_columns_kernel(bf16_raw* y, int64_t m, int64_t n, int64_t ldy, const float* scales) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    bf16_raw& v = y[r * ldy + c];
    const __nv_bfloat16 b = __float2bfloat16_rn(__uint_as_float(uint32_t{v} << 16) * scales[c]);
    v = *reinterpret_cast<const bf16_raw*>(&b);
  }
}

// Eight values under one scale as eight E4M3 codes (low byte first), round to nearest even with saturation:
// e4m3_encode's rounding, by the hardware conversion on sm_89+.
__device__ __forceinline__ uint2 encode8(const float (&v)[8], float s) {
  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < 4; j += 2) {
      const float a = v[4 * h + j] / s, b = v[4 * h + j + 1] / s;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
      unsigned short pair;
      asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(b), "f"(a));  // b in the high byte
      w[h] |= uint32_t{pair} << (8 * j);
#else
      w[h] |= (uint32_t{e4m3_encode(a)} | uint32_t{e4m3_encode(b)} << 8) << (8 * j);
#endif
    }
  return {w[0], w[1]};
}

// The largest of the values of a block of kThreads threads (non-negative values), in every thread.
template <int kThreads>
__device__ __forceinline__ float block_max(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __shared__ float warp_max[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  v = 0.0f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) v = fmaxf(v, warp_max[w]);
  return v;
}

// Activation quantization, one block per row, the row kept in registers (PER 16-byte chunks per thread) so it
// is read once per pass. Rows: the row's amax, then its codes under amax / 448 (fp8_quantize_ref's recipe per
// row). TensorAmax: the rows' amax into state[1] (atomic max of the bits: amax >= 0), the last block to
// finish turning it into the scale state[0] = amax / 448 and zeroing state[1], state[2] for the next call;
// TensorCodes: the codes under state[0].
enum class QuantPass { Rows, TensorAmax, TensorCodes };
constexpr int kQuantThreads = 512;
template <int PER, QuantPass P>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_act_kernel(const bf16_raw* __restrict__ x, int64_t k, int64_t ldx, uint8_t* __restrict__ out,
                        float* __restrict__ scales) {
  ptx::griddep_enter();
  const int64_t row = blockIdx.x, chunks = k / 8;
  const bf16_raw* xr = x + row * ldx;
  uint4 v[PER];
  float amax = 0.0f;
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int64_t c = threadIdx.x + int64_t{p} * kQuantThreads;
    v[p] = c < chunks ? ptx::ldg_v4(xr + c * 8) : uint4{};
    for (const uint32_t u : {v[p].x, v[p].y, v[p].z, v[p].w})
      amax = fmaxf(amax, fmaxf(fabsf(__uint_as_float(u << 16)), fabsf(__uint_as_float(u & 0xffff0000u))));
  }
  float s = 0.0f;
  if constexpr (P == QuantPass::TensorCodes) {
    s = scales[0];
  } else {
    amax = block_max<kQuantThreads>(amax);
    if constexpr (P == QuantPass::TensorAmax) {
      if (threadIdx.x == 0) {
        auto* bits = reinterpret_cast<unsigned int*>(scales);
        atomicMax(bits + 1, __float_as_uint(amax));
        __threadfence();
        if (atomicAdd(bits + 2, 1u) == gridDim.x - 1) {
          const float a = __uint_as_float(atomicExch(bits + 1, 0u));
          scales[0] = a > 0.0f ? a / kE4M3Max : 1.0f;
          atomicExch(bits + 2, 0u);
        }
      }
      return;
    }
    s = amax > 0.0f ? amax / kE4M3Max : 1.0f;
    if (threadIdx.x == 0) scales[row] = s;
  }
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int64_t c = threadIdx.x + int64_t{p} * kQuantThreads;
    if (c >= chunks) break;
    float f[8];
    const uint32_t u[4] = {v[p].x, v[p].y, v[p].z, v[p].w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
      f[2 * i] = __uint_as_float(u[i] << 16), f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    *reinterpret_cast<uint2*>(out + row * k + c * 8) = encode8(f, s);
  }
}

// The 16-byte chunks per thread of quantize_act_kernel for a row of k, or 0 where it does not take the shape.
int64_t quantize_chunks_per_thread(const bf16_raw* x, int64_t k, int64_t ldx) {
  const int64_t per = (k / 8 + kQuantThreads - 1) / kQuantThreads;
  return k % 8 != 0 || ldx % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 || per > 8 ? 0 : per;
}

template <QuantPass P>
void launch_quantize(int64_t per, int64_t m, const bf16_raw* x, int64_t k, int64_t ldx, uint8_t* out,
                     float* scales, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(m));
  if (per <= 1)
    return launch_kernel(quantize_act_kernel<1, P>, grid, kQuantThreads, 0, stream, x, k, ldx, out, scales);
  if (per <= 2)
    return launch_kernel(quantize_act_kernel<2, P>, grid, kQuantThreads, 0, stream, x, k, ldx, out, scales);
  if (per <= 4)
    return launch_kernel(quantize_act_kernel<4, P>, grid, kQuantThreads, 0, stream, x, k, ldx, out, scales);
  launch_kernel(quantize_act_kernel<8, P>, grid, kQuantThreads, 0, stream, x, k, ldx, out, scales);
}

// Any k and stride: one element at a time.
__global__ void __launch_bounds__(256)
    quantize_rows_scalar_kernel(const bf16_raw* __restrict__ x, int64_t k, int64_t ldx,
                                uint8_t* __restrict__ out, float* __restrict__ scales) {
  ptx::griddep_enter();
  const int64_t row = blockIdx.x;
  const bf16_raw* xr = x + row * ldx;
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < k; c += blockDim.x)
    amax = fmaxf(amax, fabsf(__uint_as_float(uint32_t{xr[c]} << 16)));
  amax = block_max<256>(amax);
  const float s = amax > 0.0f ? amax / kE4M3Max : 1.0f;
  if (threadIdx.x == 0) scales[row] = s;
  for (int64_t c = threadIdx.x; c < k; c += blockDim.x)
    out[row * k + c] = e4m3_encode(__uint_as_float(uint32_t{xr[c]} << 16) / s);
}

__global__ void fill_kernel(float* out, int64_t n, const float* value) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = *value;
}

unsigned grid_for(int64_t count) {
  return static_cast<unsigned>(std::clamp<int64_t>((count + 255) / 256, 1, 65535));
}

}  // namespace

bool fp8_gemv_supported(int64_t m, int64_t k, int64_t ldx, const void* x, const void* codes) {
  return m >= 1 && m <= kFp8GemvMaxRows && k % 16 == 0 && ldx % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(codes) % 16 == 0;
}

int fp8_gemv_split(int64_t m, int64_t n, int64_t k, int sm_count) {
  return gemv_split_rule(n, k / 16, unroll_for(static_cast<int>(m)), sm_count);
}

void fp8_w8a16_gemv(const bf16_raw* x, int64_t m, int64_t ldx, const Fp8Weight& w, bf16_raw* y, int64_t ldy,
                    int split, cudaStream_t stream) {
  if (!fp8_gemv_supported(m, w.k, ldx, x, w.codes) || w.n < 1 || w.n > INT32_MAX || w.k > INT32_MAX ||
      (split != 1 && split != 2 && split != 4))
    throw Error("internal: fp8_w8a16_gemv called with an unsupported shape (m " + std::to_string(m) + ", n " +
                std::to_string(w.n) + ", k " + std::to_string(w.k) + ", split " + std::to_string(split) +
                ")");
  const int mi = static_cast<int>(m);
  if (m == 1) return launch_split<1>(split, x, ldx, mi, w, y, ldy, stream);
  if (m == 2) return launch_split<2>(split, x, ldx, mi, w, y, ldy, stream);
  if (m <= 4) return launch_split<4>(split, x, ldx, mi, w, y, ldy, stream);
  return launch_split<8>(split, x, ldx, mi, w, y, ldy, stream);
}

void fp8_quantize_rows(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, float* scales,
                       cudaStream_t stream) {
  if (m < 1 || m > INT32_MAX || k < 1)
    throw Error("internal: fp8_quantize_rows called with m " + std::to_string(m));
  if (const int64_t per = quantize_chunks_per_thread(x, k, ldx))
    return launch_quantize<QuantPass::Rows>(per, m, x, k, ldx, out, scales, stream);
  launch_kernel(quantize_rows_scalar_kernel, dim3(static_cast<unsigned>(m)), 256, 0, stream, x, k, ldx, out,
                scales);
}

bool fp8_quantize_tensor_supported(const bf16_raw* x, int64_t k, int64_t ldx) {
  return quantize_chunks_per_thread(x, k, ldx) > 0;
}

void fp8_quantize_tensor(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out, float* state,
                         cudaStream_t stream) {
  const int64_t per = quantize_chunks_per_thread(x, k, ldx);
  if (m < 1 || m > INT32_MAX || per == 0)
    throw Error("internal: fp8_quantize_tensor called with an unsupported shape (m " + std::to_string(m) +
                ", k " + std::to_string(k) + ")");
  launch_quantize<QuantPass::TensorAmax>(per, m, x, k, ldx, out, state, stream);
  launch_quantize<QuantPass::TensorCodes>(per, m, x, k, ldx, out, state, stream);
}

DeviceBuffer fp8_row_scales(const float* scales, bool per_row, int64_t n, cudaStream_t stream) {
  DeviceBuffer out(static_cast<size_t>(n) * sizeof(float));
  if (per_row) {
    CUDA_CHECK(cudaMemcpyAsync(out.ptr, scales, out.bytes, cudaMemcpyDeviceToDevice, stream));
  } else {
    fill_kernel<<<grid_for(n), 256, 0, stream>>>(out.as<float>(), n, scales);
    CUDA_CHECK_LAUNCH();
  }
  return out;
}

void fp8_codes_to_bf16(const uint8_t* codes, int64_t count, bf16_raw* out, cudaStream_t stream) {
  codes_to_bf16_kernel<<<grid_for(count), 256, 0, stream>>>(codes, count, out);
  CUDA_CHECK_LAUNCH();
}

void scale_columns_bf16(bf16_raw* y, int64_t m, int64_t n, int64_t ldy, const float* scales,
                        cudaStream_t stream) {
  scale_columns_kernel<<<grid_for(m * n), 256, 0, stream>>>(y, m, n, ldy, scales);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp4lab
