// How a command runs a model on the CUDA backend (run_cuda_model in engine/cuda_run.h): the one struct the
// CUDA flags are parsed into and echoed from. Plain C++, so that the CLI can build it in any build.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cuda/memory_plan.h"
#include "model/weights.h"

namespace fp4lab {

// BF16 linear layers with at most this many rows run the engine's GEMV (cuda/bf16_gemv.h) instead of cuBLAS
// (0: cuBLAS always). The GEMV takes up to kBf16GemvMaxRows; kernel-notes #71 has the measurements behind
// the default.
constexpr int kBf16GemvMaxRows = 4;
constexpr int kDefaultBf16GemvRows = 2;
// FP8 layers with at most this many rows run the W8A16 GEMV (cuda/fp8_linear.h), which takes up to
// kFp8GemvMaxRows; more rows run W8A8 (or dequantize).
constexpr int kFp8GemvMaxRows = 8;
constexpr int kDefaultFp8GemvRows = 2;

// The workload the memory plan sizes the run for (set by the command, which knows its prompts).
struct MemoryShape {
  int batch = 1;                // sequences decoded together
  int tokens_per_sequence = 0;  // the longest prompt plus the new tokens
  int forward_tokens = 0;       // the most tokens of one forward (a prefill pass)
  int longest_prompt = 0;       // the least a prefill pass can hold
  int logits_rows = 0;          // rows scored at once (0: batch; every token for perplexity)
};
// prompt lengths and the generate options -> the shape: the longest prompt plus max_new_tokens per
// sequence; a prefill pass of up to prefill_tokens (a longer prompt alone).
MemoryShape memory_shape_for(const std::vector<int>& prompt_lengths, int max_new_tokens, int batch,
                             int prefill_tokens);

// What a run held, against its plan: the plan (and the automatic choices), the limit it ran under, the
// peak of fp4lab's buffers, and the GPU's used memory at its highest reading less the reading before the
// process touched CUDA (NVML; 0 where unavailable). Filled once the plan fits (the run reads
// fit.forward_tokens as its prefill budget) and again when the run ends.
struct MemoryReport {
  MemoryFit fit;
  uint64_t limit = 0;
  bool limit_from_flag = false;
  uint64_t buffers_peak = 0;
  uint64_t process_peak = 0;
  bool context_measured = false;
  int arena_growths = 0;
  std::string summary() const;  // one line for stderr
};

struct CudaRunOptions {
  int tp = 1;               // GPUs (ranks); > 1 splits the model Megatron-style through NCCL
  bool graphs = true;       // capture single-sequence decode steps in CUDA graphs
  int attn_splits = 0;      // decode attention splits (0: automatic)
  bool profile = false;     // per-op-class event timing (turns graphs off)
  bool pdl = true;          // programmatic dependent launch of the decode kernels (sm_90+)
  bool fused_mamba = true;  // the Mamba decode step in two kernels instead of four
  bool fused_rope = true;   // RoPE and the KV-cache append inside decode attention
  int bf16_gemv_rows = kDefaultBf16GemvRows;  // BF16 linear layers with up to this many rows: the GEMV
  // sm_90a: the NVFP4 GEMM heuristic may pick the wgmma kernels (where they measured faster than dequantize
  // + cuBLAS: 256-511 rows on the wide layers, gemm_heuristics.cpp); no effect on other GPUs.
  bool wgmma = true;
  int fp8_gemv_rows = kDefaultFp8GemvRows;  // FP8 layers with up to this many rows: the W8A16 GEMV
  // FP8 layers past the GEMV's rows: W8A8 on FP8 tensor cores (sm_89+; activations quantized per tensor),
  // or with false, dequantized to BF16 for cuBLAS (W8A16 numerics at every batch size).
  bool fp8_w8a8 = true;
  // GPU memory: the whole process (context included) stays under the limit (0: the GPU's free memory);
  // the memory plan is checked against it before loading and fp4lab's buffers are capped at it.
  uint64_t gpu_memory_limit = 0;
  EmbeddingPlace embedding = EmbeddingPlace::Auto;
  // --lm-head as given (the command applies an explicit one at load); Auto lets the plan quantize the lm_head
  // when nothing else fits.
  LmHeadMode lm_head = LmHeadMode::Auto;
  MemoryShape shape;               // the workload, for the plan
  MemoryReport* report = nullptr;  // filled by run_cuda_model where given
};

// The options a user sets, as a results document's "options" echo them (keys as the flags name them;
// profile, shape and report belong to the command and are echoed by it).
void echo_cuda_run_options(nlohmann::json& options, const CudaRunOptions& o);

}  // namespace fp4lab
