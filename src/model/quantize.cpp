#include "model/quantize.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/error.h"
#include "format/nvfp4.h"
#include "common/json_util.h"
#include "io/quant_config.h"
#include "io/safetensors.h"
#include "model/layout.h"

namespace fp4lab {

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> f32_bytes(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

std::vector<uint8_t> to_bf16_bytes(const std::vector<float>& x) {
  std::vector<uint8_t> b(x.size() * 2);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t h = bf16_from_f32_rne(x[i]);
    b[2 * i] = uint8_t(h);
    b[2 * i + 1] = uint8_t(h >> 8);
  }
  return b;
}

}  // namespace

void write_modelopt_configs(const std::string& out_dir, json config, const std::vector<std::string>& excluded,
                            bool calibrated, bool fp8) {
  const std::string algo = fp8 ? "FP8" : calibrated ? "NVFP4" : "W4A16_NVFP4";
  const json producer = {{"name", "fp4lab"}, {"version", FP4LAB_VERSION}};
  json hfq = {{"producer", producer},
              {"quantization",
               {{"quant_algo", algo}, {"kv_cache_quant_algo", nullptr}, {"exclude_modules", excluded}}}};
  if (!fp8) hfq["quantization"]["group_size"] = 16;
  write_text_file((fs::path(out_dir) / "hf_quant_config.json").string(), hfq.dump(2) + "\n");
  config["quantization_config"] = {
      {"quant_method", "modelopt"}, {"quant_algo", algo}, {"ignore", excluded}, {"producer", producer}};
  if (!fp8) config["quantization_config"]["group_size"] = 16;
  config["torch_dtype"] = "bfloat16";
  write_text_file((fs::path(out_dir) / "config.json").string(), dump_json_config(config) + "\n");
}

std::vector<LinearSpec> nvfp4_quantized_layers(const ModelConfig& cfg,
                                               const std::vector<std::string>& exclude) {
  const std::vector<std::string> ex = exclude.empty() ? default_nvfp4_excludes(cfg) : exclude;
  std::vector<LinearSpec> out;
  for (const auto& s : linear_layers(cfg)) {
    bool skip = s.k % 16 != 0 || (s.role == "lm_head" && cfg.tie_embeddings);
    for (const auto& e : ex) skip = skip || exclude_matches(e, s.name);
    if (!skip) out.push_back(s);
  }
  return out;
}

std::vector<LinearSpec> fp8_quantized_layers(const ModelConfig& cfg,
                                             const std::vector<std::string>& exclude) {
  const std::vector<std::string> ex = exclude.empty() ? default_fp8_excludes(cfg) : exclude;
  std::vector<LinearSpec> out;
  for (const auto& s : linear_layers(cfg)) {
    bool skip = s.role == "lm_head" && cfg.tie_embeddings;
    for (const auto& e : ex) skip = skip || exclude_matches(e, s.name);
    if (!skip) out.push_back(s);
  }
  return out;
}

std::map<std::string, float> nvfp4_group_tensor_scales(
    const std::vector<LinearSpec>& layers,
    const std::function<std::vector<float>(const LinearSpec&)>& weight_of, bool search, Nvfp4ScaleRule rule,
    const TensorScaleSearch& searcher) {
  std::map<std::string, float> group;
  if (!search) {
    for (const auto& s : layers) {
      float& g = group[fused_scale_group(s)];
      g = std::max(g, amax_ref(weight_of(s)));
    }
  } else {
    // One group at a time: its members' weights are held together while the search runs.
    std::map<std::string, std::vector<const LinearSpec*>> members;
    for (const auto& s : layers) members[fused_scale_group(s)].push_back(&s);
    for (const auto& [g, specs] : members) {
      std::vector<std::vector<float>> w;
      std::vector<Nvfp4Matrix> mats;
      for (const LinearSpec* s : specs) w.push_back(weight_of(*s));
      for (size_t i = 0; i < specs.size(); ++i) mats.push_back({w[i], specs[i]->n, specs[i]->k});
      group[g] = searcher ? searcher(mats, rule) : nvfp4_search_tensor_scale(mats, rule);
    }
  }
  std::map<std::string, float> ts;
  for (const auto& s : layers)
    ts[s.name] = search ? group[fused_scale_group(s)] : nvfp4_tensor_scale(group[fused_scale_group(s)]);
  return ts;
}

std::map<std::string, float> nvfp4_input_scales(const std::vector<LinearSpec>& layers,
                                                const std::map<std::string, float>& input_amax) {
  std::map<std::string, float> group;
  for (const auto& s : layers)
    if (const auto a = input_amax.find(s.name); a != input_amax.end()) {
      float& g = group[fused_scale_group(s)];
      g = std::max(g, a->second);
    }
  std::map<std::string, float> scales;
  for (const auto& s : layers)
    if (const float g = group[fused_scale_group(s)]; g > 0.0f) scales[s.name] = nvfp4_tensor_scale(g);
  return scales;
}

