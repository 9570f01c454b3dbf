// Token generation over a Model: greedy or temperature/top-k/top-p sampling with a seed, stop ids, a batch of
// prompts, and timing (prefill and decode tokens per second).
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

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
};

struct GenerateResult {
  std::vector<std::vector<int>> new_ids;  // per prompt
  int prompt_tokens = 0, generated_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  double prefill_tok_s() const { return prefill_s > 0 ? prompt_tokens / prefill_s : 0; }
  double decode_tok_s() const { return decode_s > 0 ? generated_tokens / decode_s : 0; }
};

int sample_token(std::span<const float> logits, const SamplingOptions& o, uint64_t step_seed);

GenerateResult generate(Model& model, const std::vector<std::vector<int>>& prompts, const GenerateOptions& o);

}  // namespace fp4lab
