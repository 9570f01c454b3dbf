// What a run on one GPU holds in device memory, counted before anything is allocated: weights by kind, the
// embedding, the lm_head, KV and SSM state per sequence, the activation arena of the largest forward, the
// logits, GEMM / attention / scan workspaces, and the CUDA context. The CUDA backend sizes its arena from
// the plan and caps its allocations at the limit (cuda/device_memory.h); bench, generate, eval, inspect
// --memory and explain print it. Plain C++: explain plans GPUs that are not present.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/layout.h"

namespace fp4lab {

// Where the embedding table lives. Host: pinned host memory the GPU reads over PCIe, one row per token (a few
// KB per decoded token); it frees vocab x hidden x 2 bytes of GPU memory. Auto: on the GPU unless the plan
// does not fit the limit.
enum class EmbeddingPlace { Auto, Gpu, Host };
const char* embedding_place_name(EmbeddingPlace p);
EmbeddingPlace parse_embedding_place(const std::string& s);

// The workspace of the cuBLASLt products (LtGemm: FP8 W8A8, and the baselines of `bench gemm`).
constexpr uint64_t kLtGemmWorkspaceBytes = 64ull << 20;

struct MemoryPlanInput {
  ModelConfig config;
  std::vector<LinearPlan> plans;
  int64_t vocab_rows = 0;       // embedding / lm_head rows on this GPU (the vocabulary unless vocab-parallel)
  int batch = 1;                // sequences decoded together
  int tokens_per_sequence = 0;  // prompt + new tokens: each sequence's KV capacity
  int forward_tokens = 0;       // the most tokens one forward holds (a prefill pass)
  int longest_prompt = 0;       // a prompt is prefilled in one forward: the least forward_tokens can be
  int logits_rows = 0;          // the most rows scored at once (0: batch; eval ppl scores every token)
  bool embedding_on_host = false;
  int sm_count = 132;          // the GEMM heuristic's workspaces depend on it
  bool wgmma = false;          // and whether it may pick the Wgmma variants (their B-image scratch)
  // FP8 layers past the GEMV's rows run W8A8 (FP8 tensor cores and --fp8-w8a8) rather than dequantizing to a
  // BF16 scratch copy of the weight.
  bool fp8_w8a8 = false;
  int fp8_gemv_rows = 2;       // CudaRunOptions::fp8_gemv_rows (run_options.h includes this header)
  uint64_t context_bytes = 0;  // the CUDA context and libraries (measured where the GPU is present)
};

struct MemoryItem {
  std::string name;
  uint64_t bytes = 0;
  bool on_host = false;  // pinned host memory, not on the GPU
};

struct MemoryPlan {
  std::vector<MemoryItem> weights;  // resident for the whole run
  std::vector<MemoryItem> run;      // allocated once the model is loaded (state, activations, workspaces)
  uint64_t load_transient = 0;      // the most the load holds beside the final weights (one tensor's staging)
  uint64_t context_bytes = 0;
  uint64_t arena_bytes = 0;         // the activation arena (also one of `run`)
  uint64_t state_per_sequence = 0;  // KV cache + SSM/conv state of one sequence
  // Device bytes of fp4lab's own buffers at their peak: the weights plus the larger of the load's staging
  // and what the run allocates.
  uint64_t buffers_peak() const;
  // buffers_peak() plus the CUDA context and kLibrariesBytes: what the process holds on the GPU at its peak.
  uint64_t device_peak() const;
  uint64_t weights_on_gpu() const;
  uint64_t host_pinned() const;
};

MemoryPlan plan_memory(const MemoryPlanInput& in);

// The CUDA context with cuBLAS loaded, where it cannot be measured (explain, inspect): ~500 MiB on the
// H100 with CUDA 13 (docs/memory.md).
constexpr uint64_t kContextEstimateBytes = 512ull << 20;
// What the process holds on the GPU beyond the context (as measured right after it is created) and fp4lab's
// buffers: kernel modules loaded on first use, cuBLAS's own allocations, CUDA graphs. Measured on an H100
// with CUDA 13, Nemotron-Nano-9B-v2 NVFP4 (NVML process peak - buffer peak - context;
// docs/perf/memory-h100.md): 351-353 MiB for bench at batch 1, 476 MiB for GSM8K at batch 4 with 4K-token
// prefills (more graphs, cuBLAS at prompt sizes). The larger, rounded up.
constexpr uint64_t kLibrariesBytes = 480ull << 20;
// Of a GPU's datasheet memory (GiB), what a process can count on for a GPU that is not present: the driver
// keeps a reserve, and a laptop's display takes its share (an H100 80GB reports 79.2 GiB of 80).
constexpr double kUsableFraction = 0.94;

// What a plan keeps free under a limit: the allocator's rounding, fragmentation and what cuBLAS and CUDA
// graphs allocate themselves are not in the plan (2% of the limit, at least 128 MiB).
uint64_t plan_headroom(uint64_t limit);

// A plan that fits under `limit` less plan_headroom (device bytes for the whole process), the automatic
// choices made on the way, or an error naming what does not fit and what would make it fit. In order, each
// only if the one before does not fit: the embedding in host memory (embedding Auto; no accuracy cost),
// smaller prefill passes (halving forward_tokens down to the longest prompt; the run then prefills with
// that budget: slower prompts, same tokens), then the lm_head quantized to NVFP4 at load
// (may_quantize_lm_head: --lm-head auto; it costs accuracy, measured in docs/memory.md).
struct MemoryFit {
  MemoryPlan plan;
  bool embedding_on_host = false;
  bool lm_head_nvfp4 = false;  // the lm_head plan was switched to NVFP4 to fit
  int forward_tokens = 0;      // the prefill budget the plan fits with (the input's unless lowered)
  bool prefill_lowered = false;
  // The prefill budget a run should use: `asked` unless the plan lowered it to fit.
  int prefill_tokens(int asked) const { return prefill_lowered ? forward_tokens : asked; }
  std::vector<std::string> choices;  // in words, for the results ("embedding in pinned host memory: ...")
};
MemoryFit fit_memory(MemoryPlanInput in, uint64_t limit, EmbeddingPlace embedding,
                     bool may_quantize_lm_head = false);

// "7.5GiB", "8000MB", "8e9", "123456": a byte count (GiB/MiB/KiB binary; GB/MB/KB decimal; bare = bytes).
uint64_t parse_byte_size(const std::string& s);
// 7.50 GiB, 812 MiB, 64 KiB.
std::string format_bytes(uint64_t b);
// The plan as an aligned table, one item per line, then the totals and the limit if any.
std::string memory_plan_table(const MemoryPlan& p, uint64_t limit = 0);

}  // namespace fp4lab
