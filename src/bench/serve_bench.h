// fp4lab bench serve: a load generator for any OpenAI-compatible server (fp4lab serve, vLLM, SGLang,
// llama.cpp): requests arrive as a Poisson process (or all at once) under a concurrency cap, each streamed,
// and the results carry the metrics under the names `vllm bench serve` writes (ttft/tpot/itl/e2el in ms,
// request/output/total-token throughput, goodput under SLOs).
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4lab {

struct ServeBenchOptions {
  std::string endpoint;  // http://host:port[/v1]
  std::string api_key;
  std::string model;               // empty: the first one /v1/models lists
  bool chat = false;               // /v1/chat/completions instead of /v1/completions
  std::string dataset = "random";  // random | gsm8k
  std::string gsm8k_file;          // the gsm8k test JSONL (dataset gsm8k)
  int num_prompts = 200;
  int input_len = 128, output_len = 256;  // random: tokens in and out
  double range_ratio = 0;                 // random: lengths drawn from [len*(1-r), len*(1+r)]
  int vocab = 0;                          // random: prompt ids drawn below it (0: the server's vocab_size)
  double request_rate = std::numeric_limits<double>::infinity();  // requests/s; inf: all at once
  int max_concurrency = 0;                                        // 0: no cap
  bool ignore_eos = true;
  uint64_t seed = 0;
  // Goodput SLOs in ms (0: not set): a request counts when it meets every one that is set.
  double slo_ttft_ms = 0, slo_tpot_ms = 0, slo_e2el_ms = 0;
  std::function<void(int done, int total)> progress;
};

// One run: the vLLM-named metrics plus counts and the options as run.
nlohmann::json run_serve_bench(const ServeBenchOptions& o);

// vLLM's summary table of one run's metrics.
std::string serve_bench_table(const nlohmann::json& metrics);

}  // namespace fp4lab
