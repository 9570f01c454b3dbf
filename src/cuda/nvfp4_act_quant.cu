// Activation quantization BF16 -> NVFP4 (the W4A4 input path), bit-identical to nvfp4_quantize_ref: the same
// block function from format/nvfp4_block.h runs here, with IEEE division (no fast-math).
#include <cuda_bf16.h>

#include "cuda/check.h"
#include "cuda/nvfp4_gemm.h"
#include "format/nvfp4_block.h"

namespace fp4lab {

namespace {

__global__ void amax_kernel(const __nv_bfloat16* __restrict__ x, int64_t n,
                            unsigned int* __restrict__ out_bits) {
  float m = 0.0f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    m = fmaxf(m, fabsf(__bfloat162float(x[i])));
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  // Non-negative floats order like their bit patterns, so an integer max is a float max.
  if (threadIdx.x % 32 == 0) atomicMax(out_bits, __float_as_uint(m));
}

__global__ void amax_to_scale_kernel(float* scale) {
  *scale = nvfp4_tensor_scale(*scale);
}

__global__ void quant_kernel(const __nv_bfloat16* __restrict__ x, int64_t blocks,
                             const float* __restrict__ ts, uint8_t* __restrict__ packed,
                             uint8_t* __restrict__ scales) {
  const float s = *ts;
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < blocks;
       b += int64_t{gridDim.x} * blockDim.x) {
    const uint4* src = reinterpret_cast<const uint4*>(x + b * 16);
    const uint4 v0 = src[0], v1 = src[1];
    const uint32_t words[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    float f[16];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      f[2 * i] = __uint_as_float(words[i] << 16);
      f[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
    uint8_t out[8];
    nvfp4_quantize_block(f, s, out, scales + b);
    uint2 o;
    o.x = out[0] | (out[1] << 8) | (out[2] << 16) | (static_cast<uint32_t>(out[3]) << 24);
    o.y = out[4] | (out[5] << 8) | (out[6] << 16) | (static_cast<uint32_t>(out[7]) << 24);
    *reinterpret_cast<uint2*>(packed + b * 8) = o;
  }
}

__global__ void fake_quant_unscaled_kernel(const uint8_t* __restrict__ packed,
                                           const uint8_t* __restrict__ scales, int64_t n,
                                           __nv_bfloat16* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint8_t b = packed[i / 2];
    const uint8_t code = (i & 1) ? (b >> 4) : (b & 0xf);
    out[i] = __float2bfloat16_rn(e2m1_decode(code) * e4m3_decode(scales[i / 16]));
  }
}

}  // namespace

void amax_bf16(const bf16_raw* x, int64_t n, float* amax, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), stream));
  amax_kernel<<<grid_1d(n, 256), 256, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(x), n,
                                                   reinterpret_cast<unsigned int*>(amax));
  CUDA_CHECK_LAUNCH();
}

void nvfp4_quantize_act(const bf16_raw* x, int64_t m, int64_t k, uint8_t* packed, uint8_t* scales, float* ts,
                        bool dynamic, cudaStream_t stream) {
  if (k % 16) throw Error("nvfp4 activation quantization: K must be a multiple of 16");
  if (reinterpret_cast<uintptr_t>(x) % 16)
    throw Error("nvfp4 activation quantization: X must be 16-byte aligned");
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x);
  if (dynamic) {
    amax_bf16(x, m * k, ts, stream);
    amax_to_scale_kernel<<<1, 1, 0, stream>>>(ts);
    CUDA_CHECK_LAUNCH();
  }
  const int64_t blocks = m * k / 16;
  quant_kernel<<<grid_1d(blocks, 128), 128, 0, stream>>>(xb, blocks, ts, packed, scales);
  CUDA_CHECK_LAUNCH();
}

void nvfp4_act_fake_quant_unscaled(const uint8_t* packed, const uint8_t* scales, int64_t m, int64_t k,
                                   bf16_raw* out, cudaStream_t stream) {
  fake_quant_unscaled_kernel<<<grid_1d(m * k, 256), 256, 0, stream>>>(packed, scales, m * k,
                                                                      reinterpret_cast<__nv_bfloat16*>(out));
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp4lab
