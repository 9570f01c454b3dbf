// How a command runs a model on the CUDA backend (run_cuda_model in engine/cuda_run.h). Plain C++, so that
// the CLI can build it in any build.
#pragma once

namespace fp4lab {

// BF16 linear layers with at most this many rows run the engine's GEMV (cuda/bf16_gemv.h) instead of cuBLAS
// (0: cuBLAS always). The GEMV takes up to kBf16GemvMaxRows; kernel-notes #71 has the measurements behind
// the default.
constexpr int kBf16GemvMaxRows = 4;
constexpr int kDefaultBf16GemvRows = 2;

struct CudaRunOptions {
  int tp = 1;               // GPUs (ranks); > 1 splits the model Megatron-style through NCCL
  bool graphs = true;       // capture single-sequence decode steps in CUDA graphs
  int attn_splits = 0;      // decode attention splits (0: automatic)
  bool profile = false;     // per-op-class event timing (turns graphs off)
  bool pdl = true;          // programmatic dependent launch of the decode kernels (sm_90+)
  bool fused_mamba = true;  // the Mamba decode step in two kernels instead of four
  bool fused_rope = true;   // RoPE and the KV-cache append inside decode attention
  int bf16_gemv_rows = kDefaultBf16GemvRows;  // BF16 linear layers with up to this many rows: the GEMV
};

}  // namespace fp4lab
