// fp4lab chat: an interactive conversation with a checkpoint, rendered through its chat template, the reply
// streamed as it decodes. Lines starting with / are commands (/reset, /exit); end of input ends the chat.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <optional>

#include "commands.h"
#include "common/error.h"
#include "engine/backends.h"
#if FP4LAB_HAVE_CUDA
#include "cuda/cuda_ops.h"
#include "engine/cuda_run.h"
#endif
#include "engine/generate.h"
#include "tokenizer/text_stream.h"
#include "tokenizer/tokenizer.h"

namespace fp4lab::cli {

void add_chat_options(CLI::App& app, ChatCliOptions& o, bool with_chat_flag) {
  if (with_chat_flag)
    app.add_flag("--chat", o.chat,
                 "text prompts: each prompt is a user turn rendered through the checkpoint's chat template");
  app.add_option("--system", o.system, "chat: a system message before the first user turn");
  app.add_option("--chat-template", o.template_file,
                 "chat: a Jinja template file instead of the checkpoint's (chat_template.jinja or "
                 "tokenizer_config.json)");
  app.add_option("--chat-var", o.vars,
                 "chat: a template variable KEY=VALUE, VALUE as JSON when it parses (enable_thinking=false); "
                 "repeatable");
  app.add_option("--chat-date", o.date,
                 "chat: the date the template's strftime_now() sees, YYYY-MM-DD (default: today)");
}

std::vector<ChatMessage> chat_messages(const ChatCliOptions& o, const std::string& user_text) {
  std::vector<ChatMessage> m;
  if (!o.system.empty()) m.push_back({"system", o.system});
  m.push_back({"user", user_text});
  return m;
}

ChatRenderOptions chat_render_options(const ChatCliOptions& o) {
  ChatRenderOptions r;
  r.add_generation_prompt = true;
  r.date = o.date;
  for (const auto& v : o.vars) r.extra.push_back(parse_chat_var(v));
  return r;
}

void echo_chat_options(nlohmann::json& options, const ChatCliOptions& o) {
  options["chat"] = o.chat;
  options["system"] = o.system;
  options["chat_template"] = o.template_file;
  options["chat_vars"] = o.vars;
  options["chat_date"] = o.date;
}

namespace {

struct ChatOpts {
  std::string model, backend = "cpu", quant = "auto", tokenizer;
  ChatCliOptions chat;
  int max_new = 512, context = 4096, threads = 0;
  bool greedy = false;
  float temperature = 0.7f, top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  CudaRunOptions cuda;
  HubOptions hub = HubOptions::from_env();
};

// The conversation loop over a loaded model: each turn renders the whole conversation and generates the
// reply (the prompt is prefilled again every turn: no cache is kept between turns).
template <class Model>
void converse(Model& model, const Tokenizer& tok, const ChatTemplate& tmpl, const ChatOpts& o) {
  const bool tty = isatty(STDIN_FILENO);
  std::vector<ChatMessage> conv;
  if (!o.chat.system.empty()) conv.push_back({"system", o.chat.system});
  const ChatRenderOptions ro = chat_render_options(o.chat);
  GenerateOptions g;
  g.max_new_tokens = o.max_new;
  g.sampling = {o.greedy, o.temperature, o.top_k, o.top_p, o.seed};
  g.stop_ids = model.config().eos_ids;
  std::string line;
  while (true) {
    if (tty) std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      conv.resize(o.chat.system.empty() ? 0 : 1);
      std::fprintf(stderr, "(conversation cleared)\n");
      continue;
    }
    if (line.starts_with("/")) {
      std::fprintf(stderr, "commands: /reset (forget the conversation), /exit\n");
      continue;
    }
    if (line.empty()) continue;
    conv.push_back({"user", line});
    std::vector<int> ids;
    try {
      ids = tok.encode(tmpl.render(conv, ro));
      if (static_cast<int>(ids.size()) + o.max_new > o.context)
        throw Error("the conversation is " + std::to_string(ids.size()) + " tokens; with --max-new-tokens " +
                    std::to_string(o.max_new) + " it passes --context " + std::to_string(o.context) +
                    ": /reset or raise --context");
      TextStream stream(tok);
      GenerateOptions gt = g;
      gt.should_stop = [&](size_t, const std::vector<int>& new_ids) {
        std::string piece;
        for (size_t k = stream.ids().size(); k < new_ids.size(); ++k)
          if (std::find(g.stop_ids.begin(), g.stop_ids.end(), new_ids[k]) == g.stop_ids.end())
            piece += stream.push(new_ids[k]);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return false;
      };
      const GenerateResult r = generate(model, {ids}, gt);
      std::vector<int> reply = r.new_ids[0];
      if (!reply.empty() && std::find(g.stop_ids.begin(), g.stop_ids.end(), reply.back()) != g.stop_ids.end())
        reply.pop_back();
      const std::string rest = stream.finish();
      std::fwrite(rest.data(), 1, rest.size(), stdout);
      std::printf("\n");
      std::fflush(stdout);
      conv.push_back({"assistant", tok.decode(reply, true)});
      if (tty)
        std::fprintf(stderr, "(%d prompt tokens, %.0f ms to first token, %.1f tok/s)\n", r.prompt_tokens,
                     1000.0 * r.prefill_s, r.decode_tok_s());
    } catch (const Error& e) {
      conv.pop_back();  // the turn did not happen
      std::fprintf(stderr, "fp4lab: error: %s\n", e.what());
      if (!tty) throw;  // a script's chat stops at the first failed turn
    }
  }
}

}  // namespace

