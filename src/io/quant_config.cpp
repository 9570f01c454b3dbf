#include "io/quant_config.h"

#include <cstdint>
#include <filesystem>
#include <memory>

#include "common/error.h"
#include "common/regex.h"

namespace fp4lab {

const char* quant_algo_name(QuantAlgo a) {
  switch (a) {
    case QuantAlgo::None:
      return "none";
    case QuantAlgo::NVFP4:
      return "NVFP4";
    case QuantAlgo::W4A16_NVFP4:
      return "W4A16_NVFP4";
    case QuantAlgo::FP8:
      return "FP8";
    case QuantAlgo::MixedPrecision:
      return "MIXED_PRECISION";
    case QuantAlgo::Unsupported:
      return "unsupported";
  }
  return "?";
}

bool wildcard_match(std::string_view p, std::string_view t) {
  // Iterative matcher with single-star backtracking: linear in practice, no recursion on hostile input.
  size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
  while (ti < t.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == t[ti])) {
      ++pi;
      ++ti;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = ti;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

namespace {

// Layer names are ASCII and the pattern is a Python `re` full match; invalid patterns are rejected when the
// config is parsed, so here one that fails to compile simply matches nothing.
bool regex_full_match(const std::string& re, const std::string& text) {
  try {
    const Regex r(re, Regex::Options{.utf = false, .anchored_full = true}, "exclude pattern");
    return r.full_match(text);
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

bool exclude_matches(const std::string& pattern, const std::string& layer) {
  if (pattern.rfind("re:", 0) == 0) return regex_full_match(pattern.substr(3), layer);
  if (wildcard_match(pattern, layer)) return true;
  // A module prefix excludes the layers inside it.
  return layer.size() > pattern.size() && layer.compare(0, pattern.size(), pattern) == 0 &&
         layer[pattern.size()] == '.';
}

namespace {

QuantAlgo algo_from_string(const std::string& s) {
  if (s == "NVFP4") return QuantAlgo::NVFP4;
  if (s == "W4A16_NVFP4" || s == "NVFP4_W4A16") return QuantAlgo::W4A16_NVFP4;
  if (s == "FP8") return QuantAlgo::FP8;
  if (s == "MIXED_PRECISION") return QuantAlgo::MixedPrecision;
  if (s.empty()) return QuantAlgo::None;
  return QuantAlgo::Unsupported;
}

std::vector<std::string> string_list(const json& j, const std::string& what) {
  std::vector<std::string> out;
  if (j.is_null()) return out;
  if (!j.is_array()) throw Error(what + " must be a list of strings");
  for (const auto& v : j) {
    if (!v.is_string()) throw Error(what + " must be a list of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

void parse_modelopt(const json& q, QuantConfig& c, const std::string& src) {
  if (!q.is_object()) throw Error(src + ": quantization section is not an object");
  c.format = QuantFormat::ModelOpt;
  if (q.contains("quant_algo") && !q["quant_algo"].is_null()) {
    if (!q["quant_algo"].is_string()) throw Error(src + ": quant_algo must be a string");
    c.raw_algo = q["quant_algo"].get<std::string>();
  }
  c.algo = algo_from_string(c.raw_algo);
  if (q.contains("kv_cache_quant_algo") && q["kv_cache_quant_algo"].is_string())
    c.kv_cache_algo = q["kv_cache_quant_algo"].get<std::string>();
  if (q.contains("group_size") && q["group_size"].is_number_integer())
    c.group_size = q["group_size"].get<int>();
  for (const char* key : {"exclude_modules", "ignore"})
    if (q.contains(key)) {
      auto l = string_list(q[key], src + ": " + key);
      c.exclude.insert(c.exclude.end(), l.begin(), l.end());
    }
  if (q.contains("quantized_layers") && q["quantized_layers"].is_object()) {
    for (auto it = q["quantized_layers"].begin(); it != q["quantized_layers"].end(); ++it) {
      const json& v = it.value();
      std::string a;
      if (v.is_object() && v.contains("quant_algo") && v["quant_algo"].is_string())
        a = v["quant_algo"].get<std::string>();
      else if (v.is_string())
        a = v.get<std::string>();
      c.per_layer[it.key()] = algo_from_string(a);
      c.per_layer_raw[it.key()] = a;
    }
  }
  if (c.algo == QuantAlgo::NVFP4 || c.algo == QuantAlgo::W4A16_NVFP4) {
    if (c.group_size != 16)
      throw Error(src + ": NVFP4 group_size " + std::to_string(c.group_size) + " (the format uses 16)");
  }
}

void parse_compressed_tensors(const json& q, QuantConfig& c, const std::string& src) {
  c.format = QuantFormat::CompressedTensors;
  c.raw_algo = q.contains("format") && q["format"].is_string() ? q["format"].get<std::string>() : "";
  c.algo = QuantAlgo::Unsupported;
  if (q.contains("config_groups") && q["config_groups"].is_object()) {
    for (auto it = q["config_groups"].begin(); it != q["config_groups"].end(); ++it) {
      const json& g = it.value();
      if (!g.is_object() || !g.contains("weights") || !g["weights"].is_object()) continue;
      const json& w = g["weights"];
      constexpr int64_t kMax = INT32_MAX;
      const bool fp4 = json_int_field(w, "num_bits", 0, kMax) == 4 && w.contains("type") &&
                       w["type"] == "float" && json_int_field(w, "group_size", 0, kMax) == 16;
      // FP8 weights (E4M3) with a per-tensor or per-channel weight_scale ("float-quantized"); the activation
      // side (static or dynamic) does not change the weights' values.
      const bool fp8 = json_int_field(w, "num_bits", 0, kMax) == 8 && w.contains("type") && w["type"] == "float";
      if (fp8) c.algo = QuantAlgo::FP8;
      if (!fp4) continue;
      const bool act4 =
          g.contains("input_activations") && json_int_field(g["input_activations"], "num_bits", 0, kMax) == 4;
      c.algo = act4 ? QuantAlgo::NVFP4 : QuantAlgo::W4A16_NVFP4;
    }
  }
  if (q.contains("ignore")) c.exclude = string_list(q["ignore"], src + ": ignore");
  for (const auto& p : c.exclude) {
    if (p.rfind("re:", 0) == 0) {
      try {
        Regex(p.substr(3), Regex::Options{.utf = false, .anchored_full = true}, "");
      } catch (const Error& e) {
        throw Error(src + ": invalid regular expression '" + p + "' in ignore" + e.what());
      }
    }
  }
}

}  // namespace

static QuantConfig parse_quant_config_impl(const json& hfq, const json& config, const std::string& dir);

QuantAlgo QuantConfig::algo_for(const std::string& layer, std::string* matched_exclude) const {
  if (algo == QuantAlgo::None) return QuantAlgo::None;
  for (const auto& p : exclude)
    if (exclude_matches(p, layer)) {
      if (matched_exclude) *matched_exclude = p;
      return QuantAlgo::None;
    }
  if (algo == QuantAlgo::MixedPrecision) {
    auto it = per_layer.find(layer);
    return it == per_layer.end() ? QuantAlgo::None : it->second;
  }
  return algo;
}

std::string QuantConfig::raw_algo_for(const std::string& layer) const {
  if (algo == QuantAlgo::MixedPrecision)
    if (auto it = per_layer_raw.find(layer); it != per_layer_raw.end()) return it->second;
  return raw_algo;
}

QuantConfig parse_quant_config(const json& hfq, const json& config, const std::string& dir) {
  try {
    return parse_quant_config_impl(hfq, config, dir);
  } catch (const json::exception& e) {
    throw Error(dir + ": malformed quantization config (" + e.what() + ")");
  }
}

static QuantConfig parse_quant_config_impl(const json& hfq, const json& config, const std::string& dir) {
  QuantConfig c;
  if (hfq.is_object()) {
    c.source = dir + "/hf_quant_config.json";
    if (hfq.contains("producer") && hfq["producer"].is_object()) {
      const json& p = hfq["producer"];
      c.producer = p.value("name", std::string()) + " " + p.value("version", std::string());
    }
    if (!hfq.contains("quantization")) throw Error(c.source + ": missing 'quantization'");
    parse_modelopt(hfq["quantization"], c, c.source);
    return c;
  }
  if (config.is_object() && config.contains("quantization_config") &&
      !config["quantization_config"].is_null()) {
    const json& q = config["quantization_config"];
    c.source = dir + "/config.json";
    if (!q.is_object()) throw Error(c.source + ": quantization_config is not an object");
    const std::string method = q.value("quant_method", std::string());
    if (method == "modelopt")
      parse_modelopt(q, c, c.source);
    else if (method == "compressed-tensors")
      parse_compressed_tensors(q, c, c.source);
    else {
      c.raw_algo = method;
      c.algo = QuantAlgo::Unsupported;
    }
  }
  return c;
}

QuantConfig load_quant_config(const std::string& dir) {
  namespace fs = std::filesystem;
  json hfq, cfg;
  const auto hp = fs::path(dir) / "hf_quant_config.json";
  const auto cp = fs::path(dir) / "config.json";
  if (fs::exists(hp)) hfq = read_json_config_file(hp.string());
  if (fs::exists(cp)) cfg = read_json_config_file(cp.string());
  return parse_quant_config(hfq, cfg, dir);
}

}  // namespace fp4lab
