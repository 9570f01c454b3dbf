// `fp4lab eval ppl`: perplexity of two quantizations of one model on a token sequence, and KL(a || b) between
// them.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <tuple>

#include "commands.h"
#include "common/error.h"
#include "eval/metrics.h"
#include "common/json_util.h"
#include "io/model_config.h"
#include "tokenizer/tokenizer.h"

namespace fp4lab::cli {

Action add_eval_gsm8k(CLI::App& app);

namespace {

template <class M>
std::vector<float> all_logits(M& m, const std::vector<int>& tokens) {
  auto s = m.new_sequence(static_cast<int>(tokens.size()));
  return m.forward(s, tokens, true);
}

}  // namespace

Action add_eval(CLI::App& app) {
  struct Opts {
    std::string model, model_b, tokens_file, backend = "cpu", quant_a = "auto", quant_b = "nvfp4", json_out;
    std::string lm_head_b = "auto";
    std::string text_file, tokenizer;  // --text: scored tokens from text (tokenizer: default --model)
    bool add_bos = false, w4a4_b = false;
    CudaRunOptions cuda;
  };
  auto o = std::make_shared<Opts>();
  app.require_subcommand(1);
  auto* ppl = app.add_subcommand(
      "ppl", "perplexity of two quantizations on a token file, KL(a || b), top-1 agreement");
  ppl->add_option("--model", o->model, "checkpoint directory or preset:NAME")->required();
  ppl->add_option("--model-b", o->model_b,
                  "the compared side from another checkpoint (e.g. --model the float original, --model-b a "
                  "quantized directory, --quant-b auto); default: --model");
  auto* tokens_opt =
      ppl->add_option("--tokens", o->tokens_file, "file of token ids (whitespace or comma separated)");
  auto* text_opt = ppl->add_option("--text", o->text_file,
                                   "text file scored instead of --tokens, tokenized with --tokenizer");
  tokens_opt->excludes(text_opt);
  ppl->add_option("--tokenizer", o->tokenizer,
                  "with --text: directory with tokenizer.json (default: --model)");
  ppl->add_flag("--add-bos", o->add_bos, "with --text: put --model's BOS token (config.json) first");
  ppl->add_option("--backend", o->backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  ppl->add_option("--quant-a", o->quant_a, "reference quantization (auto: as the checkpoint stores it)");
  ppl->add_option("--quant-b", o->quant_b, "compared quantization");
  add_cuda_run_options(*ppl, o->cuda);
  ppl->add_option(
         "--lm-head-b", o->lm_head_b,
         "the compared side's lm_head (bf16, nvfp4; auto: as --lm-head), e.g. --quant-a bf16 --quant-b "
         "bf16 --lm-head-b nvfp4 measures what quantizing the lm_head alone costs")
      ->check(CLI::IsMember({"auto", "bf16", "nvfp4"}));
  ppl->add_flag(
      "--w4a4-b", o->w4a4_b,
      "run --model-b's NVFP4 layers W4A4 as Blackwell does: each input quantized to NVFP4 under the "
      "layer's input_scale (emulated on the CPU backend; the checkpoint needs input scales)");
  ppl->add_option("--json", o->json_out, "write the metrics and options as JSON");
  auto hub = std::make_shared<HubOptions>(HubOptions::from_env());
  add_hub_options(*ppl, *hub);
  auto* gsm =
      app.add_subcommand("gsm8k", "GSM8K accuracy as lm-evaluation-harness scores it (gsm8k, gsm8k_cot)");
  Action gsm_action = add_eval_gsm8k(*gsm);
  return [o, gsm, gsm_action, hub]() {
    if (gsm->parsed()) return gsm_action();
    const std::string path = resolve_model_arg(o->model, *hub);
    const std::string path_b = o->model_b.empty() ? path : resolve_model_arg(o->model_b, *hub);
    if (o->tokens_file.empty() == o->text_file.empty()) throw Error("eval ppl needs --tokens FILE or --text FILE");
    if (o->text_file.empty() && (o->add_bos || !o->tokenizer.empty()))
      throw Error("--tokenizer and --add-bos apply to --text");
    std::vector<int> tokens;
    if (!o->tokens_file.empty()) {
      tokens = read_token_file(o->tokens_file);
    } else {
      if (o->tokenizer.empty() && path.starts_with("preset:"))
        throw Error("a preset has no tokenizer: give --tokenizer DIR with --text");
      tokens = Tokenizer::from_dir(o->tokenizer.empty() ? path : o->tokenizer).encode(read_text_file(o->text_file));
      if (o->add_bos) {
        const int bos = load_model_config(path).bos_id;
        if (bos < 0) throw Error("--add-bos: " + path + " has no bos_token_id");
        tokens.insert(tokens.begin(), bos);
      }
    }
    const std::string source = o->tokens_file.empty() ? o->text_file : o->tokens_file;
    if (tokens.size() < 2) throw Error(source + ": need at least 2 tokens");
    const SessionOptions session = session_options(o->backend, 0, o->cuda);
    check_session_options(session);
    std::vector<float> la, lb;
    int vocab = 0;
    // The two sides must score the same token ids.
    auto same_vocab = [](int a, int b) {
      if (a != b)
        throw Error("--model-b has a vocabulary of " + std::to_string(b) + ", --model " + std::to_string(a) +
                    ": the two do not score the same tokens");
    };
    const LmHeadMode head_a = o->cuda.lm_head,
                     head_b = o->lm_head_b == "auto" ? head_a : parse_lm_head_mode(o->lm_head_b);
    // One model at a time (each on all --tp GPUs); rank 0 keeps the logits. Every token is scored at once:
    // one forward of the whole sequence, its logits kept.
    int vocab_a = 0;
    const SessionOptions session_b = [&] {
      SessionOptions s = session;
      s.w4a4 = o->w4a4_b;
      return s;
    }();
    check_session_options(session_b);
    for (auto [p, q, out, head, base] : {std::tuple{&path, &o->quant_a, &la, head_a, &session},
                                         std::tuple{&path_b, &o->quant_b, &lb, head_b, &session_b}}) {
      SessionOptions so = *base;
      so.cuda.lm_head = head;
      so.cuda.shape.tokens_per_sequence = so.cuda.shape.forward_tokens = so.cuda.shape.logits_rows =
          static_cast<int>(tokens.size());
      run_session(load_model(*p, parse_quant_mode(*q), 0, so.host_weights()), so,
                  [&](auto& m, auto&, int rank) {
                    auto l = all_logits(m, tokens);
                    if (rank != 0) return;
                    *out = std::move(l);
                    vocab = m.config().vocab_size;
                  });
      if (!vocab_a) vocab_a = vocab;
    }
    same_vocab(vocab_a, vocab);
    const PairMetrics m = compare_distributions(la, lb, tokens, vocab);
    const std::string name_a =
                          o->quant_a + (head_a == LmHeadMode::Auto
                                            ? std::string()
                                            : std::string(" (lm_head ") + lm_head_mode_name(head_a) + ")"),
                      name_b = (o->model_b.empty() ? "" : "b:") + o->quant_b + (o->w4a4_b ? " W4A4" : "") +
                               (o->lm_head_b == "auto" && head_a == LmHeadMode::Auto
                                    ? ""
                                    : std::string(" (lm_head ") + lm_head_mode_name(head_b) + ")");
    std::printf("%s on %d next-token positions (%s backend)\n", o->model.c_str(), m.positions,
                o->backend.c_str());
    std::printf("perplexity: %s %.4f, %s %.4f\n", name_a.c_str(), m.ppl_a(), name_b.c_str(), m.ppl_b());
    std::printf("KL(%s || %s): mean %.5f nats, p99 %.5f; top-1 agreement %.4f\n", name_a.c_str(),
                name_b.c_str(), m.kl_mean, m.kl_p99, m.top1_agreement);
    if (!o->json_out.empty()) {
      json j = {{"tool", {{"version", FP4LAB_VERSION}, {"commit", FP4LAB_GIT_COMMIT}}},
                {"options",
                 {{"model", o->model},
                  {"model_b", o->model_b.empty() ? o->model : o->model_b},
                  {"tokens", o->tokens_file},
                  {"text", o->text_file},
                  {"tokenizer", o->tokenizer},
                  {"add_bos", o->add_bos},
                  {"backend", o->backend},
                  {"quant_a", o->quant_a},
                  {"quant_b", o->quant_b},
                  {"lm_head_b", o->lm_head_b},
                  {"w4a4_b", o->w4a4_b}}},
                {"positions", m.positions},
                {"ppl_a", m.ppl_a()},
                {"ppl_b", m.ppl_b()},
                {"kl_mean", m.kl_mean},
                {"kl_p99", m.kl_p99},
                {"top1_agreement", m.top1_agreement}};
      echo_cuda_run_options(j["options"], o->cuda);
      write_text_file(o->json_out, j.dump(2) + "\n");
    }
    return 0;
  };
}

}  // namespace fp4lab::cli
