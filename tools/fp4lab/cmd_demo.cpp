// `fp4lab demo format`: what NVFP4 does to real-looking weights, next to MXFP4 and FP8, on generated data.
#include <cmath>
#include <cstdio>
#include <random>

#include "commands.h"
#include "common/error.h"
#include "format/nvfp4.h"

namespace fp4lab::cli {

namespace {

struct DemoOpts {
  int rows = 512, cols = 4096;
  uint64_t seed = 1234;
};

double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

void run_format_demo(const DemoOpts& o) {
  const size_t n = static_cast<size_t>(o.rows) * o.cols;
  std::mt19937_64 rng(o.seed);
  struct Dist {
    const char* name;
    std::vector<float> x;
  };
  std::vector<Dist> dists;
  {
    std::normal_distribution<float> g(0.0f, 0.02f);
    std::vector<float> x(n);
    for (auto& v : x) v = g(rng);
    dists.push_back({"gaussian (sigma 0.02)", x});
  }
  {
    std::student_t_distribution<float> t(3.0f);
    std::vector<float> x(n);
    for (auto& v : x) v = 0.01f * t(rng);
    dists.push_back({"heavy-tailed (student-t, 3 dof)", x});
  }
  {
    std::normal_distribution<float> g(0.0f, 0.02f);
    std::uniform_int_distribution<size_t> pick(0, n - 1);
    std::vector<float> x(n);
    for (auto& v : x) v = g(rng);
    for (int i = 0; i < o.rows; ++i)
      x[pick(rng)] = (i % 2 ? 1.0f : -1.0f) * 2.0f;  // one 100-sigma outlier per row
    dists.push_back({"gaussian + 1 outlier/row (100 sigma)", x});
  }
  std::printf("NVFP4 vs MXFP4 vs FP8 on a %d x %d weight matrix (seed %llu)\n", o.rows, o.cols,
              static_cast<unsigned long long>(o.seed));
  std::printf("bytes/weight: BF16 2.000, FP8 1.000, NVFP4 %.4f, MXFP4 %.4f\n\n", 0.5 + 1.0 / 16,
              0.5 + 1.0 / 32);
  std::printf("%-38s %12s %12s %12s\n", "distribution", "NVFP4 relRMS", "MXFP4 relRMS", "FP8 relRMS");
  for (const auto& d : dists) {
    std::vector<float> y(n);
    const auto q4 = nvfp4_quantize_ref(d.x, o.rows, o.cols);
    nvfp4_dequantize_ref(q4, y);
    const double e_nv = rel_rms(d.x, y);
    const auto mx = mxfp4_quantize_ref(d.x, o.rows, o.cols);
    mxfp4_dequantize_ref(mx, y);
    const double e_mx = rel_rms(d.x, y);
    const auto f8 = fp8_quantize_ref(d.x, o.rows, o.cols);
    for (size_t i = 0; i < n; ++i) y[i] = e4m3_decode(f8.data[i]) * f8.scale;
    const double e_f8 = rel_rms(d.x, y);
    std::printf("%-38s %12.4f %12.4f %12.4f\n", d.name, e_nv, e_mx, e_f8);
  }
  // One block, decoded by hand, so the two-level scale is visible.
  const auto& x = dists[0].x;
  const auto q = nvfp4_quantize_ref(std::span<const float>(x.data(), static_cast<size_t>(o.cols)), 1, o.cols);
  const uint8_t bs = q.block_scales[0];
  std::printf("\nfirst block of row 0: tensor scale %.6g (amax/2688), block scale E4M3 0x%02x = %g\n",
              q.tensor_scale, bs, e4m3_decode(bs));
  std::printf("%10s %6s %8s %10s\n", "x", "code", "e2m1", "decoded");
  for (int i = 0; i < 16; ++i) {
    const uint8_t byte = q.packed[static_cast<size_t>(i / 2)];
    const uint8_t code = i % 2 ? e2m1_hi(byte) : e2m1_lo(byte);
    std::printf("%10.5f %6u %8.1f %10.5f\n", x[static_cast<size_t>(i)], code, e2m1_decode(code),
                nvfp4_decode_elem(code, bs, q.tensor_scale));
  }
}

}  // namespace

Action add_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOpts>();
  auto* fmt =
      app.add_subcommand("format", "quantize generated weights with NVFP4, MXFP4 and FP8 and compare errors");
  fmt->add_option("--rows", o->rows, "rows of the generated matrix")->check(CLI::Range(1, 1 << 16));
  fmt->add_option("--cols", o->cols, "columns (a multiple of 32)")->check(CLI::Range(32, 1 << 20));
  fmt->add_option("--seed", o->seed, "random seed");
  app.require_subcommand(1);
  return [o]() {
    if (o->cols % 32) throw Error("--cols must be a multiple of 32 (MXFP4 block size)");
    run_format_demo(*o);
    return 0;
  };
}

}  // namespace fp4lab::cli
