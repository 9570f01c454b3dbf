// One way for every command to run a model on the CUDA backend, on one GPU or tensor-parallel over several.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <utility>

#include "engine/backends.h"
#include "cuda/launch.h"
#include "cuda/tensor_parallel.h"
#include "cuda/device_memory.h"
#include "cuda/run_options.h"
#include "cuda/gpu_telemetry.h"
#include "cuda/memory_plan.h"
#include "model/tensor_parallel.h"

namespace fp4lab {

// Calls fn(model, ops, rank) once per rank, each on its own GPU and thread with its shard of `full`. Every
// rank must do the same work (the all-reduces keep the ranks' hidden states, and so their tokens, identical);
// rank 0 is the one that reports, so fn writes shared results only when rank == 0. tp = 1 runs on GPU 0
// without NCCL.
// One GPU's memory for one run: plans it before anything is allocated (an error naming what does not fit
// under the limit, before the load starts), caps fp4lab's buffers at the limit under --gpu-memory-limit,
// samples the GPU's used memory (NVML) while the run lasts, and fills the report (o.report) when the run
// ends, also by an exception.
class MemoryGuard {
 public:
  MemoryGuard(ModelWeights& w, const CudaRunOptions& o, MemoryReport& rep) : o_(o), rep_(rep) {
    CUDA_CHECK(cudaSetDevice(0));
    CUDA_CHECK(cudaFree(nullptr));  // the context exists from here: measure it
    baseline_ = gpu_memory_baseline();
    const uint64_t now = baseline_ ? nvml_memory_used(0) : 0;
    const uint64_t held = device_memory_use().in_use;
    rep.context_measured = baseline_ && now >= baseline_ + held;
    const uint64_t context = rep.context_measured ? now - baseline_ - held : kContextEstimateBytes;
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    rep.limit_from_flag = o.gpu_memory_limit > 0;
    rep.limit = o.gpu_memory_limit ? o.gpu_memory_limit : free_b + context + held;
    int sm = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sm, cudaDevAttrMultiProcessorCount, 0));
    MemoryPlanInput in;
    in.config = w.config;
    in.plans = w.plans;
    in.vocab_rows = w.vocab_rows();
    in.batch = o.shape.batch;
    in.tokens_per_sequence = o.shape.tokens_per_sequence;
    in.forward_tokens = o.shape.forward_tokens;
    in.longest_prompt = o.shape.longest_prompt;
    in.logits_rows = o.shape.logits_rows;
    in.sm_count = sm;
    in.wgmma = o.wgmma && wgmma_supported();
    int cc_major = 0, cc_minor = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, 0));
    CUDA_CHECK(cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, 0));
    in.fp8_w8a8 = o.fp8_w8a8 && cc_major * 10 + cc_minor >= 89;
    in.fp8_gemv_rows = o.fp8_gemv_rows;
    in.context_bytes = context;
    rep.fit = fit_memory(in, rep.limit, o.embedding, o.lm_head == LmHeadMode::Auto);
    if (rep.fit.lm_head_nvfp4) apply_lm_head_mode(w, LmHeadMode::NVFP4);
    if (o.report) *o.report = rep;
    if (rep.limit_from_flag) {
      // Room outside fp4lab's buffers: the context, and the modules, cuBLAS and graphs that load during the run.
      const uint64_t outside = context + kLibrariesBytes;
      if (rep.limit <= outside)
        throw Error("--gpu-memory-limit " + format_bytes(rep.limit) + " leaves nothing beside the CUDA context (" +
                    format_bytes(context) + ")");
      set_device_memory_cap(rep.limit - outside, "--gpu-memory-limit " + format_bytes(rep.limit));
    }
    reset_device_memory_peak();
    if (baseline_)
      sampler_ = std::thread([this] {
        while (!stop_) {
          const uint64_t u = nvml_memory_used(0);
          uint64_t p = peak_.load();
          while (u > p && !peak_.compare_exchange_weak(p, u)) {
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
  }
  ~MemoryGuard() {
    stop_ = true;
    if (sampler_.joinable()) sampler_.join();
    set_device_memory_cap(0, "");
    rep_.buffers_peak = device_memory_use().peak;
    rep_.process_peak = baseline_ && peak_ > baseline_ ? peak_ - baseline_ : 0;
    if (o_.report) *o_.report = rep_;
  }
  MemoryGuard(const MemoryGuard&) = delete;
  MemoryGuard& operator=(const MemoryGuard&) = delete;

 private:
  const CudaRunOptions& o_;
  MemoryReport& rep_;
  uint64_t baseline_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_{0};
  std::thread sampler_;
};

template <class F>
void run_cuda_model(ModelWeights full, const CudaRunOptions& o, F&& fn) {
  set_programmatic_launch(o.pdl);
  apply_lm_head_mode(full, o.lm_head);
  auto configure = [&](CudaOps& ops) {
    ops.set_attention_splits(o.attn_splits);
    ops.set_profile(o.profile);
    ops.set_fused_mamba(o.fused_mamba);
    ops.set_fused_rope(o.fused_rope);
    ops.set_bf16_gemv_rows(o.bf16_gemv_rows);
    ops.set_wgmma(o.wgmma);
    ops.set_fp8_gemv_rows(o.fp8_gemv_rows);
    ops.set_fp8_w8a8(o.fp8_w8a8);
  };
  if (o.tp == 1) {
    MemoryReport rep;
    const MemoryGuard guard(full, o, rep);
    CudaOps ops(0, o.graphs);
    configure(ops);
    ops.set_embedding_on_host(rep.fit.embedding_on_host);
    CudaModel m(std::move(full), ops);
    ops.reserve_arena(rep.fit.plan.arena_bytes);
    fn(m, ops, 0);
    rep.arena_growths = ops.arena_growths();
    return;
  }
  // Tensor-parallel shards are cut from host tensors (shard_for_tensor_parallel); a streamed checkpoint is
  // read again into them.
  if (full.streamed()) full = load_weights(full.source, full.quant, WeightHome::Host);
  run_tensor_parallel(o.tp, o.graphs, [&](int rank, CudaOps& ops) {
    configure(ops);
    CudaModel m(shard_for_tensor_parallel(full, rank, o.tp), ops);
    fn(m, ops, rank);
  });
}

}  // namespace fp4lab
