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
#include "cpu/ops.h"

namespace fp4lab {

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;
  int top_k = 0;       // 0: off
  float top_p = 1.0f;  // 1: off
  uint64_t seed = 0;
};

struct GenerateResult;

struct GenerateOptions {
  int max_new_tokens = 32;
  std::vector<int> stop_ids;
  SamplingOptions sampling;
  // Called after each new token with the prompt index and its new ids so far; true ends that sequence (stop
  // strings, which need the tokenizer, live with the caller).
  std::function<bool(size_t, const std::vector<int>&)> should_stop;
  int max_batch = 1;  // sequences decoded together (continuous batching)
  // Prompts admitted together are prefilled in one forward (one pass over the weights) while their tokens
  // add up to at most this many; a longer prompt gets a pass of its own. 0 prefills one prompt at a time.
  int prefill_tokens = 8192;
  // Called when a prompt's generation ends (its ids are final in the result), e.g. to record it at once.
  std::function<void(size_t, const GenerateResult&)> on_finish;
  // Checked before admitting each new prompt: true stops admitting (the active ones finish). Ctrl-C uses it.
  std::function<bool()> cancelled;
  // A prompt plus max_new_tokens past the model's max_position_embeddings is an error unless this is set:
  // positions beyond the trained range give RoPE angles and attention spans the model never saw.
  bool beyond_context = false;
};

struct GenerateResult {
  std::vector<std::vector<int>> new_ids;  // per prompt
  int prompt_tokens = 0, generated_tokens = 0;
  // Tokens produced by decode steps: each prompt's first token comes from its prefill, so decode throughput
  // counts the others (generated_tokens / decode_s overstated it by one token per sequence).
  int decode_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  // Per prompt: from its admission until its first token is known. Prompts admitted together wait for the
  // prefill passes before theirs, so a batch's TTFT is what its last prompt waits, not one prompt's prefill.
  std::vector<double> ttft_s;
  int prefill_passes = 0;      // forwards that prefilled prompts (fewer than prompts when batched)
  std::vector<double> tpot_s;  // every decode step (time per output token after the first)
  double prefill_tok_s() const { return prefill_s > 0 ? prompt_tokens / prefill_s : 0; }
  double decode_tok_s() const { return decode_s > 0 ? decode_tokens / decode_s : 0; }
};

// One token from a row of logits: the argmax (greedy or temperature <= 0), else a sample of softmax(logits /
// temperature) cut to the top_k and then to the smallest set holding top_p of the mass. Without top_k and
// top_p the draw is cpu::sample_gumbel, which the CUDA backend computes on the device with the same seed.
// cpu::kNoId when the row has nothing to pick (NaN only; for a sample, nothing above -inf).
int sample_token(std::span<const float> logits, const SamplingOptions& o, uint64_t step_seed);
// The top_k path of sample_token given the candidates in cpu::TopLogit order (at least min(top_k, vocab) of
// them): softmax(key / temperature) over the first top_k, cut to top_p, one seeded draw.
int sample_top(std::span<const cpu::TopLogit> top, const SamplingOptions& o, uint64_t step_seed);
// Whether a sampled step can be drawn where the logits are (no top-k / top-p truncation).
inline bool sample_on_device(const SamplingOptions& o) {
  return !o.greedy && o.temperature > 0.0f && o.top_k <= 0 && o.top_p >= 1.0f;
}

