#include "format/nvfp4_gptq.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"

namespace fp4lab {

bool gptq_cholesky_lower(std::span<double> a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t p = 0; p < j; ++p) d -= a[j * n + p] * a[j * n + p];
    if (!(d > 0.0)) return false;
    d = std::sqrt(d);
    a[j * n + j] = d;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t p = 0; p < j; ++p) s -= a[i * n + p] * a[j * n + p];
      a[i * n + j] = s / d;
    }
  }
  return true;
}

namespace {

// The upper factor U of H^-1 = U^T U (row j of U: how column j's error spreads onto the later columns), from
// H's lower Cholesky factor L: invert L, form H^-1 = L^-T L^-1, factor it. O(n^3), once per layer.
std::vector<double> inverse_upper_factor(const std::vector<double>& l, int64_t n) {
  // li = L^-1, lower triangular, by forward substitution column by column.
  std::vector<double> li(static_cast<size_t>(n * n), 0.0);
  for (int64_t c = 0; c < n; ++c) {
    li[c * n + c] = 1.0 / l[c * n + c];
    for (int64_t i = c + 1; i < n; ++i) {
      double s = 0.0;
      for (int64_t p = c; p < i; ++p) s -= l[i * n + p] * li[p * n + c];
      li[i * n + c] = s / l[i * n + i];
    }
  }
  // hinv = L^-T L^-1: hinv[i][j] = sum_p li[p][i] li[p][j], p >= max(i, j).
  std::vector<double> hinv(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0.0;
      for (int64_t p = i; p < n; ++p) s += li[p * n + i] * li[p * n + j];
      hinv[i * n + j] = hinv[j * n + i] = s;
    }
  // hinv = L2 L2^T (lower Cholesky) gives U = L2^T: U^T U = hinv.
  if (!gptq_cholesky_lower(hinv, n))
    throw Error("gptq: the inverse Hessian is not positive definite (numerical breakdown)");
  std::vector<double> u(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) u[j * n + i] = hinv[i * n + j];
  return u;
}

}  // namespace

std::vector<double> gptq_upper_factor(std::span<const double> hessian, int64_t n, double damp,
                                      std::vector<bool>* dead_out) {
  std::vector<double> h(hessian.begin(), hessian.end());
  std::vector<bool> dead(static_cast<size_t>(n));
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(h[i * n + i])) throw Error("gptq: the Hessian is not finite");
    dead[i] = !(h[i * n + i] > 0.0);
    if (dead[i]) {
      for (int64_t j = 0; j < n; ++j) h[i * n + j] = h[j * n + i] = 0.0;
      h[i * n + i] = 1.0;
    }
    mean_diag += h[i * n + i];
  }
  mean_diag /= double(n);
  std::vector<double> l;
  for (int attempt = 0;; ++attempt) {
    l = h;
    for (int64_t i = 0; i < n; ++i) l[i * n + i] += damp * mean_diag;
    if (gptq_cholesky_lower(l, n)) break;
    if (attempt == kGptqDampAttempts - 1) throw Error("gptq: the damped Hessian is not positive definite");
    damp *= 10.0;
  }
  if (dead_out) *dead_out = std::move(dead);
  return inverse_upper_factor(l, n);
}

std::vector<float> gptq_float_target(std::span<const float> w, int64_t rows, int64_t n,
                                     std::span<const double> hessian, std::span<const double> cross,
                                     double damp) {
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) mean_diag += hessian[i * n + i];
  mean_diag = std::max(mean_diag / double(n), 1e-30);
  std::vector<double> l(hessian.begin(), hessian.end());
  for (int64_t i = 0; i < n; ++i) l[i * n + i] += damp * mean_diag;
  if (!gptq_cholesky_lower(l, n)) throw Error("gptq: the damped Hessian is not positive definite");
  std::vector<float> out(w.begin(), w.end());
  parallel_parts(rows, 0, [&](int64_t r) {
    // b = w_r (c - h); solve (h + lambda I) x = b^T by L L^T.
    std::vector<double> b(static_cast<size_t>(n), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double wi = w[r * n + i];
      if (wi == 0.0) continue;
      for (int64_t j = 0; j < n; ++j) b[j] += wi * (cross[i * n + j] - hessian[i * n + j]);
    }
    for (int64_t i = 0; i < n; ++i) {
      double s = b[i];
      for (int64_t p = 0; p < i; ++p) s -= l[i * n + p] * b[p];
      b[i] = s / l[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; --i) {
      double s = b[i];
      for (int64_t p = i + 1; p < n; ++p) s -= l[p * n + i] * b[p];
      b[i] = s / l[i * n + i];
    }
    for (int64_t i = 0; i < n; ++i) out[r * n + i] = static_cast<float>(w[r * n + i] + b[i]);
  });
  return out;
}

