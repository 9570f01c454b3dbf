// Helpers for GPU tests: skip cleanly without a GPU, copy to/from the device.
#pragma once
#include <gtest/gtest.h>

#include <vector>

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

}  // namespace fp4lab::test
