// `fp4lab eval gsm8k`: GSM8K scored exactly as lm-eval scores it (the 5-shot or 8-shot chain-of-thought
// prompts, greedy, its stop strings and filters), on a model run here (CPU or CUDA, continuous batching) or
// through an OpenAI-compatible server's /v1/completions; per-question records that an interrupted run resumes
// from; the summary, options and records as JSON and in the results database.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "cuda/run_options.h"
#include "engine/generate.h"
#include "io/hub.h"
#include "report/results_db.h"

namespace fp4lab {

struct Gsm8kRunOptions {
  std::string model, backend = "cpu", quant = "auto", data, task = "gsm8k", tokenizer, json_out, records,
                     db = ResultsDb::default_path();
  int limit = 0, max_new = 256, threads = 0, batch = 1;
  int prefill_tokens = GenerateOptions{}.prefill_tokens;
  bool beyond_context = false;
  CudaRunOptions cuda;  // the CUDA run (TP, graphs, memory limit, lm_head, ...)
  uint64_t seed = 0;
  bool add_bos = false, no_db = false;
  // --endpoint: the questions go to an OpenAI-compatible server's /v1/completions instead of a local model.
  std::string endpoint, api_key;
  int concurrency = 8;
  std::string data_url =
      "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data";
  HubOptions hub = HubOptions::from_env();
};

// Runs the evaluation and prints lm-eval's table; returns the exit status (130 when interrupted).
int run_gsm8k_eval(Gsm8kRunOptions o);

}  // namespace fp4lab
