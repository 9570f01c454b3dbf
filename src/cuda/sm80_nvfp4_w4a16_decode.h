// The launcher of the decode-shaped NVFP4 W4A16 kernels (sm80_nvfp4_w4a16_decode.cu), for the GEMM entry
// points of nvfp4_gemm.h (sm80_nvfp4_w4a16_gemm.cu): up to three weights of one K that read the same X in one
// launch, with an optional activation fused into the store.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/nvfp4_gemm.h"

namespace fp4lab {

// What the store of a decode launch applies: nothing, relu(y)^2 (Nemotron-H's MLP), or SwiGLU of an
// interleaved gate/up weight (silu(gate) * up, half the columns out).
enum class DecodeAct : uint8_t { None, Relu2, Swiglu };

// One weight (count 1) or a group of weights sharing X and K, with their outputs and scales.
struct DecodeTargets {
  const Nvfp4DeviceWeight* w[3];
  bf16_raw* y[3];
  int64_t ldy[3];
  float alpha[3];
  int count;
  DecodeAct act = DecodeAct::None;
  float alpha_up = 0.0f;  // DecodeAct::Swiglu
};

// The decode variants by their token tiles (8 tokens each); false, having launched nothing, for the others
// (the tensor-core and cuBLAS variants).
bool launch_decode_variant(const W4A16Plan& p, const bf16_raw* x, int64_t m, int64_t ldx,
                           const DecodeTargets& t, int sm_count, cudaStream_t stream);

}  // namespace fp4lab
