// GPTQ (Frantar et al., arXiv 2210.17323) on the NVFP4 grid: weights are quantized one input column at a
// time, and each column's rounding error is pushed onto the columns not yet quantized, weighted by the
// inverse Hessian of the layer's reconstruction error, so that the layer's output on the calibration inputs
// moves as little as possible. A 16-block's E4M3 scale is chosen when its first column is reached, from the
// block's values as the earlier errors left them. The result is an ordinary ModelOpt-layout NVFP4 tensor.
#pragma once
#include <cstdint>
#include <span>

#include "format/nvfp4.h"

namespace fp4lab {

struct GptqOptions {
  double damp = 0.01;  // added to the Hessian's diagonal, as a fraction of its mean (GPTQ's percdamp)
  Nvfp4ScaleRule scale_rule = Nvfp4ScaleRule::Search;
  int threads = 0;  // rows are independent: spread over this many threads (0: every core)
};

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
