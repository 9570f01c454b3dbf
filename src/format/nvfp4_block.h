// Per-block NVFP4 arithmetic shared by the CPU reference and the CUDA kernels. The operation order follows
// NVIDIA ModelOpt's export (NVFP4QTensor) so that a re-quantized BF16 checkpoint is bit-identical to theirs.
#pragma once
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "format/ue8m0.h"

namespace fp4lab {

constexpr int kNvfp4Block = 16;
constexpr int kMxfp4Block = 32;
// 6 (E2M1 max) * 448 (E4M3 max): ModelOpt's weight_scale_2 = amax / 2688.
constexpr float kNvfp4ScaleDenom = 2688.0f;
constexpr float kNvfp4MinBlockScale = kE4M3MinSubnormal;

// Per-tensor FP32 scale ("weight_scale_2", "input_scale") from a tensor's absolute maximum.
FP4LAB_HD float nvfp4_tensor_scale(float amax) {
  return amax / kNvfp4ScaleDenom;
}

// E4M3 block scale code for a block whose absolute maximum is block_amax. Zero blocks (and a zero tensor
// scale, whose ratio is NaN) get 1.0; others are clamped to [2^-9, 448] before the RNE cast.
FP4LAB_HD uint8_t nvfp4_block_scale(float block_amax, float tensor_scale) {
  float s = block_amax / (6.0f * tensor_scale);
  if (!(s > 0.0f)) s = 1.0f;
  s = s < kNvfp4MinBlockScale ? kNvfp4MinBlockScale : s;
  s = s > kE4M3Max ? kE4M3Max : s;
  return e4m3_encode(s);
}

// E2M1 code of one element given its block's scale code and the tensor scale.
FP4LAB_HD uint8_t nvfp4_encode_elem(float x, uint8_t block_scale, float tensor_scale) {
  const float denom = e4m3_decode(block_scale) * tensor_scale;
  return denom > 0.0f ? e2m1_encode(x / denom) : 0;
}

FP4LAB_HD float nvfp4_decode_elem(uint8_t code, uint8_t block_scale, float tensor_scale) {
  return e2m1_decode(code) * e4m3_decode(block_scale) * tensor_scale;
}

FP4LAB_HD float nvfp4_block_amax(const float* x) {
  float amax = 0.0f;
  for (int i = 0; i < kNvfp4Block; ++i) {
    const float a = x[i] < 0 ? -x[i] : x[i];
    amax = a > amax ? a : amax;
  }
  return amax;
}

// 16 consecutive values into 8 packed bytes under block scale s.
FP4LAB_HD void nvfp4_encode_block(const float* x, uint8_t s, float tensor_scale, uint8_t* packed) {
  for (int i = 0; i < kNvfp4Block / 2; ++i)
    packed[i] = e2m1_pack(nvfp4_encode_elem(x[2 * i], s, tensor_scale),
                          nvfp4_encode_elem(x[2 * i + 1], s, tensor_scale));
}

// Quantizes 16 consecutive values into 8 packed bytes and one scale byte.
FP4LAB_HD void nvfp4_quantize_block(const float* x, float tensor_scale, uint8_t* packed, uint8_t* scale) {
  *scale = nvfp4_block_scale(nvfp4_block_amax(x), tensor_scale);
  nvfp4_encode_block(x, *scale, tensor_scale, packed);
}

// MXFP4 (OCP MX v1.0): shared exponent floor(log2(amax)) - 2 (E2M1's emax), elements RNE with saturation.
FP4LAB_HD uint8_t mxfp4_block_scale(float block_amax) {
  return ue8m0_from_exponent(floor_log2(block_amax) - 2);
}

}  // namespace fp4lab
