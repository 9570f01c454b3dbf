// FP8 layers as ModelOpt and compressed-tensors write them: E4M3 codes times weight_scale (per tensor or per
// output channel). The fixtures are tiny-llama with some linear layers stored in FP8, next to a float32 twin
// holding exactly those layers' dequantized values: the CPU backend (the spec) must give the twin's logits
// bit for bit. Formats fp4lab does not read are refused naming the layer, never read as raw values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "common/error.h"
#include "engine/backends.h"
#include "format/e4m3.h"
#include "common/json_util.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "test_util.h"

using namespace fp4lab;
namespace fs = std::filesystem;
using fp4lab::test::TempDir;

namespace {

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Writes tiny-llama to `fp8_dir` with `layers` in FP8 (per-channel scales when per_channel) and the float32
// twin with the same values to `twin_dir`; config.json as given.
void write_fixture(const std::string& fp8_dir, const std::string& twin_dir, const std::vector<std::string>& layers,
                   bool per_channel, const json& config, const json& hf_quant_config) {
  const std::string src = fp4lab::test::data_dir() + "/models/tiny-llama";
  const TensorStore st = TensorStore::open_dir(src);
  SafetensorsWriter fp8, twin;
  for (const auto& [name, t] : st.all()) {
    std::vector<float> v = tensor_to_f32(*t);
    const std::string layer = name.substr(0, name.size() - 7);
    const bool q = name.ends_with(".weight") && std::find(layers.begin(), layers.end(), layer) != layers.end();
    if (!q) {
      fp8.add(name, DType::F32, t->shape, f32_bytes(v));
      twin.add(name, DType::F32, t->shape, f32_bytes(v));
      continue;
    }
    const int64_t n = t->shape[0], k = t->shape[1];
    std::vector<float> scale(per_channel ? n : 1, 0.0f);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        float& s = scale[per_channel ? r : 0];
        s = std::max(s, std::fabs(v[r * k + c]) / 448.0f);
      }
    std::vector<uint8_t> codes(v.size());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const float s = scale[per_channel ? r : 0];
        codes[r * k + c] = e4m3_encode(v[r * k + c] / s);
        v[r * k + c] = e4m3_decode(codes[r * k + c]) * s;
      }
    fp8.add(name, DType::F8_E4M3, t->shape, codes);
    fp8.add(layer + ".weight_scale", DType::F32, per_channel ? std::vector<int64_t>{n, 1} : std::vector<int64_t>{},
            f32_bytes(scale));
    twin.add(name, DType::F32, t->shape, f32_bytes(v));
  }
  fs::create_directories(fp8_dir);
  fs::create_directories(twin_dir);
  fp8.write(fp8_dir + "/model.safetensors");
  twin.write(twin_dir + "/model.safetensors");
  json plain = config;
  plain.erase("quantization_config");
  write_text_file(fp8_dir + "/config.json", config.dump(2));
  write_text_file(twin_dir + "/config.json", plain.dump(2));
  if (!hf_quant_config.is_null()) write_text_file(fp8_dir + "/hf_quant_config.json", hf_quant_config.dump(2));
}

std::vector<float> cpu_logits(const std::string& dir, QuantMode mode = QuantMode::Auto) {
  CpuOps ops(2);
  CpuModel m(load_weights(dir, mode), ops);
  auto s = m.new_sequence(64);
  const std::vector<int> prompt = {1, 17, 33, 250, 4, 99, 7, 400};
  return m.forward(s, prompt, true);
}

json tiny_llama_config() {
  return read_json_config_file(fp4lab::test::data_dir() + "/models/tiny-llama/config.json");
}

}  // namespace

