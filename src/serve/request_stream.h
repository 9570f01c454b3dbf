// What connects an HTTP thread to the engine thread: the job a request becomes, the queue that carries it to
// the engine, the stream its text comes back on, and the stop-string handling that turns ids into that text.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "tokenizer/text_stream.h"

namespace fp4lab::serve {

using Clock = std::chrono::steady_clock;

// One request's results as the engine produces them; written by the engine thread, read by the request's
// HTTP thread. The reader takes whatever text arrived since its last read.
class RequestStream {
 public:
  struct Update {
    std::string text;           // new text since the last read
    int completion_tokens = 0;  // tokens generated so far
    bool done = false;          // no more updates
    std::string finish_reason;  // with done: stop, length, cancelled, or "error"
    std::string error;          // with finish_reason "error": the engine's message
  };
  // Engine side.
  void push(const std::string& text, int completion_tokens);
  void finish(const std::string& text, int completion_tokens, const std::string& reason);
  void fail(const std::string& message);
  // HTTP side: waits up to `timeout` for news; false when nothing arrived.
  bool read(Update& u, std::chrono::milliseconds timeout);
  // The client went away or a stop ended it early: the engine drops the sequence at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  // The request's times, for the server's metrics. A streamed reply's TTFT and TPOT are taken where the
  // client can see them, when its chunks are written (the HTTP thread's wake-up included); a whole reply's
  // where the engine produced the tokens.
  struct Times {
    Clock::time_point arrived, admitted;
    std::optional<Clock::time_point> first_token, last_token, first_sent, last_sent;
    int prompt_tokens = 0, completion_tokens = 0;
    std::string reason;  // as finish() or fail() left it
  };
  void set_arrival(Clock::time_point t, int prompt_tokens);
  void mark_admitted();
  void mark_sent();  // the HTTP thread wrote a chunk with text
  // Each side (engine, HTTP thread) calls this once, when it is done with the request: true for the second,
  // which records the metrics from times().
  bool leave();
  Times times() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  int tokens_ = 0;
  bool done_ = false, news_ = false;
  std::string reason_, error_;
  Times t_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int> left_{0};
};

// A request as the engine runs it.
struct ServeJob {
  uint64_t id = 0;
  std::vector<int> prompt;
  int max_tokens = 16;
  SamplingOptions sampling;
  bool ignore_eos = false;
  std::vector<std::string> stop;  // stop strings: the text ends before the first of them
  std::vector<int> stop_ids;      // extra stop token ids (the request's stop_token_ids)
  std::shared_ptr<RequestStream> out;
};

// The jobs waiting for the engine thread. Bounded: a request that finds max_in_system jobs queued or running
// is refused (503), and once closed (shutting down) every request is.
class ServeQueue {
 public:
  explicit ServeQueue(size_t max_in_system) : max_(max_in_system) {}
  enum class Push { Ok, Full, Closed };
  Push push(ServeJob j);
  // Engine side: the jobs queued since the last call, waiting up to `timeout` when there are none.
  std::vector<ServeJob> take(std::chrono::milliseconds timeout);
  // Engine side: a job ended (its slot counts no more).
  void release();
  void close();
  bool closed() const;
  size_t in_system() const { return in_system_; }
  size_t queued() const;

 private:
  const size_t max_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ServeJob> q_;
  bool closed_ = false, woken_ = false;
  std::atomic<size_t> in_system_{0};
};

// Turns a sequence's ids into the text a client sees: whole UTF-8 characters, cut before the first stop
// string, and holding back a tail that could still become one (so that no part of a stop string is sent).
class TextAssembler {
 public:
  TextAssembler(const Tokenizer& tok, std::vector<std::string> stop, std::vector<int> special_stop_ids)
      : stream_(tok), stop_(std::move(stop)), stop_ids_(std::move(special_stop_ids)) {}
  // The text this id releases; sets stopped() when a stop string completed.
  std::string push(int id);
  // What is still held back, at the end of generation (nothing after a stop string).
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  TextStream stream_;
  std::vector<std::string> stop_;
  std::vector<int> stop_ids_;  // ids whose text is not shown (end-of-sequence tokens)
  std::string pending_;        // decoded but not released
  bool stopped_ = false;
};

}  // namespace fp4lab::serve
