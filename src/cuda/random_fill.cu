#include "cuda/check.h"
#include "cuda/random_fill.h"

namespace fp4lab {

namespace {
__global__ void fill_kernel(uint16_t* dst, int64_t n, uint64_t seed, float sigma, uint64_t outlier_every,
                            uint64_t first) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = random_bf16_word(seed, first + static_cast<uint64_t>(i), sigma, outlier_every);
}
}  // namespace

void fill_random_bf16(uint16_t* dst, int64_t n, uint64_t seed, float sigma, uint64_t outlier_every,
                      cudaStream_t s, uint64_t first) {
  const unsigned grid = grid_1d(n, 256, 8192);
  fill_kernel<<<grid, 256, 0, s>>>(dst, n, seed, sigma, outlier_every, first);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp4lab
