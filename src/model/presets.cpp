#include "model/presets.h"

namespace fp4lab {

namespace {

ModelConfig llama_like(Arch arch, int hidden, int inter, int layers, int heads, int kv, int head_dim,
                       int vocab, float theta, bool tied, float eps) {
  ModelConfig c;
  c.arch = arch;
  c.model_type = arch_name(arch);
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv;
  c.head_dim = head_dim;
  c.vocab_size = vocab;
  c.max_position = 131072;
  c.norm_eps = eps;
  c.tie_embeddings = tied;
  c.rope.theta = theta;
  c.bos_id = 1;
  c.eos_ids = {2};
  c.layers.assign(static_cast<size_t>(layers), LayerKind::Decoder);
  return c;
}

ModelConfig llama3_rope(ModelConfig c) {
  c.rope.type = "llama3";
  c.rope.factor = 8.0f;
  c.rope.low_freq_factor = 1.0f;
  c.rope.high_freq_factor = 4.0f;
  c.rope.original_max_position = 8192;
  return c;
}

ModelConfig nemotron_h(int hidden, const std::string& pattern, int heads, int kv, int head_dim, int mlp,
                       int mheads, int mhead_dim, int state, int groups, int vocab, int chunk) {
  ModelConfig c;
  c.arch = Arch::NemotronH;
  c.model_type = "nemotron_h";
  c.hidden_size = hidden;
  c.intermediate_size = mlp;
  c.num_heads = heads;
  c.num_kv_heads = kv;
  c.head_dim = head_dim;
  c.vocab_size = vocab;
  c.max_position = 131072;
  c.norm_eps = 1e-5f;
  c.tie_embeddings = false;
  c.hidden_act = "relu2";
  c.mamba_num_heads = mheads;
  c.mamba_head_dim = mhead_dim;
  c.ssm_state_size = state;
  c.n_groups = groups;
  c.conv_kernel = 4;
  c.chunk_size = chunk;
  c.bos_id = 1;
  c.eos_ids = {2};
  for (char ch : pattern)
    c.layers.push_back(ch == 'M' ? LayerKind::Mamba : ch == '*' ? LayerKind::Attention : LayerKind::Mlp);
  c.num_layers = static_cast<int>(c.layers.size());
  return c;
}

std::vector<Preset> make_presets() {
  std::vector<Preset> p;
  p.push_back({"nemotron-nano-9b-v2", "NVIDIA-Nemotron-Nano-9B-v2 shapes (Mamba-2 hybrid, 56 layers)",
               nemotron_h(4480, "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-", 40, 8, 128, 15680,
                          128, 80, 128, 8, 131072, 128)});
  p.push_back(
      {"llama-3.1-8b", "Llama-3.1-8B shapes",
       llama3_rope(llama_like(Arch::Llama, 4096, 14336, 32, 32, 8, 128, 128256, 500000.0f, false, 1e-5f))});
  p.push_back({"qwen3-8b", "Qwen3-8B shapes (q/k RMSNorm)",
               llama_like(Arch::Qwen3, 4096, 12288, 36, 32, 8, 128, 151936, 1000000.0f, false, 1e-6f)});
  p.push_back(
      {"llama-3.3-70b", "Llama-3.3-70B shapes",
       llama3_rope(llama_like(Arch::Llama, 8192, 28672, 80, 64, 8, 128, 128256, 500000.0f, false, 1e-5f))});
  p.push_back({"tiny", "a small Llama for CPU runs and tests (hidden 256, 4 layers)",
               llama_like(Arch::Llama, 256, 768, 4, 4, 2, 64, 2048, 10000.0f, false, 1e-5f)});
  p.push_back({"tiny-nemotron-h", "a small Nemotron-H hybrid for CPU runs (pattern M*-M-)",
               nemotron_h(256, "M*-M-", 4, 2, 64, 512, 8, 32, 16, 2, 2048, 16)});
  return p;
}

}  // namespace

const std::vector<Preset>& presets() {
  static const std::vector<Preset> p = make_presets();
  return p;
}

bool is_preset_ref(const std::string& model) {
  return model.rfind("preset:", 0) == 0;
}

std::optional<Preset> find_preset(const std::string& name) {
  const std::string n = is_preset_ref(name) ? name.substr(7) : name;
  for (const auto& p : presets())
    if (p.name == n) return p;
  return std::nullopt;
}

}  // namespace fp4lab
