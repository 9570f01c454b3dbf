// `fp4lab export` against the loaders: an exported preset holds exactly the values the GPU backend generates
// for the preset (fill_random_bf16's generator and seeds), its NVFP4 form is exactly what quantizing its BF16
// form at load gives (fused q/k/v and gate/up sharing a tensor scale), and a streamed load leaves the large
// tensors in the files. GpuEngine.ExportedCheckpointsStreamToThePresetsLogits checks the GPU side.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "common/hd.h"
#include "common/random.h"
#include "engine/backends.h"
#include "common/json_util.h"
#include "model/export.h"
#include "model/weights.h"
#include "test_util.h"

using namespace fp4lab;
namespace fs = std::filesystem;
using fp4lab::test::run_fp4lab;
using fp4lab::test::TempDir;

namespace {

float preset_value(uint64_t seed, int64_t i) {
  return bf16_to_f32(random_bf16_word(seed, static_cast<uint64_t>(i), 0.02f));
}

}  // namespace

TEST(Export, ShardsHoldThePresetValuesAndNvfp4IsTheirQuantization) {
  for (const char* preset : {"tiny", "tiny-nemotron-h"}) {
    SCOPED_TRACE(preset);
    TempDir d;
    ExportOptions o;
    o.seed = 5;
    o.shard_bytes = 300000;  // several shards and an index even for a tiny model
    o.threads = 2;
    o.quant = QuantMode::BF16;
    const ExportReport rb = export_preset(preset, d.str("bf16"), o);
    o.quant = QuantMode::NVFP4;
    const ExportReport rn = export_preset(preset, d.str("nvfp4"), o);
    EXPECT_GT(rb.shards, 1);
    EXPECT_TRUE(fs::exists(d.str("bf16/model.safetensors.index.json")));
    EXPECT_GT(rn.nvfp4_layers, 0);
    EXPECT_LT(rn.bytes, rb.bytes);

    // BF16: every large tensor is the device generator's output for the preset's seeds.
    const ModelWeights ref = synthetic_weights(preset, QuantMode::BF16, 5, false);
    const ModelWeights b = load_weights(d.str("bf16"), QuantMode::BF16);
    const std::vector<uint64_t> seeds = preset_linear_seeds(ref);
    for (int64_t i : {int64_t{0}, int64_t{1}, int64_t{777}})
      EXPECT_EQ(b.embed[static_cast<size_t>(i)], preset_value(preset_embed_seed(5), i));
    for (size_t p = 0; p < b.plans.size(); ++p) {
      const LinearWeight& lw = linear_weight(b, b.plans[p].spec);
      if (b.plans[p].spec.role == "lm_head" && b.config.tie_embeddings) continue;
      for (int64_t i : {int64_t{0}, lw.n * lw.k / 2, lw.n * lw.k - 1})
        ASSERT_EQ(lw.w[static_cast<size_t>(i)], preset_value(seeds[p], i)) << b.plans[p].spec.name;
    }
    EXPECT_EQ(b.config.layer_pattern(), ref.config.layer_pattern());
    EXPECT_EQ(b.layers[0].norm, ref.layers[0].norm);
    EXPECT_EQ(b.layers.back().conv_w, ref.layers.back().conv_w);

    // NVFP4: the stored codes are what quantizing the BF16 export at load gives (host recipe).
    const ModelWeights n = load_weights(d.str("nvfp4"), QuantMode::Auto);
    const ModelWeights q = load_weights(d.str("bf16"), QuantMode::NVFP4);
    int compared = 0;
    for (size_t p = 0; p < n.plans.size(); ++p) {
      EXPECT_EQ(n.plans[p].nvfp4, q.plans[p].nvfp4) << n.plans[p].spec.name;
      const LinearWeight &a = linear_weight(n, n.plans[p].spec), &c = linear_weight(q, q.plans[p].spec);
      if (!n.plans[p].nvfp4) continue;
      ASSERT_TRUE(a.nvfp4 && c.nvfp4) << n.plans[p].spec.name;
      EXPECT_EQ(a.nvfp4->tensor_scale, c.nvfp4->tensor_scale) << n.plans[p].spec.name;
      EXPECT_EQ(a.nvfp4->packed, c.nvfp4->packed) << n.plans[p].spec.name;
      EXPECT_EQ(a.nvfp4->block_scales, c.nvfp4->block_scales) << n.plans[p].spec.name;
      ++compared;
    }
    EXPECT_EQ(compared, rn.nvfp4_layers);

    // Streamed: large tensors stay in the files, small ones are on the host.
    const ModelWeights s = load_weights(d.str("nvfp4"), QuantMode::Auto, WeightHome::Device);
    ASSERT_TRUE(s.streamed());
    EXPECT_TRUE(s.embed.empty());
    ASSERT_NE(s.embed_stored, nullptr);
    EXPECT_EQ(s.embed_stored->dtype, DType::BF16);
    EXPECT_FALSE(s.layers[0].norm.empty());
    for (const auto& p : s.plans) {
      const LinearWeight& lw = linear_weight(s, p.spec);
      EXPECT_TRUE(lw.w.empty());
      if (p.spec.role == "lm_head" && s.config.tie_embeddings) continue;
      ASSERT_NE(lw.stored, nullptr) << p.spec.name;
      EXPECT_EQ(lw.stored_scales != nullptr, p.nvfp4) << p.spec.name;
      if (p.nvfp4) {
        EXPECT_EQ(lw.stored_tensor_scale, linear_weight(n, p.spec).nvfp4->tensor_scale);
      }
    }
    // --quant bf16 on the NVFP4 export dequantizes on the host: not streamed.
    EXPECT_FALSE(load_weights(d.str("nvfp4"), QuantMode::BF16, WeightHome::Device).streamed());
  }
}

