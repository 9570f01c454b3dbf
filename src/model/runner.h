// The model definitions, once per architecture, written against an Ops backend (CpuOps in src/cpu, CudaOps in
// src/cuda). An Ops type provides: Tensor (2-D activation buffer), State (per-sequence KV / conv / SSM
// caches), supports(Op), and the ops called below. The runner owns no math.
#pragma once
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/ops.h"
#include "model/weights.h"

namespace fp4lab {

template <class Ops>
class Runner {
 public:
  using Tensor = typename Ops::Tensor;
  using State = typename Ops::State;

  Runner(ModelWeights w, Ops& ops) : w_(std::move(w)), ops_(ops) {
    const ModelConfig& c = w_.config;
    std::vector<Op> need{Op::Linear, Op::RmsNorm, Op::Attention};
    if (c.arch == Arch::NemotronH)
      for (Op o : {Op::Relu2, Op::CausalConv1d, Op::SsmScan, Op::GatedRmsNorm}) need.push_back(o);
    else
      for (Op o : {Op::Rope, Op::SiluMul}) need.push_back(o);
    for (Op o : need)
      if (!ops_.supports(o))
        throw Error("backend '" + ops_.name() + "' does not support op '" + op_name(o) + "' needed by " +
                    arch_name(c.arch));
    for (auto k : c.layers)
      if (k == LayerKind::Moe) throw Error("mixture-of-experts layers (E) are not supported yet");
    ops_.prepare(w_);
  }

  const ModelConfig& config() const { return w_.config; }
  const ModelWeights& weights() const { return w_; }
  Ops& ops() { return ops_; }
  State new_sequence(int max_tokens) { return ops_.new_state(w_.config, max_tokens); }

  // Runs `tokens` after what the sequence holds. Returns logits [rows, vocab] as host floats: every new
  // position when all_logits, else the last.
  std::vector<float> forward(State& s, std::span<const int> tokens, bool all_logits) {
    const ModelConfig& c = w_.config;
    const int t = static_cast<int>(tokens.size());
    if (t == 0) return {};
    for (int id : tokens)
      if (id < 0 || id >= c.vocab_size)
        throw Error("token id " + std::to_string(id) + " is outside the vocabulary (" +
                    std::to_string(c.vocab_size) + ")");
    if (ops_.state_pos(s) + t > ops_.state_capacity(s))
      throw Error("sequence of " + std::to_string(ops_.state_pos(s) + t) +
                  " tokens exceeds the planned context of " + std::to_string(ops_.state_capacity(s)));
    if (t == 1 && !all_logits && ops_.graphs_enabled())
      return ops_.run_decode_graph(s, tokens[0], [&] { body(s, tokens, false); });
    body(s, tokens, all_logits);
    return ops_.fetch_logits();
  }

 private:
  // Enqueues the whole forward; the logits are fetched afterwards (fetch_logits), so a backend can capture
  // it.
  void body(State& s, std::span<const int> tokens, bool all_logits) {
    const ModelConfig& c = w_.config;
    const int t = static_cast<int>(tokens.size());
    ops_.begin_forward();
    Tensor x = ops_.alloc_residual(t, c.hidden_size);  // the residual stream (FP32 on every backend)
    ops_.embed(tokens, w_.embed, x);
    Tensor h = ops_.alloc(t, c.hidden_size), o = ops_.alloc(t, c.hidden_size);
    for (size_t li = 0; li < w_.layers.size(); ++li) {
      const LayerWeights& L = w_.layers[li];
      ops_.rmsnorm(x, L.norm, c.norm_eps, h);
      if (c.arch != Arch::NemotronH) {
        attention(L, li, s, h, t, true, o);
        ops_.add(x, o);
        ops_.rmsnorm(x, L.post_norm, c.norm_eps, h);
        Tensor g = ops_.alloc(t, c.intermediate_size), u = ops_.alloc(t, c.intermediate_size);
        ops_.linear(h, L.gate, g);
        ops_.linear(h, L.up, u);
        ops_.silu_mul(g, u, g);
        ops_.linear(g, L.down, o);
      } else if (L.kind == LayerKind::Attention) {
        attention(L, li, s, h, t, false, o);
      } else if (L.kind == LayerKind::Mamba) {
        mamba(L, li, s, h, t, o);
      } else {
        Tensor u = ops_.alloc(t, c.intermediate_size);
        ops_.linear(h, L.up, u);
        ops_.relu2(u);
        ops_.linear(u, L.down, o);
      }
      ops_.add(x, o);
    }
    ops_.advance(s, t);
    const int rows = all_logits ? t : 1;
    Tensor last = ops_.rows(x, t - rows, rows);
    Tensor hn = ops_.alloc(rows, c.hidden_size);
    ops_.rmsnorm(last, w_.final_norm, c.norm_eps, hn);
    ops_.logits_async(hn, w_.lm_head);  // FP32 logits: BF16 would round near-ties away
  }

