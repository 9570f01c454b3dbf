#include "model/model.h"

#include <algorithm>

#include "common/error.h"

namespace fp4lab {

Model::Model(ModelWeights w, Backend& backend) : w_(std::move(w)), be_(backend) {
  std::vector<Op> need{Op::Linear, Op::RmsNorm, Op::Attention};
  if (w_.config.arch == Arch::NemotronH)
    for (Op o : {Op::Relu2, Op::CausalConv1d, Op::SsmScan, Op::GatedRmsNorm}) need.push_back(o);
  else
    for (Op o : {Op::Rope, Op::SiluMul}) need.push_back(o);
  for (Op o : need)
    if (!be_.supports(o))
      throw Error("backend '" + be_.name() + "' does not support op '" + op_name(o) + "' needed by " +
                  arch_name(w_.config.arch));
  for (auto k : w_.config.layers)
    if (k == LayerKind::Moe) throw Error("mixture-of-experts layers (E) are not supported yet");
  if (w_.config.arch != Arch::NemotronH) inv_freq_ = cpu::rope_inv_freq(w_.config.rope, w_.config.head_dim);
}

SeqState Model::new_sequence() const {
  const ModelConfig& c = w_.config;
  SeqState s;
  const size_t L = static_cast<size_t>(c.num_layers);
  s.k.resize(L);
  s.v.resize(L);
  s.conv.resize(L);
  s.ssm.resize(L);
  for (size_t i = 0; i < L; ++i)
    if (c.layers[i] == LayerKind::Mamba) {
      s.conv[i].assign(static_cast<size_t>(c.mamba_conv_dim()) * (c.conv_kernel - 1), 0.0f);
      s.ssm[i].assign(static_cast<size_t>(c.mamba_num_heads) * c.mamba_head_dim * c.ssm_state_size, 0.0f);
    }
  return s;
}

void Model::attention_block(const LayerWeights& L, size_t li, SeqState& s, std::span<const float> h, int t,
                            std::span<const int> pos, bool use_rope, std::span<float> out) {
  const ModelConfig& c = w_.config;
  const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim;
  std::vector<float> q(static_cast<size_t>(t) * nh * hd), k(static_cast<size_t>(t) * nkv * hd), v(k.size());
  be_.linear(h, t, L.q, q);
  be_.linear(h, t, L.k, k);
  be_.linear(h, t, L.v, v);
  if (!L.q_norm.empty()) {  // Qwen3: RMSNorm over each head before RoPE
    be_.rmsnorm(q, L.q_norm, c.norm_eps, q);
    be_.rmsnorm(k, L.k_norm, c.norm_eps, k);
  }
  if (use_rope) {
    be_.rope(q, nh, hd, pos, inv_freq_);
    be_.rope(k, nkv, hd, pos, inv_freq_);
  }
  s.k[li].insert(s.k[li].end(), k.begin(), k.end());
  s.v[li].insert(s.v[li].end(), v.begin(), v.end());
  std::vector<float> a(q.size());
  be_.attention(q, t, nh, nkv, hd, s.k[li], s.v[li], s.pos, a);
  be_.linear(a, t, L.o, out);
}

void Model::mamba_block(const LayerWeights& L, size_t li, SeqState& s, std::span<const float> h, int t,
                        std::span<float> out) {
  const ModelConfig& c = w_.config;
  const int di = c.mamba_d_inner(), cd = c.mamba_conv_dim(), nh = c.mamba_num_heads, gn = c.n_groups * c.ssm_state_size;
  const int in_dim = c.mamba_in_proj_dim();
  std::vector<float> proj(static_cast<size_t>(t) * in_dim);
  be_.linear(h, t, L.in_proj, proj);
  // in_proj output: z [d_inner] | xBC [conv_dim] | dt [heads]
  std::vector<float> z(static_cast<size_t>(t) * di), xbc(static_cast<size_t>(t) * cd), dt(static_cast<size_t>(t) * nh);
  for (int i = 0; i < t; ++i) {
    const float* r = proj.data() + static_cast<size_t>(i) * in_dim;
    std::copy(r, r + di, z.begin() + static_cast<ptrdiff_t>(i) * di);
    std::copy(r + di, r + di + cd, xbc.begin() + static_cast<ptrdiff_t>(i) * cd);
    for (int j = 0; j < nh; ++j)
      dt[static_cast<size_t>(i) * nh + j] = cpu::softplus(r[di + cd + j] + L.dt_bias[static_cast<size_t>(j)]);
  }
  for (auto& v : dt) v = std::clamp(v, c.time_step_limit_min, c.time_step_limit_max);
  be_.causal_conv1d_silu(xbc, t, cd, c.conv_kernel, L.conv_w, L.conv_b, s.conv[li]);
  std::vector<float> x(static_cast<size_t>(t) * di), b(static_cast<size_t>(t) * gn), cc(b.size());
  for (int i = 0; i < t; ++i) {
    const float* r = xbc.data() + static_cast<size_t>(i) * cd;
    std::copy(r, r + di, x.begin() + static_cast<ptrdiff_t>(i) * di);
    std::copy(r + di, r + di + gn, b.begin() + static_cast<ptrdiff_t>(i) * gn);
    std::copy(r + di + gn, r + di + 2 * gn, cc.begin() + static_cast<ptrdiff_t>(i) * gn);
  }
  std::vector<float> a(static_cast<size_t>(nh));
  for (int j = 0; j < nh; ++j) a[static_cast<size_t>(j)] = -std::exp(L.a_log[static_cast<size_t>(j)]);
  std::vector<float> y(x.size());
  be_.ssm_scan(x, b, cc, dt, a, L.d, t, {nh, c.mamba_head_dim, c.ssm_state_size, c.n_groups}, c.chunk_size, s.ssm[li], y);
  be_.gated_rmsnorm(y, z, L.gated_norm, c.n_groups, c.norm_eps);
  be_.linear(y, t, L.out_proj, out);
}

void Model::llama_layer(const LayerWeights& L, size_t li, SeqState& s, std::vector<float>& x, int t,
                        std::span<const int> pos) {
  const ModelConfig& c = w_.config;
  std::vector<float> h(x.size()), o(x.size());
  be_.rmsnorm(x, L.norm, c.norm_eps, h);
  attention_block(L, li, s, h, t, pos, true, o);
  for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  be_.rmsnorm(x, L.post_norm, c.norm_eps, h);
  const size_t fi = static_cast<size_t>(t) * c.intermediate_size;
  std::vector<float> g(fi), u(fi);
  be_.linear(h, t, L.gate, g);
  be_.linear(h, t, L.up, u);
  be_.silu_mul(g, u, g);
  be_.linear(g, t, L.down, o);
  for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
}

void Model::nemotron_layer(const LayerWeights& L, size_t li, SeqState& s, std::vector<float>& x, int t,
                           std::span<const int> pos) {
  const ModelConfig& c = w_.config;
  std::vector<float> h(x.size()), o(x.size());
  be_.rmsnorm(x, L.norm, c.norm_eps, h);
  switch (L.kind) {
    case LayerKind::Attention: attention_block(L, li, s, h, t, pos, false, o); break;
    case LayerKind::Mamba: mamba_block(L, li, s, h, t, o); break;
    case LayerKind::Mlp: {
      std::vector<float> u(static_cast<size_t>(t) * c.intermediate_size);
      be_.linear(h, t, L.up, u);
      be_.relu2(u);
      be_.linear(u, t, L.down, o);
      break;
    }
    default: throw Error("unsupported layer kind in a nemotron_h model");
  }
  for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
}

std::vector<float> Model::forward(SeqState& s, std::span<const int> tokens, bool all_logits) {
  const ModelConfig& c = w_.config;
  const int t = static_cast<int>(tokens.size());
  if (t == 0) return {};
  const size_t H = static_cast<size_t>(c.hidden_size);
  std::vector<float> x(static_cast<size_t>(t) * H);
  std::vector<int> pos(static_cast<size_t>(t));
  for (int i = 0; i < t; ++i) {
    const int id = tokens[static_cast<size_t>(i)];
    if (id < 0 || id >= c.vocab_size)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(c.vocab_size) + ")");
    std::copy_n(w_.embed.begin() + static_cast<ptrdiff_t>(id * H), H, x.begin() + static_cast<ptrdiff_t>(i * H));
    pos[static_cast<size_t>(i)] = s.pos + i;
  }
  for (size_t li = 0; li < w_.layers.size(); ++li) {
    if (c.arch == Arch::NemotronH) nemotron_layer(w_.layers[li], li, s, x, t, pos);
    else llama_layer(w_.layers[li], li, s, x, t, pos);
  }
  s.pos += t;
  const int rows = all_logits ? t : 1;
  std::vector<float> h(static_cast<size_t>(rows) * H);
  be_.rmsnorm(std::span<const float>(x).subspan(static_cast<size_t>(t - rows) * H), w_.final_norm, c.norm_eps, h);
  std::vector<float> logits(static_cast<size_t>(rows) * c.vocab_size);
  be_.linear(h, rows, w_.lm_head, logits);
  return logits;
}

}  // namespace fp4lab
