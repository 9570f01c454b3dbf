// Each subcommand registers its options on the CLI11 app and returns the action to run once parsing succeeds.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cuda/run_options.h"
#include "common/units.h"
#include "engine/memory_report.h"
#include "engine/run_environment.h"
#include "engine/session.h"
#include "io/hub.h"
#include "io/token_ids.h"
#include "model/layout.h"
#include "tokenizer/chat_template.h"
#include <functional>
#include <string_view>
#include <vector>

namespace fp4lab::cli {

using Action = std::function<int()>;

Action add_inspect(CLI::App& app);
Action add_doctor(CLI::App& app);
Action add_demo(CLI::App& app);
Action add_bench(CLI::App& app);
Action add_generate(CLI::App& app);
Action add_results(CLI::App& app);
Action add_explain(CLI::App& app);
Action add_quantize(CLI::App& app);
Action add_export(CLI::App& app);
Action add_eval(CLI::App& app);
Action add_tokenize(CLI::App& app);
Action add_report(CLI::App& app);
Action add_chat(CLI::App& app);
Action add_serve(CLI::App& app);
// `bench serve`, registered on the bench subcommand's own "serve" subcommand.
Action add_bench_serve(CLI::App& app);

// Chat-template flags (generate --chat, chat): the template, a system prompt and extra template variables.
struct ChatCliOptions {
  bool chat = false;              // generate only: render prompts through the chat template
  std::string system;             // a system message before the first user turn ("" = none)
  std::string template_file;      // "" = the checkpoint's (chat_template.jinja or tokenizer_config.json)
  std::vector<std::string> vars;  // KEY=VALUE template variables (enable_thinking=false)
  std::string date;               // strftime_now's date, YYYY-MM-DD ("" = today)
  bool given() const { return !system.empty() || !template_file.empty() || !vars.empty() || !date.empty(); }
};
void add_chat_options(CLI::App& app, ChatCliOptions& o, bool with_chat_flag);
std::vector<ChatMessage> chat_messages(const ChatCliOptions& o, const std::string& user_text);
ChatRenderOptions chat_render_options(const ChatCliOptions& o);
void echo_chat_options(nlohmann::json& options, const ChatCliOptions& o);

// Hub download flags on a subcommand (defaults from HF_TOKEN, HF_HUB_OFFLINE, HF_HOME/HF_HUB_CACHE,
// HF_ENDPOINT); io/hub.h's resolve_model_arg turns a --model Hub id into its snapshot directory.
void add_hub_options(CLI::App& app, HubOptions& o);

// The CUDA run flags every model-running command takes (--tp, --no-graphs, --attn-splits, --no-pdl,
// --no-fused-mamba, --no-fused-rope, --bf16-gemv-rows, --gpu-memory-limit, --embedding, --lm-head), parsed
// straight into the run's options; echo_cuda_run_options (cuda/run_options.h) writes them back out.
void add_cuda_run_options(CLI::App& app, CudaRunOptions& o);
// The session a model-running command opens: --backend, --threads (CPU) and the CUDA run options.
SessionOptions session_options(const std::string& backend, int threads, const CudaRunOptions& o);

// --prefill-tokens (GenerateOptions::prefill_tokens): the token budget of one batched prefill pass. Every
// command that generates takes it and echoes it as "prefill_tokens".
inline void add_prefill_tokens_option(CLI::App& app, int& v) {
  app.add_option(
         "--prefill-tokens", v,
         "prompts admitted together are prefilled in one forward while their tokens add up to at most "
         "this (0: one prompt per forward)")
      ->check(CLI::Range(0, 1 << 24));
}

// --beyond-context (GenerateOptions::beyond_context): run prompts whose tokens plus the new ones pass the
// model's max_position_embeddings instead of stopping with an error. Echoed as "beyond_context".
inline void add_beyond_context_option(CLI::App& app, bool& v) {
  app.add_flag("--beyond-context", v,
               "allow a prompt plus its new tokens past the model's max_position_embeddings (positions the "
               "model was not trained on)");
}

// A number in [lo, hi] that is not NaN (CLI::Range accepts NaN, for which every comparison is false).
inline CLI::Validator finite_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(s, &used);
          if (used != s.size()) return "not a number: " + s;
        } catch (const std::exception&) {
          return "not a number: " + s;
        }
        if (!(v >= lo && v <= hi)) return "value " + s + " is not in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
        return std::string();
      },
      "FINITE in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

// --greedy, --temperature, --top-k, --top-p: the sampling flags of the commands that generate.
inline void add_sampling_options(CLI::App& app, bool& greedy, float& temperature, int& top_k, float& top_p) {
  app.add_flag("--greedy", greedy, "argmax decoding");
  app.add_option("--temperature", temperature, "sampling temperature")->check(finite_range(0.0, 1e6));
  app.add_option("--top-k", top_k, "keep the k most likely tokens (0: off)");
  app.add_option("--top-p", top_p, "nucleus sampling mass (1: off)")->check(finite_range(0.0, 1.0));
}

}  // namespace fp4lab::cli
