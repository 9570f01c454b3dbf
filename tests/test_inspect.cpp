#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "cpu/cpu_ops.h"
#include "cpu/linear_ref.h"
#include "cuda/gpu_info.h"
#include "format/nvfp4.h"
#include "io/model_config.h"
#include "model/quantize.h"
#include "io/safetensors.h"
#include "model/inspect.h"
#include "model/presets.h"
#include "test_util.h"

using namespace fp4lab;
using fp4lab::test::data_dir;
using fp4lab::test::run_fp4lab;
using fp4lab::test::TempDir;

TEST(Inspect, TinyNemotronHPattern) {
  const auto r = run_fp4lab("inspect " + data_dir() + "/models/tiny-nemotron-h --layers");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("nemotron_h, 5 layers, pattern M*-M-"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("backbone.layers.0.mixer.in_proj"), std::string::npos);
  EXPECT_NE(r.out.find("mamba.in"), std::string::npos);
}

TEST(Inspect, EverySharedModel) {
  for (const char* m : {"stories260k", "tiny-llama", "tiny-qwen3", "tiny-nemotron-h"}) {
    const std::string dir = data_dir() + "/models/" + m;
    const auto store = TensorStore::open_dir(dir);
    const auto s = summarize_checkpoint(dir, store);
    // Every tensor of the checkpoint is accounted for by the parameter count.
    int64_t stored = 0;
    for (const auto& [n, t] : store.all()) stored += t->numel();
    EXPECT_EQ(s.params_total, stored) << m;
  }
}

TEST(Inspect, Stories260kKNotMultipleOf16) {
  const std::string dir = data_dir() + "/models/stories260k";
  const auto store = TensorStore::open_dir(dir);
  const auto s = summarize_checkpoint(dir, store);
  int k172 = 0;
  for (const auto& p : s.nvfp4_plan)
    if (p.spec.role == "mlp.down") {
      EXPECT_FALSE(p.nvfp4);
      EXPECT_NE(p.reason.find("K=172"), std::string::npos);
      ++k172;
    } else if (p.spec.role != "lm_head") {
      EXPECT_TRUE(p.nvfp4) << p.spec.name;
    }
  EXPECT_EQ(k172, 5);
}

TEST(Inspect, QuantizedCheckpointRoundTrip) {
  TempDir d;
  const std::string in = data_dir() + "/models/tiny-llama";
  const auto rep = quantize_checkpoint_nvfp4(in, d.str(), {});
  EXPECT_EQ(rep.quantized, 14);  // 7 linears x 2 layers; lm_head excluded
  const auto store = TensorStore::open_dir(d.str());
  const auto s = summarize_checkpoint(d.str(), store);
  EXPECT_EQ(s.quant.algo, QuantAlgo::W4A16_NVFP4);
  for (const auto& p : s.linears) {
    EXPECT_EQ(p.nvfp4, p.spec.role != "lm_head") << p.spec.name;
    if (p.spec.role == "lm_head") {
      EXPECT_NE(p.reason.find("excluded by 'lm_head'"), std::string::npos) << p.reason;
    }
  }
  // q/k/v share one weight_scale_2 (max over shards), and dequantized weights are close to the originals.
  const float sq = tensor_to_f32(store.get("model.layers.0.self_attn.q_proj.weight_scale_2"))[0];
  EXPECT_EQ(sq, tensor_to_f32(store.get("model.layers.0.self_attn.v_proj.weight_scale_2"))[0]);
  const auto orig_store = TensorStore::open_dir(in);
  const auto w = tensor_to_f32(orig_store.get("model.layers.0.mlp.down_proj.weight"));
  Nvfp4Tensor t;
  t.rows = 128;
  t.cols = 384;
  const auto& pk = store.get("model.layers.0.mlp.down_proj.weight");
  const auto& sc = store.get("model.layers.0.mlp.down_proj.weight_scale");
  t.packed.assign(pk.data, pk.data + pk.nbytes());
  t.block_scales.assign(sc.data, sc.data + sc.nbytes());
  t.tensor_scale = tensor_to_f32(store.get("model.layers.0.mlp.down_proj.weight_scale_2"))[0];
  EXPECT_EQ(t.tensor_scale, amax_ref(w) / 2688.0f);
  std::vector<float> y(w.size());
  nvfp4_dequantize_ref(t, y);
  double num = 0, den = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    num += double(w[i] - y[i]) * (w[i] - y[i]);
    den += double(w[i]) * w[i];
  }
  EXPECT_LT(std::sqrt(num / den), 0.15);
  const auto r = run_fp4lab("inspect " + d.str());
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("14 NVFP4 as stored"), std::string::npos) << r.out;
}

