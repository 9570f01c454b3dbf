// The interface a backend implements for the Runner (engine/runner.h), named in one place: CpuOps
// (cpu/cpu_ops.h, the reference) and CudaOps (cuda/cuda_ops.h) model it.
//
// Required (the Backend concept below checks the lifecycle, state and step-output part by signature):
//   Tensor, State          a 2-D activation buffer; one sequence's KV / conv / SSM caches
//   name, supports(Op)     what the backend is called and which model/op.h operations it runs
//   prepare(weights)       takes the model's weights (the CUDA backend uploads them)
//   new_state, state_pos, state_capacity, advance
//   alloc, alloc_residual, rows, write_rows, columns
//   embed, linear, linear_group, linear_swiglu, linear_relu2, rmsnorm, add_rmsnorm, rmsnorm_heads,
//   attention, softplus_dt, causal_conv1d_silu, ssm_scan, gated_rmsnorm
//   logits_async, argmax_async, top_logits_async, set_pick, fetch_logits, fetch_argmax, fetch_top_logits
//   graphs_enabled, run_decode_graph, run_decode_graph_argmax, run_decode_graph_top
//   begin_forward, arena_mark, arena_rewind
// Optional, each a concept the runner tests with `if constexpr`:
//   TensorParallelBackend  all_reduce: row-parallel layers' partial sums added across ranks
//   BatchedBackend         begin_batch, attention_batch, conv1d_silu_batch, ssm_step_batch, advance_batch:
//                          one launch per op for all sequences of a decode step (else a loop per sequence)
//   SegmentBackend         attention_segments, conv1d_silu_segments, ssm_scan_segments: a batched prefill's
//                          per-prompt ops in one go (each may decline a shape; the loop runs it then)
//   FusedMambaStepBackend  mamba_decode_step: the Mamba decode step fused (may decline a shape)
#pragma once
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cpu/reference.h"
#include "model/op.h"
#include "model/weights.h"

namespace fp4lab {

template <class Ops>
concept Backend = requires(Ops& o, const Ops& co, typename Ops::State& s, const ModelConfig& c,
                           const ModelWeights& w, std::span<const uint64_t> seeds, Op op) {
  typename Ops::Tensor;
  typename Ops::State;
  { co.name() } -> std::convertible_to<std::string>;
  { co.supports(op) } -> std::same_as<bool>;
  o.prepare(w);
  { o.new_state(c, 1) } -> std::same_as<typename Ops::State>;
  { co.state_pos(s) } -> std::convertible_to<int>;
  { co.state_capacity(s) } -> std::convertible_to<int>;
  { co.graphs_enabled() } -> std::convertible_to<bool>;
  o.set_pick(0.0f, seeds);
  { o.fetch_logits() } -> std::same_as<std::vector<float>>;
  { o.fetch_argmax() } -> std::same_as<std::vector<int>>;
  { o.fetch_top_logits() } -> std::same_as<std::vector<std::vector<cpu::TopLogit>>>;
};

template <class Ops>
concept TensorParallelBackend = Backend<Ops> && requires(Ops& o, typename Ops::Tensor& x) {
  o.all_reduce(x);
};

template <class Ops>
concept BatchedBackend = Backend<Ops> && requires(Ops& o, std::span<typename Ops::State* const> st) {
  o.begin_batch(st);
};

template <class Ops>
concept SegmentBackend = Backend<Ops> && requires {
  &Ops::attention_segments;
  &Ops::conv1d_silu_segments;
  &Ops::ssm_scan_segments;
};

template <class Ops>
concept FusedMambaStepBackend = Backend<Ops> && requires {
  &Ops::mamba_decode_step;
};

}  // namespace fp4lab
