#include "model/tensor_parallel.h"

#include <algorithm>

#include "common/error.h"

namespace fp4lab {

namespace {
void refuse_fp8(const LinearWeight& w) {
  if (w.fp8 || w.stored_fp8_scale)
    throw Error("tensor parallel: FP8 layers are not split across GPUs yet (run FP8 with --tp 1)");
}
}  // namespace

LinearWeight slice_rows(const LinearWeight& w, int64_t r0, int64_t r1) {
  refuse_fp8(w);
  LinearWeight o;
  o.n = r1 - r0;
  o.k = w.k;
  if (!w.w.empty()) o.w.assign(w.w.begin() + r0 * w.k, w.w.begin() + r1 * w.k);
  if (!w.bias.empty()) o.bias.assign(w.bias.begin() + r0, w.bias.begin() + r1);
  if (w.nvfp4) {
    Nvfp4Tensor t;
    t.rows = o.n;
    t.cols = w.k;
    t.tensor_scale = w.nvfp4->tensor_scale;
    t.packed.assign(w.nvfp4->packed.begin() + r0 * (w.k / 2), w.nvfp4->packed.begin() + r1 * (w.k / 2));
    t.block_scales.assign(w.nvfp4->block_scales.begin() + r0 * (w.k / 16),
                          w.nvfp4->block_scales.begin() + r1 * (w.k / 16));
    o.nvfp4 = std::move(t);
  }
  return o;
}

LinearWeight slice_cols(const LinearWeight& w, int64_t c0, int64_t c1) {
  refuse_fp8(w);
  LinearWeight o;
  o.n = w.n;
  o.k = c1 - c0;
  if (!w.bias.empty()) throw Error("tensor parallel: a row-parallel layer with a bias is not supported");
  if (!w.w.empty())
    for (int64_t r = 0; r < w.n; ++r)
      o.w.insert(o.w.end(), w.w.begin() + r * w.k + c0, w.w.begin() + r * w.k + c1);
  if (w.nvfp4) {
    if (c0 % 16 || c1 % 16) throw Error("tensor parallel: an NVFP4 K split must fall on 16-element blocks");
    Nvfp4Tensor t;
    t.rows = w.n;
    t.cols = o.k;
    t.tensor_scale = w.nvfp4->tensor_scale;
    for (int64_t r = 0; r < w.n; ++r) {
      const auto p = w.nvfp4->packed.begin() + r * (w.k / 2);
      t.packed.insert(t.packed.end(), p + c0 / 2, p + c1 / 2);
      const auto s = w.nvfp4->block_scales.begin() + r * (w.k / 16);
      t.block_scales.insert(t.block_scales.end(), s + c0 / 16, s + c1 / 16);
    }
    o.nvfp4 = std::move(t);
  }
  return o;
}

LinearWeight concat_rows(const std::vector<LinearWeight>& parts) {
  LinearWeight o = parts.at(0);
  for (size_t i = 1; i < parts.size(); ++i) {
    const LinearWeight& p = parts[i];
    if (p.k != o.k || p.nvfp4.has_value() != o.nvfp4.has_value() || p.bias.empty() != o.bias.empty())
      throw Error("tensor parallel: row blocks of different kinds cannot be joined");
    o.n += p.n;
    o.w.insert(o.w.end(), p.w.begin(), p.w.end());
    o.bias.insert(o.bias.end(), p.bias.begin(), p.bias.end());
    if (o.nvfp4) {
      if (p.nvfp4->tensor_scale != o.nvfp4->tensor_scale)
        throw Error("tensor parallel: row blocks with different NVFP4 tensor scales cannot be joined");
      o.nvfp4->rows += p.n;
      o.nvfp4->packed.insert(o.nvfp4->packed.end(), p.nvfp4->packed.begin(), p.nvfp4->packed.end());
      o.nvfp4->block_scales.insert(o.nvfp4->block_scales.end(), p.nvfp4->block_scales.begin(),
                                   p.nvfp4->block_scales.end());
    }
  }
  return o;
}

LinearWeight pad_rows(LinearWeight w, int64_t n) {
  if (n < w.n) throw Error("internal: pad_rows would drop rows");
  const int64_t add = n - w.n;
  if (!w.w.empty()) w.w.resize(static_cast<size_t>(n * w.k), 0.0f);
  if (!w.bias.empty()) w.bias.resize(static_cast<size_t>(n), 0.0f);
  if (w.nvfp4) {  // zero codes under zero block scales: rows of exact zeros
    w.nvfp4->rows = n;
    w.nvfp4->packed.resize(w.nvfp4->packed.size() + static_cast<size_t>(add * (w.k / 2)), 0);
    w.nvfp4->block_scales.resize(w.nvfp4->block_scales.size() + static_cast<size_t>(add * (w.k / 16)), 0);
  }
  w.n = n;
  return w;
}

namespace {

// [begin, end) of a per-channel vector, for the channel blocks of one shard.
std::vector<float> take(const std::vector<float>& v,
                        std::initializer_list<std::pair<int64_t, int64_t>> ranges, int64_t width = 1) {
  std::vector<float> o;
  if (v.empty()) return o;
  for (auto [a, b] : ranges) o.insert(o.end(), v.begin() + a * width, v.begin() + b * width);
  return o;
}

// A Mamba-2 mixer split by heads: rank r keeps heads [r H/tp, (r+1) H/tp) and, since a group's heads are
// contiguous, groups [r G/tp, (r+1) G/tp). in_proj rows are z | x | B | C | dt, conv channels x | B | C, the
// gated norm's groups follow the heads' groups; out_proj is cut along its input (row-parallel).
void shard_mamba(const ModelConfig& c, const LayerWeights& L, int rank, int tp, LayerWeights& s) {
  const int64_t di = c.mamba_d_inner(), gn = int64_t{c.n_groups} * c.ssm_state_size, nh = c.mamba_num_heads;
  const int64_t di_r = di / tp, gn_r = gn / tp, nh_r = nh / tp;
  const int64_t z0 = rank * di_r, x0 = di + rank * di_r, b0 = 2 * di + rank * gn_r,
                c0 = 2 * di + gn + rank * gn_r, d0 = 2 * di + 2 * gn + rank * nh_r;
  s.in_proj = concat_rows({slice_rows(L.in_proj, z0, z0 + di_r), slice_rows(L.in_proj, x0, x0 + di_r),
                           slice_rows(L.in_proj, b0, b0 + gn_r), slice_rows(L.in_proj, c0, c0 + gn_r),
                           slice_rows(L.in_proj, d0, d0 + nh_r)});
  // conv channels: x [0, di) | B [di, di + gn) | C [di + gn, di + 2 gn), each row conv_kernel taps.
  const std::initializer_list<std::pair<int64_t, int64_t>> ch{
      {rank * di_r, (rank + 1) * di_r},
      {di + rank * gn_r, di + (rank + 1) * gn_r},
      {di + gn + rank * gn_r, di + gn + (rank + 1) * gn_r}};
  s.conv_w = take(L.conv_w, ch, c.conv_kernel);
  s.conv_b = take(L.conv_b, ch);
  s.a_log = take(L.a_log, {{rank * nh_r, (rank + 1) * nh_r}});
  s.d = take(L.d, {{rank * nh_r, (rank + 1) * nh_r}});
  s.dt_bias = take(L.dt_bias, {{rank * nh_r, (rank + 1) * nh_r}});
  s.gated_norm = take(L.gated_norm, {{rank * di_r, (rank + 1) * di_r}});
  s.out_proj = slice_cols(L.out_proj, rank * di_r, (rank + 1) * di_r);
}

}  // namespace

ModelWeights shard_for_tensor_parallel(const ModelWeights& full, int rank, int tp) {
  if (tp == 1) return full;
  const ModelConfig& c = full.config;
  const bool hybrid = c.arch == Arch::NemotronH;
  bool has_attention = false;
  for (auto k : c.layers)
    has_attention = has_attention || k == LayerKind::Decoder || k == LayerKind::Attention;
  if ((has_attention && (c.num_heads % tp || c.num_kv_heads % tp)) || c.intermediate_size % tp)
    throw Error("tensor parallel: " + std::to_string(c.num_heads) + " query heads, " +
                std::to_string(c.num_kv_heads) + " KV heads and MLP width " +
                std::to_string(c.intermediate_size) + " must all divide by --tp " + std::to_string(tp));
  if (hybrid && (c.mamba_num_heads % tp || c.n_groups % tp))
    throw Error("tensor parallel: " + std::to_string(c.mamba_num_heads) + " Mamba heads and " +
                std::to_string(c.n_groups) + " groups must both divide by --tp " + std::to_string(tp));
  const int64_t hd = c.head_dim, ff = c.intermediate_size / tp;
  if ((has_attention && (c.num_heads / tp) * hd % 16) || ff % 16 || (hybrid && (c.mamba_d_inner() / tp) % 16))
    throw Error("tensor parallel: each shard's K must be a multiple of 16");
  ModelWeights w;
  w.config = c;
  w.config.num_heads = c.num_heads / tp;
  w.config.num_kv_heads = c.num_kv_heads / tp;
  w.config.intermediate_size = static_cast<int>(ff);
  if (hybrid) {
    w.config.mamba_num_heads = c.mamba_num_heads / tp;
    w.config.n_groups = c.n_groups / tp;
  }
  w.source = full.source;
  w.quant = full.quant;
  w.final_norm = full.final_norm;
  // Vocab-parallel embeddings and lm_head: rank r holds ids [r vs, (r+1) vs), the last shard padded with zero
  // rows. The embedding lookup then gives zeros for other ranks' ids and an all-reduce completes it; the
  // logits are gathered across ranks.
  const int64_t V = c.vocab_size, H = c.hidden_size, vs = (V + tp - 1) / tp;
  const int64_t v0 = std::min(V, rank * vs), v1 = std::min(V, v0 + vs);
  w.vocab_begin = v0;
  w.vocab_shard_rows = vs;
  if (full.materialized) {
    w.embed.assign(static_cast<size_t>(vs * H), 0.0f);
    std::copy(full.embed.begin() + v0 * H, full.embed.begin() + v1 * H, w.embed.begin());
    w.lm_head = pad_rows(slice_rows(full.lm_head, v0, v1), vs);
  }
  w.synthetic = full.synthetic;
  w.materialized = full.materialized;
  w.seed = full.seed * 131 + static_cast<uint64_t>(rank);  // synthetic shards: their own values, same shapes
  const int64_t qh = (c.num_heads / tp) * hd, kvh = (c.num_kv_heads / tp) * hd;
  for (const auto& L : full.layers) {
    LayerWeights s = L;
    if (full.materialized) {
      if (L.kind == LayerKind::Decoder || L.kind == LayerKind::Attention) {
        s.q = slice_rows(L.q, rank * qh, (rank + 1) * qh);
        s.k = slice_rows(L.k, rank * kvh, (rank + 1) * kvh);
        s.v = slice_rows(L.v, rank * kvh, (rank + 1) * kvh);
        s.o = slice_cols(L.o, rank * qh, (rank + 1) * qh);
      }
      if (L.kind == LayerKind::Decoder) s.gate = slice_rows(L.gate, rank * ff, (rank + 1) * ff);
      if (L.kind == LayerKind::Decoder || L.kind == LayerKind::Mlp) {
        s.up = slice_rows(L.up, rank * ff, (rank + 1) * ff);
        s.down = slice_cols(L.down, rank * ff, (rank + 1) * ff);
      }
      if (L.kind == LayerKind::Mamba) shard_mamba(c, L, rank, tp, s);
    }
    w.layers.push_back(std::move(s));
  }
  w.plans = full.plans;
  for (auto& p : w.plans) {
    const std::string& r = p.spec.role;
    if (r == "attn.q") p.spec.n = qh;
    if (r == "attn.k" || r == "attn.v") p.spec.n = kvh;
    if (r == "attn.o") p.spec.k = qh;
    if (r == "mlp.gate" || r == "mlp.up") p.spec.n = ff;
    if (r == "mlp.down") p.spec.k = ff;
    if (r == "mamba.in") p.spec.n = w.config.mamba_in_proj_dim();
    if (r == "mamba.out") p.spec.k = w.config.mamba_d_inner();
    if (r == "lm_head") p.spec.n = vs;
  }
  if (!full.materialized) set_linear_shapes(w);
  return w;
}

}  // namespace fp4lab
