// `fp4lab quantize`: a ModelOpt-layout NVFP4 checkpoint from a BF16 one; weight-only, or with --calib the
// input scales of a W4A4 checkpoint from the activation maxima seen on calibration text.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "common/error.h"
#include "engine/calibrate.h"
#include "common/json_util.h"
#include "model/quantize.h"
#include "tokenizer/tokenizer.h"

namespace fp4lab::cli {

namespace {

// Calibration input: token ids (any file not ending in .txt/.jsonl), plain text (.txt) or JSONL with a "text"
// field per line (.jsonl), the latter two through the tokenizer.
std::vector<std::vector<int>> calibration_sequences(const std::string& path, const std::string& tokenizer_dir,
                                                    int max_tokens) {
  std::vector<std::vector<int>> seqs;
  const bool is_txt = path.ends_with(".txt"), is_jsonl = path.ends_with(".jsonl");
  if (!is_txt && !is_jsonl) {
    seqs.push_back(read_token_file(path));
  } else {
    const std::string text = read_text_file(path);
    const Tokenizer tok = Tokenizer::from_dir(tokenizer_dir);
    if (is_txt) {
      seqs.push_back(tok.encode(text));
    } else {
      std::istringstream in(text);
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const json j = parse_json_untrusted(line, path + ":" + std::to_string(n));
        if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
          throw Error(path + ":" + std::to_string(n) + ": no \"text\" string");
        seqs.push_back(tok.encode(j["text"].get<std::string>()));
      }
    }
  }
  // Long inputs are cut into sequences of up to 512 tokens, and the total is capped.
  std::vector<std::vector<int>> out;
  int total = 0;
  for (const auto& s : seqs)
    for (size_t i = 0; i < s.size() && total < max_tokens; i += 512) {
      const size_t n = std::min<size_t>({512, s.size() - i, static_cast<size_t>(max_tokens - total)});
      out.emplace_back(s.begin() + static_cast<ptrdiff_t>(i), s.begin() + static_cast<ptrdiff_t>(i + n));
      total += static_cast<int>(n);
    }
  if (total == 0) throw Error(path + ": no calibration tokens");
  return out;
}

}  // namespace

