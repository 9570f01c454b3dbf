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
  double per_step(int batch) const { return weights + batch * (embedding + kv_cache + ssm_state); }
};

// plans: every linear layer with its execution format (NVFP4 or BF16); context: average tokens in the KV
// cache.
DecodeBytes decode_bytes(const ModelConfig& c, const std::vector<LinearPlan>& plans, double context);

// Roofline decode tokens/s (all sequences of the batch together): the step takes the longer of moving its
// bytes and doing its math. tflops = 0 ignores the compute side.
inline double roofline_decode_tok_s(const DecodeBytes& b, int batch, double bandwidth_gbs,
                                    double tflops = 0) {
  const double t_mem = b.per_step(batch) / (bandwidth_gbs * 1e9);
  const double t_math = tflops > 0 ? batch * b.flops_per_token / (tflops * 1e12) : 0.0;
  return batch / std::max(t_mem, t_math);
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
