// Helpers for GPU tests: skip cleanly without a GPU, copy to/from the device.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "common/hd.h"

#include "cuda/check.h"
#include "cuda/nvfp4_gemm.h"
#include "cuda/tensor_parallel.h"
#include "cuda/gpu_info.h"

namespace fp4lab::test {

inline bool gpu_available() {
  static const bool ok = query_gpus().ok;
  return ok;
}

// The only two reasons a test may skip; scripts/test.sh fails a run that skips for any other.
#define REQUIRE_GPU() \
  if (!::fp4lab::test::gpu_available()) GTEST_SKIP() << "skipped: no GPU"
#define REQUIRE_GPUS(n)                                            \
  REQUIRE_GPU();                                                   \
  if (::fp4lab::visible_gpu_count() < (n))                         \
  GTEST_SKIP() << "skipped: fewer GPUs than the test needs (" << (n) << ")"

template <class T>
DeviceBuffer to_device(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  CUDA_CHECK(cudaMemcpy(b.ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

template <class T>
std::vector<T> to_host(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  CUDA_CHECK(cudaMemcpy(v.data(), b.ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// n values from N(0, sd), rounded to BF16: the raw bits and the float values the reference sees.
inline std::pair<std::vector<uint16_t>, std::vector<float>> random_bf16(size_t n, float sd,
                                                                        std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<uint16_t> raw(n);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) {
    raw[i] = bf16_from_f32_rne(d(rng));
    f[i] = bf16_to_f32(raw[i]);
  }
  return {raw, f};
}

// The largest and the mean |got - ref| of a BF16 output.
inline std::pair<double, double> abs_errors(const std::vector<uint16_t>& got, const std::vector<float>& ref) {
  double max_err = 0, sum_err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(bf16_to_f32(got[i]) - ref[i]);
    max_err = std::max(max_err, e);
    sum_err += e;
  }
  return {max_err, sum_err / static_cast<double>(ref.size())};
}

}  // namespace fp4lab::test
