// GPU kernels against their CPU reference twins, on fresh random data. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/error.h"
#include "cpu/linear_ref.h"
#include "cpu/nvfp4_repack_ref.h"
#include "cuda/baseline_gemm.h"
#include "cuda/bf16_gemv.h"
#include "gpu_util.h"

using namespace fp4lab;
using fp4lab::test::to_device;
using fp4lab::test::to_host;

namespace {

struct Problem {
  int64_t m, n, k;
  std::vector<float> x;      // BF16-representable
  std::vector<uint16_t> xb;  // BF16 bits
  Nvfp4Tensor w;
  std::vector<float> ref;  // X . dequant(W)^T in double
};

Problem make_problem(int64_t m, int64_t n, int64_t k, uint64_t seed, bool outliers) {
  Problem p{m, n, k, {}, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (auto& v : w) v = 0.02f * g(rng);
  if (outliers) {
    std::uniform_int_distribution<size_t> pick(0, w.size() - 1);
    for (int i = 0; i < n; ++i) w[pick(rng)] = (i % 2 ? 3.0f : -3.0f);          // 150 sigma
    for (int i = 0; i < 16; ++i) w[static_cast<size_t>(i)] = 1e-7f * float(i);  // a subnormal-scale block
  }
  p.w = nvfp4_quantize_ref(w, n, k);
  p.x.resize(static_cast<size_t>(m * k));
  p.xb.resize(p.x.size());
  for (size_t i = 0; i < p.x.size(); ++i) {
    p.xb[i] = bf16_from_f32_rne(g(rng));
    p.x[i] = bf16_to_f32(p.xb[i]);
  }
  p.ref.resize(static_cast<size_t>(m * n));
  linear_nvfp4_w4a16_ref(p.x, m, p.w, p.ref);
  return p;
}

// Relative error bound of the W4A16 path: exact dequantization, BF16 products, FP32 accumulation, one BF16
// rounding of the output (2^-9): elementwise |y - ref| <= 2^-8 |ref| + 1e-3 * rms(ref).
void expect_close(const std::vector<uint16_t>& y, const Problem& p, const std::string& what) {
  double ss = 0;
  for (float r : p.ref) ss += double(r) * r;
  const double rms = std::sqrt(ss / p.ref.size());
  double num = 0;
  size_t bad = 0, unwritten = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (y[i] == 0xFFFF) {
      ++unwritten;
      continue;
    }
    const float v = bf16_to_f32(y[i]);
    const double d = std::fabs(double(v) - p.ref[i]);
    num += d * d;
    if (!(d <= std::ldexp(1.0, -8) * std::fabs(p.ref[i]) + 1e-3 * rms)) ++bad;
  }
  EXPECT_EQ(unwritten, 0u) << what;
  EXPECT_EQ(bad, 0u) << what << ": elements outside the bound";
  EXPECT_LT(std::sqrt(num / ss), 3e-3) << what;
}

std::vector<uint16_t> run_gemm(const Problem& p, const W4A16Plan* plan, GemmWorkspace& ws) {
  auto dpk = to_device(p.w.packed);
  auto dsc = to_device(p.w.block_scales);
  auto w = nvfp4_repack_device(dpk.as<uint8_t>(), dsc.as<uint8_t>(), p.n, p.k, p.w.tensor_scale,
                               nullptr);  // N % 16 != 0: padded
  auto dx = to_device(p.xb);
  DeviceBuffer dy(static_cast<size_t>(p.m * p.n * 2));
  CUDA_CHECK(cudaMemset(dy.ptr, 0xFF, dy.bytes));  // poison: 0xFFFF is a NaN no kernel writes
  nvfp4_w4a16_gemm(dx.as<bf16_raw>(), p.m, p.k, w, dy.as<bf16_raw>(), p.n, 1.0f, ws, nullptr, plan);
  CUDA_CHECK(cudaDeviceSynchronize());
  return to_host<uint16_t>(dy, static_cast<size_t>(p.m * p.n));
}

}  // namespace

