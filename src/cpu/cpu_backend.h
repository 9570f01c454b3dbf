// The CPU reference backend: float32 math, multi-threaded linear layers. Used by CI and as the spec for CUDA.
#pragma once
#include "engine/backend.h"

namespace fp4lab {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads = 0) : threads_(threads) {}
  std::string name() const override { return "cpu"; }
  bool supports(Op) const override { return true; }
  void linear(std::span<const float> x, int64_t m, const LinearWeight& w, std::span<float> y) override;
  void rmsnorm(std::span<const float> x, std::span<const float> w, float eps, std::span<float> y) override {
    cpu::rmsnorm(x, w, eps, y);
  }
  void rope(std::span<float> x, int heads, int hd, std::span<const int> pos, std::span<const float> f) override {
    cpu::rope_apply(x, heads, hd, pos, f);
  }
  void attention(std::span<const float> q, int t, int nh, int nkv, int hd, std::span<const float> kc,
                 std::span<const float> vc, int pos0, std::span<float> out) override {
    cpu::attention(q, t, nh, nkv, hd, kc, vc, pos0, out);
  }
  void silu_mul(std::span<const float> g, std::span<const float> u, std::span<float> o) override { cpu::silu_mul(g, u, o); }
  void relu2(std::span<float> x) override { cpu::relu2(x); }
  void causal_conv1d_silu(std::span<float> xbc, int t, int ch, int kernel, std::span<const float> w,
                          std::span<const float> b, std::span<float> state) override {
    cpu::causal_conv1d_silu(xbc, t, ch, kernel, w, b, state);
  }
  void ssm_scan(std::span<const float> x, std::span<const float> b, std::span<const float> c, std::span<const float> dt,
                std::span<const float> a, std::span<const float> d, int t, cpu::SsmShape s, int chunk,
                std::span<float> state, std::span<float> y) override {
    if (t > 1) cpu::ssm_scan_chunked(x, b, c, dt, a, d, t, s, chunk, state, y);
    else cpu::ssm_scan_sequential(x, b, c, dt, a, d, t, s, state, y);
  }
  void gated_rmsnorm(std::span<float> y, std::span<const float> z, std::span<const float> w, int groups,
                     float eps) override {
    cpu::gated_rmsnorm(y, z, w, groups, eps);
  }

 private:
  int threads_;
};

}  // namespace fp4lab
