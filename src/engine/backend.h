// The ops a model needs from a backend. Model code (src/model) is written once against this interface; a backend
// declares what it implements with supports(), and a model refuses to start on a backend missing an op.
// This first interface works on host float32 spans (the CPU reference backend).
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "cpu/ops.h"
#include "model/weights.h"

namespace fp4lab {

enum class Op { Linear, RmsNorm, Rope, Attention, SiluMul, Relu2, CausalConv1d, SsmScan, GatedRmsNorm };
const char* op_name(Op op);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual bool supports(Op op) const = 0;

  // y[m, n] = x[m, k] . W^T (+ bias)
  virtual void linear(std::span<const float> x, int64_t m, const LinearWeight& w, std::span<float> y) = 0;
  virtual void rmsnorm(std::span<const float> x, std::span<const float> w, float eps, std::span<float> y) = 0;
  virtual void rope(std::span<float> x, int heads, int head_dim, std::span<const int> pos,
                    std::span<const float> inv_freq) = 0;
  virtual void attention(std::span<const float> q, int t, int nh, int nkv, int hd, std::span<const float> kc,
                         std::span<const float> vc, int pos0, std::span<float> out) = 0;
  virtual void silu_mul(std::span<const float> g, std::span<const float> u, std::span<float> o) = 0;
  virtual void relu2(std::span<float> x) = 0;
  virtual void causal_conv1d_silu(std::span<float> xbc, int t, int ch, int kernel, std::span<const float> w,
                                  std::span<const float> b, std::span<float> state) = 0;
  // Prefill (t > 1) uses the chunked scan, decode the single-step recurrence.
  virtual void ssm_scan(std::span<const float> x, std::span<const float> b, std::span<const float> c,
                        std::span<const float> dt, std::span<const float> a, std::span<const float> d, int t,
                        cpu::SsmShape s, int chunk, std::span<float> state, std::span<float> y) = 0;
  virtual void gated_rmsnorm(std::span<float> y, std::span<const float> z, std::span<const float> w, int groups,
                             float eps) = 0;
};

}  // namespace fp4lab
