// `fp4lab generate`: prompts (ids, text, or chat turns rendered through the model's template) in, the new
// ids or text out, streamed for a single text prompt; the run itself is engine/generate_run.h.
#include <cstdio>
#include <optional>

#include "commands.h"
#include "common/error.h"
#include "common/json_util.h"
#include "engine/generate_run.h"
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
  CudaRunOptions cuda;  // the CUDA flags, --profile
  HubOptions hub = HubOptions::from_env();
};

}  // namespace

Action add_generate(CLI::App& app) {
  auto o = std::make_shared<GenOpts>();
  app.add_option("--model", o->model, "checkpoint directory, Hub id org/name[@rev], or preset:NAME")
      ->required();
  app.add_option("--backend", o->backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--quant", o->quant, "auto (follow the checkpoint), bf16, nvfp4 or fp8 (quantize at load)");
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
  app.add_flag("--profile", o->cuda.profile, "cuda: time every op class with events (disables CUDA graphs)");
  add_cuda_run_options(app, o->cuda);
  return [o]() {
    GenerateRunOptions run;
    run.mode = parse_quant_mode(o->quant);
    run.session = session_options(o->backend, o->threads, o->cuda);
    check_session_options(run.session);
    for (const auto& p : o->prompts) run.prompts.push_back(parse_token_ids(p, "--prompt-ids"));
    // Text prompts: tokenized here; the new ids come back as text.
    std::vector<std::string> texts = o->text_prompts;
    for (const auto& f : o->prompt_files) texts.push_back(read_text_file(f));
    run.text = !texts.empty();
    if (run.text && !run.prompts.empty())
      throw Error("give --prompt-ids or --prompt/--prompt-file, not both");
    if (!run.text && run.prompts.empty())
      throw Error("no prompt: give --prompt TEXT, --prompt-file F or --prompt-ids");
    if (!run.text && (o->add_bos || o->ignore_eos || !o->tokenizer.empty() || o->chat.chat))
      throw Error(
          "--tokenizer, --add-bos, --ignore-eos and --chat apply to text prompts (--prompt, --prompt-file)");
    if (!o->chat.chat && o->chat.given())
      throw Error("--system, --chat-template and --chat-var apply to chat prompts: add --chat");
    run.model_path = resolve_model_arg(o->model, o->hub);
    std::optional<Tokenizer> tok;
    std::optional<TextStream> stream;
    // The text of the ids the stream has not seen (and, last, what it holds back), written as it comes.
    const auto write_new = [&](const std::vector<int>& ids, bool last) {
      std::string piece;
      for (size_t k = stream->ids().size(); k < ids.size(); ++k) piece += stream->push(ids[k]);
      if (last) piece += stream->finish() + "\n";
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
    if (run.text) {
      const std::string dir = o->tokenizer.empty() ? run.model_path : o->tokenizer;
      if (dir.starts_with("preset:"))
        throw Error("a preset has no tokenizer: give --tokenizer DIR for text prompts");
      tok.emplace(Tokenizer::from_dir(dir));
      if (o->chat.chat) {
        // Each prompt is one user turn, rendered as the model was trained to see it (its BOS included).
        const ChatTemplate ct = ChatTemplate::load(run.model_path, o->tokenizer, o->chat.template_file);
        for (auto& t : texts) t = ct.render(chat_messages(o->chat, t), chat_render_options(o->chat));
      }
      for (const auto& t : texts) {
        run.prompts.push_back(tok->encode(t));
        if (run.prompts.back().empty() && !o->add_bos) throw Error("a text prompt encodes to no tokens");
      }
      if (run.prompts.size() == 1) {  // one prompt: its text appears as it decodes
        stream.emplace(*tok);
        run.on_first_prompt_token = [&](const std::vector<int>& ids) { write_new(ids, false); };
      }
    }
    run.seed = o->seed;
    run.add_bos = o->add_bos;
    run.ignore_eos = o->ignore_eos;
    GenerateOptions& g = run.generate;
    g.max_new_tokens = o->max_new;
    g.stop_ids = o->stop_ids;
    g.max_batch = o->batch;
    g.prefill_tokens = o->prefill_tokens;
    g.beyond_context = o->beyond_context;
    g.sampling = {o->greedy, o->temperature, o->top_k, o->top_p, o->seed};
    const GenerateRunReport rep = run_generate(run);
    const GenerateResult& r = rep.result;
    if (rep.memory) std::fprintf(stderr, "%s\n", rep.memory->summary().c_str());
    if (o->cuda.profile && !rep.profile_ms.empty())
      std::fputs(op_profile_table(rep.profile_ms, r.generated_tokens, r.prefill_s + r.decode_s).c_str(),
                 stderr);
    std::vector<std::string> new_text;
    if (run.text) {
      for (const auto& ids : r.new_ids) new_text.push_back(tok->decode(ids, true));
      if (stream) {
        write_new(r.new_ids[0], true);
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
                 quant_mode_name(run.mode), rep.nvfp4_layers, rep.linear_layers, rep.backend.c_str(),
                 rep.load.summary().c_str());
    std::fprintf(
        stderr, "prefill: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s)\n",
        r.prompt_tokens, r.prefill_s, r.prefill_tok_s(), r.decode_tokens, r.decode_s, r.decode_tok_s());
    if (o->json_out.empty()) return 0;
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
                {"profile", o->cuda.profile}}}};
    j.update(generate_report_json(rep));
    echo_cuda_run_options(j["options"], o->cuda);
    if (run.text) {
      j["options"]["prompt_text"] = texts;
      j["options"]["tokenizer"] = tok->describe();
      j["options"]["add_bos"] = o->add_bos;
      j["options"]["ignore_eos"] = o->ignore_eos;
      echo_chat_options(j["options"], o->chat);
      j["new_text"] = new_text;
    }
    write_text_file(o->json_out, j.dump(2) + "\n");
    return 0;
  };
}

}  // namespace fp4lab::cli