TEST(GpuNvfp4, RepackMatchesCpuTwin) {
  REQUIRE_GPU();
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{16, 16}, {48, 80}, {272, 1040}}) {
    const auto p = make_problem(1, n, k, 3, true);
    auto dpk = to_device(p.w.packed);
    auto dsc = to_device(p.w.block_scales);
    auto w = nvfp4_repack_device(dpk.as<uint8_t>(), dsc.as<uint8_t>(), n, k, p.w.tensor_scale, nullptr);
    const auto ref = nvfp4_repack_ref(p.w);
    EXPECT_EQ(to_host<uint8_t>(w.weights, ref.weights.size()), ref.weights);
    EXPECT_EQ(to_host<uint8_t>(w.scales, ref.scales.size()), ref.scales);
    const auto back = nvfp4_unpack_tiled_ref(ref);
    EXPECT_EQ(back.packed, p.w.packed);
    EXPECT_EQ(back.block_scales, p.w.block_scales);
  }
}

TEST(GpuNvfp4, GemmEveryVariantAgainstCpuReference) {
  REQUIRE_GPU();
  GemmWorkspace ws;
  const std::vector<int64_t> ms{1,  2,  3,  4,  5,  6,  7,  8,   9,   10,  11,   12,  13,
                                14, 15, 16, 17, 31, 33, 64, 100, 130, 256, 1000, 4096};
  const std::vector<std::pair<int64_t, int64_t>> shapes{{48, 80}, {40, 96}, {272, 1040}, {1024, 2048}};
  uint64_t seed = 100;
  for (auto [n, k] : shapes)
    for (int64_t m : ms) {
      if (m >= 1000 && n * k > 272 * 1040) continue;  // keep the CPU reference affordable
      ++seed;
      const auto p = make_problem(m, n, k, seed, seed % 2 == 0);
      int sms = 0;
      CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
      std::vector<W4A16Plan> plans{choose_w4a16_plan(m, n, k, sms)};
      for (int rows : {16, 32}) {
        if (m <= 8) plans.push_back({W4A16Variant::Decode8, 1, rows});
        if (m <= 16) plans.push_back({W4A16Variant::Decode16, 1, rows});
        if (m <= 8) plans.push_back({W4A16Variant::Decode8, 1, rows, 4});
        if (m <= 16) plans.push_back({W4A16Variant::Decode16, 1, rows, 4});
        if (m <= 32) plans.push_back({W4A16Variant::Decode32, 1, rows});
        if (m <= 32) plans.push_back({W4A16Variant::Decode32, 1, rows, 4});
        if (m <= 64 && rows == 16) plans.push_back({W4A16Variant::Decode64, 1, rows});
        if (m <= 8) plans.push_back({W4A16Variant::Decode8, 1, rows, 16});
        if (m <= 8 && rows == 16) plans.push_back({W4A16Variant::Decode8, 1, rows, 10});
        if (m <= 16 && rows == 16) plans.push_back({W4A16Variant::Decode16, 1, rows, 16});
      }
      for (int rows : {64, 128})
        if (m <= 32) plans.push_back({W4A16Variant::Xs32, 1, rows});
      for (auto v :
           {W4A16Variant::Mma32, W4A16Variant::Mma64, W4A16Variant::Mma128, W4A16Variant::DequantBlas})
        plans.push_back({v, 1});
      plans.push_back({W4A16Variant::Mma64, 3});  // split-K with the in-kernel reduction
      if (wgmma_supported())
        for (auto v :
             {W4A16Variant::Wgmma32, W4A16Variant::Wgmma64, W4A16Variant::Wgmma128, W4A16Variant::Wgmma256})
          for (int splits : {1, 3})
            for (int rows : {64, 128}) plans.push_back({v, splits, rows});
      for (const auto& plan : plans) {
        const std::string what = "M=" + std::to_string(m) + " N=" + std::to_string(n) +
                                 " K=" + std::to_string(k) + " " + w4a16_variant_name(plan.variant) +
                                 w4a16_plan_suffix(plan);
        try {
          expect_close(run_gemm(p, &plan, ws), p, what);
        } catch (const std::exception& e) {  // name the plan, then stop: the context may be unusable
          FAIL() << what << ": " << e.what();
        }
      }
    }
}

