// `fp4lab explain`: what NVFP4 can give on a GPU, including GPUs not present, from datasheet figures.
#include <cstdio>

#include "commands.h"
#include "common/error.h"
#include "cuda/memory_plan.h"
#include "engine/nvfp4_path.h"
#include "model/inspect.h"
#include "model/presets.h"
#include "report/roofline.h"

namespace fp4lab::cli {

Action add_explain(CLI::App& app) {
  struct Opts {
    std::vector<std::string> gpus;
    std::string model = "preset:nemotron-nano-9b-v2";
    int batch = 1;
    double context = 256;
    int tp = 1;
    std::string link = "nvlink";
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--gpu", o->gpus, "GPU names from the datasheet table (default: all)")->delimiter(',');
  app.add_option("--model", o->model, "checkpoint directory or preset:NAME");
  app.add_option("--batch", o->batch, "sequences decoded together")->check(CLI::Range(1, 4096));
  app.add_option("--context", o->context, "average tokens in the KV cache during decode")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--tp", o->tp,
                 "tensor parallelism over N GPUs of the kind (Megatron split, all-reduces charged)")
      ->check(CLI::Range(1, 64));
  app.add_option("--link", o->link, "with --tp: the link between the GPUs (nvlink or pcie)")
      ->check(CLI::IsMember({"nvlink", "pcie"}));
  return [o]() {
    ModelConfig c;
    std::vector<LinearPlan> bf16, fp4, fp8;
    int64_t vocab = 0;
    if (is_preset_ref(o->model)) {
      const auto p = find_preset(o->model);
      if (!p) throw Error("unknown preset '" + o->model + "'");
      c = p->config;
      QuantConfig none;
      bf16 = plan_linears(c, none, nullptr, QuantMode::BF16);
      fp4 = plan_linears(c, none, nullptr, QuantMode::NVFP4);
      fp8 = plan_linears(c, none, nullptr, QuantMode::FP8);
    } else {
      const auto store = TensorStore::open_dir(o->model);
      const auto s = summarize_checkpoint(o->model, store);
      c = s.config;
      bf16 = plan_linears(c, s.quant, &store, QuantMode::BF16);
      fp4 = s.nvfp4_plan;
      fp8 = plan_linears(c, s.quant, &store, QuantMode::FP8);
    }
    vocab = c.vocab_size;
    // The memory plan of each format at this batch and context on a GPU of `memory_gb` (one GPU of the group
    // under --tp: its share of the linear weights, the vocabulary split): what fits, and how.
    auto fit = [&](const std::vector<LinearPlan>& plans, double memory_gb, std::string& how) {
      MemoryPlanInput in;
      in.config = c;
      in.plans = plans;
      if (o->tp > 1)
        for (auto& p : in.plans) p.spec.n = (p.spec.n + o->tp - 1) / o->tp;
      in.vocab_rows = (vocab + o->tp - 1) / o->tp;
      in.batch = o->batch;
      in.tokens_per_sequence = in.forward_tokens = in.longest_prompt = static_cast<int>(o->context);
      in.context_bytes = kContextEstimateBytes;
      try {
        const MemoryFit f = fit_memory(in, static_cast<uint64_t>(memory_gb * kUsableFraction * (1ull << 30)),
                                       EmbeddingPlace::Auto, true);
        how = std::string(f.embedding_on_host ? "host emb, " : "") + (f.lm_head_nvfp4 ? "fp4 head, " : "") +
              format_bytes(f.plan.device_peak());
        return true;
      } catch (const Error&) {
        how = "no: " + format_bytes(plan_memory(in).device_peak());
        return false;
      }
    };
    const DecodeBytes b16 = decode_bytes_tp(c, bf16, o->context, o->tp),
                      b4 = decode_bytes_tp(c, fp4, o->context, o->tp),
                      b8 = decode_bytes_tp(c, fp8, o->context, o->tp);
    const CommSpec* comm = o->tp > 1 ? &comm_spec(o->link) : nullptr;
    std::printf(
        "PREDICTIONS from datasheet figures (not measurements) for %s, batch %d, context %.0f tokens\n",
        o->model.c_str(), o->batch, o->context);
    if (comm)
      std::printf(
          "tensor parallel over %d GPUs of each kind: per GPU its share of the weights and KV cache, plus %d "
          "all-reduces and a logits all-gather per step over %s (assumed %.0f us + %.0f GB/s each: %.2f ms "
          "per step); bytes and the "
          "fit are one GPU's, tokens/s the group's of %d\n",
          o->tp, b4.allreduces, comm->link.c_str(), comm->latency_us, comm->bus_gbs,
          1e3 * step_comm_seconds(b4, o->batch, *comm), o->tp);
    std::printf(
        "bytes per decode step: BF16 %.2f GB, FP8 %.2f GB, NVFP4 %.2f GB (weights %.2f / %.2f / %.2f GB, "
        "state "
        "%.3f GB)\n",
        b16.per_step(o->batch) / 1e9, b8.per_step(o->batch) / 1e9, b4.per_step(o->batch) / 1e9,
        b16.weights / 1e9, b8.weights / 1e9, b4.weights / 1e9, o->batch * (b4.kv_cache + b4.ssm_state) / 1e9);
    std::printf(
        "ceiling = batch / max(bytes per step / bandwidth, FLOPs per step / BF16 tensor rate); \"no fit\": "
        "the memory plan (weights, embedding, lm_head, state for the batch and context, activations, "
        "workspaces, ~%.1f GiB CUDA context; `fp4lab inspect --memory`) exceeds %.0f%% of the GPU's memory "
        "even with the embedding in host memory; \"host emb\": it fits with the embedding in pinned host "
        "memory (--embedding auto does that); \"fp4 head\": and with the lm_head in NVFP4 (--lm-head auto)\n\n",
        static_cast<double>(kContextEstimateBytes) / (1ull << 30), 100 * kUsableFraction);
    std::printf("%-24s %9s %7s  %-12s %10s %10s %7s %10s %7s  %-20s %-20s %s\n", "GPU", "GB/s", "mem GB",
                "NVFP4 path", "BF16 tok/s", "FP8 tok/s", "ratio", "NVFP4 tok/s", "ratio", "BF16 memory",
                "NVFP4 memory", "source");
    const std::vector<std::string> archs{"80", "90a", "100a", "120a"};
    for (const auto& g : datasheet_gpus()) {
      if (!o->gpus.empty()) {
        bool want = false;
        for (const auto& n : o->gpus) want = want || find_gpu_spec(n) == &g;
        if (!want) continue;
      }
      const auto path = choose_nvfp4_path(g.cc_major, g.cc_minor, archs);
      const double t16 = roofline_decode_tok_s(b16, o->batch, g.bandwidth_gbs, g.bf16_tflops, comm);
      const double t4 = roofline_decode_tok_s(b4, o->batch, g.bandwidth_gbs, g.bf16_tflops, comm);
      // FP8 tensor cores (sm_89+) run W8A8 at twice the BF16 rate; before them FP8 runs as W8A16.
      const bool fp8_cores = g.cc_major * 10 + g.cc_minor >= 89;
      const double t8 =
          roofline_decode_tok_s(b8, o->batch, g.bandwidth_gbs, g.bf16_tflops * (fp8_cores ? 2.0 : 1.0), comm);
      std::string how16, how4, how8;
      const bool fits16 = fit(bf16, g.memory_gb, how16), fits4 = fit(fp4, g.memory_gb, how4),
                 fits8 = fit(fp8, g.memory_gb, how8);
      const auto tok = [](bool fits, double t) {
        return fits ? std::to_string(static_cast<int>(t)) : "no fit";
      };
      std::printf("%-24s %9.0f %7.0f  %-12s %10s %10s %6.2fx %10s %6.2fx  %-20s %-20s %s\n", g.name.c_str(),
                  g.bandwidth_gbs, g.memory_gb, nvfp4_path_name(path.path), tok(fits16, t16).c_str(),
                  tok(fits8, t8).c_str(), t8 / t16, tok(fits4, t4).c_str(), t4 / t16, how16.c_str(),
                  how4.c_str(), g.source.c_str());
    }
    for (const auto& n : o->gpus)
      if (!find_gpu_spec(n))
        throw Error("no datasheet entry for GPU '" + n + "' (see the table without --gpu)");
    std::printf(
        "\nw4a4-* paths: the native FP4 GEMM is compiled for these GPUs, but fp4lab's engine runs its W4A16 "
        "kernels on them today (not yet run on Blackwell hardware).\n");
    std::printf(
        "\nWhy: decode at small batch reads every weight once per step, so tokens/s follows bytes per step. "
        "Before Blackwell, NVFP4 runs as W4A16 (weights dequantized in registers): the gain is the byte "
        "ratio, "
        "minus what the dequantizing kernels lose to bandwidth (at M=1 fp4lab's NVFP4 GEMV reached 55-76%% "
        "of "
        "copy bandwidth and 75-96%% of a read-only kernel over the same bytes on the layers of 20 MB and "
        "more "
        "on H200, docs/perf/gemm-h200.md). "
        "Tensor parallelism divides the bytes per GPU but adds a latency-bound all-reduce per row-parallel "
        "layer, so at batch 1 it scales below the GPU count. As the batch grows the step becomes "
        "compute-bound and the "
        "gain fades; on Blackwell the native W4A4 path also raises the compute ceiling. FP8 halves the "
        "bytes of BF16 and, from Ada on, runs batched products on FP8 tensor cores at twice the BF16 rate, "
        "so at large batch it can beat NVFP4's W4A16 (docs/perf/fp8-h100.md has the measured three-way).\n");
    return 0;
  };
}

}  // namespace fp4lab::cli