TEST(Fp8, ModelOptMixedPrecisionLayersAreScaledExactly) {
  TempDir d;
  const std::vector<std::string> layers = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                           "model.layers.1.mlp.down_proj"};
  json ql = json::object();
  for (const auto& l : layers) ql[l] = {{"quant_algo", "FP8"}};
  const json hfq = {{"producer", {{"name", "modelopt"}, {"version", "0.35.0"}}},
                    {"quantization", {{"quant_algo", "MIXED_PRECISION"}, {"quantized_layers", ql}}}};
  write_fixture(d.str("fp8"), d.str("twin"), layers, false, tiny_llama_config(), hfq);
  const auto a = cpu_logits(d.str("fp8")), b = cpu_logits(d.str("twin"));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a, b) << "FP8 layers must compute with E4M3 x weight_scale";
  // The same codes read without their scale would be far off: the check above can fail.
  const ModelWeights w = load_weights(d.str("fp8"), QuantMode::Auto);
  for (const auto& p : w.plans) {
    const bool fp8 = std::find(layers.begin(), layers.end(), p.spec.name) != layers.end();
    EXPECT_EQ(p.storage == WeightStorage::FP8, fp8) << p.spec.name;
    if (fp8) {
      EXPECT_NE(p.reason.find("FP8 (E4M3, per-tensor scale)"), std::string::npos) << p.reason;
    }
  }
  // --quant nvfp4 quantizes the dequantized values; --quant bf16 rounds them; both load.
  EXPECT_EQ(cpu_logits(d.str("fp8"), QuantMode::NVFP4).size(), a.size());
  EXPECT_EQ(cpu_logits(d.str("fp8"), QuantMode::BF16).size(), a.size());
  const auto r = fp4lab::test::run_fp4lab("inspect " + d.str("fp8") + " --layers");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("FP8"), std::string::npos) << r.out;
}

TEST(Fp8, CompressedTensorsPerChannelScales) {
  TempDir d;
  const std::vector<std::string> layers = {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
                                           "model.layers.1.self_attn.o_proj"};
  json cfg = tiny_llama_config();
  // compressed-tensors "float-quantized": every linear but the ignored ones; here only some are FP8, the rest
  // are listed in ignore.
  std::vector<std::string> ignore;
  for (const auto& p : load_weights(fp4lab::test::data_dir() + "/models/tiny-llama", QuantMode::Auto).plans)
    if (std::find(layers.begin(), layers.end(), p.spec.name) == layers.end()) ignore.push_back(p.spec.name);
  cfg["quantization_config"] = {
      {"quant_method", "compressed-tensors"},
      {"format", "float-quantized"},
      {"ignore", ignore},
      {"config_groups",
       {{"group_0",
         {{"targets", {"Linear"}},
          {"weights", {{"num_bits", 8}, {"type", "float"}, {"strategy", "channel"}, {"dynamic", false}}},
          {"input_activations", {{"num_bits", 8}, {"type", "float"}, {"strategy", "token"}, {"dynamic", true}}}}}}}};
  write_fixture(d.str("fp8"), d.str("twin"), layers, true, cfg, json());
  EXPECT_EQ(cpu_logits(d.str("fp8")), cpu_logits(d.str("twin")));
  const ModelWeights w = load_weights(d.str("fp8"), QuantMode::Auto);
  int fp8 = 0;
  for (const auto& p : w.plans)
    if (p.storage == WeightStorage::FP8) {
      ++fp8;
      EXPECT_NE(p.reason.find("per-channel"), std::string::npos) << p.reason;
    }
  EXPECT_EQ(fp8, 3);
}

TEST(Fp8, UnreadableFormatsAreRefusedByName) {
  TempDir d;
  const std::vector<std::string> layers = {"model.layers.0.self_attn.q_proj"};
  auto err = [&](const std::string& dir) -> std::string {
    try {
      load_weights(dir, QuantMode::Auto);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  // An FP8 weight whose scale is missing.
  write_fixture(d.str("a"), d.str("a-twin"), layers, false, tiny_llama_config(), json());
  fp4lab::test::rewrite_tensors(d.str("a"), d.str("a/model.safetensors"), [](const std::string& name, auto&) {
    return !name.ends_with("q_proj.weight_scale");
  });
  EXPECT_NE(err(d.str("a")).find("weight_scale' is missing"), std::string::npos) << err(d.str("a"));
  // A per-layer algorithm fp4lab does not read (SmoothQuant INT8 in a MIXED_PRECISION config).
  write_fixture(d.str("b"), d.str("b-twin"), {}, false, tiny_llama_config(),
                {{"quantization",
                  {{"quant_algo", "MIXED_PRECISION"},
                   {"quantized_layers", {{"model.layers.1.mlp.up_proj", {{"quant_algo", "W8A8_SQ_PER_CHANNEL"}}}}}}}});
  const std::string e = err(d.str("b"));
  EXPECT_NE(e.find("model.layers.1.mlp.up_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("W8A8_SQ_PER_CHANNEL"), std::string::npos) << e;
}
