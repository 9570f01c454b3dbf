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
#include "fp8_fixture.h"
#include "test_util.h"

using namespace fp4lab;
namespace fs = std::filesystem;
using fp4lab::test::TempDir;

namespace {

std::vector<float> cpu_logits(const std::string& dir, QuantMode mode = QuantMode::Auto) {
  CpuOps ops(2);
  CpuModel m(load_weights(dir, mode), ops);
  auto s = m.new_sequence(64);
  const std::vector<int> prompt = {1, 17, 33, 250, 4, 99, 7, 400};
  return m.forward(s, prompt, true);
}

using fp4lab::test::tiny_llama_config;
using fp4lab::test::write_fixture;

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
  // They run as FP8 under --quant auto and nvfp4 (never quantized twice); --quant bf16 dequantizes them.
  for (const QuantMode q : {QuantMode::Auto, QuantMode::NVFP4, QuantMode::BF16})
    for (const auto& p : load_weights(d.str("fp8"), q).plans)
      if (p.storage == WeightStorage::FP8) {
        EXPECT_EQ(p.fp8, q != QuantMode::BF16) << p.spec.name << " " << quant_mode_name(q);
        EXPECT_FALSE(p.nvfp4) << p.spec.name;
      }
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

// --quant fp8: ModelOpt's FP8 recipe at load (one scale per tensor, amax / 448, round to nearest E4M3 with
// saturation; q/k/v and gate/up under their group's amax, as engines join them), every linear layer but the
// lm_head; the CPU backend computes with the exact E4M3 x scale values.
TEST(Fp8, QuantFp8QuantizesAtLoadByModelOptsRecipe) {
  const std::string dir = fp4lab::test::data_dir() + "/models/tiny-llama";
  const ModelWeights f32 = load_weights(dir, QuantMode::Auto);
  const ModelWeights w = load_weights(dir, QuantMode::FP8);
  // The amax of each fusion group (q/k/v, gate/up share a scale; the others are alone).
  std::map<std::string, float> group_amax;
  for (const auto& p : f32.plans)
    for (const float v : linear_weight(f32, p.spec).w)
      group_amax[fused_scale_group(p.spec)] = std::max(group_amax[fused_scale_group(p.spec)], std::fabs(v));
  int fp8 = 0;
  for (const auto& p : w.plans) {
    const LinearWeight& lw = linear_weight(w, p.spec);
    if (p.spec.role == "lm_head") {
      EXPECT_FALSE(p.fp8);
      EXPECT_FALSE(lw.fp8.has_value());
      continue;
    }
    ++fp8;
    ASSERT_TRUE(p.fp8) << p.spec.name;
    ASSERT_TRUE(lw.fp8.has_value()) << p.spec.name;
    const std::vector<float>& src = linear_weight(f32, p.spec).w;
    EXPECT_EQ(lw.fp8->scale, group_amax.at(fused_scale_group(p.spec)) / 448.0f) << p.spec.name;
    EXPECT_TRUE(lw.fp8->row_scales.empty());
    for (size_t i = 0; i < src.size(); i += 97) {
      EXPECT_EQ(lw.fp8->data[i], e4m3_encode(src[i] / lw.fp8->scale)) << p.spec.name << " " << i;
      EXPECT_EQ(lw.w[i], e4m3_decode(lw.fp8->data[i]) * lw.fp8->scale) << p.spec.name << " " << i;
    }
  }
  EXPECT_EQ(fp8, static_cast<int>(w.plans.size()) - 1);
  // Close to the float model, not equal to it.
  const auto a = cpu_logits(dir), b = cpu_logits(dir, QuantMode::FP8);
  ASSERT_EQ(a.size(), b.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += (a[i] - b[i]) * (a[i] - b[i]), norm += a[i] * a[i];
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(std::sqrt(diff / norm), 0.1);
  // inspect and the planner name the format.
  const auto r = fp4lab::test::run_fp4lab("inspect " + dir + " --layers");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(parse_quant_mode("fp8"), QuantMode::FP8);
}

// quantize --format fp8 writes ModelOpt's FP8 layout (E4M3 weight, F32 scalar weight_scale, hf_quant_config
// FP8), with the codes --quant fp8 makes at load; the result loads and runs as FP8.
TEST(Fp8, QuantizeWritesTheModelOptFp8Layout) {
  TempDir d;
  const std::string src = fp4lab::test::data_dir() + "/models/tiny-llama";
  const auto r = fp4lab::test::run_fp4lab("quantize --in " + src + " --out " + d.str("q") + " --format fp8");
  ASSERT_EQ(r.status, 0) << r.out;
  const TensorStore st = TensorStore::open_dir(d.str("q"));
  const ModelWeights at_load = load_weights(src, QuantMode::FP8);
  const ModelWeights written = load_weights(d.str("q"), QuantMode::Auto);
  int fp8 = 0;
  for (const auto& p : written.plans) {
    if (!p.fp8) continue;
    ++fp8;
    EXPECT_EQ(p.storage, WeightStorage::FP8) << p.spec.name;
    EXPECT_EQ(st.get(p.spec.name + ".weight").dtype, DType::F8_E4M3);
    const TensorView& sc = st.get(p.spec.name + ".weight_scale");
    EXPECT_EQ(sc.dtype, DType::F32);
    EXPECT_EQ(sc.numel(), 1);
    const LinearWeight &a = linear_weight(at_load, p.spec), &b = linear_weight(written, p.spec);
    ASSERT_TRUE(a.fp8 && b.fp8) << p.spec.name;
    EXPECT_EQ(a.fp8->data, b.fp8->data) << p.spec.name;
    EXPECT_EQ(a.fp8->scale, b.fp8->scale) << p.spec.name;
  }
  EXPECT_EQ(fp8, static_cast<int>(written.plans.size()) - 1);  // all but the lm_head
  const json hfq = read_json_file(d.str("q") + "/hf_quant_config.json");
  EXPECT_EQ(hfq["quantization"]["quant_algo"], "FP8");
  EXPECT_FALSE(hfq["quantization"].contains("group_size"));
  EXPECT_EQ(cpu_logits(d.str("q")).size(), cpu_logits(src).size());
  // NVFP4's methods do not apply.
  const auto bad = fp4lab::test::run_fp4lab("quantize --in " + src + " --out " + d.str("q2") +
                                            " --format fp8 --method scale-search");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("--format fp8 takes --method rtn"), std::string::npos) << bad.out;
}
