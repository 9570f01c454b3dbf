#include "io/model_config.h"

#include <cmath>
#include <filesystem>

#include "common/error.h"

namespace fp4lab {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama:
      return "llama";
    case Arch::Mistral:
      return "mistral";
    case Arch::Qwen3:
      return "qwen3";
    case Arch::NemotronH:
      return "nemotron_h";
  }
  return "?";
}

char layer_kind_char(LayerKind k) {
  switch (k) {
    case LayerKind::Decoder:
      return 'D';
    case LayerKind::Mamba:
      return 'M';
    case LayerKind::Attention:
      return '*';
    case LayerKind::Mlp:
      return '-';
    case LayerKind::Moe:
      return 'E';
  }
  return '?';
}

std::string ModelConfig::layer_pattern() const {
  std::string s;
  for (auto k : layers) s.push_back(layer_kind_char(k));
  return s;
}

namespace {

struct Reader {
  const json& j;
  const std::string& src;

  Error fail(const std::string& key, const std::string& msg) const {
    return Error(src + ": '" + key + "' " + msg);
  }

  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }

  int get_int(const char* k, std::optional<int> def = std::nullopt) const {
    if (!has(k)) {
      if (def) return *def;
      throw fail(k, "is missing");
    }
    if (!j[k].is_number_integer()) throw fail(k, "must be an integer");
    const auto v = j[k].get<int64_t>();
    if (v < 0 || v > (1ll << 31) - 1) throw fail(k, "is out of range");
    return static_cast<int>(v);
  }
  float get_float(const json& o, const char* k, float def) const {
    if (!o.contains(k) || o[k].is_null()) return def;
    if (!o[k].is_number()) throw fail(k, "must be a number");
    return o[k].get<float>();
  }
  bool get_bool(const char* k, bool def) const {
    if (!has(k)) return def;
    if (!j[k].is_boolean()) throw fail(k, "must be true or false");
    return j[k].get<bool>();
  }
  std::string get_str(const char* k, const std::string& def) const {
    if (!has(k)) return def;
    if (!j[k].is_string()) throw fail(k, "must be a string");
    return j[k].get<std::string>();
  }
};

RopeConfig parse_rope(const Reader& r) {
  RopeConfig rope;
  const json& j = r.j;
  // Newer transformers put everything in rope_parameters; classic configs use rope_theta + rope_scaling.
  const json* params = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    params = &j["rope_parameters"];
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
    params = &j["rope_scaling"];
  rope.theta = r.get_float(j, "rope_theta", 10000.0f);
  if (params) {
    const json& p = *params;
    rope.theta = r.get_float(p, "rope_theta", rope.theta);
    const char* tk = p.contains("rope_type") ? "rope_type" : "type";
    if (p.contains(tk)) {
      if (!p[tk].is_string()) throw r.fail(tk, "must be a string");
      rope.type = p[tk].get<std::string>();
    }
    rope.factor = r.get_float(p, "factor", 1.0f);
    rope.low_freq_factor = r.get_float(p, "low_freq_factor", 1.0f);
    rope.high_freq_factor = r.get_float(p, "high_freq_factor", 4.0f);
    if (p.contains("original_max_position_embeddings")) {
      if (!p["original_max_position_embeddings"].is_number_integer())
        throw r.fail("original_max_position_embeddings", "must be an integer");
      rope.original_max_position = p["original_max_position_embeddings"].get<int>();
    }
  }
  if (rope.type != "default" && rope.type != "llama3" && rope.type != "linear")
    throw r.fail("rope_type", "'" + rope.type + "' is not supported (default, llama3, linear)");
  if (!(rope.theta > 0)) throw r.fail("rope_theta", "must be positive");
  return rope;
}

LayerKind kind_from_block_type(const std::string& s, const Reader& r) {
  if (s == "mamba" || s == "linear_attention") return LayerKind::Mamba;
  if (s == "attention" || s == "full_attention") return LayerKind::Attention;
  if (s == "mlp") return LayerKind::Mlp;
  if (s == "moe") return LayerKind::Moe;
  throw r.fail("layers_block_type", "has unknown block type '" + s + "'");
}

}  // namespace

static ModelConfig parse_model_config_impl(const json& j, const std::string& source);

ModelConfig parse_model_config(const json& j, const std::string& source) {
  try {
    return parse_model_config_impl(j, source);
  } catch (const json::exception& e) {
    throw Error(source + ": malformed config (" + e.what() + ")");
  }
}

