// The linear layers an architecture has, by checkpoint name, and how a checkpoint stores each one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/quant_config.h"
#include "io/safetensors.h"

namespace fp4lab {

struct LinearSpec {
  std::string name;  // module prefix, e.g. "model.layers.0.self_attn.q_proj"
  std::string
      role;        // attn.q, attn.k, attn.v, attn.o, mlp.gate, mlp.up, mlp.down, mamba.in, mamba.out, lm_head
  int layer = -1;  // -1 for lm_head
  int64_t n = 0;   // output features
  int64_t k = 0;   // input features
};

// Canonical module names of the architecture, e.g. embeddings and final norm.
struct ArchNames {
  std::string embed;       // token embedding weight
  std::string final_norm;  // final RMSNorm weight
  std::string lm_head;     // lm_head weight (== embed when tied)
};
ArchNames arch_names(const ModelConfig& c);

std::vector<LinearSpec> linear_layers(const ModelConfig& c);

enum class WeightStorage { BF16, F16, F32, NVFP4_ModelOpt, NVFP4_CompressedTensors, FP8, Missing };
const char* storage_name(WeightStorage s);
// The checkpoint stores the layer's NVFP4 codes (either layout).
inline bool is_nvfp4_storage(WeightStorage s) {
  return s == WeightStorage::NVFP4_ModelOpt || s == WeightStorage::NVFP4_CompressedTensors;
}

struct LinearPlan {
  LinearSpec spec;
  WeightStorage storage = WeightStorage::Missing;  // as the checkpoint has it
  bool nvfp4 = false;                              // runs as NVFP4 under the chosen quant mode
  bool fp8 = false;              // runs as FP8 E4M3 with a per-tensor (or, as stored, per-channel) scale
  bool fp8_per_channel = false;  // the checkpoint's FP8 scale has one value per output row
  std::string reason;            // why this format, in words
};
// "NVFP4", "FP8" or "BF16": how the layer runs.
const char* plan_format_name(const LinearPlan& p);
// Bytes of the layer's weight as the engine streams it per token: NVFP4 codes and block scales, FP8 codes,
// or BF16.
double linear_weight_bytes(const LinearPlan& p);

enum class QuantMode { Auto, BF16, NVFP4, FP8 };
const char* quant_mode_name(QuantMode m);
// --quant auto|bf16|nvfp4|fp8 of the commands that load a model; anything else is an error naming the value.
QuantMode parse_quant_mode(const std::string& q);

// Layers that ModelOpt quantizes with one shared tensor scale (q/k/v of a layer, gate/up); others are alone.
std::string fused_scale_group(const LinearSpec& s);
// The KV cache (BF16, every attention layer at `tokens` positions) and the conv and SSM state (FP32, every
// Mamba layer) of one sequence: what a GPU backend allocates for it.
uint64_t sequence_state_bytes(const ModelConfig& c, int64_t tokens);

// A layer alone in its group whose BF16 source is larger than this is quantized at load on the GPU in row
// chunks of about this size (two passes: the amax, then the codes) instead of from a whole BF16 copy: an
// NVFP4 lm_head of a 131K vocabulary would otherwise stage 1.2 GB beside its codes. The memory plan counts
// the same staging.
constexpr uint64_t kQuantizeChunkBytes = 256ull << 20;

// Default exclusions when fp4lab quantizes a BF16 checkpoint at load, following ModelOpt's defaults and, for
// Nemotron-H, NVIDIA's own NVFP4 checkpoints (attention kept in BF16).
std::vector<std::string> default_nvfp4_excludes(const ModelConfig& c);
// The same for --quant fp8, following ModelOpt's FP8 recipe: every linear layer but the lm_head.
std::vector<std::string> default_fp8_excludes(const ModelConfig& c);

// Decides each linear layer's storage and execution format. Throws on missing tensors or NVFP4 tensors whose
// shapes disagree with the config, naming the tensor.
std::vector<LinearPlan> plan_linears(const ModelConfig& c, const QuantConfig& q, const TensorStore* store,
                                     QuantMode mode);

}  // namespace fp4lab
