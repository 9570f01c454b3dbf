// Every CUDA runtime / cuBLAS call goes through these: a failure becomes one fp4lab::Error line naming the
// call site and the CUDA error string.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common/error.h"

namespace fp4lab {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line);

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, at least one.
inline unsigned grid_1d(int64_t n, int threads, int64_t max_blocks = 65535 * 8) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : b > max_blocks ? max_blocks : b);
}

}  // namespace fp4lab

#define CUDA_CHECK(expr)                                                                            \
  do {                                                                                              \
    cudaError_t fp4lab_e_ = (expr);                                                                 \
    if (fp4lab_e_ != cudaSuccess) ::fp4lab::throw_cuda_error(fp4lab_e_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(expr)                                                \
  do {                                                                    \
    cublasStatus_t fp4lab_s_ = (expr);                                    \
    if (fp4lab_s_ != CUBLAS_STATUS_SUCCESS)                               \
      ::fp4lab::throw_cublas_error(fp4lab_s_, #expr, __FILE__, __LINE__); \
  } while (0)
