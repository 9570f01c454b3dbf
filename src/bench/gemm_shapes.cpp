#include <map>

#include "bench/gemm_bench.h"
#include "common/error.h"
#include "model/layout.h"
#include "model/presets.h"

namespace fp4lab {

std::vector<GemmShape> gemm_shapes_for(const std::string& model) {
  const auto p = find_preset(model);
  if (!p) throw Error("bench gemm: unknown model '" + model + "'");
  const ModelConfig& c = p->config;
  // Engines run q/k/v as one GEMM and gate/up as one; the first occurrence of each role gives its shape.
  std::map<std::string, GemmShape> by_role;
  std::vector<std::string> order;
  for (const auto& l : linear_layers(c)) {
    if (l.role == "lm_head") continue;
    std::string role = l.role;
    int64_t n = l.n;
    if (role == "attn.q" || role == "attn.k" || role == "attn.v") {
      role = "attn.qkv";
      n = int64_t{c.num_heads + 2 * c.num_kv_heads} * c.head_dim;
    } else if (role == "mlp.gate" || (role == "mlp.up" && c.arch != Arch::NemotronH)) {
      role = "mlp.gate_up";
      n = 2 * int64_t{c.intermediate_size};
    }
    if (by_role.emplace(role, GemmShape{p->name + " " + role, n, l.k}).second) order.push_back(role);
  }
  std::vector<GemmShape> out;
  for (const auto& r : order) out.push_back(by_role[r]);
  return out;
}

}  // namespace fp4lab
