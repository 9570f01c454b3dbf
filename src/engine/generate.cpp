#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "common/error.h"

namespace fp4lab {

int sample_token(std::span<const float> logits, const SamplingOptions& o, uint64_t step_seed) {
  if (o.greedy || o.temperature <= 0.0f)
    return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(),
            [&](int a, int b) { return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)]; });
  size_t keep = idx.size();
  if (o.top_k > 0) keep = std::min(keep, static_cast<size_t>(o.top_k));
  std::vector<double> p(keep);
  const double mx = logits[static_cast<size_t>(idx[0])];
  double sum = 0;
  for (size_t i = 0; i < keep; ++i)
    sum += (p[i] = std::exp((logits[static_cast<size_t>(idx[i])] - mx) / o.temperature));
  if (o.top_p < 1.0f) {
    double acc = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      acc += p[i] / sum;
      if (acc >= o.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    p.resize(keep);
  }
  std::mt19937_64 rng(step_seed);
  std::discrete_distribution<size_t> d(p.begin(), p.end());
  return idx[d(rng)];
}

}  // namespace fp4lab
