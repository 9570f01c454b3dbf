// fp4lab serve: an OpenAI-compatible HTTP server over one loaded model. The HTTP threads parse, tokenize and
// stream; the model runs on this thread, in the continuous-batching loop of serve/engine_loop.h.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "common/error.h"
#if FP4LAB_HAVE_CUDA
#include "cuda/device_memory.h"
#endif
#include "cuda/gpu_info.h"
#include "serve/engine_loop.h"
#include "serve/openai_server.h"
#include "tokenizer/tokenizer.h"

namespace fp4lab::cli {

namespace {

std::atomic<bool>& stop_requested() {
  static std::atomic<bool> s{false};
  return s;
}
extern "C" void fp4lab_serve_on_signal(int) {
  stop_requested() = true;
}

struct ServeOpts {
  std::string model, backend = "cpu", quant = "auto", tokenizer, name, host = "127.0.0.1", api_key;
  int port = 8000, max_num_seqs = 64, max_model_len = 0, max_queue = 256, prefill_tokens = 8192, threads = 0;
  double grace_s = 30;
  bool add_bos = false, no_chat_template = false, vocab_from_tokenizer = false;
  uint64_t seed = 0;
  ChatCliOptions chat;
  CudaRunOptions cuda;
  HubOptions hub = HubOptions::from_env();
};

// Starts the HTTP threads, runs the engine loop here until SIGTERM/SIGINT, and lets in-flight requests end.
template <class Model>
void serve_model(Model& model, const Tokenizer& tok, const ChatTemplate* tmpl, const ServeOpts& o,
                 int max_model_len, std::function<uint64_t()> memory_in_use) {
  const ModelConfig& c = model.config();
  serve::ServeQueue queue(static_cast<size_t>(o.max_num_seqs + o.max_queue));
  serve::ServeMetrics metrics;
  serve::ServerOptions so;
  so.host = o.host;
  so.port = o.port;
  so.api_key = o.api_key;
  so.model_name = o.name.empty() ? std::filesystem::path(o.model).filename().string() : o.name;
  if (so.model_name.empty()) so.model_name = o.model;
  so.model_root = o.model;
  so.max_model_len = max_model_len;
  so.vocab_size = c.vocab_size;
  so.add_bos_id = o.add_bos ? c.bos_id : -1;
  if (o.add_bos && c.bos_id < 0) throw Error("--add-bos: the model's config.json has no bos_token_id");
  // Every request holds an HTTP thread while it runs or waits; a few more answer /health and /metrics.
  so.http_threads = o.max_num_seqs + o.max_queue + 8;
  so.chat = chat_render_options(o.chat);
  so.quant = o.quant;
  if (o.backend == "cuda") {
    const GpuQuery q = query_gpus();
    so.device = q.ok && !q.gpus.empty() ? q.gpus[0].name : "cuda";
  }
  serve::OpenAIServer server(so, tok, tmpl, queue, metrics);
  server.bind();
  stop_requested() = false;
  auto prev_term = std::signal(SIGTERM, fp4lab_serve_on_signal);
  auto prev_int = std::signal(SIGINT, fp4lab_serve_on_signal);
  std::thread http([&] { server.run(); });
  std::fprintf(stderr, "fp4lab serve: %s on http://%s:%d/v1 (max %d sequences, context %d, backend %s)\n",
               so.model_name.c_str(), o.host.c_str(), server.port(), o.max_num_seqs, max_model_len,
               o.backend.c_str());
  serve::EngineLoopOptions eo;
  eo.max_num_seqs = o.max_num_seqs;
  eo.prefill_tokens = o.prefill_tokens;
  eo.eos_ids = c.eos_ids;
  eo.shutdown_grace_s = o.grace_s;
  eo.memory_in_use = std::move(memory_in_use);
  eo.on_drain = [&] { server.stop(); };
  try {
    serve::run_engine_loop(model, tok, queue, metrics, eo, stop_requested());
  } catch (...) {
    server.stop();
    http.join();
    throw;
  }
  server.stop();
  http.join();
  std::signal(SIGTERM, prev_term);
  std::signal(SIGINT, prev_int);
  std::fprintf(stderr, "fp4lab serve: stopped\n");
}

}  // namespace

Action add_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOpts>();
  app.add_option("--model", o->model, "checkpoint directory or Hub id org/name[@rev], or preset:NAME")
      ->required();
  app.add_option("--backend", o->backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--quant", o->quant, "auto (follow the checkpoint), bf16, nvfp4 or fp8 (quantize at load)");
  app.add_option("--tokenizer", o->tokenizer,
                 "directory with tokenizer.json (default: --model; needed for presets)");
  app.add_option("--served-model-name", o->name,
                 "the model id clients send and /v1/models lists (default: the "
                 "directory's name)");
  app.add_option("--host", o->host, "address to listen on (default 127.0.0.1: this machine only)");
  app.add_option("--port", o->port, "TCP port (0: any free one, printed at start)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' on /v1/*");
  app.add_option("--max-num-seqs", o->max_num_seqs, "sequences decoded together (the running batch)")
      ->check(CLI::Range(1, 4096));
  app.add_option(
         "--max-model-len", o->max_model_len,
         "longest prompt + completion a request may have (0: the model's context, at most 4096); with "
         "--max-num-seqs it sizes GPU memory")
      ->check(CLI::Range(0, 1 << 22));
  app.add_option("--max-queue", o->max_queue,
                 "requests that may wait for a slot beyond the running ones (more: 503)")
      ->check(CLI::Range(0, 1 << 20));
  add_prefill_tokens_option(app, o->prefill_tokens);
  app.add_option("--shutdown-grace", o->grace_s,
                 "seconds in-flight requests may take to finish after SIGTERM before they are cancelled")
      ->check(finite_range(0, 86400));
  app.add_flag(
      "--add-bos", o->add_bos,
      "text prompts of /v1/completions start with the model's BOS token (chat templates write their own)");
  app.add_flag("--no-chat-template", o->no_chat_template,
               "serve /v1/completions only, even when the checkpoint has a chat template");
  add_chat_options(app, o->chat, false);
  app.add_option("--seed", o->seed, "seed of the random weights of a preset");
  app.add_flag("--preset-vocab-from-tokenizer", o->vocab_from_tokenizer,
               "a preset's embedding and lm_head get the tokenizer's vocabulary size instead of the preset's "
               "(text prompts of any content; the lm_head then costs what that vocabulary does)");
  app.add_option("--threads", o->threads, "cpu backend threads (0: all cores)");
  add_hub_options(app, o->hub);
  add_cuda_run_options(app, o->cuda);
  return [o]() {
    if (o->cuda.tp > 1) throw Error("serve runs on one GPU (--tp 1)");
    const QuantMode mode = parse_quant_mode(o->quant);
    const std::string model_path = resolve_model_arg(o->model, o->hub);
    const bool preset = model_path.starts_with("preset:");
    if (preset && o->tokenizer.empty())
      throw Error("a preset has no tokenizer: give --tokenizer DIR (the preset's vocabulary is sized to it)");
    const std::string tok_dir = o->tokenizer.empty() ? model_path : o->tokenizer;
    const Tokenizer tok = Tokenizer::from_dir(tok_dir);
    std::optional<ChatTemplate> tmpl;
    if (!o->no_chat_template) {
      if (!o->chat.template_file.empty())
        tmpl = ChatTemplate::from_file(o->chat.template_file, tok_dir);
      else if (!preset)
        tmpl = ChatTemplate::from_dir(model_path);
      if (!tmpl) tmpl = ChatTemplate::from_dir(tok_dir);
    }
    if (!tmpl) std::fprintf(stderr, "fp4lab serve: no chat template: /v1/chat/completions will answer 400\n");
    // A preset keeps its vocabulary (its lm_head costs what the real model's does), unless asked to size its
    // synthetic embedding and lm_head to the tokenizer as eval gsm8k does, so that every id the tokenizer
    // writes has a row and every id the model samples has text.
    const int preset_vocab = preset && o->vocab_from_tokenizer ? tok.vocab_size() : 0;
    ModelWeights w = load_model(model_path, mode, o->seed, o->backend != "cuda", preset_vocab);
    const int context = static_cast<int>(std::min<int64_t>(w.config.max_position, 1 << 22));
    const int max_len = o->max_model_len > 0 ? o->max_model_len : std::min(context, 4096);
    if (max_len > context)
      throw Error("--max-model-len " + std::to_string(max_len) + " passes the model's context of " +
                  std::to_string(context) + " (max_position_embeddings)");
    if (tok.vocab_size() < w.config.vocab_size)
      std::fprintf(stderr,
                   "fp4lab serve: warning: the tokenizer has %d ids, the model %d: generated ids past the "
                   "tokenizer's show as no text\n",
                   tok.vocab_size(), w.config.vocab_size);
    const ChatTemplate* t = tmpl ? &*tmpl : nullptr;
    SessionOptions so = session_options(o->backend, o->threads, o->cuda);
    so.cuda.shape = memory_shape_for({max_len - 1}, 1, o->max_num_seqs, o->prefill_tokens);
    std::function<uint64_t()> in_use;  // the /metrics gauge: the CUDA backend's device buffers
#if FP4LAB_HAVE_CUDA
    if (so.backend == "cuda") in_use = [] { return device_memory_use().in_use; };
#endif
    run_session(std::move(w), so,
                [&](auto& model, auto&, int) { serve_model(model, tok, t, *o, max_len, in_use); });
    return 0;
  };
}

}  // namespace fp4lab::cli
