// The CUDA run flags shared by generate, bench and eval, declared once so that they stay in step.
#include "commands.h"
#include "common/error.h"

namespace fp4lab::cli {

void add_cuda_run_options(CLI::App& app, CudaRunOptions& o) {
  app.add_option("--tp", o.tp,
                 "cuda: tensor parallelism over this many GPUs (NCCL; Llama family and Nemotron-H)")
      ->check(CLI::Range(1, 64));
  app.add_flag("!--no-graphs", o.graphs,
               "cuda: launch the decode step kernel by kernel instead of as a CUDA graph");
  app.add_option("--attn-splits", o.attn_splits,
                 "cuda: split each decode attention's keys over N blocks (flash-decoding); 0 = from the "
                 "context length and the GPU")
      ->check(CLI::Range(0, 32));
  app.add_flag("!--no-pdl", o.pdl,
               "cuda: launch decode kernels without programmatic dependent launch (sm_90+: by default each "
               "kernel starts while the previous one drains)");
  app.add_flag("!--no-fused-mamba", o.fused_mamba,
               "cuda: run a Mamba decode step as four kernels (conv1d, dt, state update, gated norm) instead "
               "of two");
  app.add_flag("!--no-fused-rope", o.fused_rope,
               "cuda: run RoPE and the KV-cache append of a decode step in a kernel of their own instead of "
               "inside the decode attention kernel");
  app.add_flag("!--no-wgmma", o.wgmma,
               "cuda, sm_90a: never run fp4lab's wgmma NVFP4 GEMMs (by default they take prefill passes of "
               "256-511 tokens on the wide layers, where they beat dequantizing to BF16 for cuBLAS)");
  app.add_option("--fp8-gemv-rows", o.fp8_gemv_rows,
                 "cuda: FP8 linear layers with at most N rows run fp4lab's W8A16 GEMV; more rows run W8A8 "
                 "(or dequantize, --no-fp8-w8a8); 0 = never the GEMV")
      ->check(CLI::Range(0, kFp8GemvMaxRows));
  app.add_flag("!--no-fp8-w8a8", o.fp8_w8a8,
               "cuda: FP8 layers past the GEMV's rows dequantize to BF16 for cuBLAS (W8A16 numerics) instead "
               "of running W8A8 on FP8 tensor cores (sm_89+, activations quantized per tensor)");
  app.add_option("--bf16-gemv-rows", o.bf16_gemv_rows,
                 "cuda: BF16 linear layers with at most N rows (decode batch) run fp4lab's GEMV instead of "
                 "cuBLAS; 0 = cuBLAS always")
      ->check(CLI::Range(0, kBf16GemvMaxRows));
  app.add_option_function<std::string>(
         "--gpu-memory-limit", [&o](const std::string& v) { o.gpu_memory_limit = parse_byte_size(v); },
         "cuda: keep the whole process (CUDA context included) under this much GPU memory, e.g. 7.5GiB "
         "or 8000MB; the memory plan is checked before loading and fp4lab's buffers are capped (default: "
         "the GPU's free memory, not capped)")
      ->check([](const std::string& s) {
        try {
          parse_byte_size(s);
          return std::string();
        } catch (const Error& e) {
          return std::string(e.what());
        }
      });
  app.add_option_function<std::string>(
         "--embedding", [&o](const std::string& v) { o.embedding = parse_embedding_place(v); },
         "cuda: where the embedding table lives: gpu, host (pinned host memory, one row per token over "
         "PCIe) or auto (the GPU unless the memory plan does not fit)")
      ->check(CLI::IsMember({"auto", "gpu", "host"}));
  app.add_option_function<std::string>(
         "--lm-head", [&o](const std::string& v) { o.lm_head = parse_lm_head_mode(v); },
         "the lm_head's format: bf16, nvfp4 (quantized at load: a quarter of the bytes, an accuracy "
         "cost; docs/memory.md) or auto (as the checkpoint and --quant say; on cuda, NVFP4 only where "
         "the memory plan does not fit otherwise)")
      ->check(CLI::IsMember({"auto", "bf16", "nvfp4"}));
}

SessionOptions session_options(const std::string& backend, int threads, const CudaRunOptions& o) {
  SessionOptions s;
  s.backend = backend;
  s.threads = threads;
  s.cuda = o;
  return s;
}

}  // namespace fp4lab::cli
