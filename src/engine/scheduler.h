// Continuous batching over a Model (a Runner<Ops>): sequences wait in a queue, are admitted as slots free up
// (the admitted prompts prefilled together under a token budget), and every running sequence advances one
// token per step in one batched forward. Each sequence carries its own length limit, stop ids and sampling.
// generate() runs a fixed list of prompts through it; the server feeds it requests as they arrive.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/reference.h"

namespace fp4lab {

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;
  int top_k = 0;       // 0: off
  float top_p = 1.0f;  // 1: off
  uint64_t seed = 0;
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
inline bool is_greedy(const SamplingOptions& o) {
  return o.greedy || o.temperature <= 0.0f;
}

// Why a sequence stopped.
enum class FinishReason { Stop, Length, Cancelled };
inline const char* finish_reason_name(FinishReason r) {
  return r == FinishReason::Stop ? "stop" : r == FinishReason::Length ? "length" : "cancelled";
}

// Throws when a prompt plus its new tokens passes the model's context (positions beyond the trained range
// give RoPE angles and attention spans the model never saw); `what` names the prompt in the message.
inline void check_context(const std::string& what, size_t prompt_tokens, int max_new_tokens,
                          int64_t context) {
  if (static_cast<int64_t>(prompt_tokens) + max_new_tokens > context)
    throw Error(what + " has " + std::to_string(prompt_tokens) + " tokens; with " +
                std::to_string(max_new_tokens) + " new ones it passes the model's context of " +
                std::to_string(context) + " (max_position_embeddings); --beyond-context runs it anyway");
}

// A sequence to run. The hooks are called on the thread that steps the scheduler.
struct SequenceSpec {
  std::vector<int> prompt;
  int max_new_tokens = 32;
  std::vector<int> stop_ids;
  SamplingOptions sampling;
  // Mixed into each step's seed with sampling.seed, so that prompts of one batch draw differently while a
  // sequence draws the same whether it runs alone or with others.
  uint64_t seed_index = 0;
  std::string name = "a sequence";  // in errors
  // When the sequence leaves the queue for its prefill.
  std::function<void()> on_admit;
  // After each new token, with the ids so far.
  std::function<void(const std::vector<int>&)> on_token;
  // After on_token, unless the token is a stop id: true ends the sequence (stop strings, which need the
  // tokenizer, live with the caller).
  std::function<bool(const std::vector<int>&)> should_stop;
  // Once, when the sequence ends (its ids final), also when it is cancelled before admission.
  std::function<void(const std::vector<int>&, FinishReason)> on_finish;
  // Checked at every step: true drops the sequence (a client that went away) and frees its slot.
  std::function<bool()> cancelled;
};

struct SchedulerOptions {
  int max_batch = 1;  // sequences decoded together
  // Prompts admitted together are prefilled in one forward (one pass over the weights) while their tokens add
  // up to at most this many; a longer prompt gets a pass of its own. 0 prefills one prompt at a time.
  int prefill_tokens = 8192;
  // Checked before admitting each sequence: false stops admitting (the running ones finish). Ctrl-C uses it.
  std::function<bool()> admit;
  // Keep every admission's TTFT and every step's time (a long-lived server keeps only the totals).
  bool keep_step_times = true;
};

struct SchedulerStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  // Tokens produced by decode steps: each prompt's first token comes from its prefill.
  int64_t decode_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  int64_t prefill_passes = 0;  // forwards that prefilled prompts (fewer than prompts when batched)
  // Per admitted sequence, in admission order: from the start of its admission round until its first token.
  // Prompts admitted together wait for the prefill passes before theirs.
  std::vector<double> ttft_s;
  std::vector<double> tpot_s;  // every decode step
};

template <class Model>
class Scheduler {
 public:
  using State = typename Model::State;

  Scheduler(Model& model, SchedulerOptions o) : model_(model), o_(std::move(o)) {}

  // Queues a sequence (admitted at a later step, in order).
  void submit(SequenceSpec s) {
    if (s.prompt.empty()) throw Error(s.name + " is empty");
    if (s.max_new_tokens < 1) throw Error("max_new_tokens must be at least 1");
    waiting_.push_back(std::move(s));
  }
  bool idle() const { return waiting_.empty() && running_.empty(); }
  size_t waiting() const { return waiting_.size(); }
  size_t running() const { return running_.size(); }
  const SchedulerStats& stats() const { return stats_; }

