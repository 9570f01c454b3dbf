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

// Squared error of block x under scale code s (elements rounded to nearest, saturating at +-6 x scale).
FP4LAB_HD float nvfp4_block_error(const float* x, uint8_t s, float tensor_scale) {
  float err = 0.0f;
  for (int i = 0; i < kNvfp4Block; ++i) {
    const float d = x[i] - nvfp4_decode_elem(nvfp4_encode_elem(x[i], s, tensor_scale), s, tensor_scale);
    err += d * d;
  }
  return err;
}

// The block's scale code under a rule (Nvfp4ScaleRule in format/nvfp4.h: search = false is ModelOpt's
// amax / 6; search = true tries every E4M3 code from two below it up to one above amax / 4 and keeps the one
// with the least squared error, ModelOpt's on ties), and (when err is given) the block's squared error under
// it. Host and device (GPTQ's column loop) run this one function.
FP4LAB_HD uint8_t nvfp4_pick_block_scale(const float* x, float tensor_scale, bool search, float* err) {
  const float amax = nvfp4_block_amax(x);
  const uint8_t c0 = nvfp4_block_scale(amax, tensor_scale);
  // amax <= FLT_MAX: finite (a NaN fails amax > 0).
  if (!search || !(amax > 0.0f && c0 != 0 && amax <= 3.402823466e38f)) {
    if (err) *err = nvfp4_block_error(x, c0, tensor_scale);
    return c0;
  }
  uint8_t best = c0;
  float best_err = nvfp4_block_error(x, c0, tensor_scale);
  // Positive finite E4M3 codes are 0x01..0x7E and increase with the value.
  const int lo = c0 - 2 > 1 ? c0 - 2 : 1;
  const int top = e4m3_encode(amax / (4.0f * tensor_scale)) + 1;
  const int hi = top < 0x7E ? top : 0x7E;
  for (int c = lo; c <= hi; ++c) {
    if (c == c0) continue;
    const float e = nvfp4_block_error(x, static_cast<uint8_t>(c), tensor_scale);
    if (e < best_err) best_err = e, best = static_cast<uint8_t>(c);
  }
  if (err) *err = best_err;
  return best;
}

// MXFP4 (OCP MX v1.0): shared exponent floor(log2(amax)) - 2 (E2M1's emax), elements RNE with saturation.
FP4LAB_HD uint8_t mxfp4_block_scale(float block_amax) {
  return ue8m0_from_exponent(floor_log2(block_amax) - 2);
}

}  // namespace fp4lab