Action add_chat(CLI::App& app) {
  auto o = std::make_shared<ChatOpts>();
  app.add_option("--model", o->model, "checkpoint directory or Hub id org/name[@rev]")->required();
  app.add_option("--backend", o->backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--quant", o->quant, "auto (follow the checkpoint), bf16, nvfp4 or fp8 (quantize at load)");
  app.add_option("--tokenizer", o->tokenizer, "directory with tokenizer.json (default: --model)");
  add_chat_options(app, o->chat, false);
  app.add_option("--max-new-tokens", o->max_new, "longest reply in tokens")->check(CLI::Range(1, 1 << 20));
  app.add_option("--context", o->context,
                 "tokens a conversation may reach (prompt + reply); sizes GPU memory")
      ->check(CLI::Range(16, 1 << 22));
  add_sampling_options(app, o->greedy, o->temperature, o->top_k, o->top_p);
  app.add_option("--seed", o->seed, "sampling seed");
  app.add_option("--threads", o->threads, "cpu backend threads (0: all cores)");
  add_hub_options(app, o->hub);
  add_cuda_run_options(app, o->cuda);
  return [o]() {
    if (o->cuda.tp > 1) throw Error("chat runs on one GPU (--tp 1)");
    const QuantMode mode = parse_quant_mode(o->quant);
    const std::string model_path = resolve_model_arg(o->model, o->hub);
    if (model_path.starts_with("preset:"))
      throw Error("chat needs a checkpoint with a tokenizer, not a preset");
    const Tokenizer tok = Tokenizer::from_dir(o->tokenizer.empty() ? model_path : o->tokenizer);
    const ChatTemplate tmpl = ChatTemplate::load(model_path, o->tokenizer, o->chat.template_file);
    std::fprintf(stderr, "chat with %s (template: %s); /reset clears the conversation, /exit ends it\n",
                 o->model.c_str(), tmpl.source_name().c_str());
    SessionOptions so = session_options(o->backend, o->threads, o->cuda);
    so.cuda.shape =
        memory_shape_for({o->context - o->max_new}, o->max_new, 1, GenerateOptions{}.prefill_tokens);
    run_session(load_model(model_path, mode, o->seed, so.host_weights()), so,
                [&](auto& model, auto&, int) { converse(model, tok, tmpl, *o); });
    return 0;
  };
}

}  // namespace fp4lab::cli