TEST(Inspect, Nvfp4ShapeMismatchIsReported) {
  TempDir d;
  quantize_checkpoint_nvfp4(data_dir() + "/models/tiny-llama", d.str(), {});
  // Rewrite one block-scale tensor with a wrong shape.
  const auto store = TensorStore::open_dir(d.str());
  SafetensorsWriter w;
  for (const auto& [name, t] : store.all()) {
    auto shape = t->shape;
    std::vector<uint8_t> b(t->data, t->data + t->nbytes());
    if (name == "model.layers.1.mlp.up_proj.weight_scale") {
      shape = {shape[0] / 2, shape[1] * 2};
    }
    w.add(name, t->dtype, shape, b);
  }
  w.write(d.str("model.safetensors"));
  const auto r = run_fp4lab("inspect " + d.str());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("model.layers.1.mlp.up_proj.weight_scale"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("expected [384, 8]"), std::string::npos) << r.out;
}

TEST(Inspect, NemotronPresetBytesPerToken) {
  // The figures: 16.6 GB/token in BF16, 5.83 GB in NVFP4 as NVIDIA's checkpoint does it.
  const auto p = find_preset("preset:nemotron-nano-9b-v2");
  ASSERT_TRUE(p);
  const auto s = summarize_config("preset", p->config);
  EXPECT_NEAR(s.bytes_per_token_bf16 / 1e9, 16.6, 0.1);
  EXPECT_NEAR(s.bytes_per_token_nvfp4 / 1e9, 5.83, 0.15);
  const auto l = summarize_config("preset", find_preset("llama-3.1-8b")->config);
  EXPECT_NEAR(l.params_total / 1e9, 8.03, 0.01);
}

