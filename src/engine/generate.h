// Token generation over a Model: greedy or temperature/top-k/top-p sampling with a seed, stop ids, a batch of
// prompts, and timing (prefill and decode tokens per second).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include <algorithm>
#include <chrono>
#include <span>

#include "common/error.h"

namespace fp4lab {

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;
  int top_k = 0;       // 0: off
  float top_p = 1.0f;  // 1: off
  uint64_t seed = 0;
};

struct GenerateOptions {
  int max_new_tokens = 32;
  std::vector<int> stop_ids;
  SamplingOptions sampling;
  // Called after each new token with the prompt index and its new ids so far; true ends that sequence (stop
  // strings, which need the tokenizer, live with the caller).
  std::function<bool(size_t, const std::vector<int>&)> should_stop;
};

struct GenerateResult {
  std::vector<std::vector<int>> new_ids;  // per prompt
  int prompt_tokens = 0, generated_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  std::vector<double> ttft_s;  // per prompt: prefill until the first token is known
  std::vector<double> tpot_s;  // every decode step (time per output token after the first)
  double prefill_tok_s() const { return prefill_s > 0 ? prompt_tokens / prefill_s : 0; }
  double decode_tok_s() const { return decode_s > 0 ? generated_tokens / decode_s : 0; }
};

int sample_token(std::span<const float> logits, const SamplingOptions& o, uint64_t step_seed);

// Model: a Runner<Ops>. Each prompt runs as its own sequence (prefill, then one token per step).
template <class Model>
GenerateResult generate(Model& model, const std::vector<std::vector<int>>& prompts, const GenerateOptions& o,
                        const std::function<void()>& sync = {}) {
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  r.new_ids.resize(prompts.size());
  const int vocab = model.config().vocab_size;
  for (size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw Error("prompt " + std::to_string(b) + " is empty");
    auto s = model.new_sequence(static_cast<int>(prompts[b].size()) + o.max_new_tokens);
    auto t0 = clock::now();
    std::vector<float> logits = model.forward(s, prompts[b], false);
    r.prefill_s += std::chrono::duration<double>(clock::now() - t0).count();
    r.ttft_s.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    r.prompt_tokens += static_cast<int>(prompts[b].size());
    t0 = clock::now();
    auto step0 = t0;
    for (int step = 0; step < o.max_new_tokens; ++step) {
      const int tok =
          sample_token(std::span<const float>(logits).first(static_cast<size_t>(vocab)), o.sampling,
                       o.sampling.seed * 1000003ull + b * 7919ull + static_cast<uint64_t>(step));
      r.new_ids[b].push_back(tok);
      ++r.generated_tokens;
      if (std::find(o.stop_ids.begin(), o.stop_ids.end(), tok) != o.stop_ids.end()) break;
      if (o.should_stop && o.should_stop(b, r.new_ids[b])) break;
      if (step + 1 == o.max_new_tokens) break;
      const int one[1] = {tok};
      logits = model.forward(s, one, false);
      const auto now = clock::now();
      r.tpot_s.push_back(std::chrono::duration<double>(now - step0).count());
      step0 = now;
    }
    if (sync) sync();
    r.decode_s += std::chrono::duration<double>(clock::now() - t0).count();
  }
  return r;
}

}  // namespace fp4lab
