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

int sample_token(std::span<const float> logits, const SamplingOptions& o, uint64_t step_seed) {
  if (o.greedy || o.temperature <= 0.0f) return cpu::argmax(logits);
  const size_t v = logits.size();
  if (v == 0) throw Error("sampling from an empty row of logits");
  if (sample_on_device(o)) return cpu::sample_gumbel(logits, o.temperature, step_seed);
  // Every step here is linear in the vocabulary or works on the few candidates: a full sort of a 128K
  // vocabulary (the first form) cost tens of milliseconds per token on the host. NaN logits rank below
  // everything and get no weight.
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // Scratch kept between calls: a fresh 0.5 MB vector per token costs its page faults and zeroing again.
  thread_local std::vector<float> key, w;
  thread_local std::vector<int> idx;
  key.assign(logits.begin(), logits.end());
  float mx = kNegInf;
  for (float& k : key) {
    if (std::isnan(k)) k = kNegInf;
    mx = std::max(mx, k);
  }
  if (mx == kNegInf) return cpu::argmax(logits);  // nothing to weigh
  // Descending logit, ties by id: a strict order, so the draw does not depend on how the library sorts.
  const auto before = [&](int a, int b) {
    const float ka = key[static_cast<size_t>(a)], kb = key[static_cast<size_t>(b)];
    return ka > kb || (ka == kb && a < b);
  };
  // Candidates: the top_k (the k-th largest logit found by selection on the values, then the ids above it and
  // as many tied ones as fit, in id order), sorted; without top_k (top_p only) every id, in id order.
  idx.clear();
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < v) {
    const size_t k = static_cast<size_t>(o.top_k);
    // The k largest values in a min-heap, one pass: nth_element on the values took ~1.5 ms for 128K logits
    // (its partitions mispredict on random data), the heap's comparisons mostly fail and predict well.
    std::vector<float> heap;
    heap.reserve(k);
    for (const float x : key) {
      if (heap.size() < k) {
        heap.push_back(x);
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      } else if (x > heap.front()) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<>());
        heap.back() = x;
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    }
    const float thr = heap.front();
    size_t above = 0;
    for (float x : key) above += x > thr;
    size_t ties = k - above;
    for (size_t i = 0; i < v; ++i)
      if (key[i] > thr || (key[i] == thr && ties > 0 && ties--)) idx.push_back(static_cast<int>(i));
    std::sort(idx.begin(), idx.end(), before);
  } else {
    idx.resize(v);
    std::iota(idx.begin(), idx.end(), 0);
  }
  const auto weight = [&](int i) { return std::exp((key[static_cast<size_t>(i)] - mx) / o.temperature); };
  w.resize(idx.size());  // the candidates' weights, in idx order
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i) sum += (w[i] = weight(idx[i]));
  size_t keep = idx.size();
  if (o.top_p < 1.0f) {
    // The fewest most likely candidates whose mass reaches top_p: a sorted prefix grown until it does (the
    // nucleus is usually a few dozen ids). The top_k candidates are sorted already.
    const bool sorted = o.top_k > 0 && static_cast<size_t>(o.top_k) < v;
    size_t n = std::min<size_t>(keep, 64), cut = keep;
    for (;;) {
      if (!sorted)
        std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n), idx.end(), before);
      double acc = 0;
      size_t i = 0;
      while (i < n && (acc += (w[i] = weight(idx[i])) / sum) < o.top_p) ++i;
      if (i < n) {
        cut = i + 1;
        break;
      }
      if (n == keep) break;
      n = std::min(keep, n * 8);
    }
    keep = cut;
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += w[i];
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
