// E2M1 (FP4) scalar codec: the definition every kernel and test refers to.
// Codes 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign. No Inf, no NaN.
#pragma once
#include "common/hd.h"

namespace fp4lab {

constexpr float kE2M1Max = 6.0f;

FP4LAB_HD float e2m1_decode(uint8_t code) {
  // Branch-free table in a 32-bit immediate would need shifts per nibble; a switch-free formula keeps it
  // usable in registers on the GPU: magnitude = 2^(e-1) * (1 + m/2) for e>0, m/2 for e==0.
  const uint32_t e = (code >> 1) & 3u, m = code & 1u;
  float mag = e == 0 ? 0.5f * static_cast<float>(m)
                     : static_cast<float>(1u << (e - 1)) * (1.0f + 0.5f * static_cast<float>(m));
  return (code & 8u) ? -mag : mag;
}

// Round to nearest, ties to the even code, saturate to +-6. The sign is kept for values that round to zero
// (code 8 = -0), and NaN maps to +6 (code 7): both exactly as cuda_fp4.h's __nv_cvt_float_to_fp4 does, so the
// toolkit's host conversion is an independent bit-exact oracle.
FP4LAB_HD uint8_t e2m1_encode(float x) {
  const uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7;
  const uint8_t sign = static_cast<uint8_t>((u >> 28) & 8u);
  const float a = bits_f32(u & 0x7fffffffu);
  uint8_t c;
  // Thresholds are the midpoints; at a midpoint the comparison direction picks the even code.
  if (a <= 0.25f)
    c = 0;
  else if (a < 0.75f)
    c = 1;
  else if (a <= 1.25f)
    c = 2;
  else if (a < 1.75f)
    c = 3;
  else if (a <= 2.5f)
    c = 4;
  else if (a < 3.5f)
    c = 5;
  else if (a <= 5.0f)
    c = 6;
  else
    c = 7;
  return static_cast<uint8_t>(sign | c);
}

// Two E2M1 codes per byte along K: element 2i in the LOW nibble (ModelOpt, vLLM, torch.float4_e2m1fn_x2).
FP4LAB_HD uint8_t e2m1_pack(uint8_t even, uint8_t odd) {
  return static_cast<uint8_t>((even & 0xf) | ((odd & 0xf) << 4));
}
FP4LAB_HD uint8_t e2m1_lo(uint8_t byte) {
  return byte & 0xf;
}
FP4LAB_HD uint8_t e2m1_hi(uint8_t byte) {
  return byte >> 4;
}

}  // namespace fp4lab
