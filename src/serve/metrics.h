// The server's counters, gauges and latency histograms, rendered in the Prometheus text format for
// GET /metrics (names after vLLM's, with the fp4lab_ prefix). Written by the engine and HTTP threads.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "serve/request_stream.h"

namespace fp4lab::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  // Appends the _bucket, _sum and _count lines.
  void render(std::string& out, const std::string& name) const;
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class ServeMetrics {
 public:
  ServeMetrics();
  void request_finished(const std::string& reason, int prompt_tokens, int completion_tokens, double ttft_s,
                        double tpot_s, double e2e_s, double queue_s);
  // The same from a request's times (see RequestStream::Times).
  void request_finished(const RequestStream::Times& t);
  void request_rejected(const std::string& reason);  // queue_full, shutting_down, bad_request, unauthorized
  void set_state(int running, int waiting, uint64_t memory_bytes);
  // One scheduler step of the engine thread: its wall time (the forward, sampling and the hooks that turn ids
  // into text), the part of it spent in those hooks, and the engine loop's own time around it (the queue,
  // the gauges). Together they split a streamed token's time into the model's and the server's.
  void engine_step(double step_s, double stream_s, double loop_s);
  std::string render() const;
  // Mean TTFT and TPOT so far (the tests compare them with a client's).
  double mean_ttft_s() const;
  double mean_tpot_s() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> finished_, rejected_;
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, tpot_, e2e_, queue_;
  Histogram step_;
  double stream_s_ = 0, loop_s_ = 0;
  int running_ = 0, waiting_ = 0;
  uint64_t memory_ = 0;
};

}  // namespace fp4lab::serve
