#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include "common/error.h"
#include "model/presets.h"
#include "io/model_config.h"
#include "common/json_util.h"
#include "io/quant_config.h"
#include "test_util.h"

using namespace fp4lab;

TEST(ModelConfig, SharedModelsParse) {
  const std::string m = fp4lab::test::data_dir() + "/models/";
  auto n = load_model_config(m + "tiny-nemotron-h");
  EXPECT_EQ(n.arch, Arch::NemotronH);
  EXPECT_EQ(n.layer_pattern(), "M*-M-");
  EXPECT_EQ(n.mamba_in_proj_dim(), 328);
  EXPECT_EQ(n.mamba_conv_dim(), 192);
  EXPECT_FALSE(n.tie_embeddings);
  auto l = load_model_config(m + "tiny-llama");
  EXPECT_EQ(l.rope.type, "llama3");
  EXPECT_EQ(l.rope.factor, 8.0f);
  EXPECT_EQ(l.rope.original_max_position, 32);
  EXPECT_EQ(l.rope.theta, 500000.0f);
  auto q = load_model_config(m + "tiny-qwen3");
  EXPECT_EQ(q.arch, Arch::Qwen3);
  EXPECT_FLOAT_EQ(q.norm_eps, 1e-6f);
  auto s = load_model_config(m + "stories260k");
  EXPECT_TRUE(s.tie_embeddings);
  EXPECT_EQ(s.intermediate_size, 172);
}

TEST(ModelConfig, ClassicAndNewFormsAgree) {
  const json classic =
      json::parse(R"({"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
    "num_key_value_heads":2,"vocab_size":100,"intermediate_size":128,"rope_theta":500000.0,
    "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}})");
  json modern = classic;
  modern.erase("rope_theta");
  modern.erase("rope_scaling");
  modern["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                               {"factor", 8.0},           {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto a = parse_model_config(classic, "a"), b = parse_model_config(modern, "b");
  EXPECT_EQ(a.rope.type, b.rope.type);
  EXPECT_EQ(a.rope.theta, b.rope.theta);
  EXPECT_EQ(a.rope.factor, b.rope.factor);
  EXPECT_EQ(a.head_dim, 16);

  const json nh_old = json::parse(
      R"({"model_type":"nemotron_h","hidden_size":64,"num_hidden_layers":3,"num_attention_heads":4,
    "vocab_size":100,"intermediate_size":128,"mamba_num_heads":4,"mamba_head_dim":8,"ssm_state_size":8,"n_groups":2,
    "conv_kernel":4,"hybrid_override_pattern":"M*-"})");
  json nh_new = nh_old;
  nh_new.erase("hybrid_override_pattern");
  nh_new["layers_block_type"] = {"mamba", "attention", "mlp"};
  EXPECT_EQ(parse_model_config(nh_old, "x").layers, parse_model_config(nh_new, "y").layers);
  json bad = nh_old;
  bad["hybrid_override_pattern"] = "M*E-";
  bad["num_hidden_layers"] = 4;
  EXPECT_EQ(parse_model_config(bad, "moe").layers[2], LayerKind::Moe);
  bad["hybrid_override_pattern"] = "M*X";
  bad["num_hidden_layers"] = 3;
  EXPECT_THROW(parse_model_config(bad, "x"), Error);
}