static ModelConfig parse_model_config_impl(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config is not a JSON object");
  Reader r{j, source};
  ModelConfig c;
  c.model_type = r.get_str("model_type", "");
  if (c.model_type == "llama")
    c.arch = Arch::Llama;
  else if (c.model_type == "mistral")
    c.arch = Arch::Mistral;
  else if (c.model_type == "qwen3")
    c.arch = Arch::Qwen3;
  else if (c.model_type == "nemotron_h")
    c.arch = Arch::NemotronH;
  else if (c.model_type.empty())
    throw Error(source + ": 'model_type' is missing");
  else
    throw Error(source + ": model_type '" + c.model_type +
                "' is not supported (llama, mistral, qwen3, nemotron_h)");

  c.hidden_size = r.get_int("hidden_size");
  c.num_layers = r.get_int("num_hidden_layers");
  c.num_heads = r.get_int("num_attention_heads");
  c.num_kv_heads = r.get_int("num_key_value_heads", c.num_heads);
  c.vocab_size = r.get_int("vocab_size");
  c.intermediate_size = r.get_int("intermediate_size", 0);
  c.max_position = r.get_int("max_position_embeddings", 4096);
  if (c.num_heads == 0 || c.hidden_size == 0 || c.vocab_size == 0)
    throw Error(source + ": hidden_size, num_attention_heads and vocab_size must be positive");
  c.head_dim = r.get_int("head_dim", c.hidden_size / c.num_heads);
  if (c.num_layers == 0) throw r.fail("num_hidden_layers", "must be at least 1");
  if (c.head_dim == 0) throw r.fail("head_dim", "must be positive");
  if (c.max_position == 0) throw r.fail("max_position_embeddings", "must be positive");
  if (c.num_kv_heads == 0 || c.num_heads % c.num_kv_heads != 0)
    throw Error(source + ": num_attention_heads (" + std::to_string(c.num_heads) +
                ") is not a multiple of num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");
  c.norm_eps = r.get_float(j, c.arch == Arch::NemotronH ? "layer_norm_epsilon" : "rms_norm_eps",
                           r.get_float(j, "rms_norm_eps", 1e-5f));
  if (!(c.norm_eps > 0.0f) || !std::isfinite(c.norm_eps))
    throw r.fail(c.arch == Arch::NemotronH ? "layer_norm_epsilon" : "rms_norm_eps", "must be a positive number");
  c.tie_embeddings = r.get_bool("tie_word_embeddings", c.arch != Arch::NemotronH);
  c.attention_bias = r.get_bool("attention_bias", false);
  c.mlp_bias = r.get_bool("mlp_bias", false);
  c.bos_id =
      r.has("bos_token_id") && j["bos_token_id"].is_number_integer() ? j["bos_token_id"].get<int>() : -1;
  if (r.has("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer())
      c.eos_ids.push_back(e.get<int>());
    else if (e.is_array())
      for (const auto& v : e)
        if (v.is_number_integer()) c.eos_ids.push_back(v.get<int>());
  }

  if (c.arch == Arch::NemotronH) {
    c.hidden_act = r.get_str("mlp_hidden_act", "relu2");
    c.mamba_num_heads = r.get_int("mamba_num_heads");
    c.mamba_head_dim = r.get_int("mamba_head_dim");
    c.ssm_state_size = r.get_int("ssm_state_size");
    c.n_groups = r.get_int("n_groups");
    c.conv_kernel = r.get_int("conv_kernel");
    c.chunk_size = r.get_int("chunk_size", 256);
    c.use_conv_bias = r.get_bool("use_conv_bias", true);
    c.mamba_proj_bias = r.get_bool("mamba_proj_bias", false);
    if (j.contains("time_step_limit") && j["time_step_limit"].is_array() &&
        j["time_step_limit"].size() == 2) {
      c.time_step_limit_min = r.get_float(json{{"v", j["time_step_limit"][0]}}, "v", 0.0f);
      c.time_step_limit_max =
          r.get_float(json{{"v", j["time_step_limit"][1]}}, "v", std::numeric_limits<float>::infinity());
      if (std::isnan(c.time_step_limit_min) || std::isnan(c.time_step_limit_max) ||
          c.time_step_limit_min > c.time_step_limit_max)
        throw r.fail("time_step_limit", "must be [min, max] with min <= max");
    }
    if (c.n_groups == 0 || c.mamba_num_heads % c.n_groups != 0)
      throw Error(source + ": mamba_num_heads must be a multiple of n_groups");
    if (r.has("layers_block_type")) {
      if (!j["layers_block_type"].is_array()) throw r.fail("layers_block_type", "must be a list");
      for (const auto& v : j["layers_block_type"]) {
        if (!v.is_string()) throw r.fail("layers_block_type", "entries must be strings");
        c.layers.push_back(kind_from_block_type(v.get<std::string>(), r));
      }
    } else if (r.has("hybrid_override_pattern")) {
      for (char ch : r.get_str("hybrid_override_pattern", "")) {
        switch (ch) {
          case 'M':
            c.layers.push_back(LayerKind::Mamba);
            break;
          case '*':
            c.layers.push_back(LayerKind::Attention);
            break;
          case '-':
            c.layers.push_back(LayerKind::Mlp);
            break;
          case 'E':
            c.layers.push_back(LayerKind::Moe);
            break;
          default:
            throw r.fail("hybrid_override_pattern", std::string("has unknown layer letter '") + ch + "'");
        }
      }
    } else {
      throw Error(source + ": nemotron_h config needs layers_block_type or hybrid_override_pattern");
    }
    if (r.has("hybrid_override_pattern") && r.has("layers_block_type")) {
      // Both forms present (as in real checkpoints of different ages): they must agree.
      ModelConfig alt;
      for (char ch : r.get_str("hybrid_override_pattern", ""))
        alt.layers.push_back(ch == 'M'   ? LayerKind::Mamba
                             : ch == '*' ? LayerKind::Attention
                             : ch == '-' ? LayerKind::Mlp
                                         : LayerKind::Moe);
      if (alt.layers != c.layers)
        throw Error(source + ": layers_block_type and hybrid_override_pattern disagree");
    }
    if (static_cast<int>(c.layers.size()) != c.num_layers)
      throw Error(source + ": layer pattern has " + std::to_string(c.layers.size()) +
                  " entries but num_hidden_layers is " + std::to_string(c.num_layers));
  } else {
    c.hidden_act = r.get_str("hidden_act", "silu");
    c.rope = parse_rope(r);
    if (c.intermediate_size == 0) throw Error(source + ": 'intermediate_size' is missing");
    c.layers.assign(static_cast<size_t>(c.num_layers), LayerKind::Decoder);
  }
  return c;
}

ModelConfig load_model_config(const std::string& dir) {
  const auto p = (std::filesystem::path(dir) / "config.json").string();
  if (!std::filesystem::exists(p)) throw Error(dir + ": config.json not found");
  return parse_model_config(read_json_config_file(p), p);
}

}  // namespace fp4lab