TEST(Quantize, CliWritesACheckpointTheEngineLoads) {
  TempDir d;
  auto r = run_fp4lab("quantize --in " + data_dir() + "/models/tiny-nemotron-h --out " + d.str("q"));
  ASSERT_EQ(r.status, 0) << r.out;
  // Nemotron-H defaults: Mamba and MLP linears NVFP4 (8), attention and lm_head kept.
  EXPECT_NE(r.out.find("8 linear layers NVFP4"), std::string::npos) << r.out;
  r = run_fp4lab("inspect " + d.str("q"));
  EXPECT_NE(r.out.find("W4A16_NVFP4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("8 NVFP4 as stored"), std::string::npos) << r.out;
  r = run_fp4lab("generate --model " + d.str("q") + " --prompt-ids 1,2,3 --max-new-tokens 3 --greedy");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("8/13 linear layers NVFP4"), std::string::npos) << r.out;
  r = run_fp4lab("quantize --in " + d.str("q") + " --out " + d.str("q2"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("already quantized"), std::string::npos) << r.out;
}

TEST(Quantize, CalibrationWritesInputScalesFromActivationMaxima) {
  TempDir d;
  const std::string in = data_dir() + "/models/tiny-llama";
  const std::vector<int> ids{1, 17, 42, 99, 5, 250, 3, 77, 12, 8};
  {
    std::ofstream f(d.str("calib.ids"));
    for (int i : ids) f << i << " ";
  }
  // On the CPU: the check below is the float32 forward's (the GPU's BF16 one rounds the maxima).
  auto r = run_fp4lab("quantize --in " + in + " --out " + d.str("q") + " --calib " + d.str("calib.ids") +
                      " --device cpu");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("input scales from 10 calibration tokens"), std::string::npos) << r.out;
  const auto st = TensorStore::open_dir(d.str("q"));
  const ModelConfig cfg = load_model_config(in);
  auto scalar = [&](const std::string& n) { return tensor_to_f32(st.get(n))[0]; };
  // Independent check for layer 0's q/k/v: their input is rmsnorm(embedding rows), whose max |x| over the
  // calibration tokens, / 2688, is the input scale the three fused projections share.
  const auto src = TensorStore::open_dir(in);
  const auto emb = tensor_to_f32(src.get("model.embed_tokens.weight"));
  const auto norm = tensor_to_f32(src.get("model.layers.0.input_layernorm.weight"));
  const int64_t H = cfg.hidden_size;
  float amax = 0;
  for (int id : ids) {
    double ss = 0;
    for (int64_t j = 0; j < H; ++j) ss += double(emb[id * H + j]) * emb[id * H + j];
    const double inv = 1.0 / std::sqrt(ss / H + cfg.norm_eps);
    for (int64_t j = 0; j < H; ++j) amax = std::max(amax, std::fabs(float(emb[id * H + j] * inv) * norm[j]));
  }
  for (const char* p : {"q_proj", "k_proj", "v_proj"})
    EXPECT_NEAR(scalar(std::string("model.layers.0.self_attn.") + p + ".input_scale"), amax / 2688.0f,
                amax / 2688.0f * 1e-4)
        << p;
  // gate/up share one scale; down has its own; all positive.
  EXPECT_EQ(scalar("model.layers.0.mlp.gate_proj.input_scale"),
            scalar("model.layers.0.mlp.up_proj.input_scale"));
  EXPECT_GT(scalar("model.layers.0.mlp.down_proj.input_scale"), 0.0f);
  r = run_fp4lab("inspect " + d.str("q"));
  EXPECT_NE(r.out.find("NVFP4"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("W4A16_NVFP4"), std::string::npos) << r.out;
  r = run_fp4lab("generate --model " + d.str("q") + " --prompt-ids 1,2,3 --max-new-tokens 3 --greedy");
  EXPECT_EQ(r.status, 0) << r.out;
}

namespace {

// stories260k's golden prompt and greedy continuation as a token file at path: the tokens `eval ppl` scores.
void write_golden_tokens(const std::string& model_dir, const std::string& path) {
  const auto g = nlohmann::json::parse(std::ifstream(model_dir + "/golden.json"));
  std::ofstream f(path);
  for (int id : g["prompt_ids"]) f << id << " ";
  for (int id : g["greedy_new_ids"]) f << id << " ";
}

// `quantize --method method extra` into d/method, then KL(float || quantized) mean over the golden tokens.
// eval_extra: options of `eval ppl` (--w4a4-b).
double quantized_kl(const std::string& in, TempDir& d, const std::string& method, const std::string& extra = "",
                    const std::string& eval_extra = "") {
  const std::string out = d.str(method + std::to_string(std::hash<std::string>{}(extra)));
  auto r = run_fp4lab("quantize --in " + in + " --out " + out + " --method " + method + extra);
  EXPECT_EQ(r.status, 0) << r.out;
  r = run_fp4lab("eval ppl --model " + in + " --model-b " + out + " --quant-b auto --tokens " +
                 d.str("tokens.ids") + eval_extra);
  EXPECT_EQ(r.status, 0) << r.out;
  const auto at = r.out.find("mean ");
  EXPECT_NE(at, std::string::npos) << r.out;
  return at == std::string::npos ? 0.0 : std::stod(r.out.substr(at + 5));
}

// d/calib.ids: 16 sequences of 256 tokens that the float model samples itself from BOS (seed 1), in one
// batch, so that the golden continuation `eval ppl` scores stays held out.
bool write_sampled_calibration(const std::string& in, TempDir& d) {
  std::string prompts;
  for (int i = 0; i < 16; ++i) prompts += " --prompt-ids 1";
  const auto r = run_fp4lab("generate --model " + in + prompts + " --batch 16 --max-new-tokens 255 " +
                            "--temperature 0.8 --seed 1 --json " + d.str("gen.json"));
  EXPECT_EQ(r.status, 0) << r.out;
  if (r.status != 0) return false;
  std::ofstream calib(d.str("calib.ids"));
  const auto gen = nlohmann::json::parse(std::ifstream(d.str("gen.json")));
  for (const auto& seq : gen["new_ids"]) {
    calib << "1 ";
    for (int id : seq) calib << id << " ";
  }
  return true;
}

}  // namespace

TEST(Quantize, ScaleSearchLowersTheKlAgainstTheFloatModel) {
  // stories260k (float32 weights) quantized both ways, each compared with the float model on the golden
  // prompt and continuation by `eval ppl --model-b`: the searched scales must come closer.
  TempDir d;
  const std::string in = data_dir() + "/models/stories260k";
  write_golden_tokens(in, d.str("tokens.ids"));
  const double rtn = quantized_kl(in, d, "rtn"), search = quantized_kl(in, d, "scale-search"),
               amax_global = quantized_kl(in, d, "scale-search", " --global-scale amax");
  EXPECT_GT(rtn, 0.0);
  // Measured: rtn 2.12, scale-search with ModelOpt's tensor scales 1.69, with searched ones 1.50 nats.
  EXPECT_LT(amax_global, rtn);
  EXPECT_LT(search, 0.95 * amax_global);
  EXPECT_LT(search, 0.75 * rtn);
}

TEST(Quantize, GptqLowersTheKlFurtherThanScaleSearch) {
  // Calibration: sequences the float model samples itself from BOS (seeded), so the golden continuation that
  // `eval ppl` scores stays held out. GPTQ must come closer to the float model than scale-search alone.
  TempDir d;
  const std::string in = data_dir() + "/models/stories260k";
  write_golden_tokens(in, d.str("tokens.ids"));
  ASSERT_TRUE(write_sampled_calibration(in, d));
  const double rtn = quantized_kl(in, d, "rtn"), search = quantized_kl(in, d, "scale-search"),
               gptq = quantized_kl(in, d, "gptq", " --device cpu --calib " + d.str("calib.ids"));
  // Measured: rtn 2.12, scale-search 1.50, gptq 1.12 nats (0.53x of rtn; group passes toward the float
  // model, the CPU's default), all with searched tensor scales (docs/quantization.md). Issue 32's target:
  // at most 0.6x of rtn.
  EXPECT_GT(gptq, 0.0);
  EXPECT_LT(gptq, search);
  EXPECT_LT(gptq, 0.6 * rtn);
  // Without calibration data GPTQ has nothing to work from: one clear error.
  const auto r = run_fp4lab("quantize --in " + in + " --out " + d.str("nocalib") + " --method gptq");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("needs --calib"), std::string::npos) << r.out;
}

TEST(Quantize, DeviceCudaNeedsAGpu) {
  // --device cuda runs the calibration on the GPU or says why it cannot; auto falls back to the CPU.
  TempDir d;
  const std::string in = data_dir() + "/models/stories260k";
  write_golden_tokens(in, d.str("tokens.ids"));
  const std::string args = " --in " + in + " --calib " + d.str("tokens.ids") + " --method gptq";
  const auto cuda = run_fp4lab("quantize --out " + d.str("cuda") + args + " --device cuda");
  if (query_gpus().ok) {
    EXPECT_EQ(cuda.status, 0) << cuda.out;
    EXPECT_NE(cuda.out.find("on the GPU"), std::string::npos) << cuda.out;
  } else {
    EXPECT_NE(cuda.status, 0);
    EXPECT_NE(cuda.out.find("--device cuda: "), std::string::npos) << cuda.out;
    const auto fallback = run_fp4lab("quantize --out " + d.str("auto") + args + " --device auto");
    EXPECT_EQ(fallback.status, 0) << fallback.out;
    EXPECT_NE(fallback.out.find("on the CPU"), std::string::npos) << fallback.out;
  }
}

TEST(W4a4, EmulationQuantizesEachNvfp4InputUnderItsInputScale) {
  // The CPU's W4A4 is its spec: the input to an NVFP4 layer, NVFP4-quantized under the layer's input_scale
  // (E4M3 block scales by amax / 6 per 16 values along k), times the exact dequantized weights.
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const int64_t m = 3, k = 64, n = 5;
  std::vector<float> wf(n * k), x(m * k);
  for (auto& v : wf) v = 0.05f * g(rng);
  for (auto& v : x) v = g(rng);
  LinearWeight w;
  w.n = n;
  w.k = k;
  w.nvfp4 = nvfp4_quantize_ref(wf, n, k, std::nullopt);
  w.w.resize(wf.size());
  nvfp4_dequantize_ref(*w.nvfp4, w.w);
  const float in_scale = nvfp4_tensor_scale(amax_ref(x) * 1.5f);
  CpuOps ops(1);
  CpuOps::Tensor xt{m, k, x}, y{m, n, std::vector<float>(m * n)};
  ops.set_w4a4(true);
  EXPECT_THROW(ops.linear(xt, w, y), Error);  // no input_scale: refused, never run W4A16 silently
  w.input_scale = in_scale;
  ops.linear(xt, w, y);
  std::vector<float> xq(x.size()), want(m * n), plain(m * n);
  nvfp4_fake_quant_ref(x, m, k, in_scale, xq);
  ASSERT_NE(xq, x);
  linear_f32_ref(xq, m, k, w.w, n, want, 1);
  EXPECT_EQ(y.v, want);
  // Off, and for a float layer, the input is used as it is.
  ops.set_w4a4(false);
  ops.linear(xt, w, y);
  linear_f32_ref(x, m, k, w.w, n, plain, 1);
  EXPECT_EQ(y.v, plain);
  ops.set_w4a4(true);
  w.nvfp4.reset();
  ops.linear(xt, w, y);
  EXPECT_EQ(y.v, plain);
}

TEST(W4a4, EvalNeedsInputScalesAndTheCpuBackend) {
  TempDir d;
  const std::string in = data_dir() + "/models/stories260k";
  write_golden_tokens(in, d.str("tokens.ids"));
  auto r = run_fp4lab("quantize --in " + in + " --out " + d.str("w4a16"));
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string eval =
      "eval ppl --model " + in + " --quant-b auto --w4a4-b --tokens " + d.str("tokens.ids");
  r = run_fp4lab(eval + " --model-b " + d.str("w4a16"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("has no input_scale"), std::string::npos) << r.out;
  r = run_fp4lab(eval + " --model-b " + d.str("w4a16") + " --backend cuda");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("W4A4 emulation runs on the CPU backend"), std::string::npos) << r.out;
  r = run_fp4lab("quantize --in " + in + " --out " + d.str("x") + " --gptq-act nvfp4");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("--gptq-act applies to --method gptq"), std::string::npos) << r.out;
}

