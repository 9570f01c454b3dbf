// Counter-based random numbers usable on host and device: any element is reproducible from (seed, index), so
// a preset's weights are the same whichever backend generates them.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/hd.h"

namespace fp4lab {

FP4LAB_HD uint32_t hash_u32(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>((z ^ (z >> 31)) >> 16);
}

// Approximately normal(0, sigma): the sum of four uniforms, centred and scaled (no transcendental functions,
// so host and device produce identical floats). outlier_every > 0 multiplies every such element by 50.
FP4LAB_HD float random_normalish(uint64_t seed, uint64_t i, float sigma, uint64_t outlier_every) {
  float s = 0.0f;
  for (int j = 0; j < 4; ++j)
    s += static_cast<float>(hash_u32(seed + 0x1234567ull * j, i) & 0xffffff) * (1.0f / 16777216.0f);
  float v = (s - 2.0f) * 1.7320508f * sigma;  // variance of the sum of 4 U(0,1) is 1/3
  if (outlier_every && hash_u32(seed ^ 0xabcdefull, i) % outlier_every == 0) v *= 50.0f;
  return v;
}

// Element i of the BF16 tensor fill_random_bf16 writes: the one definition of a preset's stored values, which
// the GPU generates, the host reproduces and `fp4lab export` writes.
FP4LAB_HD uint16_t random_bf16_word(uint64_t seed, uint64_t i, float sigma, uint64_t outlier_every = 0) {
  return bf16_from_f32_rne(random_normalish(seed, i, sigma, outlier_every));
}

// Gumbel noise of element i under seed: -log(-log(u)), u = (24 random bits + 1/2) / 2^24, strictly inside
// (0, 1). A sample of softmax(l / T) is the argmax of l / T + noise (the Gumbel-max trick): no sort and no
// normalization, and every backend draws the same noise from (seed, i) (logf may differ in the last bit
// between host and device).
FP4LAB_HD float gumbel_noise(uint64_t seed, uint64_t i) {
  const float u = (static_cast<float>(hash_u32(seed, i) >> 8) + 0.5f) * (1.0f / 16777216.0f);
  return -logf(-logf(u));
}

}  // namespace fp4lab