  // One round: drops cancelled sequences, admits waiting ones into free slots (prefilling them), then
  // advances every running sequence by one token.
  void step() {
    drop_cancelled();
    admit();
    if (!running_.empty()) decode();
  }

  // Ends every sequence, running or waiting, as cancelled (their hooks see it). After step() threw, this
  // tells every sequence it touched.
  void cancel_all() {
    for (auto& r : running_)
      if (!r.done) finish(r.spec, r.ids, FinishReason::Cancelled);
    for (auto& w : waiting_) finish(w, {}, FinishReason::Cancelled);
    running_.clear();
    waiting_.clear();
  }

 private:
  using clock = std::chrono::steady_clock;
  struct Running {
    SequenceSpec spec;
    State state;
    std::vector<int> ids;
    bool done = false;  // on_finish called
  };

  static double seconds(clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }
  static uint64_t step_seed(const SequenceSpec& s, size_t step) {
    return s.sampling.seed * 1000003ull + s.seed_index * 7919ull + static_cast<uint64_t>(step);
  }
  static void finish(SequenceSpec& s, const std::vector<int>& ids, FinishReason why) {
    if (s.on_finish) s.on_finish(ids, why);
  }

  void drop_cancelled() {
    const auto gone = [](SequenceSpec& s) { return s.cancelled && s.cancelled(); };
    std::erase_if(waiting_, [&](SequenceSpec& s) {
      if (!gone(s)) return false;
      finish(s, {}, FinishReason::Cancelled);
      return true;
    });
    for (auto& r : running_)
      if (gone(r.spec)) {
        r.done = true;
        finish(r.spec, r.ids, FinishReason::Cancelled);
      }
    compact();
  }

  // Appends a chosen token; false when the sequence is finished (its on_finish called).
  bool take(SequenceSpec& s, std::vector<int>& ids, int tok) {
    // A row of NaN logits (an overflow, a broken scale) leaves nothing to pick; decoding token 0 forever with
    // exit 0 would hide it.
    if (tok == cpu::kNoId)
      throw Error(s.name + ", new token " + std::to_string(ids.size()) +
                  ": the logits are NaN (non-finite weights or scales in the model, or an overflow)");
    ids.push_back(tok);
    ++stats_.generated_tokens;
    if (s.on_token) s.on_token(ids);
    FinishReason why = FinishReason::Stop;
    bool more = std::find(s.stop_ids.begin(), s.stop_ids.end(), tok) == s.stop_ids.end() &&
                !(s.should_stop && s.should_stop(ids));
    if (more && static_cast<int>(ids.size()) >= s.max_new_tokens) more = false, why = FinishReason::Length;
    if (!more) finish(s, ids, why);
    return more;
  }
  bool take_logits(SequenceSpec& s, std::vector<int>& ids, std::span<const float> row) {
    return take(s, ids, sample_token(row, s.sampling, step_seed(s, ids.size())));
  }
  // Keeps the running sequences that are not done, in order.
  void compact() {
    std::erase_if(running_, [](const Running& r) { return r.done; });
  }

