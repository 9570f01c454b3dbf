// One way for every command to run a model on the CUDA backend, on one GPU or tensor-parallel over several.
#pragma once
#include <utility>

#include "cuda/cuda_ops.h"
#include "cuda/launch.h"
#include "cuda/tensor_parallel.h"
#include "engine/cuda_run_options.h"
#include "model/tensor_parallel.h"

namespace fp4lab {

// Calls fn(model, ops, rank) once per rank, each on its own GPU and thread with its shard of `full`. Every
// rank must do the same work (the all-reduces keep the ranks' hidden states, and so their tokens, identical);
// rank 0 is the one that reports, so fn writes shared results only when rank == 0. tp = 1 runs on GPU 0
// without NCCL.
template <class F>
void run_cuda_model(ModelWeights full, const CudaRunOptions& o, F&& fn) {
  set_programmatic_launch(o.pdl);
  auto configure = [&](CudaOps& ops) {
    ops.set_attention_splits(o.attn_splits);
    ops.set_profile(o.profile);
    ops.set_fused_mamba(o.fused_mamba);
    ops.set_fused_rope(o.fused_rope);
    ops.set_bf16_gemv_rows(o.bf16_gemv_rows);
  };
  if (o.tp == 1) {
    CudaOps ops(0, o.graphs);
    configure(ops);
    CudaModel m(std::move(full), ops);
    fn(m, ops, 0);
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
