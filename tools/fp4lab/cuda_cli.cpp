// The CUDA run flags shared by generate, bench and eval, declared once so that they stay in step.
#include "commands.h"
#include "common/error.h"

namespace fp4lab::cli {

void add_cuda_run_options(CLI::App& app, CudaCliOptions& o) {
  app.add_option("--tp", o.tp,
                 "cuda: tensor parallelism over this many GPUs (NCCL; Llama family and Nemotron-H)")
      ->check(CLI::Range(1, 64));
  app.add_flag("--no-graphs", o.no_graphs,
               "cuda: launch the decode step kernel by kernel instead of as a CUDA graph");
  app.add_option("--attn-splits", o.attn_splits,
                 "cuda: split each decode attention's keys over N blocks (flash-decoding); 0 = from the "
                 "context length and the GPU")
      ->check(CLI::Range(0, 32));
  app.add_flag("--no-pdl", o.no_pdl,
               "cuda: launch decode kernels without programmatic dependent launch (sm_90+: by default each "
               "kernel starts while the previous one drains)");
  app.add_flag("--no-fused-mamba", o.no_fused_mamba,
               "cuda: run a Mamba decode step as four kernels (conv1d, dt, state update, gated norm) instead "
               "of two");
  app.add_flag("--no-fused-rope", o.no_fused_rope,
               "cuda: run RoPE and the KV-cache append of a decode step in a kernel of their own instead of "
               "inside the decode attention kernel");
  app.add_option("--bf16-gemv-rows", o.bf16_gemv_rows,
                 "cuda: BF16 linear layers with at most N rows (decode batch) run fp4lab's GEMV instead of "
                 "cuBLAS; 0 = cuBLAS always")
      ->check(CLI::Range(0, kBf16GemvMaxRows));
}

void echo_cuda_run_options(nlohmann::json& options, const CudaCliOptions& o) {
  options["tp"] = o.tp;
  options["no_graphs"] = o.no_graphs;
  options["attn_splits"] = o.attn_splits;
  options["pdl"] = !o.no_pdl;
  options["fused_mamba"] = !o.no_fused_mamba;
  options["fused_rope"] = !o.no_fused_rope;
  options["bf16_gemv_rows"] = o.bf16_gemv_rows;
}

CudaRunOptions cuda_run_options(const CudaCliOptions& o, bool profile) {
  CudaRunOptions r;
  r.tp = o.tp;
  r.graphs = !o.no_graphs;
  r.attn_splits = o.attn_splits;
  r.profile = profile;
  r.pdl = !o.no_pdl;
  r.fused_mamba = !o.no_fused_mamba;
  r.fused_rope = !o.no_fused_rope;
  r.bf16_gemv_rows = o.bf16_gemv_rows;
  return r;
}

void require_cuda_for_tp(const CudaCliOptions& o, const std::string& backend) {
  if (o.tp > 1 && backend != "cuda") throw Error("--tp " + std::to_string(o.tp) + " needs --backend cuda");
}

}  // namespace fp4lab::cli
