#include <cstdio>

#include "commands.h"
#include "common/error.h"
#include "engine/gpu_info.h"
#if FP4LAB_HAVE_CUDA
#include "bench/gemm_bench.h"
#endif

namespace fp4lab::cli {

Action add_bench(CLI::App& app) {
  app.require_subcommand(1);
  auto* g = app.add_subcommand("gemm", "NVFP4 W4A16 GEMM vs cuBLAS BF16 and cuBLASLt FP8 on model shapes (GPU)");
#if FP4LAB_HAVE_CUDA
  auto o = std::make_shared<GemmBenchOptions>();
  g->add_option("--models", o->models, "built-in models whose linear shapes to run (none: only --shape)")->delimiter(',');
  g->add_option("--shape", o->extra_shapes, "extra NxK shapes (repeatable)");
  g->add_option("--m", o->ms, "batch sizes M")->delimiter(',');
  g->add_option("--warmup", o->warmup, "warm-up calls");
  g->add_option("--reps", o->reps, "timed batches (median reported)");
  g->add_option("--calls-per-rep", o->calls_per_rep, "calls per timed batch (0: auto, ~0.3 ms)");
  g->add_option("--rotate", o->rotate_factor, "rotating weight copies totalling this multiple of the L2 size");
  g->add_option("--variant", o->variant, "force a W4A16 kernel variant (decode8, decode16, mma32, mma64, mma128, dequant+cublas)");
  g->add_option("--rows-per-block", o->rows_per_block, "with a forced decode variant: 16 or 32 weight rows per block");
  g->add_option("--decode-warps", o->decode_warps, "with a forced decode variant: warps per block (4 or 8)");
  g->add_option("--splits", o->splits, "with a forced mma variant: K splits (0: heuristic)");
  g->add_flag("!--no-baselines", o->baselines, "skip cuBLAS BF16 / cuBLASLt FP8");
  g->add_option("--json", o->json_out, "write results as JSON");
  g->add_flag("-v,--verbose", o->verbose, "report unavailable baselines");
  return [o, g]() {
    if (!g->parsed()) return 0;
    const GpuQuery q = query_gpus();
    if (!q.ok) throw Error("bench gemm needs a CUDA GPU: " + q.error);
    run_gemm_bench(*o);
    return 0;
  };
#else
  return [g]() -> int {
    if (g->parsed()) throw Error("bench gemm needs a CUDA GPU: this fp4lab was built without CUDA");
    return 0;
  };
#endif
}

}  // namespace fp4lab::cli
