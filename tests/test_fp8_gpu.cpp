// FP8 layers on the GPU against the CPU backend, their spec: the W8A16 GEMV against a double-precision
// product of the exact E4M3 x scale values (every code but NaN, per-tensor and per-row scales, every row
// count and split), and whole models: --quant fp8 and stored FP8 checkpoints (ModelOpt per-tensor,
// compressed-tensors per-channel), W8A16 within BF16 rounding of the CPU, W8A8 within FP8 activation
// rounding. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cuda/cuda_ops.h"
#include "cuda/fp8_linear.h"
#include "engine/backends.h"
#include "engine/cuda_run.h"
#include "eval/metrics.h"
#include "format/e4m3.h"
#include "format/nvfp4.h"
#include "fp8_fixture.h"
#include "gpu_util.h"

using namespace fp4lab;
using fp4lab::test::TempDir;

namespace {

// Random codes over the whole E4M3 range (subnormals and +-448 included), NaN excluded.
std::vector<uint8_t> random_codes(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<uint8_t> c(n);
  for (auto& v : c) {
    do v = static_cast<uint8_t>(d(rng));
    while ((v & 0x7f) == 0x7f);
  }
  return c;
}

struct Compare {
  double kl = 0;
  int agree = 0, positions = 0;
  float max_abs = 0, max_diff = 0;
};

Compare compare_logits(const std::vector<float>& want, const std::vector<float>& got, size_t positions) {
  Compare c;
  c.positions = static_cast<int>(positions);
  const size_t V = want.size() / positions;
  for (size_t p = 0; p < positions; ++p) {
    const auto a = std::span<const float>(want).subspan(p * V, V),
               b = std::span<const float>(got).subspan(p * V, V);
    c.kl += kl_divergence(a, b) / static_cast<double>(positions);
    c.agree +=
        std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(b.begin(), b.end()) - b.begin();
    for (size_t i = 0; i < V; ++i) {
      c.max_abs = std::max(c.max_abs, std::fabs(a[i]));
      c.max_diff = std::max(c.max_diff, std::fabs(a[i] - b[i]));
    }
  }
  return c;
}

const std::vector<int> kSeq = {1, 5, 9, 33, 70, 12, 8, 100, 3, 44};

// The logits of kSeq in one forward (a prefill: more rows than the GEMV takes), then of two single-token
// steps (the GEMV), on the GPU.
std::vector<float> gpu_logits(ModelWeights w, bool w8a8, size_t* weight_bytes = nullptr) {
  CudaRunOptions ro;
  ro.fp8_w8a8 = w8a8;
  ro.shape.tokens_per_sequence = ro.shape.forward_tokens = ro.shape.logits_rows =
      static_cast<int>(kSeq.size());
  std::vector<float> got;
  run_cuda_model(std::move(w), ro, [&](CudaModel& m, CudaOps& ops, int) {
    auto s = m.new_sequence(static_cast<int>(kSeq.size()));
    got = m.forward(s, std::span<const int>(kSeq).first(kSeq.size() - 2), true);
    for (size_t i = kSeq.size() - 2; i < kSeq.size(); ++i) {
      const auto step = m.forward(s, std::span<const int>(kSeq).subspan(i, 1), true);
      got.insert(got.end(), step.begin(), step.end());
    }
    if (weight_bytes) *weight_bytes = ops.weight_bytes();
  });
  return got;
}

std::vector<float> cpu_logits(ModelWeights w) {
  CpuOps ops(2);
  CpuModel m(std::move(w), ops);
  auto s = m.new_sequence(static_cast<int>(kSeq.size()));
  return m.forward(s, kSeq, true);
}

void expect_close(const std::vector<float>& want, const std::vector<float>& got, bool w8a8,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const Compare c = compare_logits(want, got, kSeq.size());
  std::printf("%s%s: KL(cpu || cuda) %.3g, argmax agreement %d/%d, max |logit| %.3g, max diff %.3g\n",
              what.c_str(), w8a8 ? " W8A8" : " W8A16", c.kl, c.agree, c.positions, c.max_abs, c.max_diff);
  if (!w8a8) {
    // BF16 activations are the only difference.
    EXPECT_LT(c.kl, 2e-3) << what;
    EXPECT_LE(c.max_diff, 0.05f * c.max_abs + 1e-3f) << what;
  } else {
    // Activations rounded to E4M3 (3 mantissa bits) per tensor on top.
    EXPECT_LT(c.kl, 3e-2) << what;
    EXPECT_LE(c.max_diff, 0.25f * c.max_abs + 1e-2f) << what;
  }
}

}  // namespace