Nvfp4Tensor nvfp4_quantize_gptq(std::span<const float> w, int64_t rows, int64_t cols, float tensor_scale,
                                std::span<const double> hessian, const GptqOptions& o) {
  if (rows <= 0 || cols <= 0 || cols % kNvfp4Block || static_cast<int64_t>(w.size()) != rows * cols)
    throw Error("gptq: weight shape " + std::to_string(rows) + "x" + std::to_string(cols) +
                " (columns a multiple of 16) does not match its " + std::to_string(w.size()) + " values");
  if (static_cast<int64_t>(hessian.size()) != cols * cols)
    throw Error("gptq: the Hessian has " + std::to_string(hessian.size()) + " entries, not " +
                std::to_string(cols) + "^2");
  const int64_t n = cols;
  std::vector<bool> dead;
  const std::vector<double> u = gptq_upper_factor(hessian, n, o.damp, &dead);

  Nvfp4Tensor t;
  t.rows = rows;
  t.cols = cols;
  t.tensor_scale = tensor_scale;
  t.packed.assign(static_cast<size_t>(rows * cols / 2), 0);
  t.block_scales.assign(static_cast<size_t>(rows * cols / kNvfp4Block), 0);
  // Each row is quantized on its own: the updates of one row's columns depend only on that row's errors.
  parallel_parts(rows, o.threads, [&](int64_t r) {
    std::vector<double> x(w.begin() + r * cols, w.begin() + (r + 1) * cols);
    for (int64_t j = 0; j < n; ++j)
      if (dead[j]) x[j] = 0.0;
    float blk[kNvfp4Block];
    uint8_t s = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j % kNvfp4Block == 0) {
        for (int e = 0; e < kNvfp4Block; ++e) blk[e] = static_cast<float>(x[j + e]);
        s = nvfp4_pick_block_scale(blk, tensor_scale, o.scale_rule == Nvfp4ScaleRule::Search, nullptr);
        t.block_scales[static_cast<size_t>((r * cols + j) / kNvfp4Block)] = s;
      }
      const uint8_t code = nvfp4_encode_elem(static_cast<float>(x[j]), s, tensor_scale);
      uint8_t& byte = t.packed[static_cast<size_t>((r * cols + j) / 2)];
      byte = static_cast<uint8_t>(j % 2 ? (byte & 0x0F) | (code << 4) : (byte & 0xF0) | code);
      const double err = (x[j] - nvfp4_decode_elem(code, s, tensor_scale)) / u[j * n + j];
      for (int64_t c = j + 1; c < n; ++c) x[c] -= err * u[j * n + c];
    }
  });
  return t;
}

double nvfp4_output_error(std::span<const float> w, const Nvfp4Tensor& q, std::span<const double> hessian) {
  const int64_t n = q.cols;
  std::vector<float> d(static_cast<size_t>(q.rows * n));
  nvfp4_dequantize_ref(q, d);
  double total = 0.0;
  std::vector<double> e(static_cast<size_t>(n));
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t j = 0; j < n; ++j) e[j] = double(w[r * n + j]) - d[r * n + j];
    for (int64_t i = 0; i < n; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) s += hessian[i * n + j] * e[j];
      total += e[i] * s;
    }
  }
  return total;
}

}  // namespace fp4lab