  void attention(const LayerWeights& L, size_t li, State& s, const Tensor& h, int t, bool rope, Tensor& out) {
    const ModelConfig& c = w_.config;
    Tensor q = ops_.alloc(t, int64_t{c.num_heads} * c.head_dim),
           k = ops_.alloc(t, int64_t{c.num_kv_heads} * c.head_dim),
           v = ops_.alloc(t, int64_t{c.num_kv_heads} * c.head_dim);
    ops_.linear(h, L.q, q);
    ops_.linear(h, L.k, k);
    ops_.linear(h, L.v, v);
    if (!L.q_norm.empty()) {  // Qwen3: RMSNorm over each head before RoPE
      ops_.rmsnorm_heads(q, c.num_heads, L.q_norm, c.norm_eps);
      ops_.rmsnorm_heads(k, c.num_kv_heads, L.k_norm, c.norm_eps);
    }
    if (rope) {
      ops_.rope(q, c.num_heads, c.head_dim, s, c.rope);
      ops_.rope(k, c.num_kv_heads, c.head_dim, s, c.rope);
    }
    Tensor a = ops_.alloc(t, int64_t{c.num_heads} * c.head_dim);
    ops_.attention(q, k, v, s, li, c.num_heads, c.num_kv_heads, c.head_dim, a);
    ops_.linear(a, L.o, out);
  }

  void mamba(const LayerWeights& L, size_t li, State& s, const Tensor& h, int t, Tensor& out) {
    const ModelConfig& c = w_.config;
    const int di = c.mamba_d_inner(), cd = c.mamba_conv_dim(), nh = c.mamba_num_heads,
              gn = c.n_groups * c.ssm_state_size;
    Tensor proj = ops_.alloc(t, c.mamba_in_proj_dim());
    ops_.linear(h, L.in_proj, proj);
    // in_proj output columns: z [d_inner] | xBC [conv_dim] | dt [heads]
    Tensor z = ops_.alloc(t, di), xbc = ops_.alloc(t, cd), dt = ops_.alloc(t, nh);
    ops_.columns(proj, 0, z);
    ops_.columns(proj, di, xbc);
    ops_.softplus_dt(proj, di + cd, L.dt_bias, c.time_step_limit_min, c.time_step_limit_max, dt);
    ops_.causal_conv1d_silu(xbc, s, li, c.conv_kernel, L.conv_w, L.conv_b);
    Tensor x = ops_.alloc(t, di), b = ops_.alloc(t, gn), cc = ops_.alloc(t, gn);
    ops_.columns(xbc, 0, x);
    ops_.columns(xbc, di, b);
    ops_.columns(xbc, di + gn, cc);
    Tensor y = ops_.alloc(t, di);
    ops_.ssm_scan(x, b, cc, dt, L.a_log, L.d, s, li, {nh, c.mamba_head_dim, c.ssm_state_size, c.n_groups},
                  c.chunk_size, y);
    ops_.gated_rmsnorm(y, z, L.gated_norm, c.n_groups, c.norm_eps);
    ops_.linear(y, L.out_proj, out);
  }

  ModelWeights w_;
  Ops& ops_;
};

}  // namespace fp4lab