TEST(ModelConfig, BadConfigsThrowNamingTheKey) {
  auto err = [](const char* text) -> std::string {
    try {
      parse_model_config(json::parse(text), "config.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(err(R"({"model_type":"gpt2"})").find("not supported"), std::string::npos);
  EXPECT_NE(err(R"({"model_type":"llama","hidden_size":"big"})").find("hidden_size"), std::string::npos);
  EXPECT_NE(
      err(R"({"model_type":"llama","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":3,"num_key_value_heads":2,"vocab_size":10,"intermediate_size":8})")
          .find("multiple"),
      std::string::npos);
  EXPECT_NE(
      err(R"({"model_type":"llama","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"intermediate_size":8,"rope_scaling":{"rope_type":"yarn"}})")
          .find("yarn"),
      std::string::npos);
  EXPECT_NE(err(R"([])").find("not a JSON object"), std::string::npos);
}

TEST(QuantConfig, ModelOptHfQuantConfig) {
  const json hfq = json::parse(R"({"producer":{"name":"modelopt","version":"0.35.0"},
    "quantization":{"quant_algo":"NVFP4","kv_cache_quant_algo":"FP8","group_size":16,
                    "exclude_modules":["lm_head","backbone.layers.*.mixer.q_proj","*conv1d*"]}})");
  const auto q = parse_quant_config(hfq, json(), "dir");
  EXPECT_EQ(q.algo, QuantAlgo::NVFP4);
  EXPECT_EQ(q.kv_cache_algo, "FP8");
  EXPECT_EQ(q.producer, "modelopt 0.35.0");
  std::string m;
  EXPECT_EQ(q.algo_for("lm_head", &m), QuantAlgo::None);
  EXPECT_EQ(m, "lm_head");
  EXPECT_EQ(q.algo_for("backbone.layers.7.mixer.q_proj"), QuantAlgo::None);
  EXPECT_EQ(q.algo_for("backbone.layers.7.mixer.in_proj"), QuantAlgo::NVFP4);
}

TEST(QuantConfig, ConfigJsonForms) {
  const json w4a16 = json::parse(
      R"({"quantization_config":{"quant_method":"modelopt","quant_algo":"W4A16_NVFP4","ignore":["lm_head"]}})");
  EXPECT_EQ(parse_quant_config(json(), w4a16, "d").algo, QuantAlgo::W4A16_NVFP4);
  const json mixed =
      json::parse(R"({"quantization_config":{"quant_method":"modelopt","quant_algo":"MIXED_PRECISION",
     "quantized_layers":{"model.layers.0.mlp.down_proj":{"quant_algo":"NVFP4"},"model.layers.0.self_attn.q_proj":{"quant_algo":"FP8"}}}})");
  const auto mq = parse_quant_config(json(), mixed, "d");
  EXPECT_EQ(mq.algo_for("model.layers.0.mlp.down_proj"), QuantAlgo::NVFP4);
  EXPECT_EQ(mq.algo_for("model.layers.0.self_attn.q_proj"), QuantAlgo::FP8);
  EXPECT_EQ(mq.algo_for("model.layers.1.mlp.down_proj"), QuantAlgo::None);
  const json ct = json::parse(
      R"({"quantization_config":{"quant_method":"compressed-tensors","format":"nvfp4-pack-quantized",
     "config_groups":{"group_0":{"targets":["Linear"],"weights":{"num_bits":4,"type":"float","group_size":16},
     "input_activations":{"num_bits":4,"type":"float","group_size":16}}},"ignore":["lm_head","re:.*mlp\\.gate$"]}})");
  const auto cq = parse_quant_config(json(), ct, "d");
  EXPECT_EQ(cq.format, QuantFormat::CompressedTensors);
  EXPECT_EQ(cq.algo, QuantAlgo::NVFP4);
  EXPECT_EQ(cq.algo_for("model.layers.3.mlp.gate"), QuantAlgo::None);
  EXPECT_EQ(cq.algo_for("model.layers.3.mlp.gate_proj"), QuantAlgo::NVFP4);
  EXPECT_THROW(parse_quant_config(json::parse(R"({"quantization":{"quant_algo":"NVFP4","group_size":32}})"),
                                  json(), "d"),
               Error);
  EXPECT_THROW(
      parse_quant_config(
          json::parse(R"({"quantization":{"quant_algo":"NVFP4","exclude_modules":"lm_head"}})"), json(), "d"),
      Error);
  EXPECT_EQ(parse_quant_config(json(), json::parse(R"({"model_type":"llama"})"), "d").algo, QuantAlgo::None);
}