TEST(GpuNvfp4, SplitKIsDeterministic) {
  REQUIRE_GPU();
  GemmWorkspace ws;
  const auto p = make_problem(40, 256, 4096, 5, false);
  const W4A16Plan plan{W4A16Variant::Mma64, 8};
  EXPECT_EQ(run_gemm(p, &plan, ws), run_gemm(p, &plan, ws));
  if (wgmma_supported()) {
    const W4A16Plan wg{W4A16Variant::Wgmma128, 8};
    EXPECT_EQ(run_gemm(p, &wg, ws), run_gemm(p, &wg, ws));
  }
}

TEST(GpuNvfp4, ActivationQuantBitIdenticalToCpu) {
  REQUIRE_GPU();
  for (bool dynamic : {true, false}) {
    const int64_t m = 37, k = 1040;
    const auto p = make_problem(m, 16, k, dynamic ? 11 : 12, false);
    const float given = 0.75f / 2688.0f;  // smaller than the data's amax: exercises saturation
    const auto ref = nvfp4_quantize_ref(p.x, m, k, dynamic ? std::nullopt : std::optional<float>(given));
    auto dx = to_device(p.xb);
    DeviceBuffer pk(static_cast<size_t>(m * k / 2)), sc(static_cast<size_t>(m * k / 16));
    auto ts = to_device(std::vector<float>{given});
    nvfp4_quantize_act(dx.as<bf16_raw>(), m, k, pk.as<uint8_t>(), sc.as<uint8_t>(), ts.as<float>(), dynamic,
                       nullptr);
    EXPECT_EQ(to_host<uint8_t>(pk, ref.packed.size()), ref.packed) << (dynamic ? "dynamic" : "given");
    EXPECT_EQ(to_host<uint8_t>(sc, ref.block_scales.size()), ref.block_scales);
    EXPECT_EQ(to_host<float>(ts, 1)[0], ref.tensor_scale);
  }
}

