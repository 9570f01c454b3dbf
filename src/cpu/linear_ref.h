// CPU reference of the linear layer, y[M,N] = x[M,K] . W[N,K]^T: the spec the CUDA GEMM kernels are tested
// against. Accumulates in double so that the reference error is far below any kernel's.
#pragma once
#include <cstdint>
#include <span>

#include "format/nvfp4.h"

namespace fp4lab {

void linear_f32_ref(std::span<const float> x, int64_t m, int64_t k, std::span<const float> w, int64_t n,
                    std::span<float> y, int threads = 0);

// W4A16: W dequantized exactly (E2M1 x E4M3 x tensor scale), x as given (callers round it to BF16 first).
void linear_nvfp4_w4a16_ref(std::span<const float> x, int64_t m, const Nvfp4Tensor& w, std::span<float> y,
                            int threads = 0);

}  // namespace fp4lab
