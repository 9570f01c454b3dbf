// A checkpoint (or preset) summarized: architecture, layer pattern, per-layer formats, parameters and the
// bytes a decoded token must read, in BF16 and in NVFP4.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "model/layout.h"

namespace fp4lab {

struct ModelSummary {
  std::string source;
  ModelConfig config;
  QuantConfig quant;
  std::vector<LinearPlan> linears;     // under QuantMode::Auto (as the checkpoint says)
  std::vector<LinearPlan> nvfp4_plan;  // under QuantMode::NVFP4
  int64_t params_total = 0;            // logical parameters (an NVFP4 weight counts as one)
  int64_t params_linear = 0;
  int64_t params_embedding = 0;
  int64_t params_other = 0;               // norms, conv1d, A/D/dt, biases
  int64_t checkpoint_bytes = 0;           // tensor bytes on disk
  double bytes_per_token_bf16 = 0;        // every linear in BF16
  double bytes_per_token_nvfp4 = 0;       // NVFP4 where the NVFP4 plan says so
  double bytes_per_token_checkpoint = 0;  // as stored
  json to_json(bool with_tensors, const TensorStore* store) const;
};

// Bytes one NVFP4 weight matrix occupies: packed E2M1 + E4M3 block scales + the FP32 tensor scale.
inline double nvfp4_weight_bytes(int64_t n, int64_t k) {
  return n * k / 2.0 + n * k / 16.0 + 4.0;
}

ModelSummary summarize_checkpoint(const std::string& dir, const TensorStore& store);
// For synthetic presets: no tensors, shapes from the config alone.
ModelSummary summarize_config(const std::string& name, const ModelConfig& c);

}  // namespace fp4lab
