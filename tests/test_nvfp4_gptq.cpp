// GPTQ on the NVFP4 grid (format/nvfp4_gptq.h) against round-to-nearest on synthetic layers.
#include <gtest/gtest.h>

#include <random>

#include "common/error.h"
#include "format/nvfp4_gptq.h"
#include "gptq_fixture.h"

using namespace fp4lab;

using test::make_layer;
using test::tensor_scale_of;
using Layer = test::GptqLayer;

TEST(Nvfp4Gptq, LowersTheOutputErrorBelowRoundToNearest) {
  for (auto rule : {Nvfp4ScaleRule::Amax, Nvfp4ScaleRule::Search}) {
    const Layer l = make_layer(48, 256, 2048, 7);
    const float ts = tensor_scale_of(l.w);
    const auto rtn = nvfp4_quantize_ref(l.w, l.n, l.k, ts, rule);
    const auto gq = nvfp4_quantize_gptq(l.w, l.n, l.k, ts, l.h, {0.01, rule, 2});
    const double e_rtn = nvfp4_output_error(l.w, rtn, l.h), e_gptq = nvfp4_output_error(l.w, gq, l.h);
    // Inputs of rank about 8 plus noise leave much to compensate: measured 0.04-0.06x of round-to-nearest's
    // error (seeds 7-9, both rules).
    EXPECT_LT(e_gptq, 0.2 * e_rtn) << nvfp4_scale_rule_name(rule);
    EXPECT_EQ(gq.packed.size(), rtn.packed.size());
    EXPECT_EQ(gq.block_scales.size(), rtn.block_scales.size());
    EXPECT_EQ(gq.tensor_scale, ts);
  }
}

