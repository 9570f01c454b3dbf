#include "cpu/linear_ref.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"

namespace fp4lab {


void linear_f32_ref(std::span<const float> x, int64_t m, int64_t k, std::span<const float> w, int64_t n,
                    std::span<float> y, int threads) {
  if (static_cast<int64_t>(x.size()) != m * k || static_cast<int64_t>(w.size()) != n * k ||
      static_cast<int64_t>(y.size()) != m * n)
    throw Error("linear_f32_ref: shape mismatch");
  parallel_parts(n, threads, [&](int64_t j) {
    const float* wr = w.data() + j * k;
    for (int64_t i = 0; i < m; ++i) {
      const float* xr = x.data() + i * k;
      double acc = 0;
      for (int64_t t = 0; t < k; ++t) acc += static_cast<double>(xr[t]) * wr[t];
      y[static_cast<size_t>(i * n + j)] = static_cast<float>(acc);
    }
  });
}

void linear_nvfp4_w4a16_ref(std::span<const float> x, int64_t m, const Nvfp4Tensor& w, std::span<float> y,
                            int threads) {
  std::vector<float> wd(static_cast<size_t>(w.rows * w.cols));
  nvfp4_dequantize_ref(w, wd);
  linear_f32_ref(x, m, w.cols, wd, w.rows, y, threads);
}

}  // namespace fp4lab