TEST(GpuNvfp4, W4A4EmulationMatchesReference) {
  REQUIRE_GPU();
  const int64_t m = 24, n = 272, k = 1040;
  auto p = make_problem(m, n, k, 21, false);
  auto dx = to_device(p.xb);
  DeviceBuffer pk(static_cast<size_t>(m * k / 2)), sc(static_cast<size_t>(m * k / 16)), ts(4),
      xq(static_cast<size_t>(m * k * 2));
  nvfp4_quantize_act(dx.as<bf16_raw>(), m, k, pk.as<uint8_t>(), sc.as<uint8_t>(), ts.as<float>(), true,
                     nullptr);
  nvfp4_act_fake_quant_unscaled(pk.as<uint8_t>(), sc.as<uint8_t>(), m, k, xq.as<bf16_raw>(), nullptr);
  const float act_ts = to_host<float>(ts, 1)[0];
  // Reference: activations fake-quantized on the CPU (with the tensor scale), then the W4A16 reference.
  std::vector<float> xfq(p.x.size());
  nvfp4_fake_quant_ref(p.x, m, k, std::nullopt, xfq);
  linear_nvfp4_w4a16_ref(xfq, m, p.w, p.ref);
  auto dpk = to_device(p.w.packed);
  auto dsc = to_device(p.w.block_scales);
  auto w = nvfp4_repack_device(dpk.as<uint8_t>(), dsc.as<uint8_t>(), n, k, p.w.tensor_scale, nullptr);
  DeviceBuffer dy(static_cast<size_t>(m * n * 2));
  CUDA_CHECK(cudaMemset(dy.ptr, 0xFF, dy.bytes));
  GemmWorkspace ws;
  nvfp4_w4a16_gemm(xq.as<bf16_raw>(), m, k, w, dy.as<bf16_raw>(), n, act_ts, ws, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_close(to_host<uint16_t>(dy, static_cast<size_t>(m * n)), p, "w4a4 emulation");
}

// The engine's BF16 GEMV (decode rows, bf16_gemv.h) against the CPU reference on random data: Nemotron-H's
// attention projections, K not a multiple of the 1024-wide step of a warp's loop, N not a multiple of a
// block's rows (8) or of a warp's (2), every M up to the limit. Same bound as the W4A16 kernels (FP32 sums,
// one BF16 rounding); every output written.
TEST(GpuBf16, GemvMatchesCpuReference) {
  REQUIRE_GPU();
  struct Case {
    int64_t m, n, k;
  };
  uint64_t seed = 71;
  for (const Case c : {Case{1, 7168, 4480}, Case{4, 4480, 5120}, Case{2, 37, 264}, Case{3, 5, 8},
                       Case{1, 17, 4104}, Case{4, 1, 1032}}) {
    ASSERT_TRUE(
        bf16_gemv_supported(c.m, c.k, c.k, reinterpret_cast<void*>(256), reinterpret_cast<void*>(256)));
    std::mt19937_64 rng(seed++);
    std::normal_distribution<float> g(0.0f, 1.0f);
    Problem p{c.m, c.n, c.k, {}, {}, {}, {}};
    std::vector<uint16_t> wb(static_cast<size_t>(c.n * c.k));
    std::vector<float> wf(wb.size());
    for (size_t i = 0; i < wb.size(); ++i)
      wb[i] = bf16_from_f32_rne(0.02f * g(rng)), wf[i] = bf16_to_f32(wb[i]);
    p.xb.resize(static_cast<size_t>(c.m * c.k));
    p.x.resize(p.xb.size());
    for (size_t i = 0; i < p.xb.size(); ++i)
      p.xb[i] = bf16_from_f32_rne(g(rng)), p.x[i] = bf16_to_f32(p.xb[i]);
    p.ref.resize(static_cast<size_t>(c.m * c.n));
    linear_f32_ref(p.x, c.m, c.k, wf, c.n, p.ref);
    auto dx = to_device(p.xb);
    auto dw = to_device(wb);
    DeviceBuffer dy(static_cast<size_t>(c.m * c.n * 2));
    for (int split : {1, 2, 4}) {
      CUDA_CHECK(cudaMemset(dy.ptr, 0xFF, dy.bytes));
      bf16_gemv(dx.as<bf16_raw>(), c.m, c.k, dw.as<bf16_raw>(), c.n, c.k, dy.as<bf16_raw>(), c.n, split,
                nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      expect_close(to_host<uint16_t>(dy, static_cast<size_t>(c.m * c.n)), p,
                   "bf16 gemv m " + std::to_string(c.m) + " n " + std::to_string(c.n) + " k " +
                       std::to_string(c.k) + " split " + std::to_string(split));
    }
    // FP32 outputs (the lm_head's logits): the sums before the BF16 rounding, so within 1e-4 relative.
    DeviceBuffer df(static_cast<size_t>(c.m * c.n * 4));
    bf16_gemv(dx.as<bf16_raw>(), c.m, c.k, dw.as<bf16_raw>(), c.n, c.k, df.as<float>(), c.n,
              bf16_gemv_split(c.n, c.k, 132), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto f = to_host<float>(df, static_cast<size_t>(c.m * c.n));
    double worst = 0;
    for (size_t i = 0; i < f.size(); ++i)
      worst = std::max(worst, std::fabs(double(f[i]) - p.ref[i]) / (std::fabs(p.ref[i]) + 1e-2));
    EXPECT_LT(worst, 1e-4) << "fp32 output, n " << c.n << " k " << c.k;
  }
  EXPECT_FALSE(bf16_gemv_supported(5, 64, 64, nullptr, nullptr));  // more rows than the kernel takes
  EXPECT_FALSE(bf16_gemv_supported(1, 12, 12, nullptr, nullptr));  // K not a multiple of 8
  EXPECT_THROW(bf16_gemv(nullptr, 1, 12, nullptr, 4, 12, static_cast<bf16_raw*>(nullptr), 4, 1, nullptr),
               Error);
}

// The GEMV's K-split rule on the shapes measured for it (H200, 132 SMs; kernel-notes #71): host code, runs
// without a GPU.
TEST(Bf16Gemv, SplitRuleOnMeasuredShapes) {
  EXPECT_EQ(bf16_gemv_split(22656, 4480, 132), 1);  // many rows: more warps would only queue
  EXPECT_EQ(bf16_gemv_split(7168, 4480, 132),
            2);  // 560 chunks a row: 5 / 3 / 2 steps, four warps in 2 rounds
  EXPECT_EQ(bf16_gemv_split(6144, 4096, 132), 4);   // 512 chunks: one step each of four warps
  EXPECT_EQ(bf16_gemv_split(4480, 10240, 132), 4);  // few rows, long K
}

TEST(GpuNvfp4, CublasBaselinesRun) {
  REQUIRE_GPU();
  const int64_t m = 64, n = 256, k = 512;
  auto p = make_problem(m, n, k, 31, false);
  std::vector<float> wd(static_cast<size_t>(n * k));
  nvfp4_dequantize_ref(p.w, wd);
  std::vector<uint16_t> wb(wd.size());
  for (size_t i = 0; i < wd.size(); ++i) wb[i] = bf16_from_f32_rne(wd[i]);
  auto dx = to_device(p.xb);
  auto dw = to_device(wb);
  DeviceBuffer dy(static_cast<size_t>(m * n * 2));
  GemmWorkspace ws;
  cublas_bf16_gemm(ws.cublas_handle(), dx.as<bf16_raw>(), m, dw.as<bf16_raw>(), n, k, dy.as<bf16_raw>(),
                   nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  // Reference with the BF16-rounded weights cuBLAS actually sees.
  Problem pb = p;
  std::vector<float> wr(wb.size());
  for (size_t i = 0; i < wb.size(); ++i) wr[i] = bf16_to_f32(wb[i]);
  linear_f32_ref(p.x, m, k, wr, n, pb.ref);
  expect_close(to_host<uint16_t>(dy, static_cast<size_t>(m * n)), pb, "cublas bf16");
  // FP8: per-tensor scales lose more; check the normwise error only.
  DeviceBuffer w8(static_cast<size_t>(n * k)), x8(static_cast<size_t>(m * k)), s8w(4), s8x(4);
  fp8_quantize_bf16(dw.as<bf16_raw>(), n * k, w8.as<uint8_t>(), s8w.as<float>(), nullptr);
  fp8_quantize_bf16(dx.as<bf16_raw>(), m * k, x8.as<uint8_t>(), s8x.as<float>(), nullptr);
  LtGemm lt;
  lt.run(LtGemm::Kind::Fp8E4M3, w8.ptr, s8w.ptr, x8.ptr, s8x.ptr, m, n, k, 1.0f, dy.as<bf16_raw>(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = to_host<uint16_t>(dy, static_cast<size_t>(m * n));
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double d = bf16_to_f32(y[i]) - p.ref[i];
    num += d * d;
    den += double(p.ref[i]) * p.ref[i];
  }
  EXPECT_LT(std::sqrt(num / den), 0.08);
}

// The wgmma kernels as the engine calls them: model-sized N and K, prompt-sized M, row strides wider than the
// operands (ldx > K, ldy > N). Checked against the mma.sync kernel (itself checked against the CPU above) on
// the same GPU, and for writes outside [M, N).
TEST(GpuNvfp4, WgmmaMatchesMmaOnStridedModelShapes) {
  REQUIRE_GPU();
  if (!wgmma_supported()) GTEST_SKIP() << "no sm_90a wgmma on this GPU or build";
  GemmWorkspace ws;
  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  std::mt19937_64 rng(77);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{6144, 4480}, {4480, 15680}, {2064, 1040}}) {
    std::vector<float> wf(static_cast<size_t>(n * k));
    for (auto& v : wf) v = 0.02f * g(rng);
    const Nvfp4Tensor wq = nvfp4_quantize_ref(wf, n, k);
    auto dpk = to_device(wq.packed);
    auto dsc = to_device(wq.block_scales);
    const auto w = nvfp4_repack_device(dpk.as<uint8_t>(), dsc.as<uint8_t>(), n, k, wq.tensor_scale, nullptr);
    for (int64_t m : {300, 2048}) {
      const int64_t ldx = k + 64, ldy = n + 16;
      std::vector<uint16_t> xb(static_cast<size_t>(m * ldx));
      for (auto& v : xb) v = bf16_from_f32_rne(g(rng));
      auto dx = to_device(xb);
      auto run = [&](const W4A16Plan& plan) {
        DeviceBuffer dy(static_cast<size_t>(m * ldy * 2));
        CUDA_CHECK(cudaMemset(dy.ptr, 0xFF, dy.bytes));
        nvfp4_w4a16_gemm(dx.as<bf16_raw>(), m, ldx, w, dy.as<bf16_raw>(), ldy, 1.0f, ws, nullptr, &plan);
        CUDA_CHECK(cudaDeviceSynchronize());
        return to_host<uint16_t>(dy, static_cast<size_t>(m * ldy));
      };
      const auto ref = run({W4A16Variant::Mma64, 1});
      double ss = 0;
      for (int64_t t = 0; t < m; ++t)
        for (int64_t j = 0; j < n; ++j) ss += std::pow(double(bf16_to_f32(ref[t * ldy + j])), 2);
      const double rms = std::sqrt(ss / double(m * n));
      std::vector<W4A16Plan> plans{choose_wgmma_plan(m, n, k, sms)};
      for (auto v : {W4A16Variant::Wgmma64, W4A16Variant::Wgmma128, W4A16Variant::Wgmma256})
        for (int rows : {64, 128}) plans.push_back({v, choose_splits(v, m, n, k, sms, rows), rows});
      for (const auto& plan : plans) {
        const auto y = run(plan);
        const std::string what = "M=" + std::to_string(m) + " N=" + std::to_string(n) +
                                 " K=" + std::to_string(k) + " " + w4a16_variant_name(plan.variant) +
                                 w4a16_plan_suffix(plan);
        size_t bad = 0, outside = 0;
        for (int64_t t = 0; t < m; ++t)
          for (int64_t j = 0; j < ldy; ++j) {
            const uint16_t v = y[t * ldy + j];
            if (j >= n) {
              outside += v != 0xFFFF;
              continue;
            }
            const double a = bf16_to_f32(v), b = bf16_to_f32(ref[t * ldy + j]);
            if (!(std::fabs(a - b) <= std::ldexp(1.0, -7) * std::fabs(b) + 2e-3 * rms)) ++bad;
          }
        EXPECT_EQ(bad, 0u) << what << ": elements away from the mma.sync kernel's";
        EXPECT_EQ(outside, 0u) << what << ": writes past N";
      }
    }
  }
}

// The operand conventions the wgmma kernels are built on, apart from their pipeline: if this fails, the
// descriptors or the fragment layout are wrong; if only the GEMM tests fail, the staging is.
TEST(GpuNvfp4, WgmmaOperandConventionsHold) {
  REQUIRE_GPU();
  if (!wgmma_supported()) GTEST_SKIP() << "no sm_90a wgmma on this GPU or build";
  EXPECT_EQ(wgmma_convention_mismatches(), 0);
}

// One-hot activations (token t holds a single 1 at k = 9t mod K) make every output a single weight, so a
// wrong k order, token order or row order in a tensor-core kernel shows as which weight column each token
// got. Every variant that can run M = 8..64 against the dequantized weights, exactly.
TEST(GpuNvfp4, OneHotActivationsPickTheirWeightColumn) {
  REQUIRE_GPU();
  GemmWorkspace ws;
  const int64_t n = 128, k = 128;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> wf(static_cast<size_t>(n * k));
  for (auto& v : wf) v = g(rng);
  const Nvfp4Tensor wq = nvfp4_quantize_ref(wf, n, k);
  std::vector<float> wd(wf.size());
  nvfp4_dequantize_ref(wq, wd);
  auto dpk = to_device(wq.packed);
  auto dsc = to_device(wq.block_scales);
  const auto w = nvfp4_repack_device(dpk.as<uint8_t>(), dsc.as<uint8_t>(), n, k, wq.tensor_scale, nullptr);
  // One BF16 rounding of a weight (the kernels scale in FP32 and round once).
  auto near = [](float a, float b) { return std::fabs(a - b) <= std::ldexp(std::fabs(b), -8); };
  std::vector<W4A16Plan> plans{{W4A16Variant::Mma64, 1}};
  if (wgmma_supported())
    for (auto v :
         {W4A16Variant::Wgmma32, W4A16Variant::Wgmma64, W4A16Variant::Wgmma128, W4A16Variant::Wgmma256})
      for (int rows : {64, 128}) plans.push_back({v, 1, rows});
  for (int64_t m : {8, 64}) {
    std::vector<uint16_t> xb(static_cast<size_t>(m * k), bf16_from_f32_rne(0.0f));
    auto col = [&](int64_t t) { return (9 * t) % k; };
    for (int64_t t = 0; t < m; ++t) xb[t * k + col(t)] = bf16_from_f32_rne(1.0f);
    auto dx = to_device(xb);
    for (const auto& plan : plans) {
      DeviceBuffer dy(static_cast<size_t>(m * n * 2));
      CUDA_CHECK(cudaMemset(dy.ptr, 0xFF, dy.bytes));
      nvfp4_w4a16_gemm(dx.as<bf16_raw>(), m, k, w, dy.as<bf16_raw>(), n, 1.0f, ws, nullptr, &plan);
      CUDA_CHECK(cudaDeviceSynchronize());
      const auto y = to_host<uint16_t>(dy, static_cast<size_t>(m * n));
      const std::string what =
          "M=" + std::to_string(m) + " " + w4a16_variant_name(plan.variant) + w4a16_plan_suffix(plan);
      size_t bad = 0;
      std::string seen;
      for (int64_t t = 0; t < m; ++t) {
        int64_t t_bad = 0;
        for (int64_t j = 0; j < n; ++j) t_bad += !near(bf16_to_f32(y[t * n + j]), wd[j * k + col(t)]);
        bad += t_bad;
        if (t_bad && seen.size() < 600) {
          // Which weight column does this token's output match best, and is it a weight column at all?
          int64_t best = -1, best_hits = 0;
          for (int64_t kk = 0; kk < k; ++kk) {
            int64_t hits = 0;
            for (int64_t j = 0; j < n; ++j) hits += near(bf16_to_f32(y[t * n + j]), wd[j * k + kk]);
            if (hits > best_hits) best = kk, best_hits = hits;
          }
          seen += " t" + std::to_string(t) + ":k" + std::to_string(col(t)) + "->k" + std::to_string(best) +
                  "(" + std::to_string(best_hits) + "/" + std::to_string(n) +
                  ", y0=" + std::to_string(bf16_to_f32(y[t * n])) + " want " + std::to_string(wd[col(t)]) +
                  ")";
        }
      }
      EXPECT_EQ(bad, 0u) << what << ":" << seen;
    }
  }
}

// Every wgmma width (n32 .. n256), one and two warpgroups, split and not, against the mma.sync kernel at 2,
// 16 and 64 k-chunks and 8 / 40 tokens: n32 was right where n64 and wider were wrong (kernel-notes #80).
TEST(GpuNvfp4, WgmmaMatchesMmaAtEveryWidthAndDepth) {
  REQUIRE_GPU();
  if (!wgmma_supported()) GTEST_SKIP() << "no sm_90a wgmma on this GPU or build";
  GemmWorkspace ws;
  for (int64_t k : {128, 1024, 4096})
    for (int64_t m : {8, 40}) {
      const int64_t n = 256;
      const auto p = make_problem(m, n, k, 1000 + k + m, false);
      const W4A16Plan ref_plan{W4A16Variant::Mma64, 1};
      const auto ref = run_gemm(p, &ref_plan, ws);
      for (auto v :
           {W4A16Variant::Wgmma32, W4A16Variant::Wgmma64, W4A16Variant::Wgmma128, W4A16Variant::Wgmma256})
        for (int rows : {64, 128})
          for (int splits : {1, 3}) {
            const W4A16Plan plan{v, splits, rows};
            const std::string what = "M=" + std::to_string(m) + " K=" + std::to_string(k) + " " +
                                     w4a16_variant_name(v) + w4a16_plan_suffix(plan);
            const auto y = run_gemm(p, &plan, ws);
            size_t bad = 0;
            for (size_t i = 0; i < y.size(); ++i) {
              const float a = bf16_to_f32(y[i]), b = bf16_to_f32(ref[i]);
              bad += !(std::fabs(a - b) <= std::ldexp(std::fabs(b), -7) + 1e-3f);
            }
            EXPECT_EQ(bad, 0u) << what;
          }
    }
}
