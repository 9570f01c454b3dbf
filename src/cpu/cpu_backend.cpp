#include "cpu/cpu_backend.h"

#include "cpu/linear_ref.h"

namespace fp4lab {

const char* op_name(Op op) {
  switch (op) {
    case Op::Linear: return "linear";
    case Op::RmsNorm: return "rmsnorm";
    case Op::Rope: return "rope";
    case Op::Attention: return "attention";
    case Op::SiluMul: return "silu_mul";
    case Op::Relu2: return "relu2";
    case Op::CausalConv1d: return "causal_conv1d";
    case Op::SsmScan: return "ssm_scan";
    case Op::GatedRmsNorm: return "gated_rmsnorm";
  }
  return "?";
}

void CpuBackend::linear(std::span<const float> x, int64_t m, const LinearWeight& w, std::span<float> y) {
  // NVFP4 layers hold their exact dequantized values in w.w: the CPU computes W4A16 exactly.
  linear_f32_ref(x, m, w.k, w.w, w.n, y, threads_);
  if (!w.bias.empty())
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < w.n; ++j) y[static_cast<size_t>(i * w.n + j)] += w.bias[static_cast<size_t>(j)];
}

}  // namespace fp4lab
