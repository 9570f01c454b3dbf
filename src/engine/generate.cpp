#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

#include "common/error.h"
#include "cpu/ops.h"

namespace fp4lab {

int sample_top(std::span<const cpu::TopLogit> top, const SamplingOptions& o, uint64_t step_seed) {
  if (top.empty()) throw Error("sampling from an empty candidate list");
  const size_t k = o.top_k > 0 ? std::min(top.size(), static_cast<size_t>(o.top_k)) : top.size();
  const float mx = top[0].key;
  if (mx == -std::numeric_limits<float>::infinity()) return top[0].id;  // nothing to weigh
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
  // Every step here is a pass over the vocabulary (two for top-k) or works on the few candidates: a full sort
  // of a 128K vocabulary (the first form) cost tens of milliseconds per token on the host. NaN logits rank
  // below everything and get no weight.
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const auto key = [&](size_t i) { return std::isnan(logits[i]) ? kNegInf : logits[i]; };
  // Descending logit, ties by id: a strict order, so the draw does not depend on how the library sorts.
  const auto before = [&](int a, int b) {
    const float ka = key(static_cast<size_t>(a)), kb = key(static_cast<size_t>(b));
    return ka > kb || (ka == kb && a < b);
  };
  // Scratch kept between calls: a fresh 0.5 MB vector per token costs its page faults and zeroing again.
  thread_local std::vector<float> w, heap, kept_w;
  thread_local std::vector<int> idx;
  idx.clear();
  float mx = kNegInf;
  // Candidates: the top_k (the k-th largest logit found in the same pass as the maximum, then the ids above
  // it and as many tied ones as fit, in id order), sorted; without top_k (top_p only) every id, in id order.
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < v) {
    const size_t k = static_cast<size_t>(o.top_k);
    // The k largest values in a min-heap: nth_element on a copy of the values took ~1.5 ms for 128K logits
    // (its partitions mispredict on random data); the heap's comparisons mostly fail and predict well.
    heap.clear();
    for (size_t i = 0; i < v; ++i) {
      const float x = key(i);
      mx = std::max(mx, x);
      if (heap.size() < k) {
        heap.push_back(x);
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      } else if (x > heap.front()) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<>());
        heap.back() = x;
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    }
    // Every value above the threshold is in the heap: the ids tied at it fill what is left of k.
    const float thr = heap.front();
    size_t ties =
        k - static_cast<size_t>(std::count_if(heap.begin(), heap.end(), [&](float x) { return x > thr; }));
    for (size_t i = 0; i < v; ++i) {
      const float x = key(i);
      if (x > thr || (x == thr && ties > 0 && ties--)) idx.push_back(static_cast<int>(i));
    }
    std::sort(idx.begin(), idx.end(), before);
    thread_local std::vector<cpu::TopLogit> top;
    top.clear();
    for (int i : idx) top.push_back({key(static_cast<size_t>(i)), i});
    return sample_top(top, o, step_seed);
  } else {
    for (size_t i = 0; i < v; ++i) mx = std::max(mx, key(i));
    if (mx == kNegInf) return cpu::argmax(logits);  // nothing to weigh
    idx.resize(v);
    std::iota(idx.begin(), idx.end(), 0);
  }
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