  void admit() {
    const size_t max_batch = static_cast<size_t>(std::max(1, o_.max_batch));
    const auto admitted_at = clock::now();
    const auto may_admit = [&] { return !waiting_.empty() && (!o_.admit || o_.admit()); };
    const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
    while (running_.size() < max_batch && may_admit()) {
      std::vector<Running> pass;
      size_t pass_tokens = 0;
      while (running_.size() + pass.size() < max_batch && !waiting_.empty()) {
        const size_t n = waiting_.front().prompt.size();
        if (!pass.empty() && pass_tokens + n > static_cast<size_t>(std::max(0, o_.prefill_tokens))) break;
        SequenceSpec s = std::move(waiting_.front());
        waiting_.pop_front();
        if (s.on_admit) s.on_admit();
        pass_tokens += n;
        State st = model_.new_sequence(static_cast<int>(n) + s.max_new_tokens);
        pass.push_back({std::move(s), std::move(st), {}});
      }
      // The pass joins the running sequences before its forward, so that cancel_all reaches it if the
      // forward or a token throws.
      const size_t first = running_.size();
      for (auto& p : pass) running_.push_back(std::move(p));
      const auto t0 = clock::now();
      std::vector<float> logits;
      if (pass.size() == 1) {
        logits = model_.forward(running_[first].state, running_[first].spec.prompt, false);
      } else {
        std::vector<State*> ptrs;
        std::vector<std::vector<int>> ps;
        for (size_t i = first; i < running_.size(); ++i) {
          ptrs.push_back(&running_[i].state);
          ps.push_back(running_[i].spec.prompt);
        }
        logits = model_.prefill_batch(ptrs, ps);
      }
      const auto t1 = clock::now();
      stats_.prefill_s += seconds(t0, t1);
      ++stats_.prefill_passes;
      stats_.prompt_tokens += static_cast<int64_t>(pass_tokens);
      for (size_t i = first; i < running_.size(); ++i) {
        if (o_.keep_step_times) stats_.ttft_s.push_back(seconds(admitted_at, t1));
        auto& r = running_[i];
        const auto row = std::span<const float>(logits).subspan((i - first) * vocab, vocab);
        r.done = !take_logits(r.spec, r.ids, row);
      }
      compact();
    }
  }

  // Sampling options that one device-side step serves for every row: all equal but the seed.
  static bool same_sampling(const SamplingOptions& a, const SamplingOptions& b) {
    if (is_greedy(a) || is_greedy(b)) return is_greedy(a) && is_greedy(b);
    return a.temperature == b.temperature && a.top_k == b.top_k && a.top_p == b.top_p;
  }

  void decode() {
    const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
    std::vector<State*> states;
    std::vector<int> toks;
    bool uniform = true;
    for (auto& r : running_) {
      states.push_back(&r.state);
      toks.push_back(r.ids.back());
      uniform = uniform && same_sampling(r.spec.sampling, running_[0].spec.sampling);
    }
    const SamplingOptions& so = running_[0].spec.sampling;
    const bool greedy = uniform && is_greedy(so);
    // Greedy steps and sampling without top-k / top-p (the Gumbel-max trick) pick the ids where the logits
    // are (a single sequence inside its captured graph step), so only the ids come back; top-k sampling (k up
    // to cpu::kTopLogits, with or without top-p) brings back each row's largest logits and draws from them
    // here (sample_top, sample_token's own draw); only top-p alone, or rows that sample differently, need the
    // logits on the host.
    const bool top_only = uniform && !greedy && !sample_on_device(so) && so.top_k > 0 &&
                          so.top_k <= cpu::kTopLogits && static_cast<size_t>(so.top_k) < vocab;
    const bool ids_only = greedy || (uniform && sample_on_device(so)) || top_only;
    const auto t0 = clock::now();
    std::vector<float> logits;
    std::vector<int> ids;
    if (greedy) {
      ids = model_.decode_batch_greedy(states, toks);
    } else if (top_only) {
      const auto tops = model_.decode_batch_top(states, toks);
      for (size_t i = 0; i < running_.size(); ++i)
        ids.push_back(sample_top(tops[i], running_[i].spec.sampling,
                                 step_seed(running_[i].spec, running_[i].ids.size())));
    } else if (ids_only) {
      std::vector<uint64_t> seeds;
      for (const auto& r : running_) seeds.push_back(step_seed(r.spec, r.ids.size()));
      ids = model_.decode_batch_sampled(states, toks, so.temperature, seeds);
    } else {
      logits =
          running_.size() == 1 ? model_.forward(*states[0], toks, false) : model_.decode_batch(states, toks);
    }
    stats_.decode_tokens += static_cast<int64_t>(running_.size());
    for (size_t i = 0; i < running_.size(); ++i) {
      auto& r = running_[i];
      const bool more =
          ids_only ? take(r.spec, r.ids, ids[i])
                   : take_logits(r.spec, r.ids, std::span<const float>(logits).subspan(i * vocab, vocab));
      r.done = !more;
    }
    compact();
    const double dt = seconds(t0, clock::now());
    stats_.decode_s += dt;
    if (o_.keep_step_times) stats_.tpot_s.push_back(dt);
  }

  Model& model_;
  SchedulerOptions o_;
  std::deque<SequenceSpec> waiting_;
  std::vector<Running> running_;
  SchedulerStats stats_;
};

}  // namespace fp4lab