TEST(Export, CliWritesACheckpointThatGeneratesLikeItsQuantizedTwin) {
  TempDir d;
  auto r = run_fp4lab("export --model preset:tiny-nemotron-h --out " + d.str("b") + " --seed 3 --shard-gb 0.0003");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("wrote"), std::string::npos) << r.out;
  r = run_fp4lab("export --model preset:tiny-nemotron-h --out " + d.str("n") + " --seed 3 --quant nvfp4");
  ASSERT_EQ(r.status, 0) << r.out;
  const json cfg = read_json_config_file(d.str("n/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["quant_algo"], "W4A16_NVFP4");
  EXPECT_EQ(cfg["time_step_limit"][1].get<double>(), std::numeric_limits<double>::infinity());
  EXPECT_NE(read_text_file(d.str("n/config.json")).find("Infinity"), std::string::npos);
  auto gen = [&](const std::string& dir, const std::string& quant) {
    auto g = run_fp4lab("generate --model " + dir + " --quant " + quant +
                        " --greedy --prompt-ids 1,2,3,4 --max-new-tokens 6 --threads 2");
    EXPECT_EQ(g.status, 0) << g.out;
    const size_t at = g.out.find("prompt 0 new ids:");
    return at == std::string::npos ? g.out : g.out.substr(at, g.out.find('\n', at) - at);
  };
  const std::string a = gen(d.str("n"), "auto"), b = gen(d.str("b"), "nvfp4");
  EXPECT_NE(a.find("new ids:"), std::string::npos) << a;
  EXPECT_EQ(a, b);
  r = run_fp4lab("inspect " + d.str("n"));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(run_fp4lab("export --model " + d.str("n") + " --out " + d.str("x")).status, 0);
  EXPECT_NE(run_fp4lab("export --model preset:nope --out " + d.str("x")).status, 0);
}

// Which loads stream: an F32 checkpoint run in BF16 does (converted on the GPU); the same checkpoint quantized
// at load does not, so that its NVFP4 codes come from the stored F32 values, as on the CPU backend.
TEST(Export, F32CheckpointsQuantizedAtLoadTakeTheHostPath) {
  const std::string f32 = fp4lab::test::data_dir() + "/models/tiny-llama";  // F32 weights
  EXPECT_TRUE(load_weights(f32, QuantMode::Auto, WeightHome::Device).streamed());
  EXPECT_TRUE(load_weights(f32, QuantMode::BF16, WeightHome::Device).streamed());
  const ModelWeights q = load_weights(f32, QuantMode::NVFP4, WeightHome::Device);
  EXPECT_FALSE(q.streamed());
  EXPECT_EQ(q.plans[0].nvfp4, true);
  ASSERT_TRUE(linear_weight(q, q.plans[0].spec).nvfp4.has_value());
}
