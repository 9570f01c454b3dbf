// Tensor-level NVFP4/MXFP4 checks against an independent statement of the ModelOpt formula.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "common/error.h"
#include "format/nvfp4.h"

using namespace fp4lab;

namespace {

// Independent nearest-value search over the E2M1 magnitudes, ties to the even code.
uint8_t e2m1_bruteforce(float x) {
  const float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  const float a = std::min(std::fabs(x), 6.0f);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const float d = std::fabs(a - mags[c]), db = std::fabs(a - mags[best]);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<uint8_t>(best | (std::signbit(x) ? 8 : 0));
}

std::vector<float> gen(const char* kind, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> x(n);
  std::string k = kind;
  if (k == "normal") {
    std::normal_distribution<float> d(0, 0.02f);
    for (auto& v : x) v = d(rng);
  } else if (k == "uniform") {
    std::uniform_real_distribution<float> d(-3, 3);
    for (auto& v : x) v = d(rng);
  } else if (k == "heavy") {
    std::student_t_distribution<float> d(2.0f);
    for (auto& v : x) v = d(rng);
  } else if (k == "lognormal") {
    std::lognormal_distribution<float> d(0, 3);
    std::bernoulli_distribution s(0.5);
    for (auto& v : x) v = (s(rng) ? 1 : -1) * d(rng) * 1e-3f;
  }
  return x;
}

void check_against_formula(const std::vector<float>& x, int64_t rows, int64_t cols) {
  const Nvfp4Tensor t = nvfp4_quantize_ref(x, rows, cols);
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  ASSERT_EQ(t.tensor_scale, amax / 2688.0f);
  for (int64_t b = 0; b < rows * cols / 16; ++b) {
    float bm = 0;
    for (int i = 0; i < 16; ++i) bm = std::max(bm, std::fabs(x[size_t(b * 16 + i)]));
    float s = bm / (6.0f * t.tensor_scale);
    if (s == 0 || std::isnan(s)) s = 1.0f;
    s = std::clamp(s, 0.001953125f, 448.0f);
    const uint8_t want_scale = e4m3_encode(s);
    ASSERT_EQ(t.block_scales[size_t(b)], want_scale) << "block " << b;
    const float denom = e4m3_decode(want_scale) * t.tensor_scale;
    for (int i = 0; i < 16; ++i) {
      const uint8_t byte = t.packed[size_t(b * 8 + i / 2)];
      const uint8_t got = i % 2 ? e2m1_hi(byte) : e2m1_lo(byte);
      const uint8_t want = e2m1_bruteforce(x[size_t(b * 16 + i)] / denom);
      ASSERT_EQ(got, want) << "block " << b << " elem " << i << " x=" << x[size_t(b * 16 + i)];
    }
  }
}

}  // namespace

TEST(Nvfp4Tensor, MatchesFormulaOnDistributions) {
  for (const char* k : {"normal", "uniform", "heavy", "lognormal"}) {
    SCOPED_TRACE(k);
    check_against_formula(gen(k, 64 * 256, 7), 64, 256);
  }
}

TEST(Nvfp4Tensor, EdgeBlocks) {
  std::vector<float> x = gen("normal", 4 * 64, 3);
  std::fill(x.begin(), x.begin() + 16, 0.0f);                             // an all-zero block
  x[16 + 5] = 1e4f;                                                       // one huge outlier
  for (int i = 0; i < 16; ++i) x[size_t(32 + i)] = 1e-9f * float(i - 8);  // far below the 2^-9 clamp
  check_against_formula(x, 4, 64);
  const Nvfp4Tensor t = nvfp4_quantize_ref(x, 4, 64);
  EXPECT_EQ(e4m3_decode(t.block_scales[0]), 1.0f) << "zero block scale is 1.0";
  EXPECT_EQ(e4m3_decode(t.block_scales[1]), 448.0f) << "the outlier block takes the largest scale";
  EXPECT_EQ(e4m3_decode(t.block_scales[2]), 0.001953125f) << "tiny blocks clamp to 2^-9";
  std::vector<float> y(x.size());
  nvfp4_dequantize_ref(t, y);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(y[size_t(i)], 0.0f);
  EXPECT_NEAR(y[21], 1e4f, 1e4f * 1e-6f) << "the tensor maximum is represented exactly (6 x 448 x amax/2688)";
}

