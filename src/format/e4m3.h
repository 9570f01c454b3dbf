// FP8 E4M3 (OCP "e4m3fn") scalar codec: bias 7, max 448, subnormal step 2^-9, NaN = S.1111.111, no Inf.
#pragma once
#include "common/hd.h"

namespace fp4lab {

constexpr float kE4M3Max = 448.0f;
constexpr float kE4M3MinSubnormal = 0.001953125f;  // 2^-9

FP4LAB_HD float e4m3_decode(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t e = (code >> 3) & 0xfu, m = code & 7u;
  if (e == 0xf && m == 7) return bits_f32(sign | 0x7fc00000u);
  if (e == 0) {
    const float v = static_cast<float>(m) * kE4M3MinSubnormal;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((e + 120u) << 23) | (m << 20));
}

// Round to nearest even with saturation to +-448 (cuda_fp8.h's __NV_SATFINITE): +-Inf -> +-448;
// NaN of either sign -> 0x7f, as the toolkit does.
FP4LAB_HD uint8_t e4m3_encode(float x) {
  const uint32_t u = f32_bits(x);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return 0x7f;
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  uint32_t code;
  if (abs < 0x3c800000u) {  // below 2^-6: subnormal grid of 2^-9, exact scaling then RNE on the integer part
    const float t = bits_f32(abs) * 512.0f;
    uint32_t q = static_cast<uint32_t>(t);
    const float frac = t - static_cast<float>(q);
    if (frac > 0.5f || (frac == 0.5f && (q & 1u))) ++q;
    code = q;  // q == 8 is the smallest normal, which the encoding gives for free
  } else {
    const uint32_t exp = (abs >> 23) - 127u + 7u;
    const uint32_t mant = abs & 0x7fffffu;
    code = (exp << 3) | (mant >> 20);
    const uint32_t rest = mant & 0xfffffu;
    if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) ++code;  // carry ripples into the exponent
    if (abs >= 0x7f800000u || code > 0x7eu) code = 0x7e;
  }
  return static_cast<uint8_t>(sign | code);
}

}  // namespace fp4lab