TEST(GpuFp8, GemvMatchesTheExactProduct) {
  REQUIRE_GPU();
  std::mt19937 rng(11);
  cudaStream_t stream = nullptr;
  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  struct Shape {
    int64_t n, k;
  };
  for (const Shape sh : {Shape{40, 64}, Shape{333, 1040}, Shape{1000, 4096}, Shape{7, 16}})
    for (const bool per_row : {false, true}) {
      const std::vector<uint8_t> codes = random_codes(static_cast<size_t>(sh.n * sh.k), rng);
      std::vector<float> scales(per_row ? sh.n : 1);
      std::uniform_real_distribution<float> us(1e-4f, 3e-2f);
      for (auto& s : scales) s = us(rng);
      Fp8DeviceWeight w;
      w.n = sh.n;
      w.k = sh.k;
      w.per_row = per_row;
      w.tensor_scale = per_row ? 0.0f : scales[0];
      w.codes = fp4lab::test::to_device(codes);
      w.scales = fp4lab::test::to_device(scales);
      w.row_scales = fp8_row_scales(w.scales.as<float>(), per_row, sh.n, stream);
      for (int m = 1; m <= kFp8GemvMaxRows; ++m) {
        auto [xr, xf] = fp4lab::test::random_bf16(static_cast<size_t>(m * sh.k), 1.0f, rng);
        const DeviceBuffer xd = fp4lab::test::to_device(xr);
        std::vector<double> ref(static_cast<size_t>(m * sh.n));
        double rms = 0;
        for (int r = 0; r < m; ++r)
          for (int64_t j = 0; j < sh.n; ++j) {
            double acc = 0;
            for (int64_t c = 0; c < sh.k; ++c)
              acc += static_cast<double>(e4m3_decode(codes[j * sh.k + c])) * xf[r * sh.k + c];
            ref[r * sh.n + j] = acc * scales[per_row ? j : 0];
            rms += ref[r * sh.n + j] * ref[r * sh.n + j];
          }
        rms = std::sqrt(rms / static_cast<double>(ref.size()));
        for (const int split : {1, 2, 4}) {
          DeviceBuffer yd(static_cast<size_t>(m * sh.n) * 2);
          fp8_w8a16_gemv(xd.as<bf16_raw>(), m, sh.k, w.view(), yd.as<bf16_raw>(), sh.n, split, stream);
          CUDA_CHECK(cudaDeviceSynchronize());
          const auto y = fp4lab::test::to_host<uint16_t>(yd, static_cast<size_t>(m * sh.n));
          int bad = 0;
          for (size_t i = 0; i < y.size(); ++i) {
            const double got = bf16_to_f32(y[i]);
            // BF16 rounding of the output (2^-9 relative) plus FP32 sums.
            if (std::fabs(got - ref[i]) > std::fabs(ref[i]) * 0x1p-8 + 1e-5 * rms) ++bad;
          }
          EXPECT_EQ(bad, 0) << "n " << sh.n << " k " << sh.k << " m " << m << " split " << split
                            << " per_row " << per_row;
        }
        EXPECT_EQ(fp8_gemv_split(m, sh.n, sh.k, sms) >= 1, true);
      }
    }
}