TEST(Nvfp4Tensor, AllZeroTensor) {
  std::vector<float> x(32, 0.0f), y(32, 1.0f);
  const auto t = nvfp4_quantize_ref(x, 1, 32);
  nvfp4_dequantize_ref(t, y);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(Nvfp4Tensor, DequantErrorBound) {
  // Per element: half the widest E2M1 gap (1.0) times the block's effective scale, plus the saturation
  // loss when the E4M3 scale rounds down (under 1/16 of the block max): |x - q| <= 0.25 * block amax.
  for (const char* k : {"normal", "heavy", "uniform"}) {
    const auto x = gen(k, 128 * 512, 11);
    const auto t = nvfp4_quantize_ref(x, 128, 512);
    std::vector<float> y(x.size());
    nvfp4_dequantize_ref(t, y);
    double num = 0, den = 0;
    for (size_t b = 0; b < x.size() / 16; ++b) {
      float bm = 0;
      for (int i = 0; i < 16; ++i) bm = std::max(bm, std::fabs(x[b * 16 + i]));
      if (bm / (6.0f * t.tensor_scale) < 0.015625f) continue;  // E4M3 subnormal scales are coarser
      for (int i = 0; i < 16; ++i) {
        const size_t j = b * 16 + i;
        ASSERT_LE(std::fabs(x[j] - y[j]), 0.25f * bm) << k << " elem " << j;
      }
    }
    for (size_t i = 0; i < x.size(); ++i) {
      num += double(x[i] - y[i]) * (x[i] - y[i]);
      den += double(x[i]) * x[i];
    }
    EXPECT_LT(std::sqrt(num / den), 0.15) << k;
  }
}

TEST(Nvfp4Tensor, FusedShardsShareMaxScale) {
  const auto a = gen("normal", 32 * 64, 1);
  auto b = gen("normal", 16 * 64, 2);
  b[5] = 3.0f;
  const float amaxes[2] = {amax_ref(a), amax_ref(b)};
  const float s = nvfp4_shared_tensor_scale(amaxes);
  EXPECT_EQ(s, 3.0f / 2688.0f);
  const auto qa = nvfp4_quantize_ref(a, 32, 64, s);
  EXPECT_EQ(qa.tensor_scale, s);
  check_against_formula(b, 16, 64);
}

TEST(Nvfp4Tensor, InverseFormIsTheSameScaleDirectionFlipped) {
  const auto x = gen("normal", 8 * 128, 5);
  const float amax = amax_ref(x);
  const float g = nvfp4_global_scale_from_amax(amax);
  EXPECT_NEAR(g * nvfp4_tensor_scale(amax), 1.0f, 1e-6f);
  const auto ct = nvfp4_quantize_inverse_form_ref(x, 8, 128, g);
  const auto mo = nvfp4_quantize_ref(x, 8, 128);
  std::vector<float> yc(x.size()), ym(x.size());
  nvfp4_dequantize_ref(ct, yc);
  nvfp4_dequantize_ref(mo, ym);
  // The two conventions round in a different order; they agree on all but a handful of elements.
  size_t differ = 0;
  for (size_t i = 0; i < x.size(); ++i) differ += std::fabs(yc[i] - ym[i]) > 1e-6f * amax;
  EXPECT_LT(differ, x.size() / 50);
}

TEST(Nvfp4Tensor, FakeQuantEqualsDequantOfQuant) {
  const auto x = gen("heavy", 4 * 64, 9);
  std::vector<float> a(x.size()), b(x.size());
  nvfp4_fake_quant_ref(x, 4, 64, std::nullopt, a);
  nvfp4_dequantize_ref(nvfp4_quantize_ref(x, 4, 64), b);
  EXPECT_EQ(a, b);
}

TEST(Nvfp4Tensor, RejectsBadShapes) {
  std::vector<float> x(24);
  EXPECT_THROW(nvfp4_quantize_ref(x, 1, 24), Error);
  EXPECT_THROW(nvfp4_quantize_ref(x, 2, 16), Error);
}

TEST(Mxfp4, ScaleIsPowerOfTwoAndErrorLargerThanNvfp4) {
  const auto x = gen("normal", 64 * 256, 4);
  const auto m = mxfp4_quantize_ref(x, 64, 256);
  std::vector<float> ym(x.size()), yn(x.size());
  mxfp4_dequantize_ref(m, ym);
  nvfp4_dequantize_ref(nvfp4_quantize_ref(x, 64, 256), yn);
  double em = 0, en = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    em += double(x[i] - ym[i]) * (x[i] - ym[i]);
    en += double(x[i] - yn[i]) * (x[i] - yn[i]);
  }
  EXPECT_GT(em, en) << "MXFP4 loses up to a binade per block";
  // Per block: scale = 2^(floor(log2 amax) - 2), so amax / scale lies in [4, 8).
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float bm = 0;
    for (int i = 0; i < 32; ++i) bm = std::max(bm, std::fabs(x[b * 32 + i]));
    const float r = bm / ue8m0_decode(m.block_scales[b]);
    EXPECT_GE(r, 4.0f);
    EXPECT_LT(r, 8.0f);
  }
}