TEST(Nvfp4Gptq, UncorrelatedInputsGiveRoundToNearest) {
  // A diagonal Hessian: no column's error can be compensated by another, so GPTQ rounds every weight to
  // nearest with the same scales: bit-identical to the round-to-nearest quantizer.
  const int64_t n = 20, k = 64;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (auto& v : w) v = g(rng);
  std::vector<double> h(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = 1.0 + double(i % 5);
  for (auto rule : {Nvfp4ScaleRule::Amax, Nvfp4ScaleRule::Search}) {
    const float ts = tensor_scale_of(w);
    const auto a = nvfp4_quantize_ref(w, n, k, ts, rule),
               b = nvfp4_quantize_gptq(w, n, k, ts, h, {0.01, rule, 1});
    EXPECT_EQ(a.packed, b.packed) << nvfp4_scale_rule_name(rule);
    EXPECT_EQ(a.block_scales, b.block_scales) << nvfp4_scale_rule_name(rule);
  }
}

TEST(Nvfp4Gptq, ColumnsNoInputReachedAreZeroAndTheRestStillCompensate) {
  Layer l = make_layer(16, 64, 512, 11);
  for (int64_t j = 0; j < l.k; ++j) l.h[j * l.k + 5] = l.h[5 * l.k + j] = 0.0;  // input 5 always zero
  const float ts = tensor_scale_of(l.w);
  const auto q = nvfp4_quantize_gptq(l.w, l.n, l.k, ts, l.h);
  std::vector<float> d(static_cast<size_t>(l.n * l.k));
  nvfp4_dequantize_ref(q, d);
  for (int64_t r = 0; r < l.n; ++r) EXPECT_EQ(d[static_cast<size_t>(r * l.k + 5)], 0.0f);
  EXPECT_LT(nvfp4_output_error(l.w, q, l.h),
            nvfp4_output_error(l.w, nvfp4_quantize_ref(l.w, l.n, l.k, ts, Nvfp4ScaleRule::Search), l.h));
}

TEST(Nvfp4Gptq, BadShapesAndHessiansAreErrors) {
  const std::vector<float> w(16 * 32, 0.5f);
  const std::vector<double> h(32 * 32, 0.0);
  EXPECT_THROW(nvfp4_quantize_gptq(w, 16, 32, 1.0f, std::vector<double>(31 * 31)), Error);
  EXPECT_THROW(nvfp4_quantize_gptq(w, 16, 30, 1.0f, h), Error);  // columns not a multiple of 16
  EXPECT_THROW(nvfp4_quantize_gptq(w, 15, 32, 1.0f, h), Error);  // size mismatch
  std::vector<double> bad(32 * 32, 0.0);
  for (int i = 0; i < 32; ++i) bad[i * 32 + i] = 1.0;
  bad[0] = std::nan("");
  EXPECT_THROW(nvfp4_quantize_gptq(w, 16, 32, 1.0f, bad), Error);
  // An all-zero Hessian (no input reached the layer): every column dead, weights zero, no breakdown.
  const auto q = nvfp4_quantize_gptq(w, 16, 32, 1.0f, h);
  for (uint8_t b : q.packed) EXPECT_EQ(b, 0);
}

// The searched tensor scale of a fused group: within one E4M3 step of ModelOpt's, never a larger weight error
// (ModelOpt's is a candidate and wins ties), and on Gaussian weights with outliers a strictly smaller one.
TEST(Nvfp4Gptq, SearchedTensorScaleLowersTheGroupsWeightError) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> a(96 * 256), b(64 * 256);
  for (auto& v : a) v = 0.02f * g(rng);
  for (auto& v : b) v = 0.03f * g(rng);
  a[77] = 0.9f;  // one outlier sets the group's amax
  const std::vector<Nvfp4Matrix> group{{a, 96, 256}, {b, 64, 256}};
  auto error = [&](float ts, Nvfp4ScaleRule rule) {
    double e = 0;
    for (const auto& m : group) {
      const auto q = nvfp4_quantize_ref(m.x, m.rows, m.cols, ts, rule);
      std::vector<float> d(m.x.size());
      nvfp4_dequantize_ref(q, d);
      for (size_t i = 0; i < d.size(); ++i) e += double(d[i] - m.x[i]) * (d[i] - m.x[i]);
    }
    return e;
  };
  const float ts0 = nvfp4_tensor_scale(0.9f);
  for (auto rule : {Nvfp4ScaleRule::Amax, Nvfp4ScaleRule::Search}) {
    const float ts = nvfp4_search_tensor_scale(group, rule);
    EXPECT_GE(ts, ts0 * 56 / 64) << nvfp4_scale_rule_name(rule);
    EXPECT_LE(ts, ts0 * 72 / 64) << nvfp4_scale_rule_name(rule);
    EXPECT_LT(error(ts, rule), error(ts0, rule)) << nvfp4_scale_rule_name(rule);
  }
  // All-zero weights keep ModelOpt's scale.
  std::vector<float> z(16 * 16, 0.0f);
  EXPECT_EQ(nvfp4_search_tensor_scale(std::vector<Nvfp4Matrix>{{z, 16, 16}}, Nvfp4ScaleRule::Search),
            nvfp4_tensor_scale(0.0f));
}

// The factor the column loop runs on: upper triangular, U^T U the damped Hessian's inverse, dead columns set
// apart (a unit row and column).
TEST(Nvfp4Gptq, UpperFactorInvertsTheDampedHessian) {
  Layer l = make_layer(1, 48, 256, 5);
  const int64_t k = l.k;
  for (int64_t j = 0; j < k; ++j) l.h[j * k + 9] = l.h[9 * k + j] = 0.0;
  std::vector<bool> dead;
  const double damp = 0.01;
  const auto u = gptq_upper_factor(l.h, k, damp, &dead);
  double mean = 0.0;
  for (int64_t i = 0; i < k; ++i) mean += i == 9 ? 1.0 : l.h[i * k + i];
  mean /= double(k);
  for (int64_t i = 0; i < k; ++i) EXPECT_EQ(dead[i], i == 9);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < i; ++j) EXPECT_EQ(u[i * k + j], 0.0);
  // (U^T U) (H + damp x mean x I) = I, with H's dead row and column replaced by the unit vector.
  double worst = 0.0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        double hinv = 0.0;  // (U^T U)[i][p]
        for (int64_t q = 0; q <= std::min(i, p); ++q) hinv += u[q * k + i] * u[q * k + p];
        const double hp = (i == 9 || j == 9 || p == 9) ? (p == j ? 1.0 : 0.0) : l.h[p * k + j];
        s += hinv * (hp + (p == j ? damp * mean : 0.0));
      }
      worst = std::max(worst, std::abs(s - (i == j ? 1.0 : 0.0)));
    }
  EXPECT_LT(worst, 1e-9);
}
