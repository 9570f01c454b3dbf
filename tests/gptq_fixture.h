// Synthetic GPTQ layers shared by the CPU tests (test_nvfp4_gptq.cpp) and the GPU ones (test_gptq_gpu.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "format/nvfp4.h"

namespace fp4lab::test {

struct GptqLayer {
  int64_t n, k;
  std::vector<float> w;   // [n, k]
  std::vector<double> h;  // [k, k], sum of x x^T
};

// Inputs with correlated features (a few shared factors plus noise, scales varying by column), as real
// activations have: the case where error compensation pays.
inline GptqLayer make_layer(int64_t n, int64_t k, int64_t samples, uint64_t seed) {
  GptqLayer l{n, k, std::vector<float>(static_cast<size_t>(n * k)),
              std::vector<double>(static_cast<size_t>(k * k))};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& v : l.w) v = 0.05f * g(rng);
  const int factors = 8;
  std::vector<float> mix(static_cast<size_t>(factors * k)), scale(static_cast<size_t>(k));
  for (auto& v : mix) v = g(rng);
  for (auto& v : scale) v = std::exp(0.7f * g(rng));
  std::vector<double> x(static_cast<size_t>(k));
  for (int64_t s = 0; s < samples; ++s) {
    float f[factors];
    for (auto& v : f) v = g(rng);
    for (int64_t j = 0; j < k; ++j) {
      double v = 0.3 * g(rng);
      for (int q = 0; q < factors; ++q) v += f[q] * mix[static_cast<size_t>(q * k + j)];
      x[j] = v * scale[j];
    }
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) l.h[i * k + j] += x[i] * x[j];
  }
  return l;
}

inline float tensor_scale_of(const std::vector<float>& w) {
  return nvfp4_tensor_scale(amax_ref(w));
}

}  // namespace fp4lab::test
