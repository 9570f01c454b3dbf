#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

#include "common/error.h"
#include "cpu/reference.h"

namespace fp4lab {

int sample_top(std::span<const cpu::TopLogit> top, const SamplingOptions& o, uint64_t step_seed) {
  if (top.empty()) throw Error("sampling from an empty candidate list");
  const size_t k = o.top_k > 0 ? std::min(top.size(), static_cast<size_t>(o.top_k)) : top.size();
  const float mx = top[0].key;
  if (mx == -std::numeric_limits<float>::infinity()) return cpu::kNoId;  // nothing has weight: NaN/-inf only
  thread_local std::vector<float> w;
  w.resize(k);
  double sum = 0;
  for (size_t i = 0; i < k; ++i) sum += (w[i] = std::exp((top[i].key - mx) / o.temperature));
  size_t keep = k;
  if (o.top_p < 1.0f) {
    // The fewest most likely candidates whose mass reaches top_p: a prefix, the candidates being sorted.
    double acc = 0;
    size_t i = 0;
    while (i + 1 < keep && (acc += w[i]) < o.top_p * sum) ++i;
    keep = i + 1;
    sum = std::accumulate(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  }
  // One uniform draw over the kept mass, walked in candidate order.
  std::mt19937_64 rng(step_seed);
  const double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  double acc = 0;
  for (size_t i = 0; i < keep; ++i)
    if ((acc += w[i]) > u) return top[i].id;
  for (size_t i = keep; i-- > 0;)  // rounding left u at the very top: the last candidate with weight
    if (w[i] > 0) return top[i].id;
  return top[0].id;
}

int sample_token(std::span<const float> logits, const SamplingOptions& o, uint64_t step_seed) {
  if (o.greedy || o.temperature <= 0.0f) return cpu::argmax(logits);
  const size_t v = logits.size();
  if (v == 0) throw Error("sampling from an empty row of logits");
  if (sample_on_device(o)) return cpu::sample_gumbel(logits, o.temperature, step_seed);
  // The top_k largest by a selection, not a sort of the vocabulary (a full sort of 128K ids, the first form,
  // cost tens of milliseconds per token on the host).
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < v)
    return sample_top(cpu::top_logits(logits, o.top_k), o, step_seed);
  // top_p alone: every id a candidate, in id order. NaN logits rank below everything and get no weight.
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const auto key = [&](size_t i) { return std::isnan(logits[i]) ? kNegInf : logits[i]; };
  // Descending logit, ties by id: a strict order, so the draw does not depend on how the library sorts.
  const auto before = [&](int a, int b) {
    const float ka = key(static_cast<size_t>(a)), kb = key(static_cast<size_t>(b));
    return ka > kb || (ka == kb && a < b);
  };
  // Scratch kept between calls: a fresh 0.5 MB vector per token costs its page faults and zeroing again.
  thread_local std::vector<float> w, kept_w;
  thread_local std::vector<int> idx;
  float mx = kNegInf;
  for (size_t i = 0; i < v; ++i) mx = std::max(mx, key(i));
  if (mx == kNegInf) return cpu::kNoId;  // nothing has weight: NaN/-inf only
  idx.resize(v);
  std::iota(idx.begin(), idx.end(), 0);
  const auto weight = [&](int i) { return std::exp((key(static_cast<size_t>(i)) - mx) / o.temperature); };
  w.resize(idx.size());  // the candidates' weights, in idx order
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i) sum += (w[i] = weight(idx[i]));
  size_t keep = idx.size();
  if (o.top_p < 1.0f) {
    // The fewest most likely ids whose mass reaches top_p, over the whole vocabulary without sorting it (a
    // nucleus of flat logits holds most of it):
    // a histogram of the keys in kBins bins of (max - key) / T, the mass of each bin, the bin where the
    // cumulative mass from the top reaches top_p; every id in the bins above is in, and only the ids of that
    // bin are sorted to find where it stops. Ids in lower bins have strictly larger keys, so the set is the
    // sorted prefix's. Kept: the ids above in id order, then the cut bin's prefix in key order.
    constexpr int kBins = 4096;
    constexpr double kSpan = 40.0;  // nats below the maximum that the bins resolve; the rest share the last
    const auto bin = [&](int i) {
      const double d = (mx - key(static_cast<size_t>(i))) / o.temperature * (kBins / kSpan);
      return static_cast<int>(std::min<double>(kBins - 1, d));
    };
    thread_local std::vector<double> mass;
    mass.assign(kBins, 0.0);
    for (size_t i = 0; i < v; ++i) mass[static_cast<size_t>(bin(static_cast<int>(i)))] += w[i];
    const double target = o.top_p * sum;
    double above = 0;
    int cb = 0;
    while (cb + 1 < kBins && above + mass[static_cast<size_t>(cb)] < target)
      above += mass[static_cast<size_t>(cb++)];
    kept_w.clear();  // the weights of the kept ids, in kept order
    std::vector<int> cut;
    size_t n = 0;
    for (size_t i = 0; i < v; ++i) {
      const int b = bin(static_cast<int>(i));
      if (b < cb)
        idx[n] = static_cast<int>(i), kept_w.push_back(w[i]), ++n;
      else if (b == cb)
        cut.push_back(static_cast<int>(i));
    }
    std::sort(cut.begin(), cut.end(), before);
    double acc = above;
    for (size_t j = 0; j < cut.size(); ++j) {
      const float wj = w[static_cast<size_t>(cut[j])];
      idx[n++] = cut[j];
      kept_w.push_back(wj);
      if ((acc += wj) >= target) break;
    }
    keep = n;
    w.assign(kept_w.begin(), kept_w.end());
    sum = std::accumulate(w.begin(), w.end(), 0.0);
  }
  // One uniform draw over the kept mass, walked in candidate order.
  std::mt19937_64 rng(step_seed);
  const double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  double acc = 0;
  for (size_t i = 0; i < keep; ++i)
    if ((acc += w[i]) > u) return idx[i];
  for (size_t i = keep; i-- > 0;)  // rounding left u at the very top: the last candidate with weight
    if (w[i] > 0) return idx[i];
  return idx[0];
}

}  // namespace fp4lab
