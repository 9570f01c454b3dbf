// GPTQ (Frantar et al., arXiv 2210.17323) on the NVFP4 grid: weights are quantized one input column at a
// time, and each column's rounding error is pushed onto the columns not yet quantized, weighted by the
// inverse Hessian of the layer's reconstruction error, so that the layer's output on the calibration inputs
// moves as little as possible. A 16-block's E4M3 scale is chosen when its first column is reached, from the
// block's values as the earlier errors left them. The result is an ordinary ModelOpt-layout NVFP4 tensor.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "format/nvfp4.h"

namespace fp4lab {

struct GptqOptions {
  double damp = 0.01;  // added to the Hessian's diagonal, as a fraction of its mean (GPTQ's percdamp)
  Nvfp4ScaleRule scale_rule = Nvfp4ScaleRule::Search;
  int threads = 0;  // rows are independent: spread over this many threads (0: every core)
};

// Damping that still leaves a factorization breaking down is raised tenfold, up to this many tries.
constexpr int kGptqDampAttempts = 5;

// In place: the lower Cholesky factor L of the symmetric positive definite a [n, n] row-major (a = L L^T; the
// upper triangle is left as it was). False where a pivot is not positive.
bool gptq_cholesky_lower(std::span<double> a, int64_t n);

// The factor GPTQ's column loop runs on: U [n, n] row-major, upper triangular, with U^T U = (H + damp x
// mean(diag H) x I)^-1 (row j: how column j's error spreads onto the later columns). Columns whose diagonal
// is not positive (inputs that never reached them) are set apart first (dead, when given, marks them). The
// CUDA path (cuda/nvfp4_gptq.h) computes the same factor on the device; this is its spec.
std::vector<double> gptq_upper_factor(std::span<const double> hessian, int64_t n, double damp,
                                      std::vector<bool>* dead = nullptr);

// GPTQ toward the float model (GPTAQ, arXiv 2504.02692): the layer's inputs in the partly quantized model
// (x, Hessian h = sum x x^T) differ from the float model's (r), so the weights that best reproduce the float
// layer's outputs on x are not w but w' minimizing ||w r - w' x||^2 + lambda ||w' - w||^2:
// w' = w + w (c - h) (h + lambda I)^-1, c = sum r x^T [cols, cols], lambda = damp x mean(diag h).
// GPTQ then quantizes w' under h. Returns w' [rows, cols].
std::vector<float> gptq_float_target(std::span<const float> w, int64_t rows, int64_t cols,
                                     std::span<const double> hessian, std::span<const double> cross,
                                     double damp);

// w: [rows, cols] row-major; hessian: [cols, cols] row-major, the sum of x x^T over the layer's calibration
// inputs (any positive multiple). Inputs that never reached a column (a zero diagonal) leave the column's
// weights to plain rounding. Throws where the damped Hessian is not positive definite even after raising
// the damping.
Nvfp4Tensor nvfp4_quantize_gptq(std::span<const float> w, int64_t rows, int64_t cols, float tensor_scale,
                                std::span<const double> hessian, const GptqOptions& o = {});

// The layer's output error on the calibration inputs, trace((W - Q) H (W - Q)^T) for the dequantized Q: what
// GPTQ minimizes (tests and reports compare methods by it).
double nvfp4_output_error(std::span<const float> w, const Nvfp4Tensor& q, std::span<const double> hessian);

}  // namespace fp4lab
