#include "bench/serve_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>

#include "common/error.h"
#include "eval/gsm8k.h"
#include "io/openai_client.h"

namespace fp4lab {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Prompt {
  json prompt;        // token ids or text
  int input_len = 0;  // known for ids; for text, the server's usage tells
  int max_tokens = 0;
};

std::vector<Prompt> make_prompts(const ServeBenchOptions& o, int vocab) {
  std::mt19937_64 rng(o.seed);
  auto length = [&](int len) {
    const int lo = std::max(1, static_cast<int>(std::floor(len * (1 - o.range_ratio))));
    const int hi = std::max(lo, static_cast<int>(std::ceil(len * (1 + o.range_ratio))));
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  std::vector<Prompt> out;
  if (o.dataset == "random") {
    if (vocab <= 0)
      throw Error(
          "--dataset random: the server does not say its vocabulary size; give --vocab N (prompt ids are "
          "drawn below it)");
    std::uniform_int_distribution<int> id(0, vocab - 1);
    for (int i = 0; i < o.num_prompts; ++i) {
      Prompt p;
      p.input_len = length(o.input_len);
      p.max_tokens = length(o.output_len);
      json ids = json::array();
      for (int k = 0; k < p.input_len; ++k) ids.push_back(id(rng));
      p.prompt = std::move(ids);
      out.push_back(std::move(p));
    }
  } else if (o.dataset == "gsm8k") {
    if (o.gsm8k_file.empty()) throw Error("--dataset gsm8k needs --gsm8k FILE (the test split as JSONL)");
    const auto items = read_gsm8k_jsonl(o.gsm8k_file);
    if (items.empty()) throw Error(o.gsm8k_file + ": no questions");
    for (int i = 0; i < o.num_prompts; ++i) {
      Prompt p;
      p.prompt = gsm8k_prompt(Gsm8kTask::FiveShot, items[static_cast<size_t>(i) % items.size()], {});
      p.max_tokens = o.output_len;
      out.push_back(std::move(p));
    }
  } else {
    throw Error("--dataset must be random or gsm8k, not '" + o.dataset + "'");
  }
  return out;
}

struct Stats {
  double mean = 0, median = 0, std = 0, p99 = 0;
};
Stats stats_ms(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  for (double& x : v) x *= 1e3;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  const auto pct = [&](double q) {
    // numpy's default (linear) percentile, as vllm bench serve computes it.
    const double pos = q * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  s.median = pct(0.5);
  s.p99 = pct(0.99);
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(var / static_cast<double>(v.size()));
  return s;
}

// The engine counters fp4lab serve exports on /metrics (sums and counts; absent on other servers).
struct EngineCounters {
  bool ok = false;  // the server exported them
  double step_s = 0, steps = 0, stream_s = 0, loop_s = 0, tokens = 0;
};

// The value of an unlabelled sample `name` in Prometheus text, or NaN.
double prometheus_value(const std::string& text, const std::string& name) {
  size_t at = 0;
  while ((at = text.find(name + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::strtod(text.c_str() + at + name.size() + 1, nullptr);
    at += name.size();
  }
  return std::nan("");
}

EngineCounters engine_counters(const OpenAIClient& client) {
  EngineCounters c;
  try {
    const HttpReply r = client.get("/metrics", true);
    if (r.status != 200) return c;
    c.step_s = prometheus_value(r.body, "fp4lab_engine_step_seconds_sum");
    c.steps = prometheus_value(r.body, "fp4lab_engine_step_seconds_count");
    c.stream_s = prometheus_value(r.body, "fp4lab_engine_stream_seconds_total");
    c.loop_s = prometheus_value(r.body, "fp4lab_engine_loop_seconds_total");
    c.tokens = prometheus_value(r.body, "fp4lab_generation_tokens_total");
    c.ok = true;
    for (double v : {c.step_s, c.steps, c.stream_s, c.loop_s, c.tokens}) c.ok = c.ok && !std::isnan(v);
  } catch (const Error&) {
    c.ok = false;
  }
  return c;
}

}  // namespace

json run_serve_bench(const ServeBenchOptions& o) {
  if (o.num_prompts < 1) throw Error("--num-prompts must be at least 1");
  if (!(o.request_rate > 0)) throw Error("--request-rate must be positive (inf: all at once)");
  const OpenAIClient client(o.endpoint, o.api_key);
  // The server's listing, read once: the model id when none is given, and what fp4lab serve says about
  // itself (other servers list less): its vocabulary size, device and the weights' format. A server that
  // lists nothing is fine when --model names the model.
  json listed = json::object();
  try {
    listed = client.first_listed_model();
  } catch (const Error&) {
    if (o.model.empty()) throw;
  }
  const std::string model = o.model.empty() ? listed["id"].get<std::string>() : o.model;
  json server = json::object();
  for (const char* k : {"device", "quant", "max_model_len", "owned_by"})
    if (listed.contains(k)) server[k] = listed[k];
  const int listed_vocab = listed.contains("vocab_size") && listed["vocab_size"].is_number_integer()
                               ? listed["vocab_size"].get<int>()
                               : 0;
  const int vocab = o.vocab > 0 ? o.vocab : listed_vocab;
  const std::vector<Prompt> prompts = make_prompts(o, vocab);
  const std::string path = o.chat ? "/chat/completions" : "/completions";

  std::vector<StreamedCompletion> results(prompts.size());
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0, done = 0;
  const int cap = o.max_concurrency > 0 ? o.max_concurrency : std::numeric_limits<int>::max();
  std::vector<std::thread> threads;
  threads.reserve(prompts.size());
  std::mt19937_64 rng(o.seed ^ 0x5EEDull);
  std::exponential_distribution<double> gap(std::isinf(o.request_rate) ? 1.0 : o.request_rate);
  const EngineCounters before = engine_counters(client);
  const auto start = Clock::now();
  auto next_at = start;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::this_thread::sleep_until(next_at);
    if (!std::isinf(o.request_rate))
      next_at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return in_flight < cap; });
      ++in_flight;
    }
    threads.emplace_back([&, i] {
      const Prompt& p = prompts[i];
      json body{{"model", model},
                {"max_tokens", p.max_tokens},
                {"temperature", 0},
                {"ignore_eos", o.ignore_eos},
                {"stream_options", {{"include_usage", true}}}};
      if (o.chat) {
        if (p.prompt.is_array())
          throw Error("a chat endpoint takes text prompts: use --dataset gsm8k or drop --chat");
        body["messages"] = json::array({{{"role", "user"}, {"content", p.prompt}}});
      } else {
        body["prompt"] = p.prompt;
      }
      results[i] = client.stream(path, body);
      {
        const std::lock_guard<std::mutex> l(mu);
        --in_flight;
        ++done;
        if (o.progress) o.progress(done, static_cast<int>(prompts.size()));
      }
      cv.notify_all();
    });
  }
  for (auto& t : threads) t.join();
  const double duration = std::chrono::duration<double>(Clock::now() - start).count();
  const EngineCounters after = before.ok ? engine_counters(client) : EngineCounters{};

