#include "bench/model_bench.h"
#include "commands.h"
#include "common/error.h"
#include "cuda/gpu_info.h"
#if FP4LAB_HAVE_CUDA
#include "bench/gemm_bench.h"
#include "cuda/launch.h"
#endif

namespace fp4lab::cli {

Action add_bench(CLI::App& app) {
  auto mo = std::make_shared<ModelBenchOptions>();
  app.add_option("--model", mo->model,
                 "checkpoint directory or preset:NAME (default: the largest preset that fits)");
  app.add_option("--backend", mo->backend, "auto (cuda when a GPU is present), cpu, cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--quant", mo->quants,
                 "quantizations to compare (bf16, fp8, nvfp4, auto), the first is the baseline; default: "
                 "bf16,fp8,nvfp4 on GPUs with FP8 tensor cores (sm_89+), else bf16,nvfp4")
      ->delimiter(',');
  app.add_option("--input-len", mo->input_len, "prompt tokens")->check(CLI::Range(1, 1 << 20));
  app.add_option("--output-len", mo->output_len, "generated tokens per prompt")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--batch", mo->batch, "prompts per repetition, decoded together (batched decode)")
      ->check(CLI::Range(1, 4096));
  add_prefill_tokens_option(app, mo->prefill_tokens);
  add_beyond_context_option(app, mo->beyond_context);
  app.add_option("--warmup", mo->warmup, "warm-up runs (excluded)");
  app.add_option("--reps", mo->reps, "timed repetitions (mean ± std)")->check(CLI::Range(1, 1000));
  app.add_option("--seed", mo->seed, "seed for preset weights");
  app.add_option("--json", mo->json_out, "write the results document (schema fp4lab.bench/1)");
  add_cuda_run_options(app, mo->cuda);
  app.add_flag(
      "--profile", mo->profile,
      "cuda: one extra run timing every op class with events (GEMMs vs SSM vs conv vs attention ...)");
  add_hub_options(app, mo->hub);
  app.add_option("--sweep-batch", mo->sweep,
                 "run once per batch size (e.g. 1,2,4,8,16,32) for speedup vs batch")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096));
  app.add_option("--db", mo->db, "results database to store the run in (default: the user's data dir)");
  app.add_flag("--no-db", mo->no_db, "do not store the run");
  auto* sv = app.add_subcommand("serve",
                                "Load an OpenAI-compatible server (fp4lab serve, vLLM, SGLang, llama.cpp) "
                                "and report TTFT/TPOT/ITL and throughput as vllm bench serve does");
  const auto serve_action = add_bench_serve(*sv);
  auto* g =
      app.add_subcommand("gemm", "NVFP4 W4A16 GEMM vs cuBLAS BF16 and cuBLASLt FP8 on model shapes (GPU)");
#if FP4LAB_HAVE_CUDA
  auto o = std::make_shared<GemmBenchOptions>();
  g->add_option("--models", o->models, "built-in models whose linear shapes to run (none: only --shape)")
      ->delimiter(',');
  g->add_option("--shape", o->extra_shapes, "extra NxK shapes (repeatable)");
  g->add_option("--m", o->ms, "batch sizes M")->delimiter(',');
  g->add_option("--warmup", o->warmup, "warm-up calls");
  g->add_option("--reps", o->reps, "timed batches (median reported)");
  g->add_option("--calls-per-rep", o->calls_per_rep, "calls per timed batch (0: auto, ~0.3 ms)");
  g->add_option("--rotate", o->rotate_factor,
                "rotating weight copies totalling this multiple of the L2 size");
  g->add_option(
      "--variant", o->variant,
      "force a W4A16 kernel variant (decode8, decode16, decode32, decode64, xs32, mma32, mma64, mma128, "
      "wgmma32, wgmma64, wgmma128, wgmma256 (sm_90a), "
      "dequant+cublas)");
  g->add_option("--rows-per-block", o->rows_per_block,
                "with a forced decode variant: 16 or 32 weight rows per block (xs32: 64 or 128)");
  g->add_option("--decode-warps", o->decode_warps,
                "with a forced decode variant: warps per block (4, 8, 10 or 16; 10: one row tile)");
  g->add_option("--splits", o->splits, "with a forced mma variant: K splits (0: heuristic)");
  g->add_flag("!--no-wgmma", o->wgmma,
              "sm_90a: the heuristic never picks the wgmma kernels (as the engine's --no-wgmma)");
  g->add_flag("!--no-baselines", o->baselines, "skip cuBLAS BF16 / cuBLASLt FP8");
  g->add_flag("!--no-pdl", o->pdl,
              "time the W4A16 calls without programmatic dependent launch (sm_90+: by default each call may "
              "start while the previous one drains, as in the engine)");
  g->add_option("--json", o->json_out, "write results as JSON");
  g->add_flag("-v,--verbose", o->verbose, "report unavailable baselines");
  return [o, g, mo, sv, serve_action]() {
    if (sv->parsed()) return serve_action();
    if (!g->parsed()) return run_bench_or_sweep(*mo);
    const GpuQuery q = query_gpus();
    if (!q.ok) throw Error("bench gemm needs a CUDA GPU: " + q.error);
    set_programmatic_launch(o->pdl);
    run_gemm_bench(*o);
    return 0;
  };
#else
  return [g, mo, sv, serve_action]() -> int {
    if (sv->parsed()) return serve_action();
    if (g->parsed()) throw Error("bench gemm needs a CUDA GPU: this fp4lab was built without CUDA");
    return run_bench_or_sweep(*mo);
  };
#endif
}

}  // namespace fp4lab::cli
