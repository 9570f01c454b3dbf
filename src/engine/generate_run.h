// `fp4lab generate` below the command line: a model loaded into a session (CPU, one GPU or tensor-parallel),
// a list of prompts run through the continuous-batching scheduler, and what the run reports (timing, load,
// memory, the GPU time per op class). Text prompts are tokenized by the caller; here they differ from id
// prompts only in the BOS and EOS handling and in the streamed text of a single prompt.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cuda/run_options.h"
#include "engine/generate.h"
#include "engine/load_stats.h"
#include "engine/session.h"
#include "model/layout.h"

namespace fp4lab {

struct GenerateRunOptions {
  std::string model_path;  // a checkpoint directory or preset:NAME (resolved from a Hub id by the caller)
  QuantMode mode = QuantMode::Auto;
  uint64_t seed = 0;  // preset weights
  SessionOptions session;
  std::vector<std::vector<int>> prompts;
  // Text prompts: add_bos puts the config's BOS first; unless ignore_eos, its EOS ids stop a sequence. Both
  // are settled before a tensor-parallel run's ranks start, so that every rank runs the same prompts.
  bool text = false, add_bos = false, ignore_eos = false;
  GenerateOptions generate;
  // Called on rank 0 after each new token of prompt 0 with its ids so far (streaming a single prompt).
  std::function<void(const std::vector<int>&)> on_first_prompt_token;
};

struct GenerateRunReport {
  GenerateResult result;
  std::vector<std::vector<int>> prompts;  // as run (BOS added)
  LoadStats load;
  int nvfp4_layers = 0;
  size_t linear_layers = 0;
  std::string backend;                       // the backend's name, with the TP degree and link when > 1
  std::optional<MemoryReport> memory;        // one GPU: the plan and what the run held
  std::map<std::string, double> profile_ms;  // --profile: GPU time per op class on GPU 0
};

GenerateRunReport run_generate(GenerateRunOptions o);
// The run's part of generate's results document: prompts, new_ids, nvfp4_linear_layers, timing, memory.
nlohmann::json generate_report_json(const GenerateRunReport& r);

// The GPU time per op class of a profiled run as stderr shows it.
std::string op_profile_table(const std::map<std::string, double>& ms, int generated_tokens, double wall_s);

}  // namespace fp4lab