QuantizeReport quantize_checkpoint_nvfp4(const std::string& in_dir, const std::string& out_dir,
                                         const QuantizeOptions& opt) {
  const ModelConfig cfg = load_model_config(in_dir);
  const TensorStore st = TensorStore::open_dir(in_dir);
  const QuantConfig existing = load_quant_config(in_dir);
  if (existing.algo != QuantAlgo::None)
    throw Error(in_dir + ": already quantized (" + quant_algo_name(existing.algo) +
                "); quantize needs a BF16 checkpoint");
  const auto specs = linear_layers(cfg);
  if (opt.fp8 && (opt.method != Nvfp4ScaleRule::Amax || opt.search_tensor_scale || !opt.prequantized.empty()))
    throw Error("quantize --format fp8 takes --method rtn (ModelOpt's FP8 recipe) only");
  const auto layers =
      opt.fp8 ? fp8_quantized_layers(cfg, opt.exclude) : nvfp4_quantized_layers(cfg, opt.exclude);
  const auto tensor_scales =
      opt.fp8 || !opt.tensor_scales.empty()
          ? opt.tensor_scales
          : nvfp4_group_tensor_scales(
                layers, [&](const LinearSpec& s) { return tensor_to_f32(st.get(s.name + ".weight")); },
                opt.search_tensor_scale, opt.method);

  std::map<std::string, const LinearSpec*> by_weight;
  const bool calibrated = !opt.input_amax.empty();
  std::set<std::string> quantized;
  for (const auto& s : layers) {
    quantized.insert(s.name);
    by_weight[s.name + ".weight"] = &s;
    if (calibrated) {
      auto a = opt.input_amax.find(s.name);
      if (a == opt.input_amax.end() || !(a->second > 0))
        throw Error("calibration saw no input for " + s.name + " (is the calibration text long enough?)");
    }
  }
  const std::map<std::string, float> input_scales =
      calibrated ? nvfp4_input_scales(layers, opt.input_amax) : std::map<std::string, float>{};

  std::map<std::string, float> fp8_group_amax;
  if (opt.fp8)
    for (const auto& s : layers) {
      float& g = fp8_group_amax[fused_scale_group(s)];
      g = std::max(g, amax_ref(tensor_to_f32(st.get(s.name + ".weight"))));
    }
  fs::create_directories(out_dir);
  SafetensorsWriter out;
  QuantizeReport rep;
  for (const auto& [name, t] : st.all()) {
    rep.bytes_in += double(t->nbytes());
    auto it = by_weight.find(name);
    if (it == by_weight.end()) {
      // Unquantized tensors go out as BF16 (float types) or unchanged (integer types).
      if (t->dtype == DType::F32 || t->dtype == DType::F16)
        out.add(name, DType::BF16, t->shape, to_bf16_bytes(tensor_to_f32(*t)));
      else
        out.add(name, t->dtype, t->shape, std::vector<uint8_t>(t->data, t->data + t->nbytes()));
      if (name.size() > 7 && name.ends_with(".weight") && t->shape.size() == 2) ++rep.kept;
      continue;
    }
    const LinearSpec& s = *it->second;
    if (opt.fp8) {
      // ModelOpt's FP8: one scale per tensor, shared by fused q/k/v and gate/up (engines join them into one
      // product: vLLM requantizes differing ones to the largest), a static input scale when calibrated.
      const Fp8Tensor q =
          fp8_quantize_ref(tensor_to_f32(*t), s.n, s.k, fp8_group_amax.at(fused_scale_group(s)));
      out.add(s.name + ".weight", DType::F8_E4M3, {s.n, s.k}, q.data);
      out.add(s.name + ".weight_scale", DType::F32, {}, f32_bytes(q.scale));
      if (calibrated)
        out.add(s.name + ".input_scale", DType::F32, {}, f32_bytes(opt.input_amax.at(s.name) / 448.0f));
      ++rep.quantized;
      continue;
    }
    const auto tsi = tensor_scales.find(s.name);
    if (tsi == tensor_scales.end()) throw Error("internal: no tensor scale for " + s.name);
    const float ts = tsi->second;
    Nvfp4Tensor q;
    if (const auto pre = opt.prequantized.find(s.name); pre != opt.prequantized.end()) {
      q = pre->second;
      if (q.rows != s.n || q.cols != s.k || q.tensor_scale != ts)
        throw Error("internal: the prequantized " + s.name + " does not match its shape or group scale");
    } else {
      q = nvfp4_quantize_ref(tensor_to_f32(*t), s.n, s.k, ts, opt.method);
    }
    out.add(s.name + ".weight", DType::U8, {s.n, s.k / 2}, q.packed);
    out.add(s.name + ".weight_scale", DType::F8_E4M3, {s.n, s.k / 16}, q.block_scales);
    out.add(s.name + ".weight_scale_2", DType::F32, {}, f32_bytes(q.tensor_scale));
    if (calibrated) out.add(s.name + ".input_scale", DType::F32, {}, f32_bytes(input_scales.at(s.name)));
    ++rep.quantized;
  }
  rep.bytes_out = double(out.data_bytes());
  out.set_metadata("format", "pt");
  out.write((fs::path(out_dir) / "model.safetensors").string());

  std::vector<std::string> excluded_names;
  for (const auto& s : specs)
    if (!quantized.count(s.name)) excluded_names.push_back(s.name);
  rep.calibrated = calibrated;
  write_modelopt_configs(out_dir, read_json_config_file((fs::path(in_dir) / "config.json").string()),
                         excluded_names, calibrated, opt.fp8);
  return rep;
}

}  // namespace fp4lab