namespace fp4lab {

json model_config_to_json(const ModelConfig& c) {
  json j;
  const char* arch = c.arch == Arch::NemotronH ? "NemotronHForCausalLM"
                     : c.arch == Arch::Qwen3   ? "Qwen3ForCausalLM"
                     : c.arch == Arch::Mistral ? "MistralForCausalLM"
                                               : "LlamaForCausalLM";
  j["architectures"] = {arch};
  j["model_type"] = c.model_type.empty() ? arch_name(c.arch) : c.model_type;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["mlp_bias"] = c.mlp_bias;
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  if (c.eos_ids.size() == 1) j["eos_token_id"] = c.eos_ids[0];
  if (c.eos_ids.size() > 1) j["eos_token_id"] = c.eos_ids;
  j["torch_dtype"] = "bfloat16";
  if (c.arch == Arch::NemotronH) {
    j["layer_norm_epsilon"] = c.norm_eps;
    j["mlp_hidden_act"] = c.hidden_act;
    j["mamba_num_heads"] = c.mamba_num_heads;
    j["mamba_head_dim"] = c.mamba_head_dim;
    j["ssm_state_size"] = c.ssm_state_size;
    j["n_groups"] = c.n_groups;
    j["conv_kernel"] = c.conv_kernel;
    j["chunk_size"] = c.chunk_size;
    j["use_conv_bias"] = c.use_conv_bias;
    j["mamba_proj_bias"] = c.mamba_proj_bias;
    j["time_step_limit"] = {c.time_step_limit_min, c.time_step_limit_max};
    j["hybrid_override_pattern"] = c.layer_pattern();
  } else {
    j["rms_norm_eps"] = c.norm_eps;
    j["hidden_act"] = c.hidden_act;
    j["rope_theta"] = c.rope.theta;
    if (c.rope.type != "default") {
      j["rope_scaling"] = {{"rope_type", c.rope.type}, {"factor", c.rope.factor}};
      if (c.rope.type == "llama3") {
        j["rope_scaling"]["low_freq_factor"] = c.rope.low_freq_factor;
        j["rope_scaling"]["high_freq_factor"] = c.rope.high_freq_factor;
        j["rope_scaling"]["original_max_position_embeddings"] = c.rope.original_max_position;
      }
    }
  }
  return j;
}

}  // namespace fp4lab
