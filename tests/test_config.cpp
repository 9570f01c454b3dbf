#include <gtest/gtest.h>

#include "common/error.h"
#include "io/model_config.h"
#include "io/json_util.h"
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