  int completed = 0, failed = 0, good = 0;
  int64_t in_tokens = 0, out_tokens = 0;
  std::vector<double> ttft, tpot, itl, e2el;
  json errors = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (!r.ok) {
      ++failed;
      if (errors.size() < 5) errors.push_back(r.error);
      continue;
    }
    ++completed;
    const int out = r.completion_tokens >= 0 ? r.completion_tokens : r.chunks;
    in_tokens += r.prompt_tokens >= 0 ? r.prompt_tokens : prompts[i].input_len;
    out_tokens += out;
    ttft.push_back(r.ttft_s);
    e2el.push_back(r.latency_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    const double tp = out > 1 ? (r.latency_s - r.ttft_s) / (out - 1) : 0.0;
    if (out > 1) tpot.push_back(tp);
    const bool meets = (o.slo_ttft_ms <= 0 || r.ttft_s * 1e3 <= o.slo_ttft_ms) &&
                       (o.slo_tpot_ms <= 0 || tp * 1e3 <= o.slo_tpot_ms) &&
                       (o.slo_e2el_ms <= 0 || r.latency_s * 1e3 <= o.slo_e2el_ms);
    good += meets;
  }
  json m;
  m["backend"] = "openai";
  m["endpoint"] = client.base_url() + path;
  m["model_id"] = model;
  m["server"] = server;
  m["dataset"] = o.dataset;
  m["num_prompts"] = o.num_prompts;
  m["request_rate"] = std::isinf(o.request_rate) ? json("inf") : json(o.request_rate);
  m["max_concurrency"] = o.max_concurrency > 0 ? json(o.max_concurrency) : json(nullptr);
  m["input_len"] = o.input_len;
  m["output_len"] = o.output_len;
  m["duration"] = duration;
  m["completed"] = completed;
  m["failed"] = failed;
  m["errors"] = errors;
  m["total_input_tokens"] = in_tokens;
  m["total_output_tokens"] = out_tokens;
  m["request_throughput"] = completed / duration;
  m["request_goodput"] =
      (o.slo_ttft_ms > 0 || o.slo_tpot_ms > 0 || o.slo_e2el_ms > 0) ? json(good / duration) : json(nullptr);
  m["output_throughput"] = static_cast<double>(out_tokens) / duration;
  m["total_token_throughput"] = static_cast<double>(in_tokens + out_tokens) / duration;
  const auto put = [&](const char* name, const std::vector<double>& v) {
    const Stats s = stats_ms(v);
    const std::string n(name);
    m["mean_" + n + "_ms"] = s.mean;
    m["median_" + n + "_ms"] = s.median;
    m["std_" + n + "_ms"] = s.std;
    m["p99_" + n + "_ms"] = s.p99;
  };
  put("ttft", ttft);
  put("tpot", tpot);
  put("itl", itl);
  put("e2el", e2el);
  // Where fp4lab serve's time went during the run, from its /metrics: the mean engine step, and per step the
  // engine loop's own time; per generated token the text hooks. A client's TPOT minus the step is what HTTP
  // and the client add.
  if (before.ok && after.ok && after.steps > before.steps && after.tokens > before.tokens) {
    const double steps = after.steps - before.steps, tokens = after.tokens - before.tokens;
    m["server_engine"] = {{"steps", steps},
                          {"mean_step_ms", (after.step_s - before.step_s) / steps * 1e3},
                          {"loop_us_per_step", (after.loop_s - before.loop_s) / steps * 1e6},
                          {"stream_us_per_token", (after.stream_s - before.stream_s) / tokens * 1e6}};
  }
  return m;
}

