// Which layers of a checkpoint are quantized, and how: hf_quant_config.json (ModelOpt) and config.json
// quantization_config (ModelOpt, compressed-tensors).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/json_util.h"

namespace fp4lab {

enum class QuantAlgo { None, NVFP4, W4A16_NVFP4, FP8, MixedPrecision, Unsupported };
const char* quant_algo_name(QuantAlgo a);

enum class QuantFormat { None, ModelOpt, CompressedTensors };

struct QuantConfig {
  QuantAlgo algo = QuantAlgo::None;
  QuantFormat format = QuantFormat::None;
  std::string producer;       // e.g. "modelopt 0.35.0"
  std::string source;         // which file said so
  std::string raw_algo;       // the string as written
  std::string kv_cache_algo;  // "FP8" or empty
  int group_size = 16;
  std::vector<std::string> exclude;            // wildcard patterns ('*', '?') or "re:<regex>"
  std::map<std::string, QuantAlgo> per_layer;      // MIXED_PRECISION: layer prefix -> algo
  std::map<std::string, std::string> per_layer_raw;  // and the algo as written

  bool is_nvfp4() const {
    return algo == QuantAlgo::NVFP4 || algo == QuantAlgo::W4A16_NVFP4 || algo == QuantAlgo::MixedPrecision;
  }
  // The algorithm that applies to one linear layer (prefix without ".weight"), and the exclude pattern that
  // removed it from quantization, if any.
  QuantAlgo algo_for(const std::string& layer, std::string* matched_exclude = nullptr) const;
  // The algorithm's name as the config writes it for that layer (for messages).
  std::string raw_algo_for(const std::string& layer) const;
};

// Either json may be null. hf_quant_config.json wins where both speak.
QuantConfig parse_quant_config(const json& hf_quant_config, const json& config, const std::string& dir);
QuantConfig load_quant_config(const std::string& dir);

// fnmatch-style matching with '*' and '?' (no character classes), the form ModelOpt's exclude lists use.
bool wildcard_match(std::string_view pattern, std::string_view text);
// An exclude entry against a layer name: "re:" prefix means regex (compressed-tensors), else a wildcard;
// ModelOpt lists may name a module ("lm_head") or a prefix of it ("model.layers.0.self_attn").
bool exclude_matches(const std::string& pattern, const std::string& layer);

}  // namespace fp4lab
