// UE8M0: an unsigned power-of-two scale, value 2^(code-127); code 0xff is NaN. Used by MXFP4 (OCP MX spec).
#pragma once
#include "common/hd.h"

namespace fp4lab {

FP4LAB_HD float ue8m0_decode(uint8_t code) {
  if (code == 0xff) return bits_f32(0x7fc00000u);
  if (code == 0) return bits_f32(0x00400000u);  // 2^-127 is a float subnormal
  return bits_f32(static_cast<uint32_t>(code) << 23);
}

// The exponent of a positive finite float, floor(log2(x)), as a UE8M0 code clamped to [0, 254].
FP4LAB_HD uint8_t ue8m0_from_exponent(int e) {
  int c = e + 127;
  if (c < 0) c = 0;
  if (c > 254) c = 254;
  return static_cast<uint8_t>(c);
}

FP4LAB_HD int floor_log2(float x) {
  const uint32_t u = f32_bits(x) & 0x7fffffffu;
  const int e = static_cast<int>(u >> 23);
  if (e == 0) {  // subnormal: find the top set bit of the mantissa
    if (u == 0) return -127;
    int p = 22;
    while (((u >> p) & 1u) == 0) --p;
    return p - 149;
  }
  return e - 127;
}

}  // namespace fp4lab