TEST(W4a4, GptqOnNvfp4InputsLowersTheW4a4Kl) {
  // --gptq-act nvfp4: the Hessians and passes see each layer's input quantized under its input scale, as a
  // W4A4 engine runs the checkpoint; scored with the same W4A4 emulation (eval --w4a4-b), it must come well
  // closer to the float model than round-to-nearest with the same input scales.
  TempDir d;
  const std::string in = data_dir() + "/models/stories260k";
  write_golden_tokens(in, d.str("tokens.ids"));
  ASSERT_TRUE(write_sampled_calibration(in, d));
  const std::string calib = " --device cpu --calib " + d.str("calib.ids");
  const double rtn = quantized_kl(in, d, "rtn", calib, " --w4a4-b"),
               gptq = quantized_kl(in, d, "gptq", calib + " --gptq-act nvfp4", " --w4a4-b");
  // Measured (docs/quantization.md): W4A4 KL rtn 2.84, gptq on NVFP4 inputs 2.10 nats.
  EXPECT_GT(gptq, 0.0);
  EXPECT_LT(gptq, 0.85 * rtn);
  const auto r = run_fp4lab("quantize --in " + in + " --out " + d.str("cuda") + " --method gptq --gptq-act nvfp4" +
                            " --device cuda --calib " + d.str("calib.ids"));
  EXPECT_NE(r.status, 0);
}
