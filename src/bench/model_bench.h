// `fp4lab bench`: end-to-end tokens/s of a model in each quantization on one backend, the way the field
// reports it (Tokens/sec, Total Time, Speedup over the first quantization; TTFT/TPOT percentiles), with the
// decode roofline at the measured copy bandwidth and the results document stored in the results database.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cuda/run_options.h"
#include "engine/generate.h"
#include "io/hub.h"
#include "report/results_db.h"

namespace fp4lab {

struct ModelBenchOptions {
  std::string model;  // as the user gave it (echoed); "" = the largest preset that fits (CPU: a small one)
  std::string backend = "auto";                      // auto (cuda when a GPU is present), cpu, cuda
  // The first is the baseline; empty: bf16, fp8 (GPUs with FP8 tensor cores) and nvfp4.
  std::vector<std::string> quants;
  int input_len = 128, output_len = 256, batch = 1, warmup = 1, reps = 3;
  int prefill_tokens = GenerateOptions{}.prefill_tokens;
  bool beyond_context = false;
  uint64_t seed = 0;     // preset weights
  std::string json_out;  // "" = no file
  CudaRunOptions cuda;   // the CUDA run (TP, graphs, memory limit, lm_head, ...)
  bool profile = false;                                 // cuda: one extra run timing every op class
  std::string db = ResultsDb::default_path();
  HubOptions hub = HubOptions::from_env();
  std::vector<int> sweep;  // one run per batch size
  bool no_db = false;
};

// One run: prints the tables and the verdict, writes json_out, stores the document; returns it.
nlohmann::json run_model_bench(const ModelBenchOptions& o);
// One run, or one per sweep batch size (each stored; json_out holds them all), with the speedup of the last
// quantization over the first per batch size. SIGINT lets the repetition in flight finish and keeps what is
// complete; returns 130 then, else 0.
int run_bench_or_sweep(const ModelBenchOptions& o);

}  // namespace fp4lab