TEST(GpuFp8, CodesBecomeTheirExactBf16Values) {
  REQUIRE_GPU();
  std::vector<uint8_t> codes;
  for (int c = 0; c < 256; ++c)
    if ((c & 0x7f) != 0x7f) codes.push_back(static_cast<uint8_t>(c));
  const DeviceBuffer cd = fp4lab::test::to_device(codes);
  DeviceBuffer out(codes.size() * 2);
  fp8_codes_to_bf16(cd.as<uint8_t>(), static_cast<int64_t>(codes.size()), out.as<bf16_raw>(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = fp4lab::test::to_host<uint16_t>(out, codes.size());
  for (size_t i = 0; i < codes.size(); ++i)
    EXPECT_EQ(bf16_to_f32(got[i]), e4m3_decode(codes[i])) << "code " << int(codes[i]);
}

// Per-token activation quantization (W8A8's input) gives fp8_quantize_ref's codes and scale on every row.
TEST(GpuFp8, ActivationRowsQuantizeAsTheReference) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  const int64_t m = 5, k = 1000, ldx = 1008;
  auto [xr, xf] = fp4lab::test::random_bf16(static_cast<size_t>(m * ldx), 2.0f, rng);
  for (int64_t c = 0; c < k; ++c) xf[2 * ldx + c] = 0.0f, xr[2 * ldx + c] = 0;  // an all-zero row: scale 1
  const DeviceBuffer xd = fp4lab::test::to_device(xr);
  DeviceBuffer codes(static_cast<size_t>(m * k)), scales(static_cast<size_t>(m) * 4);
  fp8_quantize_rows(xd.as<bf16_raw>(), m, k, ldx, codes.as<uint8_t>(), scales.as<float>(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = fp4lab::test::to_host<uint8_t>(codes, static_cast<size_t>(m * k));
  const auto gs = fp4lab::test::to_host<float>(scales, static_cast<size_t>(m));
  for (int64_t r = 0; r < m; ++r) {
    const Fp8Tensor want = fp8_quantize_ref(std::span<const float>(xf).subspan(r * ldx, k), 1, k);
    EXPECT_EQ(gs[r], want.scale) << "row " << r;
    EXPECT_TRUE(std::equal(want.data.begin(), want.data.end(), got.begin() + r * k)) << "row " << r;
  }
}

// Per-tensor activation quantization (W8A8 with one scale): the scale of the whole tensor and
// fp8_quantize_ref's codes, twice in a row on the same state (its two words left at zero by the first call).
TEST(GpuFp8, ActivationTensorQuantizesAsTheReference) {
  REQUIRE_GPU();
  std::mt19937 rng(6);
  for (const int64_t k : {64, 4096, 14336}) {
    const int64_t m = 9, ldx = k + 8;
    auto [xr, xf] = fp4lab::test::random_bf16(static_cast<size_t>(m * ldx), 1.5f, rng);
    ASSERT_TRUE(fp8_quantize_tensor_supported(nullptr, k, ldx));
    std::vector<float> packed;  // the m x k values the reference sees
    for (int64_t r = 0; r < m; ++r)
      packed.insert(packed.end(), xf.begin() + r * ldx, xf.begin() + r * ldx + k);
    const Fp8Tensor want = fp8_quantize_ref(packed, m, k);
    const DeviceBuffer xd = fp4lab::test::to_device(xr);
    DeviceBuffer codes(static_cast<size_t>(m * k)), state(3 * sizeof(float));
    CUDA_CHECK(cudaMemset(state.ptr, 0, state.bytes));
    for (int call = 0; call < 2; ++call) {
      fp8_quantize_tensor(xd.as<bf16_raw>(), m, k, ldx, codes.as<uint8_t>(), state.as<float>(), nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      const auto st = fp4lab::test::to_host<float>(state, 3);
      EXPECT_EQ(st[0], want.scale) << "k " << k << " call " << call;
      EXPECT_EQ(st[1], 0.0f);
      EXPECT_EQ(st[2], 0.0f);
      EXPECT_EQ(fp4lab::test::to_host<uint8_t>(codes, static_cast<size_t>(m * k)), want.data) << "k " << k;
    }
  }
}

// --quant fp8 on the GPU (quantized on the device from BF16 or F32 values) against the CPU backend with the
// same codes: tiny-llama (F32 checkpoint, quantized on the host), tiny-nemotron-h, and a preset (generated
// and quantized on the device).
TEST(GpuFp8, QuantFp8ModelsMatchTheCpu) {
  REQUIRE_GPU();
  for (const std::string model : {"tiny-llama", "tiny-nemotron-h", "preset:tiny"}) {
    const bool preset = model.rfind("preset:", 0) == 0;
    const std::string src = preset ? model : fp4lab::test::data_dir() + "/models/" + model;
    const auto want = cpu_logits(load_model(src, QuantMode::FP8, 7, true));
    size_t fp8_bytes = 0, bf16_bytes = 0;
    for (const bool w8a8 : {false, true})
      expect_close(want, gpu_logits(load_model(src, QuantMode::FP8, 7, false), w8a8, &fp8_bytes), w8a8,
                   model + " --quant fp8");
    gpu_logits(load_model(src, QuantMode::BF16, 7, false), false, &bf16_bytes);
    EXPECT_LT(fp8_bytes, bf16_bytes) << model << ": FP8 layers must sit on the GPU as codes";
  }
}

// Stored FP8 layers streamed to the GPU as codes: the logits of the float32 twin (the same values) within
// BF16 rounding, per-tensor (ModelOpt MIXED_PRECISION) and per-channel (compressed-tensors) scales.
TEST(GpuFp8, StoredFp8CheckpointsMatchTheirTwins) {
  REQUIRE_GPU();
  TempDir d;
  const std::vector<std::string> layers = {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.gate_proj",
                                           "model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj"};
  json ql = json::object();
  for (const auto& l : layers) ql[l] = {{"quant_algo", "FP8"}};
  const json hfq = {{"producer", {{"name", "modelopt"}, {"version", "0.35.0"}}},
                    {"quantization", {{"quant_algo", "MIXED_PRECISION"}, {"quantized_layers", ql}}}};
  for (const bool per_channel : {false, true}) {
    const std::string tag = per_channel ? "pc" : "pt";
    fp4lab::test::write_fixture(d.str(tag), d.str(tag + "-twin"), layers, per_channel,
                                fp4lab::test::tiny_llama_config(), hfq);
    const auto want = cpu_logits(load_weights(d.str(tag + "-twin"), QuantMode::Auto));
    for (const bool w8a8 : {false, true}) {
      // Streamed from the files (codes copied as stored) and from host copies.
      ModelWeights w =
          load_weights(d.str(tag), QuantMode::Auto, w8a8 ? WeightHome::Host : WeightHome::Device);
      EXPECT_EQ(w.streamed(), !w8a8);
      int fp8 = 0;
      for (const auto& p : w.plans) fp8 += p.fp8;
      EXPECT_EQ(fp8, static_cast<int>(layers.size()));
      expect_close(want, gpu_logits(std::move(w), w8a8), w8a8 && !per_channel, "fixture " + tag);
    }
  }
}
