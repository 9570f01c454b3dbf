// What a decode step must move through memory, and the tokens/s that bandwidth allows: the numbers `fp4lab
// bench` and `fp4lab explain` put next to measurements.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/layout.h"

namespace fp4lab {

struct DecodeBytes {
  double weights = 0;    // linear weights read once per step (shared by the batch)
  double embedding = 0;  // one embedding row per token
  double kv_cache = 0;   // attention KV read per token at the given context
  double ssm_state = 0;  // Mamba conv + SSM state, read and written per token
  double flops_per_token =
      0;  // 2 x linear parameters (the GEMMs; attention and scan are small at short context)
  // Tensor parallelism (decode_bytes_tp): the shards above are one GPU's; each step also sums `allreduces`
  // row-parallel outputs of allreduce_bytes per sequence across the GPUs.
  int tp = 1;
  int allreduces = 0;
  double allreduce_bytes = 0;
  double allgather_bytes = 0;  // the vocab-parallel logits of one sequence (FP32), gathered once per step
  double per_step(int batch) const { return weights + batch * (embedding + kv_cache + ssm_state); }
};

// The link a tensor-parallel all-reduce crosses: a fixed cost per call and the bus bandwidth NCCL gets.
struct CommSpec {
  std::string link;
  double latency_us;  // per all-reduce of a small message (launch + synchronization)
  double bus_gbs;     // NCCL "busBw" (per GPU, per direction) for large messages
  std::string source;
};
// "nvlink" (NVLink 4, H100/H200 SXM) or "pcie"; anything else throws.
const CommSpec& comm_spec(const std::string& link);

// Seconds for one ring all-reduce of `bytes` over tp GPUs: each GPU sends and receives 2 (tp - 1) / tp of the
// message, after the fixed latency.
inline double allreduce_seconds(double bytes, int tp, const CommSpec& c) {
  if (tp <= 1) return 0.0;
  return c.latency_us * 1e-6 + 2.0 * (tp - 1) / tp * bytes / (c.bus_gbs * 1e9);
}

// plans: every linear layer with its execution format (NVFP4 or BF16); context: average tokens in the KV
// cache.
DecodeBytes decode_bytes(const ModelConfig& c, const std::vector<LinearPlan>& plans, double context);
// One GPU's share under Megatron tensor parallelism over tp GPUs (the sharding of model/tensor_parallel.h):
// linear weights (lm_head included: vocab-parallel), their FLOPs, the KV cache and the SSM state divided by
// tp; one all-reduce of a hidden row per row-parallel output (two per Llama decoder layer, one per
// Nemotron-H layer) and one after the vocab-parallel embedding lookup; one all-gather of the logits.
DecodeBytes decode_bytes_tp(const ModelConfig& c, const std::vector<LinearPlan>& plans, double context,
                            int tp);

// Seconds for one ring all-gather whose result is `bytes`: each GPU receives (tp - 1) / tp of it.
inline double allgather_seconds(double bytes, int tp, const CommSpec& c) {
  if (tp <= 1) return 0.0;
  return c.latency_us * 1e-6 + (tp - 1.0) / tp * bytes / (c.bus_gbs * 1e9);
}

// Seconds of communication in one decode step of `batch` sequences: the all-reduces and the logits'
// all-gather (0 without tensor parallelism).
inline double step_comm_seconds(const DecodeBytes& b, int batch, const CommSpec& c) {
  return b.allreduces * allreduce_seconds(batch * b.allreduce_bytes, b.tp, c) +
         (b.allgather_bytes > 0 ? allgather_seconds(batch * b.allgather_bytes, b.tp, c) : 0.0);
}

// Roofline decode tokens/s (all sequences of the batch together): the step takes the longer of moving its
// bytes and doing its math, plus, under tensor parallelism, its communication (it does not overlap with the
// layer that produces its input). tflops = 0 ignores the compute side; comm = nullptr the communication.
inline double roofline_decode_tok_s(const DecodeBytes& b, int batch, double bandwidth_gbs, double tflops = 0,
                                    const CommSpec* comm = nullptr) {
  const double t_mem = b.per_step(batch) / (bandwidth_gbs * 1e9);
  const double t_math = tflops > 0 ? batch * b.flops_per_token / (tflops * 1e12) : 0.0;
  const double t_comm = comm ? step_comm_seconds(b, batch, *comm) : 0.0;
  return batch / (std::max(t_mem, t_math) + t_comm);
}

struct GpuSpec {
  std::string name;
  double bandwidth_gbs;  // datasheet memory bandwidth
  double bf16_tflops;    // dense BF16 tensor throughput (datasheet; approximate for consumer parts)
  int cc_major, cc_minor;
  double memory_gb;
  std::string source;  // where the figures come from
};
const std::vector<GpuSpec>& datasheet_gpus();
const GpuSpec* find_gpu_spec(const std::string& name);  // case-insensitive substring match

}  // namespace fp4lab
