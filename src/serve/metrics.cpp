#include "serve/metrics.h"

#include <cstdio>

namespace fp4lab::serve {

namespace {

std::string num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

// Latency buckets in seconds: vLLM's TTFT and TPOT ladders, which span decode steps to long prefills.
const std::vector<double> kTtftBounds{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                      0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
const std::vector<double> kTpotBounds{0.001, 0.0025, 0.005, 0.0075, 0.01,  0.015, 0.02,
                                      0.025, 0.03,   0.04,  0.05,   0.075, 0.1,   0.15,
                                      0.2,   0.3,    0.4,   0.5,    0.75,  1.0,   2.5};
// Engine steps: a decode step of a small model on a fast GPU (~1 ms) to a long batched prefill.
const std::vector<double> kStepBounds{0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075,
                                      0.01,   0.015, 0.02,   0.03,  0.05,   0.1,   0.25,  0.5,   1.0};
const std::vector<double> kRequestBounds{0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                         5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                         60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name) const {
  uint64_t cum = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cum += counts_[i];
    out += name + "_bucket{le=\"" + (i < bounds_.size() ? num(bounds_[i]) : std::string("+Inf")) + "\"} " +
           std::to_string(cum) + "\n";
  }
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

ServeMetrics::ServeMetrics()
    : ttft_(kTtftBounds),
      tpot_(kTpotBounds),
      e2e_(kRequestBounds),
      queue_(kRequestBounds),
      step_(kStepBounds) {}

void ServeMetrics::request_finished(const std::string& reason, int prompt_tokens, int completion_tokens,
                                    double ttft_s, double tpot_s, double e2e_s, double queue_s) {
  const std::lock_guard<std::mutex> l(mu_);
  ++finished_[reason];
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  generation_tokens_ += static_cast<uint64_t>(completion_tokens);
  if (completion_tokens > 0) ttft_.observe(ttft_s);
  if (completion_tokens > 1) tpot_.observe(tpot_s);
  e2e_.observe(e2e_s);
  queue_.observe(queue_s);
}

void ServeMetrics::request_finished(const RequestStream::Times& t) {
  const auto secs = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const bool sent = t.first_sent.has_value();
  const auto first = sent ? t.first_sent : t.first_token;
  const auto last = sent ? t.last_sent : t.last_token;
  const int n = t.completion_tokens;
  const double ttft = first ? secs(t.arrived, *first) : 0.0;
  const double tpot = first && last && n > 1 ? secs(*first, *last) / (n - 1) : 0.0;
  const double e2e = last ? secs(t.arrived, *last) : secs(t.arrived, Clock::now());
  request_finished(t.reason.empty() ? "cancelled" : t.reason, t.prompt_tokens, n, ttft, tpot, e2e,
                   secs(t.arrived, t.admitted));
}

void ServeMetrics::request_rejected(const std::string& reason) {
  const std::lock_guard<std::mutex> l(mu_);
  ++rejected_[reason];
}

void ServeMetrics::set_state(int running, int waiting, uint64_t memory_bytes) {
  const std::lock_guard<std::mutex> l(mu_);
  running_ = running;
  waiting_ = waiting;
  memory_ = memory_bytes;
}

void ServeMetrics::engine_step(double step_s, double stream_s, double loop_s) {
  const std::lock_guard<std::mutex> l(mu_);
  step_.observe(step_s);
  stream_s_ += stream_s;
  loop_s_ += loop_s;
}

double ServeMetrics::mean_ttft_s() const {
  const std::lock_guard<std::mutex> l(mu_);
  return ttft_.count() ? ttft_.sum() / static_cast<double>(ttft_.count()) : 0.0;
}

double ServeMetrics::mean_tpot_s() const {
  const std::lock_guard<std::mutex> l(mu_);
  return tpot_.count() ? tpot_.sum() / static_cast<double>(tpot_.count()) : 0.0;
}

std::string ServeMetrics::render() const {
  const std::lock_guard<std::mutex> l(mu_);
  std::string out;
  header(out, "fp4lab_num_requests_running", "gauge", "Sequences in the running batch.");
  out += "fp4lab_num_requests_running " + std::to_string(running_) + "\n";
  header(out, "fp4lab_num_requests_waiting", "gauge", "Requests accepted and waiting for a batch slot.");
  out += "fp4lab_num_requests_waiting " + std::to_string(waiting_) + "\n";
  header(out, "fp4lab_state_memory_bytes", "gauge",
         "Device memory held by the engine's buffers, KV cache and recurrent state included (0 on the CPU "
         "backend).");
  out += "fp4lab_state_memory_bytes " + std::to_string(memory_) + "\n";
  header(out, "fp4lab_request_success_total", "counter", "Finished requests by finish reason.");
  for (const char* r : {"stop", "length", "cancelled", "error"}) {
    const auto it = finished_.find(r);
    out += std::string("fp4lab_request_success_total{finished_reason=\"") + r + "\"} " +
           std::to_string(it == finished_.end() ? 0 : it->second) + "\n";
  }
  header(out, "fp4lab_request_rejected_total", "counter", "Requests refused before they ran, by reason.");
  for (const char* r : {"bad_request", "unauthorized", "queue_full", "shutting_down"}) {
    const auto it = rejected_.find(r);
    out += std::string("fp4lab_request_rejected_total{reason=\"") + r + "\"} " +
           std::to_string(it == rejected_.end() ? 0 : it->second) + "\n";
  }
  header(out, "fp4lab_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
  out += "fp4lab_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(out, "fp4lab_generation_tokens_total", "counter", "Generated tokens of finished requests.");
  out += "fp4lab_generation_tokens_total " + std::to_string(generation_tokens_) + "\n";
  header(out, "fp4lab_time_to_first_token_seconds", "histogram",
         "From a request's arrival to its first token.");
  ttft_.render(out, "fp4lab_time_to_first_token_seconds");
  header(out, "fp4lab_time_per_output_token_seconds", "histogram",
         "Per request: (last token - first token) / (tokens - 1).");
  tpot_.render(out, "fp4lab_time_per_output_token_seconds");
  header(out, "fp4lab_e2e_request_latency_seconds", "histogram",
         "From a request's arrival to its last token.");
  e2e_.render(out, "fp4lab_e2e_request_latency_seconds");
  header(out, "fp4lab_request_queue_time_seconds", "histogram", "From a request's arrival to its admission.");
  queue_.render(out, "fp4lab_request_queue_time_seconds");
  header(out, "fp4lab_engine_step_seconds", "histogram",
         "Wall time of each engine step (prefill of admitted requests and/or one decode token for every "
         "running one), the text hooks included.");
  step_.render(out, "fp4lab_engine_step_seconds");
  header(out, "fp4lab_engine_stream_seconds_total", "counter",
         "Engine-thread time in the steps turning new ids into streamed text (detokenization, stop strings, "
         "handing the text to the HTTP threads).");
  out += "fp4lab_engine_stream_seconds_total " + num(stream_s_) + "\n";
  header(out, "fp4lab_engine_loop_seconds_total", "counter",
         "Engine-thread time between busy steps: taking new requests off the queue, updating the gauges.");
  out += "fp4lab_engine_loop_seconds_total " + num(loop_s_) + "\n";
  return out;
}

}  // namespace fp4lab::serve
