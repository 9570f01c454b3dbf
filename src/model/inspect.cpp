#include "model/inspect.h"

#include <set>

namespace fp4lab {

namespace {

double linear_bytes(const LinearPlan& p, bool nvfp4) {
  return nvfp4 ? nvfp4_weight_bytes(p.spec.n, p.spec.k) : 2.0 * p.spec.n * p.spec.k;
}

// Non-linear parameters per layer, from the config (norm weights, Mamba conv/A/D/dt, Qwen3 q/k norms).
int64_t other_params(const ModelConfig& c) {
  int64_t n = c.hidden_size;  // final norm
  for (auto k : c.layers) {
    switch (k) {
      case LayerKind::Decoder:
        n += 2 * c.hidden_size + (c.arch == Arch::Qwen3 ? 2 * c.head_dim : 0);
        break;
      case LayerKind::Mamba:
        n += c.hidden_size + int64_t{c.mamba_conv_dim()} * (c.conv_kernel + (c.use_conv_bias ? 1 : 0)) +
             3 * c.mamba_num_heads + c.mamba_d_inner();
        break;
      default:
        n += c.hidden_size;
    }
  }
  return n;
}

void fill_totals(ModelSummary& s) {
  const ModelConfig& c = s.config;
  s.params_embedding = int64_t{c.vocab_size} * c.hidden_size;
  s.params_linear = 0;
  for (const auto& p : s.linears)
    if (!(p.spec.role == "lm_head" && c.tie_embeddings)) s.params_linear += p.spec.n * p.spec.k;
  s.params_other = other_params(c);
  s.params_total = s.params_linear + s.params_embedding + s.params_other;
  // Per decoded token: every linear weight once, one embedding row, the small tensors (BF16).
  const double fixed = 2.0 * c.hidden_size + 2.0 * s.params_other;
  s.bytes_per_token_bf16 = fixed;
  s.bytes_per_token_nvfp4 = fixed;
  s.bytes_per_token_checkpoint = fixed;
  for (size_t i = 0; i < s.linears.size(); ++i) {
    s.bytes_per_token_bf16 += linear_bytes(s.linears[i], false);
    s.bytes_per_token_nvfp4 += linear_bytes(s.nvfp4_plan[i], s.nvfp4_plan[i].nvfp4);
    s.bytes_per_token_checkpoint += linear_weight_bytes(s.linears[i]);
  }
}

json plan_json(const LinearPlan& p) {
  return {{"name", p.spec.name},   {"role", p.spec.role},
          {"layer", p.spec.layer}, {"n", p.spec.n},
          {"k", p.spec.k},         {"stored", storage_name(p.storage)},
          {"nvfp4", p.nvfp4},      {"runs", plan_format_name(p)},
          {"reason", p.reason}};
}

}  // namespace

ModelSummary summarize_checkpoint(const std::string& dir, const TensorStore& store) {
  ModelSummary s;
  s.source = dir;
  s.config = load_model_config(dir);
  s.quant = load_quant_config(dir);
  s.linears = plan_linears(s.config, s.quant, &store, QuantMode::Auto);
  s.nvfp4_plan = plan_linears(s.config, s.quant, &store, QuantMode::NVFP4);
  for (const auto& [name, t] : store.all()) s.checkpoint_bytes += static_cast<int64_t>(t->nbytes());
  fill_totals(s);
  return s;
}

ModelSummary summarize_config(const std::string& name, const ModelConfig& c) {
  ModelSummary s;
  s.source = name;
  s.config = c;
  s.linears = plan_linears(c, s.quant, nullptr, QuantMode::Auto);
  s.nvfp4_plan = plan_linears(c, s.quant, nullptr, QuantMode::NVFP4);
  fill_totals(s);
  return s;
}

json ModelSummary::to_json(bool with_tensors, const TensorStore* store) const {
  json j;
  j["source"] = source;
  j["architecture"] = arch_name(config.arch);
  j["layers"] = config.num_layers;
  j["layer_pattern"] = config.layer_pattern();
  j["hidden_size"] = config.hidden_size;
  j["vocab_size"] = config.vocab_size;
  j["quantization"] = {{"algo", quant_algo_name(quant.algo)},
                       {"raw", quant.raw_algo},
                       {"source", quant.source},
                       {"producer", quant.producer},
                       {"exclude", quant.exclude}};
  j["params"] = {{"total", params_total},
                 {"linear", params_linear},
                 {"embedding", params_embedding},
                 {"other", params_other}};
  j["checkpoint_bytes"] = checkpoint_bytes;
  j["bytes_per_token"] = {{"bf16", bytes_per_token_bf16},
                          {"nvfp4", bytes_per_token_nvfp4},
                          {"checkpoint", bytes_per_token_checkpoint}};
  j["linears"] = json::array();
  for (const auto& p : linears) j["linears"].push_back(plan_json(p));
  j["linears_nvfp4_mode"] = json::array();
  for (const auto& p : nvfp4_plan) j["linears_nvfp4_mode"].push_back(plan_json(p));
  if (with_tensors && store) {
    j["tensors"] = json::array();
    for (const auto& [name, t] : store->all())
      j["tensors"].push_back({{"name", name},
                              {"dtype", dtype_name(t->dtype)},
                              {"shape", t->shape},
                              {"bytes", t->nbytes()},
                              {"file", t->file}});
  }
  return j;
}

}  // namespace fp4lab
