// Token generation over a Model: greedy or temperature/top-k/top-p sampling with a seed, stop ids, a batch of
// prompts, and timing (prefill and decode tokens per second).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/reference.h"
#include "engine/scheduler.h"

namespace fp4lab {

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

// Model: a Runner<Ops>. Prompts are admitted up to max_batch at a time (continuous batching): the prompts
// admitted together are prefilled in passes of up to prefill_tokens tokens (one forward each), then every
// active sequence advances one token per decode step, all in one batched forward; a finished sequence frees
// its slot for the next prompt. max_batch = 1 runs prompts one by one.
template <class Model>
GenerateResult generate(Model& model, const std::vector<std::vector<int>>& prompts, const GenerateOptions& o,
                        const std::function<void()>& sync = {}) {
  GenerateResult r;
  r.new_ids.resize(prompts.size());
  for (size_t b = 0; b < prompts.size() && !o.beyond_context; ++b)
    check_context("prompt " + std::to_string(b), prompts[b].size(), o.max_new_tokens,
                  model.config().max_position);
  SchedulerOptions so;
  so.max_batch = o.max_batch;
  so.prefill_tokens = o.prefill_tokens;
  if (o.cancelled) so.admit = [&] { return !o.cancelled(); };
  Scheduler<Model> sched(model, std::move(so));
  for (size_t b = 0; b < prompts.size(); ++b) {
    SequenceSpec s;
    s.prompt = prompts[b];
    s.max_new_tokens = o.max_new_tokens;
    s.stop_ids = o.stop_ids;
    s.sampling = o.sampling;
    s.seed_index = b;
    s.name = "prompt " + std::to_string(b);
    s.on_token = [&r, b](const std::vector<int>& ids) { r.new_ids[b].push_back(ids.back()); };
    if (o.should_stop)
      s.should_stop = [&o, &r, b](const std::vector<int>&) { return o.should_stop(b, r.new_ids[b]); };
    if (o.on_finish) s.on_finish = [&o, &r, b](const std::vector<int>&, FinishReason) { o.on_finish(b, r); };
    sched.submit(std::move(s));
  }
  // Sequences the cancelled check left waiting never ran: their ids stay empty.
  while (sched.running() > 0 || (sched.waiting() > 0 && !(o.cancelled && o.cancelled()))) sched.step();
  const SchedulerStats& st = sched.stats();
  r.prompt_tokens = static_cast<int>(st.prompt_tokens);
  r.generated_tokens = static_cast<int>(st.generated_tokens);
  r.decode_tokens = static_cast<int>(st.decode_tokens);
  r.prefill_s = st.prefill_s;
  r.decode_s = st.decode_s;
  r.ttft_s = st.ttft_s;
  r.tpot_s = st.tpot_s;
  r.prefill_passes = static_cast<int>(st.prefill_passes);
  if (sync) sync();
  return r;
}

}  // namespace fp4lab