std::string serve_bench_table(const json& m) {
  std::string out;
  char line[160];
  const auto row = [&](const char* label, const std::string& v) {
    std::snprintf(line, sizeof line, "%-40s %12s\n", label, v.c_str());
    out += line;
  };
  const auto num = [](double v, int prec) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", prec, v);
    return std::string(b);
  };
  out += "============ Serving Benchmark Result ============\n";
  row("Successful requests:", std::to_string(m["completed"].get<int>()));
  row("Failed requests:", std::to_string(m["failed"].get<int>()));
  row("Request rate (req/s):",
      m["request_rate"].is_string() ? "inf" : num(m["request_rate"].get<double>(), 2));
  row("Max concurrency:",
      m["max_concurrency"].is_null() ? "none" : std::to_string(m["max_concurrency"].get<int>()));
  row("Benchmark duration (s):", num(m["duration"].get<double>(), 2));
  row("Total input tokens:", std::to_string(m["total_input_tokens"].get<int64_t>()));
  row("Total generated tokens:", std::to_string(m["total_output_tokens"].get<int64_t>()));
  row("Request throughput (req/s):", num(m["request_throughput"].get<double>(), 2));
  if (!m["request_goodput"].is_null())
    row("Request goodput (req/s):", num(m["request_goodput"].get<double>(), 2));
  row("Output token throughput (tok/s):", num(m["output_throughput"].get<double>(), 2));
  row("Total token throughput (tok/s):", num(m["total_token_throughput"].get<double>(), 2));
  for (const auto& [name, title] :
       std::vector<std::pair<std::string, std::string>>{{"ttft", "Time to First Token"},
                                                        {"tpot", "Time per Output Token (excl. 1st token)"},
                                                        {"itl", "Inter-token Latency"},
                                                        {"e2el", "End-to-end Latency"}}) {
    out += "---------------" + title + "---------------\n";
    const std::string up = name == "e2el"   ? "E2EL"
                           : name == "ttft" ? "TTFT"
                           : name == "tpot" ? "TPOT"
                                            : "ITL";
    row(("Mean " + up + " (ms):").c_str(), num(m["mean_" + name + "_ms"].get<double>(), 2));
    row(("Median " + up + " (ms):").c_str(), num(m["median_" + name + "_ms"].get<double>(), 2));
    row(("P99 " + up + " (ms):").c_str(), num(m["p99_" + name + "_ms"].get<double>(), 2));
  }
  if (m.contains("server_engine")) {
    const json& e = m["server_engine"];
    out += "-----------Server engine (fp4lab /metrics)-----------\n";
    row("Engine steps:", num(e["steps"].get<double>(), 0));
    row("Mean engine step (ms):", num(e["mean_step_ms"].get<double>(), 3));
    row("Engine loop per step (us):", num(e["loop_us_per_step"].get<double>(), 1));
    row("Text hooks per token (us):", num(e["stream_us_per_token"].get<double>(), 1));
  }
  out += "==================================================\n";
  return out;
}

}  // namespace fp4lab
