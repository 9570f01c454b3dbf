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
  std::sort(idx.begin(), idx.end(), [&](int a, int b) { return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)]; });
  size_t keep = idx.size();
  if (o.top_k > 0) keep = std::min(keep, static_cast<size_t>(o.top_k));
  std::vector<double> p(keep);
  const double mx = logits[static_cast<size_t>(idx[0])];
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += (p[i] = std::exp((logits[static_cast<size_t>(idx[i])] - mx) / o.temperature));
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

GenerateResult generate(Model& model, const std::vector<std::vector<int>>& prompts, const GenerateOptions& o) {
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  r.new_ids.resize(prompts.size());
  const int vocab = model.config().vocab_size;
  for (size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw Error("prompt " + std::to_string(b) + " is empty");
    SeqState s = model.new_sequence();
    auto t0 = clock::now();
    std::vector<float> logits = model.forward(s, prompts[b], false);
    r.prefill_s += std::chrono::duration<double>(clock::now() - t0).count();
    r.prompt_tokens += static_cast<int>(prompts[b].size());
    t0 = clock::now();
    for (int step = 0; step < o.max_new_tokens; ++step) {
      const int tok = sample_token(std::span<const float>(logits).first(static_cast<size_t>(vocab)), o.sampling,
                                   o.sampling.seed * 1000003ull + b * 7919ull + static_cast<uint64_t>(step));
      r.new_ids[b].push_back(tok);
      ++r.generated_tokens;
      if (std::find(o.stop_ids.begin(), o.stop_ids.end(), tok) != o.stop_ids.end()) break;
      if (step + 1 == o.max_new_tokens) break;
      const int one[1] = {tok};
      logits = model.forward(s, one, false);
    }
    r.decode_s += std::chrono::duration<double>(clock::now() - t0).count();
  }
  return r;
}

}  // namespace fp4lab
