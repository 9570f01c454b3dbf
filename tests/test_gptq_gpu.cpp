// GPTQ on the GPU (cuda/nvfp4_gptq.h) against its spec, the FP64 CPU path (format/nvfp4_gptq.h): the Hessian
// accumulation, the inverse factor, the column loop on synthetic layers (partial column blocks, a dead
// column, both scale rules), and `fp4lab quantize --method gptq --device cuda` against `--device cpu` on
// stories260k. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>

#include "cuda/nvfp4_gptq.h"
#include "format/nvfp4_gptq.h"
#include "gptq_fixture.h"
#include "gpu_util.h"
#include "test_util.h"

using namespace fp4lab;
using fp4lab::test::run_fp4lab;
using fp4lab::test::TempDir;

namespace {

std::vector<float> to_f32(const std::vector<double>& h) {
  return std::vector<float>(h.begin(), h.end());
}

// The Hessian as the GPU holds it (FP32), back in FP64 for the CPU reference: both paths then start from the
// same values, and what differs is only their arithmetic.
void round_to_f32(std::vector<double>& h) {
  for (double& v : h) v = static_cast<float>(v);
}

}  // namespace

TEST(GpuGptq, HessianAndAmaxAccumulateOverCalls) {
  REQUIRE_GPU();
  std::mt19937 rng(4);
  const int64_t k = 96, m1 = 37, m2 = 70, ldx = 112;  // a row stride wider than k
  auto [raw, f] = test::random_bf16(static_cast<size_t>((m1 + m2) * ldx), 1.0f, rng);
  const DeviceBuffer x = test::to_device(raw);
  DeviceBuffer h(static_cast<size_t>(k * k) * sizeof(float)), amax(sizeof(unsigned));
  CUDA_CHECK(cudaMemset(h.ptr, 0, h.bytes));
  CUDA_CHECK(cudaMemset(amax.ptr, 0, amax.bytes));
  cublasHandle_t blas = nullptr;
  CUBLAS_CHECK(cublasCreate(&blas));
  const auto* xr = x.as<bf16_raw>();
  gptq_accumulate_hessian(blas, xr, m1, k, ldx, h.as<float>(), nullptr);
  gptq_accumulate_hessian(blas, xr + m1 * ldx, m2, k, ldx, h.as<float>(), nullptr);
  bf16_absmax_accumulate(xr, m1, k, ldx, amax.as<unsigned>(), nullptr);
  bf16_absmax_accumulate(xr + m1 * ldx, m2, k, ldx, amax.as<unsigned>(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  cublasDestroy(blas);
  const auto got = test::to_host<float>(h, static_cast<size_t>(k * k));
  const auto bits = test::to_host<unsigned>(amax, 1);
  double worst = 0.0;
  float ref_amax = 0.0f;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (int64_t r = 0; r < m1 + m2; ++r) s += double(f[r * ldx + i]) * f[r * ldx + j];
      worst = std::max(worst, std::abs(got[i * k + j] - s) / (m1 + m2));
    }
  for (int64_t r = 0; r < m1 + m2; ++r)
    for (int64_t j = 0; j < k; ++j) ref_amax = std::max(ref_amax, std::fabs(f[r * ldx + j]));
  EXPECT_LT(worst, 1e-5);  // FP32 accumulation of exact BF16 products
  float a = 0.0f;
  std::memcpy(&a, bits.data(), sizeof(a));
  EXPECT_EQ(a, ref_amax);  // the padding columns beyond k are never read
}

TEST(GpuGptq, UpperFactorMatchesTheCpu) {
  REQUIRE_GPU();
  // k = 600: three Cholesky blocks of 256, the last one partial; column 33 dead.
  for (int64_t k : {48, 600}) {
    test::GptqLayer l = test::make_layer(1, k, 2 * k, 21);
    for (int64_t j = 0; j < k; ++j) l.h[j * k + 33] = l.h[33 * k + j] = 0.0;
    round_to_f32(l.h);
    std::vector<bool> dead_ref;
    const auto ref = gptq_upper_factor(l.h, k, 0.01, &dead_ref);
    const DeviceBuffer h = test::to_device(to_f32(l.h));
    GptqDevice g(nullptr);
    std::vector<uint8_t> dead;
    const DeviceBuffer u = g.upper_factor(h.as<float>(), k, 0.01, dead);
    const auto got = test::to_host<float>(u, static_cast<size_t>(k * k));
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < k * k; ++i) scale = std::max(scale, std::abs(ref[i]));
    for (int64_t i = 0; i < k * k; ++i) worst = std::max(worst, std::abs(got[i] - ref[i]));
    // The Hessian rounded to FP32 and U to FP32: relative differences of about 1e-6.
    EXPECT_LT(worst / scale, 1e-4) << "k=" << k;
    for (int64_t i = 0; i < k; ++i) EXPECT_EQ(dead[i] != 0, dead_ref[i]) << "k=" << k << " column " << i;
  }
}