TEST(Swizzle128x4, BijectionAndPublishedLayout) {
  for (auto [rows, kb] : std::vector<std::pair<int64_t, int64_t>>{{128, 4}, {300, 7}, {5, 1}, {256, 280}}) {
    SwizzleShape s{rows, kb};
    const int64_t rp = s.rows_padded(), kp = s.kblocks_padded();
    std::set<int64_t> seen;
    for (int64_t m = 0; m < rp; ++m)
      for (int64_t k = 0; k < kp; ++k) {
        const int64_t off = swizzle128x4_offset(m, k, kp);
        ASSERT_LT(off, s.bytes());
        ASSERT_TRUE(seen.insert(off).second) << "offset reused";
        // Independent statement: the padded [rp, kp] matrix viewed as [rp/128, 4, 32, kp/4, 4] and permuted
        // to (0, 3, 2, 1, 4), as FlashInfer and vLLM build it for cuBLASLt / CUTLASS.
        const int64_t i0 = m / 128, i1 = (m % 128) / 32, i2 = m % 32, i3 = k / 4, i4 = k % 4;
        const int64_t want = (((i0 * (kp / 4) + i3) * 32 + i2) * 4 + i1) * 4 + i4;
        ASSERT_EQ(off, want);
      }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), s.bytes());
    std::vector<uint8_t> rm(static_cast<size_t>(rows * kb));
    for (size_t i = 0; i < rm.size(); ++i) rm[i] = static_cast<uint8_t>(i * 31 + 7);
    EXPECT_EQ(unswizzle128x4(swizzle128x4(rm, s), s), rm);
  }
}

namespace {
double block_sq_error(std::span<const float> x, const Nvfp4Tensor& q, int64_t b) {
  std::vector<float> d(x.size());
  nvfp4_dequantize_ref(q, d);
  double e = 0;
  for (int64_t i = b * 16; i < (b + 1) * 16; ++i) e += double(x[i] - d[i]) * (x[i] - d[i]);
  return e;
}
}  // namespace

TEST(Nvfp4ScaleSearch, NeverWorseThanModelOptPerBlockAndBetterOverall) {
  std::mt19937 rng(11);
  for (int dist = 0; dist < 3; ++dist) {
    const int64_t rows = 64, cols = 256;
    std::vector<float> x(rows * cols);
    std::normal_distribution<float> g(0.0f, 0.02f);
    std::student_t_distribution<float> heavy(3.0f);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : x) v = dist == 0 ? g(rng) : dist == 1 ? 0.01f * heavy(rng) : u(rng);
    const float ts = nvfp4_tensor_scale(amax_ref(x));
    const Nvfp4Tensor rtn = nvfp4_quantize_ref(x, rows, cols, ts, Nvfp4ScaleRule::Amax);
    const Nvfp4Tensor ss = nvfp4_quantize_ref(x, rows, cols, ts, Nvfp4ScaleRule::Search);
    EXPECT_EQ(rtn.block_scales, nvfp4_quantize_ref(x, rows, cols, ts).block_scales);  // rtn is ModelOpt's
    double e_rtn = 0, e_ss = 0;
    for (int64_t b = 0; b < rows * cols / 16; ++b) {
      const double a = block_sq_error(x, rtn, b), s = block_sq_error(x, ss, b);
      ASSERT_LE(s, a * (1 + 1e-6) + 1e-30) << "distribution " << dist << " block " << b;
      e_rtn += a, e_ss += s;
    }
    EXPECT_LT(e_ss, 0.95 * e_rtn) << "distribution " << dist;
    EXPECT_EQ(ss.tensor_scale, ts);
    EXPECT_EQ(ss.packed.size(), rtn.packed.size());
  }
}

TEST(Nvfp4ScaleSearch, FindsTheScaleThatPutsTheMaximumOnFour) {
  // On the E2M1 grid with scale 1 when the largest value is 4: amax / 6 rounds to 0.625 or 0.6875 and loses
  // precision; the search finds scale 1.0 and reproduces the block exactly.
  std::vector<float> x = {4, 3, 2, 1.5f, 1, 0.5f, 0, -4, -3, -2, -1.5f, -1, -0.5f, 4, 3, 2};
  const Nvfp4Tensor ss = nvfp4_quantize_ref(x, 1, 16, 1.0f, Nvfp4ScaleRule::Search);
  EXPECT_EQ(e4m3_decode(ss.block_scales[0]), 1.0f);
  EXPECT_EQ(block_sq_error(x, ss, 0), 0.0);
  const Nvfp4Tensor rtn = nvfp4_quantize_ref(x, 1, 16, 1.0f, Nvfp4ScaleRule::Amax);
  EXPECT_GT(block_sq_error(x, rtn, 0), 0.0);
  EXPECT_EQ(parse_nvfp4_scale_rule("scale-search"), Nvfp4ScaleRule::Search);
  EXPECT_THROW(parse_nvfp4_scale_rule("gptq"), Error);
}