Action add_quantize(CLI::App& app) {
  struct Opts {
    std::string in, out, calib, tokenizer, method = "rtn", global_scale = "auto", format = "nvfp4",
                                           device = "auto", gptq_sequential = "auto", gptq_objective = "auto",
                                           gptq_act = "float";
    std::vector<std::string> exclude;
    int calib_tokens = 4096, threads = 0;
    double damp = 0.01;
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--in", o->in, "BF16/F16/F32 checkpoint directory")->required();
  app.add_option("--out", o->out, "output directory (ModelOpt-layout NVFP4 checkpoint)")->required();
  app.add_option("--exclude", o->exclude,
                 "module patterns kept in BF16 (default: lm_head, plus attention for Nemotron-H)")
      ->delimiter(',');
  app.add_option(
      "--calib", o->calib,
      "calibration data: token ids, .txt text or .jsonl {\"text\"} lines; writes input_scale (W4A4 NVFP4)");
  app.add_option("--tokenizer", o->tokenizer, "tokenizer for text calibration (default: the --in directory)");
  app.add_option("--calib-tokens", o->calib_tokens, "at most this many calibration tokens")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--threads", o->threads, "CPU threads for the calibration forward (0: all cores)");
  app.add_option(
         "--method", o->method,
         "rtn (ModelOpt's amax / 6 block scales, bit-identical to its export), scale-search (the E4M3 "
         "scale with the least squared error per 16-block) or gptq (scale-search blocks with GPTQ's error "
         "compensation from --calib activations); same layout, loads everywhere; docs/quantization.md")
      ->check(CLI::IsMember({"rtn", "scale-search", "gptq"}));
  app.add_option(
         "--global-scale", o->global_scale,
         "the tensor scale (weight_scale_2) of each fused group: amax (ModelOpt's amax / 2688), search "
         "(the least weight error under the block-scale rule) or auto (amax for rtn, search otherwise)")
      ->check(CLI::IsMember({"auto", "amax", "search"}));
  app.add_option("--gptq-damp", o->damp, "gptq: Hessian damping, a fraction of its mean diagonal")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option(
         "--device", o->device,
         "where --calib runs (the forward and GPTQ): cpu (the float32 reference, FP64 GPTQ), cuda (BF16 "
         "forward, GPTQ on the GPU: minutes for an 8B model) or auto (the GPU where there is one)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option(
         "--gptq-sequential", o->gptq_sequential,
         "gptq: the layers quantized from one calibration pass: block (every layer of a transformer "
         "block), group (each fused group, q/k/v, o, gate/up, down, in the forward's order: later "
         "groups compensate earlier ones, one pass per group) or auto (group on the CPU, block on the "
         "GPU)")
      ->check(CLI::IsMember({"auto", "block", "group"}));
  app.add_option("--gptq-objective", o->gptq_objective,
                 "gptq: what each layer reproduces: layer (its own output on the partly quantized model's "
                 "inputs, GPTQ's), float (the float model's output, GPTAQ's; CPU only) or auto (float on the "
                 "CPU, layer on the GPU)")
      ->check(CLI::IsMember({"auto", "layer", "float"}));
  app.add_option(
         "--gptq-act", o->gptq_act,
         "gptq: the layers' inputs: float (as W4A16 engines and pre-Blackwell GPUs run them) or nvfp4 "
         "(quantized under their input scales, as W4A4 on Blackwell runs them; CPU only)")
      ->check(CLI::IsMember({"float", "nvfp4"}));
  app.add_flag("--force", o->force, "write into a non-empty --out directory");
  app.add_option("--format", o->format,
                 "nvfp4 (ModelOpt NVFP4 / W4A16_NVFP4) or fp8 (ModelOpt FP8: E4M3 weights, one F32 scale per "
                 "tensor; --method rtn only)")
      ->check(CLI::IsMember({"nvfp4", "fp8"}));
  return [o]() {
    check_output_dir(o->out, {o->in}, o->force);
    QuantizeOptions q;
    q.exclude = o->exclude;
    q.fp8 = o->format == "fp8";
    if (q.fp8 && o->method != "rtn")
      throw Error("--format fp8 takes --method rtn (ModelOpt's FP8 recipe: amax / 448 per tensor), not '" +
                  o->method + "'");
    const bool gptq = o->method == "gptq";
    if (gptq && o->calib.empty())
      throw Error("--method gptq needs --calib (the activations its Hessians come from)");
    if (!gptq && o->gptq_act != "float") throw Error("--gptq-act applies to --method gptq");
    q.method = gptq ? Nvfp4ScaleRule::Search : parse_nvfp4_scale_rule(o->method);
    q.search_tensor_scale =
        !q.fp8 && (o->global_scale == "search" || (o->global_scale == "auto" && o->method != "rtn"));
    CalibrationResult cal;
    if (!o->calib.empty()) {
      CalibrationOptions co;
      co.device = parse_calibration_device(o->device);
      co.exclude = o->exclude;
      co.threads = o->threads;
      co.gptq = gptq;
      co.fp8 = q.fp8;
      co.gptq_options = {o->damp, q.method, o->threads};
      co.search_tensor_scale = q.search_tensor_scale;
      using CO = CalibrationOptions;
      co.w4a4_inputs = o->gptq_act == "nvfp4";
      co.sequential = o->gptq_sequential == "block"   ? CO::Sequential::Block
                      : o->gptq_sequential == "group" ? CO::Sequential::Group
                                                      : CO::Sequential::Auto;
      co.objective = o->gptq_objective == "layer"   ? CO::Objective::Layer
                     : o->gptq_objective == "float" ? CO::Objective::Float
                                                    : CO::Objective::Auto;
      const auto t0 = std::chrono::steady_clock::now();
      if (gptq) {
        // One line, rewritten in place: the step, then the layer GPTQ is on (padded over the longer names).
        std::fprintf(stderr, "gptq: loading the model, choosing tensor scales");
        co.progress = [t0](int b, int n, const std::string* layer) {
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          std::fprintf(stderr, "\rgptq: step %d/%d, %-48s %7.1f s", b + 1, n,
                       layer ? layer->c_str() : "calibration pass", s);
        };
      }
      cal = calibrate_checkpoint(
          o->in,
          calibration_sequences(o->calib, o->tokenizer.empty() ? o->in : o->tokenizer, o->calib_tokens), co);
      if (gptq)
        std::fprintf(stderr, "\rgptq: %zu layers on the %s in %.1f s%40s\n", cal.quantized.size(),
                     cal.on_gpu ? "GPU" : "CPU",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), "");
      q.input_amax = cal.input_amax;
      q.prequantized = std::move(cal.quantized);
      q.tensor_scales = std::move(cal.tensor_scales);
    }
    const QuantizeReport r = quantize_checkpoint_nvfp4(o->in, o->out, q);
    if (q.fp8) {
      std::printf("wrote %s: %d linear layers FP8 (E4M3, per-tensor scales%s), %d kept; %s -> %s\n",
                  o->out.c_str(), r.quantized,
                  r.calibrated
                      ? (", input scales from " + std::to_string(cal.tokens) + " calibration tokens").c_str()
                      : ", weight-only: no --calib",
                  r.kept, human_bytes(r.bytes_in).c_str(), human_bytes(r.bytes_out).c_str());
      return 0;
    }
    std::printf(
        "wrote %s: %d linear layers NVFP4 (%s, %s block scales, %s global scales), %d kept; %s -> %s\n",
        o->out.c_str(), r.quantized,
        r.calibrated
            ? ("NVFP4 W4A4, input scales from " + std::to_string(cal.tokens) + " calibration tokens").c_str()
            : "W4A16_NVFP4, weight-only: no --calib",
        gptq ? "gptq, scale-search" : o->method.c_str(), q.search_tensor_scale ? "searched" : "amax", r.kept,
        human_bytes(r.bytes_in).c_str(), human_bytes(r.bytes_out).c_str());
    if (gptq)
      std::printf(
          "gptq (%s, %s passes, %s objective, %s inputs): output error on the calibration inputs %.4g "
          "(round-to-nearest, same scales rule: %.4g, %.2fx)\n",
          cal.on_gpu ? "GPU" : "CPU", cal.group_sequential ? "group" : "block",
          cal.toward_float ? "float" : "layer", cal.w4a4_inputs ? "nvfp4" : "float", cal.gptq_error,
          cal.rtn_error, cal.rtn_error > 0 ? cal.gptq_error / cal.rtn_error : 0.0);
    return 0;
  };
}

}  // namespace fp4lab::cli
