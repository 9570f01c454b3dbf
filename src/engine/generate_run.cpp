#include "engine/generate_run.h"

#include <cstdio>

#include "common/error.h"
#include "engine/memory_report.h"
#if FP4LAB_HAVE_CUDA
#include "cuda/tensor_parallel.h"
#endif

namespace fp4lab {

GenerateRunReport run_generate(GenerateRunOptions o) {
  check_session_options(o.session);
  GenerateRunReport rep;
  LoadMeter meter(o.model_path);
  ModelWeights weights = load_model(o.model_path, o.mode, o.seed, o.session.host_weights());
  GenerateOptions& g = o.generate;
  if (o.text) {
    const ModelConfig& c = weights.config;
    if (o.add_bos) {
      if (c.bos_id < 0) throw Error("--add-bos: the model's config.json has no bos_token_id");
      for (auto& p : o.prompts) p.insert(p.begin(), c.bos_id);
    }
    if (!o.ignore_eos) g.stop_ids.insert(g.stop_ids.end(), c.eos_ids.begin(), c.eos_ids.end());
  }
  rep.prompts = o.prompts;
  std::vector<int> lengths;
  for (const auto& p : o.prompts) lengths.push_back(static_cast<int>(p.size()));
  SessionOptions so = o.session;
  so.cuda.shape = memory_shape_for(lengths, g.max_new_tokens, g.max_batch, g.prefill_tokens);
  MemoryReport mem;
  so.cuda.report = &mem;
  run_session(std::move(weights), so, [&](auto& model, auto& ops, int rank) {
    // The prefill budget the memory plan fits with (lowered only under a limit).
    GenerateOptions gl = g;
    gl.prefill_tokens = mem.fit.prefill_tokens(g.prefill_tokens);
    if (rank != 0) {
      (void)generate(model, o.prompts, gl);
      return;
    }
    rep.load = meter.finish();
    for (const auto& p : model.weights().plans) rep.nvfp4_layers += p.nvfp4;
    rep.linear_layers = model.weights().plans.size();
    rep.backend = model.ops().name();
    if (o.on_first_prompt_token)
      gl.should_stop = [&](size_t b, const std::vector<int>& ids) {
        if (b == 0) o.on_first_prompt_token(ids);
        return false;
      };
    rep.result = generate(model, o.prompts, gl);
    if constexpr (requires { ops.profile_ms(); }) rep.profile_ms = ops.profile_ms();
  });
#if FP4LAB_HAVE_CUDA
  if (so.backend == "cuda") {
    if (so.cuda.tp > 1)
      rep.backend += " x" + std::to_string(so.cuda.tp) + " (tensor parallel, " + gpu_interconnect() + ")";
    else
      rep.memory = mem;
  }
#endif
  return rep;
}

nlohmann::json generate_report_json(const GenerateRunReport& rep) {
  const GenerateResult& r = rep.result;
  nlohmann::json j = {{"prompts", rep.prompts},
                      {"new_ids", r.new_ids},
                      {"nvfp4_linear_layers", rep.nvfp4_layers},
                      {"timing",
                       {{"load_s", rep.load.seconds},
                        {"load", rep.load.to_json()},
                        {"prefill_s", r.prefill_s},
                        {"prefill_passes", r.prefill_passes},
                        {"decode_s", r.decode_s},
                        {"decode_tokens", r.decode_tokens},
                        {"prefill_tok_s", r.prefill_tok_s()},
                        {"decode_tok_s", r.decode_tok_s()}}}};
  if (rep.memory) j["memory"] = memory_report_json(*rep.memory);
  return j;
}

std::string op_profile_table(const std::map<std::string, double>& ms, int generated_tokens, double wall_s) {
  double total = 0;
  for (const auto& [k, v] : ms) total += v;
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "GPU time by op class on GPU 0 (prefill + decode, %d tokens generated):\n",
                generated_tokens);
  out += line;
  for (const auto& [k, v] : ms) {
    std::snprintf(line, sizeof line, "  %-18s %9.2f ms  %5.1f%%\n", k.c_str(), v, 100.0 * v / total);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-18s %9.2f ms; wall %.2f ms\n", "total", total, 1000.0 * wall_s);
  return out + line;
}

}  // namespace fp4lab
