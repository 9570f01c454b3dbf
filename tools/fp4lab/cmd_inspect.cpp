#include <cstdio>
#include <fstream>

#include "commands.h"
#include "common/json_util.h"
#include "common/error.h"
#include "cuda/memory_plan.h"
#include "model/inspect.h"
#include "model/presets.h"

namespace fp4lab::cli {

namespace {

struct InspectOpts {
  std::string model;
  bool tensors = false;
  bool layers = false;
  std::string json_out;
  // --memory: the GPU memory plan of a run of this shape.
  bool memory = false;
  std::string quant = "auto";
  int batch = 1, context = 4096, prefill_tokens = 8192;
  std::string embedding = "auto", limit, lm_head = "auto";
};

// The plan of a one-GPU CUDA run (the CUDA context estimated: no GPU is touched), fitted under --gpu-memory-limit
// where given.
void print_memory_plan(const ModelSummary& s, const InspectOpts& o) {
  MemoryPlanInput in;
  in.config = s.config;
  in.plans = o.quant == "nvfp4" ? s.nvfp4_plan : s.linears;
  if (o.quant == "bf16")
    for (auto& p : in.plans) p.nvfp4 = p.fp8 = false;
  if (o.quant ==
      "fp8")  // --quant fp8's plan: every float linear layer but the lm_head (default_fp8_excludes)
    for (auto& p : in.plans) p.fp8 = p.fp8 || (!p.nvfp4 && p.spec.role != "lm_head");
  in.vocab_rows = s.config.vocab_size;
  in.batch = o.batch;
  in.tokens_per_sequence = o.context;
  in.forward_tokens = std::max(o.context, std::min(o.prefill_tokens, o.batch * o.context));
  in.longest_prompt = o.context;  // the whole context may be one prompt
  if (o.lm_head != "auto")
    for (auto& p : in.plans)
      if (p.spec.role == "lm_head") p.nvfp4 = o.lm_head == "nvfp4";
  in.context_bytes = kContextEstimateBytes;
  const uint64_t limit = o.limit.empty() ? 0 : parse_byte_size(o.limit);
  std::printf("\nGPU memory plan (--quant %s, batch %d, %d tokens per sequence, %d-token forward; CUDA context "
              "estimated):\n",
              o.quant.c_str(), o.batch, o.context, in.forward_tokens);
  const MemoryFit f = fit_memory(in, limit, parse_embedding_place(o.embedding), o.lm_head == "auto");
  std::printf("%s", memory_plan_table(f.plan, limit).c_str());
  for (const auto& c : f.choices) std::printf("  chosen: %s\n", c.c_str());
}

void print_summary(const ModelSummary& s, const TensorStore* store, const InspectOpts& o) {
  const ModelConfig& c = s.config;
  std::printf("model:          %s\n", s.source.c_str());
  std::printf("architecture:   %s, %d layers", arch_name(c.arch), c.num_layers);
  if (c.arch == Arch::NemotronH) std::printf(", pattern %s", c.layer_pattern().c_str());
  std::printf("\n");
  std::printf("hidden %d, heads %d/%d (head_dim %d), vocab %d", c.hidden_size, c.num_heads, c.num_kv_heads,
              c.head_dim, c.vocab_size);
  if (c.intermediate_size) std::printf(", mlp %d (%s)", c.intermediate_size, c.hidden_act.c_str());
  std::printf("%s\n", c.tie_embeddings ? ", tied embeddings" : "");
  if (c.arch == Arch::NemotronH)
    std::printf("mamba-2:        %d heads x %d (d_inner %d), state %d, groups %d, conv %d, chunk %d\n",
                c.mamba_num_heads, c.mamba_head_dim, c.mamba_d_inner(), c.ssm_state_size, c.n_groups,
                c.conv_kernel, c.chunk_size);
  else
    std::printf("rope:           %s, theta %g\n", c.rope.type.c_str(), c.rope.theta);
  std::printf("quantization:   %s", quant_algo_name(s.quant.algo));
  if (!s.quant.source.empty())
    std::printf(" (from %s%s%s)", s.quant.source.c_str(), s.quant.producer.empty() ? "" : ", ",
                s.quant.producer.c_str());
  std::printf("\n");
  if (!s.quant.exclude.empty()) {
    std::printf("exclude list:  ");
    for (const auto& e : s.quant.exclude) std::printf(" %s", e.c_str());
    std::printf("\n");
  }
  std::printf("parameters:     %s total (%s linear, %s embedding, %s other)\n",
              human_count(s.params_total).c_str(), human_count(s.params_linear).c_str(),
              human_count(s.params_embedding).c_str(), human_count(s.params_other).c_str());
  if (store)
    std::printf("checkpoint:     %s in %zu file(s)\n", human_bytes(s.checkpoint_bytes).c_str(),
                store->files().size());
  int n_fp4 = 0, n_fp8 = 0, n_fp4_mode = 0;
  for (const auto& p : s.linears) n_fp4 += p.nvfp4, n_fp8 += p.fp8;
  for (const auto& p : s.nvfp4_plan) n_fp4_mode += p.nvfp4;
  const std::string fp8 = n_fp8 ? " and " + std::to_string(n_fp8) + " FP8" : "";
  std::printf("linear layers:  %zu (%d NVFP4%s as stored; %d NVFP4 under --quant nvfp4)\n", s.linears.size(),
              n_fp4, fp8.c_str(), n_fp4_mode);
  std::printf("bytes/token:    BF16 %s, NVFP4 %s (%.2fx fewer), as stored %s\n",
              human_bytes(s.bytes_per_token_bf16).c_str(), human_bytes(s.bytes_per_token_nvfp4).c_str(),
              s.bytes_per_token_bf16 / s.bytes_per_token_nvfp4,
              human_bytes(s.bytes_per_token_checkpoint).c_str());

  if (o.layers) {
    std::printf("\n%-48s %-9s %7s %7s  %-8s %-6s %s\n", "linear layer", "role", "N", "K", "stored", "runs",
                "why");
    for (size_t i = 0; i < s.linears.size(); ++i) {
      const auto& p = s.linears[i];
      const auto& q = s.nvfp4_plan[i];
      std::printf("%-48s %-9s %7lld %7lld  %-8s %-6s %s; --quant nvfp4: %s\n", p.spec.name.c_str(),
                  p.spec.role.c_str(), static_cast<long long>(p.spec.n), static_cast<long long>(p.spec.k),
                  storage_name(p.storage), plan_format_name(p), p.reason.c_str(),
                  q.nvfp4 || q.fp8 ? plan_format_name(q) : q.reason.c_str());
    }
  }
  if (o.tensors && store) {
    std::printf("\n%-60s %-8s %-20s %s\n", "tensor", "dtype", "shape", "bytes");
    for (const auto& [name, t] : store->all()) {
      std::string shp = "[";
      for (size_t i = 0; i < t->shape.size(); ++i) shp += (i ? "," : "") + std::to_string(t->shape[i]);
      shp += "]";
      std::printf("%-60s %-8s %-20s %s\n", name.c_str(), dtype_name(t->dtype), shp.c_str(),
                  human_bytes(static_cast<double>(t->nbytes())).c_str());
    }
  }
}

}  // namespace

Action add_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOpts>();
  app.add_option("model", o->model, "checkpoint directory, Hub id org/name[@rev], or preset:NAME")
      ->required();
  app.add_flag("--tensors", o->tensors, "list every tensor (name, dtype, shape, bytes)");
  app.add_flag("--layers", o->layers, "list every linear layer with its format and the reason");
  app.add_option("--json", o->json_out, "also write the summary as JSON to this file");
  app.add_flag("--memory", o->memory,
               "the GPU memory plan of a run (weights by kind, state, activations, workspaces, context) and "
               "whether it fits --gpu-memory-limit");
  app.add_option("--quant", o->quant, "with --memory: the run's --quant")
      ->check(CLI::IsMember({"auto", "bf16", "nvfp4", "fp8"}));
  app.add_option("--batch", o->batch, "with --memory: sequences decoded together")->check(CLI::Range(1, 4096));
  app.add_option("--context", o->context, "with --memory: tokens per sequence (prompt + new)")
      ->check(CLI::Range(1, 1 << 24));
  add_prefill_tokens_option(app, o->prefill_tokens);
  app.add_option("--embedding", o->embedding, "with --memory: gpu, host or auto")
      ->check(CLI::IsMember({"auto", "gpu", "host"}));
  app.add_option("--gpu-memory-limit", o->limit, "with --memory: the limit to fit under, e.g. 7.5GiB");
  app.add_option("--lm-head", o->lm_head, "with --memory: auto, bf16 or nvfp4")
      ->check(CLI::IsMember({"auto", "bf16", "nvfp4"}));
  auto hub = std::make_shared<HubOptions>(HubOptions::from_env());
  add_hub_options(app, *hub);
  return [o, hub]() {
    o->model = resolve_model_arg(o->model, *hub);
    ModelSummary s;
    std::unique_ptr<TensorStore> store;
    if (is_preset_ref(o->model)) {
      auto p = find_preset(o->model);
      if (!p) {
        std::string names;
        for (const auto& q : presets()) names += " " + q.name;
        throw Error("unknown preset '" + o->model + "' (available:" + names + ")");
      }
      s = summarize_config(o->model, p->config);
    } else {
      store = std::make_unique<TensorStore>(TensorStore::open_dir(o->model));
      s = summarize_checkpoint(o->model, *store);
    }
    print_summary(s, store.get(), *o);
    if (o->memory) print_memory_plan(s, *o);
    if (!o->json_out.empty()) {
      write_text_file(o->json_out, s.to_json(true, store.get()).dump(2) + "\n");
    }
    return 0;
  };
}

}  // namespace fp4lab::cli
