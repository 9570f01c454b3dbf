// The engine thread of `fp4lab serve`: takes the jobs the HTTP threads queue, runs them through the
// continuous-batching scheduler (new requests prefilled together, every running one advanced each step),
// and sends each one's text back on its stream. One thread owns the model; the HTTP threads never touch it.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "serve/metrics.h"
#include "serve/request_stream.h"

namespace fp4lab::serve {

struct EngineLoopOptions {
  int max_num_seqs = 64;
  int prefill_tokens = 8192;
  std::vector<int> eos_ids;  // stop unless ignore_eos; never shown as text
  double shutdown_grace_s = 30;
  // Device memory the engine holds now (0 where there is none to report).
  std::function<uint64_t()> memory_in_use;
  // Called once when `stop` is first seen, before the in-flight requests drain (the server stops accepting).
  std::function<void()> on_drain;
};

// Runs until `stop` is set and the work in flight is done (or the grace period ends, which cancels it).
// Errors of one step (a NaN in the logits) end the requests of that step with the error; the loop goes on.
template <class Model>
void run_engine_loop(Model& model, const Tokenizer& tok, ServeQueue& queue, ServeMetrics& metrics,
                     const EngineLoopOptions& o, const std::atomic<bool>& stop) {
  SchedulerOptions so;
  so.max_batch = o.max_num_seqs;
  so.prefill_tokens = o.prefill_tokens;
  so.keep_step_times = false;
  Scheduler<Model> sched(model, std::move(so));
  auto failure = std::make_shared<std::string>();  // the error that ended the current step, if any
  // Engine-thread seconds in the text hooks during the current step (the metrics split a step with it).
  auto stream_s = std::make_shared<double>(0.0);
  auto to_spec = [&](ServeJob job) {
    SequenceSpec s;
    s.prompt = std::move(job.prompt);
    s.max_new_tokens = job.max_tokens;
    s.sampling = job.sampling;
    s.name = "request " + std::to_string(job.id);
    s.stop_ids = job.stop_ids;
    if (!job.ignore_eos) s.stop_ids.insert(s.stop_ids.end(), o.eos_ids.begin(), o.eos_ids.end());
    auto text = std::make_shared<TextAssembler>(tok, std::move(job.stop), o.eos_ids);
    auto out = job.out;
    s.on_admit = [out] { out->mark_admitted(); };
    s.on_token = [text, out, stream_s](const std::vector<int>& ids) {
      const auto t0 = Clock::now();
      out->push(text->push(ids.back()), static_cast<int>(ids.size()));
      *stream_s += std::chrono::duration<double>(Clock::now() - t0).count();
    };
    s.should_stop = [text](const std::vector<int>&) { return text->stopped(); };
    s.cancelled = [out] { return out->cancelled(); };
    s.on_finish = [text, out, failure, &queue, &metrics](const std::vector<int>& ids, FinishReason why) {
      if (!failure->empty())
        out->fail(*failure);
      else
        out->finish(why == FinishReason::Cancelled ? std::string() : text->finish(),
                    static_cast<int>(ids.size()), text->stopped() ? "stop" : finish_reason_name(why));
      if (out->leave()) metrics.request_finished(out->times());
      queue.release();
    };
    return s;
  };
  bool draining = false;
  Clock::time_point drain_deadline{};
  // The end of the last busy step: the loop's own time is from there to the next step's start.
  Clock::time_point last_step_end{};
  bool after_step = false;
  while (true) {
    if (stop && !draining) {
      draining = true;
      queue.close();
      if (o.on_drain) o.on_drain();
      drain_deadline =
          Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_grace_s * 1e3));
    }
    // Idle: wait for work; busy: only collect what arrived.
    for (auto& job : queue.take(std::chrono::milliseconds(sched.idle() ? 50 : 0)))
      sched.submit(to_spec(std::move(job)));
    if (draining && (sched.idle() || Clock::now() >= drain_deadline)) {
      if (!sched.idle())
        std::fprintf(stderr, "fp4lab serve: the grace period ended; cancelling %zu requests\n",
                     sched.running() + sched.waiting());
      sched.cancel_all();
      break;
    }
    if (sched.idle()) {
      after_step = false;
    } else {
      const auto t0 = Clock::now();
      *stream_s = 0;
      try {
        sched.step();
      } catch (const std::exception& e) {
        *failure = e.what();
        std::fprintf(stderr, "fp4lab serve: %s\n", e.what());
        sched.cancel_all();
        failure->clear();
      }
      const auto t1 = Clock::now();
      const auto secs = [](Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration<double>(b - a).count();
      };
      metrics.engine_step(secs(t0, t1), *stream_s, after_step ? secs(last_step_end, t0) : 0.0);
      last_step_end = t1;
      after_step = true;
    }
    metrics.set_state(static_cast<int>(sched.running()), static_cast<int>(sched.waiting() + queue.queued()),
                      o.memory_in_use ? o.memory_in_use() : 0);
  }
  metrics.set_state(0, 0, o.memory_in_use ? o.memory_in_use() : 0);
}

}  // namespace fp4lab::serve