// Model: a Runner<Ops>. Prompts are admitted up to max_batch at a time (continuous batching): the prompts
// admitted together are prefilled in passes of up to prefill_tokens tokens (one forward each), then every
// active sequence advances one token per decode step, all in one batched forward; a finished sequence frees
// its slot for the next prompt. max_batch = 1 runs prompts one by one.
template <class Model>
GenerateResult generate(Model& model, const std::vector<std::vector<int>>& prompts, const GenerateOptions& o,
                        const std::function<void()>& sync = {}) {
  using clock = std::chrono::steady_clock;
  using State = typename Model::State;
  GenerateResult r;
  r.new_ids.resize(prompts.size());
  const int vocab = model.config().vocab_size;
  const int64_t context = model.config().max_position;
  for (size_t b = 0; b < prompts.size() && !o.beyond_context; ++b)
    if (static_cast<int64_t>(prompts[b].size()) + o.max_new_tokens > context)
      throw Error("prompt " + std::to_string(b) + " has " + std::to_string(prompts[b].size()) + " tokens; with " +
                  std::to_string(o.max_new_tokens) + " new ones it passes the model's context of " +
                  std::to_string(context) + " (max_position_embeddings); --beyond-context runs it anyway");
  const size_t max_batch = static_cast<size_t>(std::max(1, o.max_batch));
  struct Active {
    size_t prompt;
    State state;
    int step;
  };
  std::vector<Active> active;
  auto seconds = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  // Appends a sampled token; false when that sequence is finished.
  const bool greedy = o.sampling.greedy || o.sampling.temperature <= 0.0f;
  // Appends a chosen token; false when that sequence is finished.
  auto take_id = [&](size_t b, int step, int tok) {
    // A row of NaN logits (an overflow, a broken scale) leaves nothing to pick; decoding token 0 forever with
    // exit 0, as it once did, hid it.
    if (tok == cpu::kNoId)
      throw Error("prompt " + std::to_string(b) + ", new token " + std::to_string(step) +
                  ": the logits are NaN (non-finite weights or scales in the model, or an overflow)");
    r.new_ids[b].push_back(tok);
    ++r.generated_tokens;
    const bool more = std::find(o.stop_ids.begin(), o.stop_ids.end(), tok) == o.stop_ids.end() &&
                      !(o.should_stop && o.should_stop(b, r.new_ids[b])) && step + 1 < o.max_new_tokens;
    if (!more && o.on_finish) o.on_finish(b, r);
    return more;
  };
  // Each (prompt, step) draws with its own seed, wherever the draw happens.
  auto step_seed = [&](size_t b, int step) {
    return o.sampling.seed * 1000003ull + b * 7919ull + static_cast<uint64_t>(step);
  };
  auto take = [&](size_t b, int step, std::span<const float> logits) {
    const auto row = logits.first(static_cast<size_t>(vocab));
    return take_id(b, step, sample_token(row, o.sampling, step_seed(b, step)));
  };
  size_t next = 0;
  while ((next < prompts.size() && !(o.cancelled && o.cancelled())) || !active.empty()) {
    // Admission: the free slots take the next prompts, prefilled in passes under the token budget.
    const auto admitted_at = clock::now();
    while (active.size() < max_batch && next < prompts.size() && !(o.cancelled && o.cancelled())) {
      std::vector<size_t> pass;
      std::vector<State> states;
      size_t pass_tokens = 0;
      while (active.size() + pass.size() < max_batch && next < prompts.size()) {
        const size_t b = next;
        if (prompts[b].empty()) throw Error("prompt " + std::to_string(b) + " is empty");
        if (!pass.empty() &&
            pass_tokens + prompts[b].size() > static_cast<size_t>(std::max(0, o.prefill_tokens)))
          break;
        ++next;
        pass.push_back(b);
        pass_tokens += prompts[b].size();
        states.push_back(model.new_sequence(static_cast<int>(prompts[b].size()) + o.max_new_tokens));
      }
      const auto t0 = clock::now();
      std::vector<float> logits;
      if (pass.size() == 1) {
        logits = model.forward(states[0], prompts[pass[0]], false);
      } else {
        std::vector<State*> ptrs;
        std::vector<std::vector<int>> ps;
        for (size_t i = 0; i < pass.size(); ++i) {
          ptrs.push_back(&states[i]);
          ps.push_back(prompts[pass[i]]);
        }
        logits = model.prefill_batch(ptrs, ps);
      }
      const auto t1 = clock::now();
      r.prefill_s += seconds(t0, t1);
      ++r.prefill_passes;
      r.prompt_tokens += static_cast<int>(pass_tokens);
      for (size_t i = 0; i < pass.size(); ++i) {
        r.ttft_s.push_back(seconds(admitted_at, t1));
        if (take(pass[i], 0, std::span<const float>(logits).subspan(i * static_cast<size_t>(vocab))))
          active.push_back({pass[i], std::move(states[i]), 1});
      }
    }
    if (active.empty()) continue;
    std::vector<State*> states;
    std::vector<int> toks;
    for (auto& a : active) {
      states.push_back(&a.state);
      toks.push_back(r.new_ids[a.prompt].back());
    }
    const auto t0 = clock::now();
    // Greedy steps and sampling without top-k / top-p (the Gumbel-max trick) pick the ids where the logits
    // are (a single sequence inside its captured graph step), so only the ids come back; top-k sampling (k up
    // to cpu::kTopLogits, with or without top-p) brings back each row's largest logits and draws from them
    // here (sample_top, sample_token's own draw); only top-p alone needs the logits on the host.
    const bool top_only = !greedy && !sample_on_device(o.sampling) && o.sampling.top_k > 0 &&
                          o.sampling.top_k <= cpu::kTopLogits && o.sampling.top_k < vocab;
    const bool ids_only = greedy || sample_on_device(o.sampling) || top_only;
    std::vector<float> logits;
    std::vector<int> ids;
    if (greedy) {
      ids = model.decode_batch_greedy(states, toks);
    } else if (top_only) {
      const auto tops = model.decode_batch_top(states, toks);
      for (size_t i = 0; i < active.size(); ++i)
        ids.push_back(sample_top(tops[i], o.sampling, step_seed(active[i].prompt, active[i].step)));
    } else if (ids_only) {
      std::vector<uint64_t> seeds;
      for (const auto& a : active) seeds.push_back(step_seed(a.prompt, a.step));
      ids = model.decode_batch_sampled(states, toks, o.sampling.temperature, seeds);
    } else
      logits = active.size() == 1 ? model.forward(*states[0], toks, false) : model.decode_batch(states, toks);
    r.decode_tokens += static_cast<int>(active.size());
    std::vector<Active> still;
    for (size_t i = 0; i < active.size(); ++i) {
      auto& a = active[i];
      const bool more = ids_only ? take_id(a.prompt, a.step, ids[i])
                                 : take(a.prompt, a.step,
                                        std::span<const float>(logits).subspan(i * static_cast<size_t>(vocab),
                                                                               static_cast<size_t>(vocab)));
      if (more) {
        ++a.step;
        still.push_back(std::move(a));
      }
    }
    active = std::move(still);
    const double dt = seconds(t0, clock::now());
    r.decode_s += dt;
    r.tpot_s.push_back(dt);
  }
  if (sync) sync();
  return r;
}

}  // namespace fp4lab
