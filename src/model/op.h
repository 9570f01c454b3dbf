// The vocabulary the runner and its backends share: the operations a backend declares support for (the
// runner refuses a model whose architecture needs one the backend lacks) and what a forward step ends with.
#pragma once

namespace fp4lab {

enum class Op { Linear, RmsNorm, Rope, Attention, SiluMul, Relu2, CausalConv1d, SsmScan, GatedRmsNorm };

// What a forward step hands back: the logits, the argmax (or Gumbel-max sample) ids, or the top logits.
enum class StepOut { Logits, Ids, Top };

inline const char* op_name(Op op) {
  switch (op) {
    case Op::Linear:
      return "linear";
    case Op::RmsNorm:
      return "rmsnorm";
    case Op::Rope:
      return "rope";
    case Op::Attention:
      return "attention";
    case Op::SiluMul:
      return "silu_mul";
    case Op::Relu2:
      return "relu2";
    case Op::CausalConv1d:
      return "causal_conv1d";
    case Op::SsmScan:
      return "ssm_scan";
    case Op::GatedRmsNorm:
      return "gated_rmsnorm";
  }
  return "?";
}

}  // namespace fp4lab
