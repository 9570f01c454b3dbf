// config.json of the supported architectures, in both the newer (rope_parameters, layers_block_type) and
// the classic (rope_theta/rope_scaling, hybrid_override_pattern) forms.
#pragma once
#include <limits>
#include <string>
#include <vector>

#include "common/json_util.h"

namespace fp4lab {

enum class Arch { Llama, Mistral, Qwen3, NemotronH };
const char* arch_name(Arch a);

// Layer kinds of a hybrid stack; a Llama-family decoder layer is Attention followed by its MLP.
enum class LayerKind { Decoder, Mamba, Attention, Mlp, Moe };
char layer_kind_char(LayerKind k);  // the hybrid_override_pattern letter: M * - E (D for a decoder layer)

struct RopeConfig {
  std::string type = "default";  // default | llama3 | linear | yarn(not supported)
  float theta = 10000.0f;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position = 8192;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string model_type;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_position = 0;
  float norm_eps = 1e-5f;
  bool tie_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  std::string hidden_act = "silu";  // silu (gated MLP) | relu2 (Nemotron-H, ungated)
  RopeConfig rope;
  int bos_id = -1;
  std::vector<int> eos_ids;
  std::vector<LayerKind> layers;  // one entry per hidden layer

  // Mamba-2 (Nemotron-H)
  int mamba_num_heads = 0;
  int mamba_head_dim = 0;
  int ssm_state_size = 0;
  int n_groups = 0;
  int conv_kernel = 0;
  int chunk_size = 0;
  bool use_conv_bias = true;
  bool mamba_proj_bias = false;
  float time_step_limit_min = 0.0f;  // dt clamp; transformers' default is (0, inf)
  float time_step_limit_max = std::numeric_limits<float>::infinity();

  int mamba_d_inner() const { return mamba_num_heads * mamba_head_dim; }
  int mamba_conv_dim() const { return mamba_d_inner() + 2 * n_groups * ssm_state_size; }
  int mamba_in_proj_dim() const {
    return 2 * mamba_d_inner() + 2 * n_groups * ssm_state_size + mamba_num_heads;
  }
  std::string layer_pattern() const;
};

ModelConfig parse_model_config(const json& j, const std::string& source);
ModelConfig load_model_config(const std::string& dir);
// A Hugging Face config.json for c (architectures, model_type and the keys parse_model_config reads, in the
// classic and the newer spellings where both exist); parse_model_config reads it back to c. Non-finite
// numbers (time_step_limit) are kept: write it with dump_json_config.
json model_config_to_json(const ModelConfig& c);

}  // namespace fp4lab