TEST(GpuGptq, QuantizeMatchesTheCpu) {
  REQUIRE_GPU();
  // 200 rows (not a multiple of the kernel's 64), 336 columns (five column blocks of 64 and one of 16).
  for (auto rule : {Nvfp4ScaleRule::Amax, Nvfp4ScaleRule::Search}) {
    test::GptqLayer l = test::make_layer(200, 336, 1024, 31);
    for (int64_t j = 0; j < l.k; ++j) l.h[j * l.k + 70] = l.h[70 * l.k + j] = 0.0;
    round_to_f32(l.h);
    const float ts = test::tensor_scale_of(l.w);
    const GptqOptions o{0.01, rule, 2};
    const Nvfp4Tensor ref = nvfp4_quantize_gptq(l.w, l.n, l.k, ts, l.h, o);
    const DeviceBuffer h = test::to_device(to_f32(l.h));
    DeviceBuffer dq(static_cast<size_t>(l.n * l.k) * 2);
    GptqDevice g(nullptr);
    const GptqDevice::Result r = g.quantize(l.w, l.n, l.k, ts, h.as<float>(), o, dq.as<bf16_raw>());
    const char* name = nvfp4_scale_rule_name(rule);
    ASSERT_EQ(r.q.packed.size(), ref.packed.size());
    ASSERT_EQ(r.q.block_scales.size(), ref.block_scales.size());
    EXPECT_EQ(r.q.tensor_scale, ts);
    // FP32 against FP64 error propagation: a code at a rounding boundary may go the other way and carry its
    // row's later columns with it, so codes agree mostly, not all; the error GPTQ minimizes agrees closely.
    size_t same = 0;
    for (size_t i = 0; i < ref.packed.size(); ++i)
      same += (ref.packed[i] & 15) == (r.q.packed[i] & 15) && (ref.packed[i] >> 4) == (r.q.packed[i] >> 4);
    EXPECT_GT(double(same) / double(ref.packed.size()), 0.9) << name;
    const double e_ref = nvfp4_output_error(l.w, ref, l.h), e_gpu = nvfp4_output_error(l.w, r.q, l.h);
    const double e_rtn = nvfp4_output_error(l.w, nvfp4_quantize_ref(l.w, l.n, l.k, ts, rule), l.h);
    EXPECT_NEAR(e_gpu / e_ref, 1.0, 0.05) << name;
    EXPECT_NEAR(r.error / e_gpu, 1.0, 1e-3) << name;
    EXPECT_NEAR(r.rtn_error / e_rtn, 1.0, 1e-3) << name;
    EXPECT_LT(e_gpu, 0.2 * e_rtn) << name;
    // The dequantized copy is the codes' values in BF16, and the dead column is zero.
    std::vector<float> d(static_cast<size_t>(l.n * l.k));
    nvfp4_dequantize_ref(r.q, d);
    const auto got = test::to_host<uint16_t>(dq, d.size());
    for (size_t i = 0; i < d.size(); ++i) ASSERT_EQ(got[i], bf16_from_f32_rne(d[i])) << name << " at " << i;
    for (int64_t row = 0; row < l.n; ++row) EXPECT_EQ(d[static_cast<size_t>(row * l.k + 70)], 0.0f);
  }
}

// The tensor-scale search's device twin picks the CPU's candidate: groups of one to three matrices whose
// rows exceed the sample (every 2nd or 3rd row measured) or fall short of it, an outlier setting the amax,
// both block-scale rules; an all-zero group keeps ModelOpt's scale.
TEST(GpuGptq, TensorScaleSearchMatchesTheCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(12);
  for (int trial = 0; trial < 8; ++trial) {
    std::normal_distribution<float> g(0.0f, 0.01f + 0.01f * trial);
    const int parts = 1 + trial % 3;
    std::vector<std::vector<float>> w(parts);
    std::vector<Nvfp4Matrix> group;
    for (int i = 0; i < parts; ++i) {
      const int64_t rows = 40 + 37 * i + 13 * trial, cols = 16 * (3 + i + trial);
      w[i].resize(static_cast<size_t>(rows * cols));
      for (auto& v : w[i]) v = g(rng);
      w[i][static_cast<size_t>(trial * 7)] = 0.4f + 0.1f * trial;
      group.push_back({w[i], rows, cols});
    }
    for (auto rule : {Nvfp4ScaleRule::Amax, Nvfp4ScaleRule::Search}) {
      const float cpu = nvfp4_search_tensor_scale(group, rule, 64);
      EXPECT_EQ(nvfp4_search_tensor_scale_device(group, rule, nullptr, 64), cpu)
          << "trial " << trial << " " << nvfp4_scale_rule_name(rule);
      EXPECT_EQ(nvfp4_search_tensor_scale_device(group, rule, nullptr),
                nvfp4_search_tensor_scale(group, rule));
    }
  }
  std::vector<float> z(32 * 16, 0.0f);
  const std::vector<Nvfp4Matrix> zero{{z, 32, 16}};
  EXPECT_EQ(nvfp4_search_tensor_scale_device(zero, Nvfp4ScaleRule::Search, nullptr),
            nvfp4_tensor_scale(0.0f));
}

// The whole command on both devices: the same layers, and GPTQ's output error against round-to-nearest's
// (the figure `quantize` prints) close between them.
TEST(GpuGptq, QuantizeCommandOnTheGpuMatchesTheCpu) {
  REQUIRE_GPU();
  TempDir d;
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> id(1, 511);
  {
    std::ofstream f(d.str("calib.ids"));
    for (int i = 0; i < 1024; ++i) f << id(rng) << ' ';
  }
  const std::string in = std::string(FP4LAB_TEST_DATA_DIR) + "/models/stories260k";
  double ratio[2] = {0, 0};
  for (int dev = 0; dev < 2; ++dev) {
    const std::string device = dev ? "cuda" : "cpu";
    const auto r = run_fp4lab("quantize --in " + in + " --out " + d.str(device) + " --method gptq --calib " +
                              d.str("calib.ids") + " --device " + device +
                              " --gptq-sequential block --gptq-objective layer");
    ASSERT_EQ(r.status, 0) << r.out;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(gptq \((GPU|CPU),.*, ([0-9.]+)x\))"))) << r.out;
    EXPECT_EQ(m[1].str(), dev ? "GPU" : "CPU");
    ratio[dev] = std::stod(m[2].str());
  }
  EXPECT_LT(ratio[1], 0.9);
  EXPECT_NEAR(ratio[1], ratio[0], 0.05);
}
