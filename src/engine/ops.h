// Op identifiers a backend declares support for.
#pragma once

namespace fp4lab {

enum class Op { Linear, RmsNorm, Rope, Attention, SiluMul, Relu2, CausalConv1d, SsmScan, GatedRmsNorm };
const char* op_name(Op op);

}  // namespace fp4lab