// Numbers in hostile configs: out-of-range floats (a fuzzer's 1.6e54 group_size) and strings where integers
// belong are declined, not cast (undefined behaviour) or thrown as nlohmann's own exceptions.
TEST(QuantConfig, HostileNumbersAreDeclined) {
  const json j = json::parse(
      R"({"a":4,"b":4.0,"c":1.6444444444444444e54,"d":-1,"e":"4","f":18446744073709551615,"g":null,"h":4.9})");
  EXPECT_EQ(json_int_field(j, "a", 0, 100), 4);
  EXPECT_EQ(json_int_field(j, "b", 0, 100), 4);
  EXPECT_EQ(json_int_field(j, "h", 0, 100), 4);  // truncated, as nlohmann's conversion does
  for (const char* k : {"c", "d", "e", "f", "g", "missing"})
    EXPECT_EQ(json_int_field(j, k, 0, 100), std::nullopt) << k;
  EXPECT_EQ(json_int_field(json::array({1}), "a", 0, 100), std::nullopt);
  for (const char* gs : {"1.6444444444444444e54", "\"16\"", "-16"}) {
    const json ct = json::parse(std::string(R"({"quantization_config":{"quant_method":"compressed-tensors",
      "config_groups":{"g":{"weights":{"num_bits":4,"type":"float","group_size":)") +
                                gs + "}}}}}");
    EXPECT_EQ(parse_quant_config(json(), ct, "d").algo, QuantAlgo::Unsupported) << gs;
  }
}

TEST(QuantConfig, Wildcards) {
  EXPECT_TRUE(wildcard_match("*", ""));
  EXPECT_TRUE(wildcard_match("model.layers.*.mlp.*", "model.layers.12.mlp.down_proj"));
  EXPECT_FALSE(wildcard_match("model.layers.*.mlp", "model.layers.12.mlp.down_proj"));
  EXPECT_TRUE(wildcard_match("*.?_proj", "a.q_proj"));
  EXPECT_FALSE(wildcard_match("*.?_proj", "a.qq_proj"));
  EXPECT_TRUE(exclude_matches("model.layers.0", "model.layers.0.mlp.up_proj"));
  EXPECT_FALSE(exclude_matches("model.layers.1", "model.layers.10.mlp.up_proj"));
  EXPECT_TRUE(wildcard_match(std::string(200, '*') + "b", std::string(5000, 'a') + "b"));
}

// Python's json.dump writes bare NaN / Infinity / -Infinity, transformers 5 writes {"__float__": "Infinity"}:
// both are how published configs carry non-finite numbers (NVIDIA's Nemotron-H: time_step_limit [0.0,
// Infinity]).
TEST(ConfigJson, PythonNonFiniteLiteralsAndTransformersFloats) {
  const json j = parse_json_config(
      R"({"a": [0.0, Infinity], "b": -Infinity, "c": NaN, "d": {"__float__": "Infinity"},
          "e": {"__float__": "-Infinity"}, "f": "Infinity NaN \"-Infinity\"", "g": [{"__float__": 2.5}],
          "h": {"__float__": "inf", "x": 1}})",
      "t.json");
  EXPECT_EQ(j["a"][1].get<double>(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(j["b"].get<double>(), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(j["c"].get<double>()));
  EXPECT_EQ(j["d"].get<double>(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(j["e"].get<double>(), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(j["f"], "Infinity NaN \"-Infinity\"");  // inside strings nothing changes
  EXPECT_EQ(j["g"][0].get<double>(), 2.5);
  EXPECT_TRUE(j["h"].is_object());  // a second key: not the transformers form
  EXPECT_THROW(parse_json_config(R"({"a": Inf})", "t.json"), Error);
  EXPECT_THROW(parse_json_config(R"({"a": {"__float__": "lots"}})", "t.json"), Error);
  EXPECT_THROW(parse_json_config(R"({"a": Infinityx})", "t.json"), Error);
  // Written back as Python writes them, and read again to the same values.
  const std::string text = dump_json_config(j);
  EXPECT_NE(text.find("-Infinity"), std::string::npos) << text;
  EXPECT_EQ(text.find("null"), std::string::npos) << text;
  const json k = parse_json_config(text, "again");
  EXPECT_EQ(k["a"], j["a"]);
  EXPECT_TRUE(std::isnan(k["c"].get<double>()));
  // The strict parser still refuses them (safetensors headers, results files).
  EXPECT_THROW(parse_json_untrusted(R"({"a": Infinity})", "t.json"), Error);
}

TEST(ModelConfig, NemotronHTimeStepLimitKeepsInfinity) {
  const std::string base =
      R"({"model_type":"nemotron_h","hidden_size":64,"num_hidden_layers":3,"num_attention_heads":4,
    "vocab_size":100,"intermediate_size":128,"mamba_num_heads":4,"mamba_head_dim":8,"ssm_state_size":8,"n_groups":2,
    "conv_kernel":4,"hybrid_override_pattern":"M*-","time_step_limit":)";
  auto c = parse_model_config(parse_json_config(base + "[0.0, Infinity]}", "c"), "c");
  EXPECT_EQ(c.time_step_limit_min, 0.0f);
  EXPECT_EQ(c.time_step_limit_max, std::numeric_limits<float>::infinity());
  c = parse_model_config(parse_json_config(base + R"([0.001, {"__float__": "Infinity"}]})", "c"), "c");
  EXPECT_FLOAT_EQ(c.time_step_limit_min, 0.001f);
  EXPECT_EQ(c.time_step_limit_max, std::numeric_limits<float>::infinity());
  c = parse_model_config(parse_json_config(base + "[0.0, 0.1]}", "c"), "c");
  EXPECT_FLOAT_EQ(c.time_step_limit_max, 0.1f);
  EXPECT_THROW(parse_model_config(parse_json_config(base + "[NaN, 1.0]}", "c"), "c"), Error);
  EXPECT_THROW(parse_model_config(parse_json_config(base + "[1.0, 0.5]}", "c"), "c"), Error);
}

// Every preset written as a config.json (what `fp4lab export` writes) reads back to the same config.
TEST(ModelConfig, PresetConfigsRoundTripThroughConfigJson) {
  for (const auto& p : presets()) {
    const ModelConfig& a = p.config;
    const ModelConfig b = parse_model_config(
        parse_json_config(dump_json_config(model_config_to_json(a)), p.name), p.name);
    EXPECT_EQ(b.arch, a.arch) << p.name;
    EXPECT_EQ(b.layer_pattern(), a.layer_pattern()) << p.name;
    EXPECT_EQ(b.hidden_size, a.hidden_size) << p.name;
    EXPECT_EQ(b.intermediate_size, a.intermediate_size) << p.name;
    EXPECT_EQ(b.num_heads, a.num_heads) << p.name;
    EXPECT_EQ(b.num_kv_heads, a.num_kv_heads) << p.name;
    EXPECT_EQ(b.head_dim, a.head_dim) << p.name;
    EXPECT_EQ(b.vocab_size, a.vocab_size) << p.name;
    EXPECT_EQ(b.max_position, a.max_position) << p.name;
    EXPECT_EQ(b.norm_eps, a.norm_eps) << p.name;
    EXPECT_EQ(b.tie_embeddings, a.tie_embeddings) << p.name;
    EXPECT_EQ(b.hidden_act, a.hidden_act) << p.name;
    EXPECT_EQ(b.rope.type, a.rope.type) << p.name;
    EXPECT_EQ(b.rope.theta, a.rope.theta) << p.name;
    EXPECT_EQ(b.rope.factor, a.rope.factor) << p.name;
    EXPECT_EQ(b.rope.original_max_position, a.rope.original_max_position) << p.name;
    EXPECT_EQ(b.bos_id, a.bos_id) << p.name;
    EXPECT_EQ(b.eos_ids, a.eos_ids) << p.name;
    EXPECT_EQ(b.mamba_num_heads, a.mamba_num_heads) << p.name;
    EXPECT_EQ(b.mamba_head_dim, a.mamba_head_dim) << p.name;
    EXPECT_EQ(b.ssm_state_size, a.ssm_state_size) << p.name;
    EXPECT_EQ(b.n_groups, a.n_groups) << p.name;
    EXPECT_EQ(b.conv_kernel, a.conv_kernel) << p.name;
    EXPECT_EQ(b.chunk_size, a.chunk_size) << p.name;
    EXPECT_EQ(b.time_step_limit_max, a.time_step_limit_max) << p.name;
  }
}

// The configuration files of published checkpoints (tests/data/configs, provenance in its README.md): each
// parses in Python's JSON dialect, and what fp4lab derives from it (architecture, layers, layer pattern, which
// layers a quantization config keeps out) is what tests/data/configs/expected.json, read off the files by
// hand, says. Architectures fp4lab does not run are refused by name, not by a JSON error.
TEST(ConfigCorpus, PublishedConfigsParse) {
  namespace fs = std::filesystem;
  const std::string root = fp4lab::test::data_dir() + "/configs/";
  const json expected = read_json_file(root + "expected.json");
  ASSERT_GE(expected.size(), 15u);
  const std::set<std::string> runs = {"llama", "mistral", "qwen3", "nemotron_h"};
  int model_configs = 0, quant_configs = 0, nonfinite = 0;
  for (const auto& e : expected) {
    const std::string dir = root + e["dir"].get<std::string>();
    SCOPED_TRACE(dir);
    for (const auto& f : e["files"]) {
      const std::string name = f.get<std::string>();
      if (name.ends_with(".excerpt")) continue;  // cut where the source stopped quoting: not whole JSON
      const json j = read_json_config_file(dir + "/" + name);
      ASSERT_TRUE(j.is_object());
      bool has_nonfinite = false;
      auto walk = [&](auto&& self, const json& v) -> void {
        if (v.is_number_float() && !std::isfinite(v.get<double>())) has_nonfinite = true;
        if (v.is_structured())
          for (const auto& x : v) self(self, x);
      };
      walk(walk, j);
      EXPECT_EQ(has_nonfinite, e["has_nonfinite"].get<bool>()) << name;
      nonfinite += has_nonfinite;
      if (name == "config.json") {
        ++model_configs;
        const std::string mt = j.value("model_type", "");
        if (runs.count(mt)) {
          const ModelConfig c = parse_model_config(j, name);
          EXPECT_EQ(c.num_layers, e["num_hidden_layers"].get<int>());
          EXPECT_EQ(c.hidden_size, e["hidden_size"].get<int>());
          if (!e["layer_pattern"].is_null()) {
            EXPECT_EQ(c.layer_pattern(), e["layer_pattern"].get<std::string>());
          }
          if (!e["architecture"].is_null()) {
            EXPECT_EQ(j["architectures"][0], e["architecture"]);
          }
        } else {
          try {
            parse_model_config(j, name);
            ADD_FAILURE() << mt << " parsed, but fp4lab does not run it";
          } catch (const Error& err) {
            EXPECT_NE(std::string(err.what()).find("is not supported"), std::string::npos) << err.what();
          }
        }
      }
      if (name == "hf_quant_config.json") {
        ++quant_configs;
        const QuantConfig q = parse_quant_config(j, json(), dir);
        const std::string want = e["quant"];
        const QuantAlgo algo = want == "nvfp4" ? QuantAlgo::NVFP4
                               : want == "fp8" ? QuantAlgo::FP8
                                               : QuantAlgo::MixedPrecision;
        EXPECT_EQ(q.algo, algo) << want;
        std::vector<std::string> ex;
        if (!e["excluded_modules"].is_null()) ex = e["excluded_modules"].get<std::vector<std::string>>();
        EXPECT_EQ(q.exclude, ex);
        // Every layer an exclude pattern names is kept out; a layer no pattern names is quantized.
        for (const auto& pat : ex)
          if (pat.find('*') == std::string::npos && pat.find('?') == std::string::npos) {
            EXPECT_EQ(q.algo_for(pat), QuantAlgo::None) << pat;
          }
        EXPECT_NE(q.algo_for("model.layers.0.mlp.fp4lab_probe_proj"), QuantAlgo::None);
      }
    }
  }
  EXPECT_GE(model_configs, 8);
  EXPECT_GE(quant_configs, 6);
  EXPECT_GE(nonfinite, 3);
}
