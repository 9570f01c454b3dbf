// Model weights as the engine runs them, independent of where they came from (checkpoint or preset).
// Float32 on the host for the CPU backend, which computes with them directly. A GPU backend takes either
// those, or (streamed checkpoints) the stored tensors left in the mapped files, which it copies to the device
// in their stored dtype: the host then holds only the small tensors (norms, Mamba parameters, biases).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "format/nvfp4.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/layout.h"

namespace fp4lab {

struct LinearWeight {
  int64_t n = 0, k = 0;
  std::vector<float> w;              // [n, k] float32 (exactly the dequantized values when nvfp4)
  std::optional<Nvfp4Tensor> nvfp4;  // set when the layer runs as NVFP4
  std::optional<Fp8Tensor> fp8;      // set when the layer runs as FP8 (`w` holds its exact values)
  std::vector<float> bias;           // [n] or empty
  // Streamed checkpoints (ModelWeights::store): the stored tensors, `w` and `nvfp4` left empty.
  const TensorView* stored = nullptr;         // BF16/F16/F32 [n, k], or NVFP4 packed U8 [n, k/2]
  const TensorView* stored_scales = nullptr;  // NVFP4 block scales E4M3 [n, k/16]; null for a float weight
  float stored_tensor_scale = 0.0f;           // NVFP4 per-tensor scale (weight_scale_2)
  // NVFP4 W4A4 checkpoints: the activations' tensor scale (ModelOpt's input_scale; compressed-tensors'
  // 1 / input_global_scale) that Blackwell quantizes this layer's input under; 0 where the checkpoint has
  // none.
  float input_scale = 0.0f;
  // FP8: `stored` is E4M3 [n, k] and this its weight_scale, F32/BF16/F16 [1] (per tensor) or [n] (per row).
  const TensorView* stored_fp8_scale = nullptr;
};

struct LayerWeights {
  LayerKind kind = LayerKind::Decoder;
  std::vector<float> norm;       // [hidden] pre-mixer RMSNorm (input_layernorm / Nemotron-H block norm)
  std::vector<float> post_norm;  // [hidden] Llama post_attention_layernorm
  // attention
  LinearWeight q, k, v, o;
  std::vector<float> q_norm, k_norm;  // [head_dim] Qwen3
  // MLP
  LinearWeight gate, up, down;
  // Mamba-2
  LinearWeight in_proj, out_proj;
  std::vector<float> conv_w;             // [conv_dim, conv_kernel]
  std::vector<float> conv_b;             // [conv_dim]
  std::vector<float> a_log, d, dt_bias;  // [mamba heads]
  std::vector<float> gated_norm;         // [d_inner]
};

struct ModelWeights {
  ModelConfig config;
  std::string source;  // directory or preset:NAME
  QuantMode quant = QuantMode::Auto;
  std::vector<float> embed;  // [vocab_rows(), hidden]
  std::vector<float> final_norm;
  LinearWeight lm_head;  // [vocab_rows(), hidden]; a copy of embed when tied
  // Vocab-parallel shard (tensor parallelism): embed and lm_head hold token ids [vocab_begin, vocab_begin +
  // vocab_rows()), padded with zero rows so that every rank holds the same count. Unsplit: the whole vocab.
  int64_t vocab_begin = 0, vocab_shard_rows = 0;
  bool vocab_parallel() const { return vocab_shard_rows > 0; }
  int64_t vocab_rows() const { return vocab_parallel() ? vocab_shard_rows : config.vocab_size; }
  std::vector<LayerWeights> layers;
  std::vector<LinearPlan> plans;  // per linear layer: NVFP4 or not, and why
  bool synthetic = false;         // a preset: values come from `seed`
  bool materialized = true;  // host tensors filled (false: shapes only; a GPU backend generates on device or
                             // streams from `store`)
  uint64_t seed = 0;
  // Set for a checkpoint loaded without host copies: the mapped files the stored views point into.
  std::shared_ptr<const TensorStore> store;
  const TensorView* embed_stored = nullptr;  // [vocab, hidden] in its stored float dtype
  bool streamed() const { return store != nullptr; }
};

// Where the large tensors of a checkpoint go at load: float32 host copies (the CPU backend, tensor-parallel
// sharding) or left in the mapped files for a GPU backend to copy as stored.
enum class WeightHome { Host, Device };

// Loads a checkpoint directory. NVFP4 tensors are dequantized exactly; with QuantMode::NVFP4, float linear
// layers are quantized at load with the ModelOpt recipe (fused q/k/v and gate/up share a tensor scale);
// QuantMode::BF16 rounds every linear weight to BF16 (the precision a BF16 engine computes with).
// WeightHome::Device keeps the large tensors in the mapped files (falls back to Host for --quant bf16 on an
// NVFP4 checkpoint, whose dequantization runs on the host).
ModelWeights load_weights(const std::string& dir, QuantMode mode, WeightHome home = WeightHome::Host);

// Synthetic weights for a preset, generated deterministically from seed (realistic scales: N(0, 0.02)
// linears, unit norms, Mamba A in [1, 16]). materialize = false leaves the tensors empty (shapes and plans
// only) for backends that generate on device.
// vocab_override > 0 resizes the embedding and lm_head (a preset has no tokenizer of its own; running real
// text through one needs the vocabulary of the tokenizer used).
ModelWeights synthetic_weights(const std::string& preset, QuantMode mode, uint64_t seed,
                               bool materialize = true, int vocab_override = 0);

// Either of the above from a --model string ("preset:NAME" or a directory). host_copy = false is what a GPU
// backend asks for: presets generated on the device, checkpoints streamed from their files.
ModelWeights load_model(const std::string& model, QuantMode mode, uint64_t seed, bool host_copy = true,
                        int preset_vocab_override = 0);

// The seeds a GPU backend generates a preset's large tensors from (fill_random_bf16): the embedding, and one
// per plan in plan order (0 for a tied lm_head, which copies the embedding). `fp4lab export` writes the same
// values, so an exported preset loads to the weights the preset runs with.
uint64_t preset_embed_seed(uint64_t seed);
std::vector<uint64_t> preset_linear_seeds(const ModelWeights& w);

// --lm-head: the lm_head in NVFP4 (quantized at load by the ModelOpt recipe, a tensor scale of its own) or
// in BF16, whatever the checkpoint or the quant mode chose; Auto leaves the plan. Materialized weights are
// quantized (or dequantized) here, exactly as at load; for streamed and generated weights the plan tells the
// GPU backend, which quantizes on the device.
enum class LmHeadMode { Auto, BF16, NVFP4 };
LmHeadMode parse_lm_head_mode(const std::string& s);
const char* lm_head_mode_name(LmHeadMode m);
void apply_lm_head_mode(ModelWeights& mw, LmHeadMode m);
inline ModelWeights with_lm_head(ModelWeights mw, LmHeadMode m) {
  apply_lm_head_mode(mw, m);
  return mw;
}

// The weight a linear-layer spec (role, layer) refers to.
LinearWeight& linear_weight(ModelWeights& w, const LinearSpec& s);
const LinearWeight& linear_weight(const ModelWeights& w, const LinearSpec& s);

// Size of every linear layer's weights (n x k) given in `w.plans`, for presets whose tensors are not
// materialized.
void set_linear_shapes(ModelWeights& w);

}  // namespace fp4lab
