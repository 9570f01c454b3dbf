#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "commands.h"
#include "engine/load_stats.h"
#include "common/error.h"
#if FP4LAB_HAVE_CUDA
#include "cuda/tensor_parallel.h"
#endif
#include "engine/generate.h"
#include "common/json_util.h"
#include "tokenizer/text_stream.h"

namespace fp4lab::cli {

namespace {

struct GenOpts {
  std::string model;
  std::string backend = "cpu";
  std::string quant = "auto";
  std::vector<std::string> prompts;  // each "1,2,3"
  std::vector<std::string> text_prompts, prompt_files;
  std::string tokenizer;  // "" = the model directory
  bool add_bos = false, ignore_eos = false;
  ChatCliOptions chat;
  int max_new = 32;
  bool greedy = false;
  float temperature = 0.7f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  std::vector<int> stop_ids;
  int threads = 0;
  int batch = 1;
  int prefill_tokens = GenerateOptions{}.prefill_tokens;
  bool beyond_context = false;
  std::string json_out;
  bool profile = false;
  CudaCliOptions cuda;  // --tp, --no-graphs, --attn-splits
  HubOptions hub = HubOptions::from_env();
};

}  // namespace

std::vector<int> parse_token_ids(std::string_view text, const std::string& what) {
  std::vector<int> ids;
  std::string tok;
  auto flush = [&] {
    if (tok.empty()) return;
    try {
      size_t used = 0;
      ids.push_back(std::stoi(tok, &used));
      if (used != tok.size()) throw std::invalid_argument(tok);
    } catch (const std::exception&) {
      throw Error(what + ": '" + tok + "' is not an integer token id");
    }
    tok.clear();
  };
  for (char ch : text) {
    if (ch == ',' || std::isspace(static_cast<unsigned char>(ch)))
      flush();
    else
      tok.push_back(ch);
  }
  flush();
  return ids;
}

std::vector<int> read_token_file(const std::string& path) {
  return parse_token_ids(read_text_file(path), path);
}

Action add_generate(CLI::App& app) {
  auto o = std::make_shared<GenOpts>();
  app.add_option("--model", o->model, "checkpoint directory, Hub id org/name[@rev], or preset:NAME")
      ->required();
  app.add_option("--backend", o->backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--quant", o->quant, "auto (follow the checkpoint), bf16, nvfp4 (quantize at load)");
  app.add_option("--prompt-ids", o->prompts, "comma-separated token ids; repeat for a batch of prompts");
  app.add_option(
      "--prompt", o->text_prompts,
      "prompt text, tokenized with the checkpoint's tokenizer (--tokenizer); repeat for a batch. The "
      "new text goes to stdout, streamed as it decodes when there is one prompt");
  app.add_option("--prompt-file", o->prompt_files,
                 "a file whose whole content is one text prompt; repeatable");
  app.add_option(
      "--tokenizer", o->tokenizer,
      "directory with tokenizer.json (or vocab.json + merges.txt) for text prompts (default: --model)");
  app.add_flag("--add-bos", o->add_bos,
               "text prompts: put the model's BOS token first (config.json bos_token_id; Llama and Mistral "
               "were trained with it, the tokenizer does not add it)");
  app.add_flag(
      "--ignore-eos", o->ignore_eos,
      "text prompts: keep generating past the model's end-of-sequence tokens (by default they stop it)");
  add_chat_options(app, o->chat, true);
  app.add_option("--max-new-tokens", o->max_new, "tokens to generate per prompt")
      ->check(CLI::Range(1, 1 << 20));
  add_sampling_options(app, o->greedy, o->temperature, o->top_k, o->top_p);
  app.add_option("--seed", o->seed, "seed for sampling and for preset weights");
  app.add_option("--stop-ids", o->stop_ids, "stop at any of these ids")->delimiter(',');
  app.add_option("--threads", o->threads, "CPU threads (0: all cores)");
  app.add_option("--batch", o->batch, "prompts decoded together (continuous batching)")
      ->check(CLI::Range(1, 4096));
  add_prefill_tokens_option(app, o->prefill_tokens);
  add_beyond_context_option(app, o->beyond_context);
  app.add_option("--json", o->json_out, "write ids, timing and every option as JSON");
  add_hub_options(app, o->hub);
  app.add_flag("--profile", o->profile, "cuda: time every op class with events (disables CUDA graphs)");
  add_cuda_run_options(app, o->cuda);
  return [o]() {
    const QuantMode mode = parse_quant_mode(o->quant);
    SessionOptions so = session_options(o->backend, o->threads, o->cuda, o->profile);
    check_session_options(so);
    std::vector<std::vector<int>> prompts;
    for (const auto& p : o->prompts) prompts.push_back(parse_token_ids(p, "--prompt-ids"));
    // Text prompts: tokenized here; the new ids come back as text.
    std::vector<std::string> texts = o->text_prompts;
    for (const auto& f : o->prompt_files) texts.push_back(read_text_file(f));
    const bool text_mode = !texts.empty();
    if (text_mode && !prompts.empty()) throw Error("give --prompt-ids or --prompt/--prompt-file, not both");
    if (!text_mode && prompts.empty())
      throw Error("no prompt: give --prompt TEXT, --prompt-file F or --prompt-ids");
    if (!text_mode && (o->add_bos || o->ignore_eos || !o->tokenizer.empty() || o->chat.chat))
      throw Error(
          "--tokenizer, --add-bos, --ignore-eos and --chat apply to text prompts (--prompt, --prompt-file)");
    if (!o->chat.chat && o->chat.given())
      throw Error("--system, --chat-template and --chat-var apply to chat prompts: add --chat");
    std::optional<Tokenizer> tok;
    if (text_mode) {
      const std::string dir = o->tokenizer.empty() ? resolve_model_arg(o->model, o->hub) : o->tokenizer;
      if (dir.starts_with("preset:"))
        throw Error("a preset has no tokenizer: give --tokenizer DIR for text prompts");
      tok.emplace(Tokenizer::from_dir(dir));
      if (o->chat.chat) {
        // Each prompt is one user turn, rendered as the model was trained to see it (its BOS included).
        const ChatTemplate ct =
            ChatTemplate::load(resolve_model_arg(o->model, o->hub), o->tokenizer, o->chat.template_file);
        for (auto& t : texts) t = ct.render(chat_messages(o->chat, t), chat_render_options(o->chat));
      }
      for (const auto& t : texts) {
        prompts.push_back(tok->encode(t));
        if (prompts.back().empty() && !o->add_bos) throw Error("a text prompt encodes to no tokens");
      }
    }
    GenerateOptions g;
    g.max_new_tokens = o->max_new;
    g.stop_ids = o->stop_ids;
    g.max_batch = o->batch;
    g.prefill_tokens = o->prefill_tokens;
    g.beyond_context = o->beyond_context;
    g.sampling = {o->greedy, o->temperature, o->top_k, o->top_p, o->seed};
    const std::string model_path = resolve_model_arg(o->model, o->hub);
    LoadMeter meter(model_path);
    LoadStats load;
    GenerateResult r;
    int nfp4 = 0;
    size_t nlin = 0;
    std::string backend_name;
    MemoryReport mem;
    bool have_mem = false;
    std::optional<TextStream> stream;
    ModelWeights weights = load_model(model_path, mode, o->seed, so.host_weights());
    if (text_mode) {
      // Every rank of a tensor-parallel run must see the same prompts and stop ids, so they are settled here,
      // from the config, before the ranks start.
      const ModelConfig& c = weights.config;
      if (o->add_bos) {
        if (c.bos_id < 0) throw Error("--add-bos: the model's config.json has no bos_token_id");
        for (auto& p : prompts) p.insert(p.begin(), c.bos_id);
      }
      if (!o->ignore_eos) g.stop_ids.insert(g.stop_ids.end(), c.eos_ids.begin(), c.eos_ids.end());
    }
    auto run = [&](auto& model, const GenerateOptions& opts) {
      load = meter.finish();
      for (const auto& p : model.weights().plans) nfp4 += p.nvfp4;
      nlin = model.weights().plans.size();
      backend_name = model.ops().name();
      GenerateOptions gr = opts;
      if (text_mode && prompts.size() == 1) {
        // One prompt: its text appears as it decodes.
        stream.emplace(*tok);
        gr.should_stop = [&](size_t, const std::vector<int>& ids) {
          std::string piece;
          for (size_t k = stream->ids().size(); k < ids.size(); ++k) piece += stream->push(ids[k]);
          if (!piece.empty()) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
          }
          return false;
        };
      }
      r = generate(model, prompts, gr);
    };
    std::vector<int> lengths;
    for (const auto& p : prompts) lengths.push_back(static_cast<int>(p.size()));
    so.cuda.shape = memory_shape_for(lengths, o->max_new, o->batch, o->prefill_tokens);
    so.cuda.report = &mem;
    std::map<std::string, double> prof;
    run_session(std::move(weights), so, [&](auto& model, auto& ops, int rank) {
      // The prefill budget the memory plan fits with (lowered only under a limit).
      GenerateOptions gl = g;
      gl.prefill_tokens = mem.fit.prefill_tokens(g.prefill_tokens);
      if (rank != 0) {
        (void)generate(model, prompts, gl);
        return;
      }
      run(model, gl);
      if constexpr (requires { ops.profile_ms(); }) prof = ops.profile_ms();
    });
#if FP4LAB_HAVE_CUDA
    if (o->backend == "cuda") {
      if (o->cuda.tp > 1)
        backend_name += " x" + std::to_string(o->cuda.tp) + " (tensor parallel, " + gpu_interconnect() + ")";
      have_mem = o->cuda.tp == 1;
      if (have_mem) std::fprintf(stderr, "%s\n", mem.summary().c_str());
    }
#endif
    if (o->profile && !prof.empty()) {
      double total = 0;
      for (const auto& [k, v] : prof) total += v;
      std::fprintf(stderr, "GPU time by op class on GPU 0 (prefill + decode, %d tokens generated):\n",
                   r.generated_tokens);
      for (const auto& [k, v] : prof)
        std::fprintf(stderr, "  %-18s %9.2f ms  %5.1f%%\n", k.c_str(), v, 100.0 * v / total);
      std::fprintf(stderr, "  %-18s %9.2f ms; wall %.2f ms\n", "total", total,
                   1000.0 * (r.prefill_s + r.decode_s));
    }
    std::vector<std::string> new_text;
    if (text_mode) {
      for (const auto& ids : r.new_ids) new_text.push_back(tok->decode(ids, true));
      if (stream) {
        std::string rest;
        for (size_t k = stream->ids().size(); k < r.new_ids[0].size(); ++k)
          rest += stream->push(r.new_ids[0][k]);
        rest += stream->finish();
        std::fwrite(rest.data(), 1, rest.size(), stdout);
        std::printf("\n");
        std::fflush(stdout);
      } else {
        for (size_t b = 0; b < new_text.size(); ++b) std::printf("[prompt %zu] %s\n", b, new_text[b].c_str());
      }
    } else {
      for (size_t b = 0; b < r.new_ids.size(); ++b) {
        std::printf("prompt %zu new ids:", b);
        for (int id : r.new_ids[b]) std::printf(" %d", id);
        std::printf("\n");
      }
    }
    std::fprintf(stderr, "model %s (%s, %d/%zu linear layers NVFP4), backend %s, %s\n", o->model.c_str(),
                 quant_mode_name(mode), nfp4, nlin, backend_name.c_str(), load.summary().c_str());
    std::fprintf(
        stderr, "prefill: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s)\n",
        r.prompt_tokens, r.prefill_s, r.prefill_tok_s(), r.decode_tokens, r.decode_s, r.decode_tok_s());
    if (!o->json_out.empty()) {
      json j = {{"tool", {{"version", FP4LAB_VERSION}, {"commit", FP4LAB_GIT_COMMIT}}},
                {"options",
                 {{"model", o->model},
                  {"backend", o->backend},
                  {"quant", o->quant},
                  {"max_new_tokens", o->max_new},
                  {"greedy", o->greedy},
                  {"temperature", o->temperature},
                  {"top_k", o->top_k},
                  {"top_p", o->top_p},
                  {"seed", o->seed},
                  {"stop_ids", o->stop_ids},
                  {"threads", o->threads},
                  {"batch", o->batch},
                  {"prefill_tokens", o->prefill_tokens},
                  {"beyond_context", o->beyond_context},
                  {"profile", o->profile}}},
                {"prompts", prompts},
                {"new_ids", r.new_ids},
                {"nvfp4_linear_layers", nfp4},
                {"timing",
                 {{"load_s", load.seconds},
                  {"load", load.to_json()},
                  {"prefill_s", r.prefill_s},
                  {"prefill_passes", r.prefill_passes},
                  {"decode_s", r.decode_s},
                  {"decode_tokens", r.decode_tokens},
                  {"prefill_tok_s", r.prefill_tok_s()},
                  {"decode_tok_s", r.decode_tok_s()}}}};
      echo_cuda_run_options(j["options"], o->cuda);
      if (text_mode) {
        j["options"]["prompt_text"] = texts;
        j["options"]["tokenizer"] = tok->describe();
        j["options"]["add_bos"] = o->add_bos;
        j["options"]["ignore_eos"] = o->ignore_eos;
        echo_chat_options(j["options"], o->chat);
        j["new_text"] = new_text;
      }
      if (have_mem) j["memory"] = memory_report_json(mem);
      write_text_file(o->json_out, j.dump(2) + "\n");
    }
    return 0;
  };
}

}  // namespace fp4lab::cli
