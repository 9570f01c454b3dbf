#include "model/tensor_parallel.h"

#include "common/error.h"

namespace fp4lab {

LinearWeight slice_rows(const LinearWeight& w, int64_t r0, int64_t r1) {
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

ModelWeights shard_for_tensor_parallel(const ModelWeights& full, int rank, int tp) {
  if (tp == 1) return full;
  const ModelConfig& c = full.config;
  if (c.arch == Arch::NemotronH)
    throw Error("tensor parallel: Nemotron-H (Mamba heads and conv channels) is not split yet; use --tp 1");
  if (c.num_heads % tp || c.num_kv_heads % tp || c.intermediate_size % tp)
    throw Error("tensor parallel: " + std::to_string(c.num_heads) + " query heads, " +
                std::to_string(c.num_kv_heads) + " KV heads and MLP width " +
                std::to_string(c.intermediate_size) + " must all divide by --tp " + std::to_string(tp));
  const int64_t hd = c.head_dim, ff = c.intermediate_size / tp;
  if ((c.num_heads / tp) * hd % 16 || ff % 16)
    throw Error("tensor parallel: each shard's K must be a multiple of 16");
  ModelWeights w;
  w.config = c;
  w.config.num_heads = c.num_heads / tp;
  w.config.num_kv_heads = c.num_kv_heads / tp;
  w.config.intermediate_size = static_cast<int>(ff);
  w.source = full.source;
  w.quant = full.quant;
  w.embed = full.embed;
  w.final_norm = full.final_norm;
  w.lm_head = full.lm_head;
  w.synthetic = full.synthetic;
  w.materialized = full.materialized;
  w.seed = full.seed * 131 + static_cast<uint64_t>(rank);  // synthetic shards: their own values, same shapes
  const int64_t qh = (c.num_heads / tp) * hd, kvh = (c.num_kv_heads / tp) * hd;
  for (const auto& L : full.layers) {
    LayerWeights s = L;
    if (full.materialized) {
      s.q = slice_rows(L.q, rank * qh, (rank + 1) * qh);
      s.k = slice_rows(L.k, rank * kvh, (rank + 1) * kvh);
      s.v = slice_rows(L.v, rank * kvh, (rank + 1) * kvh);
      s.o = slice_cols(L.o, rank * qh, (rank + 1) * qh);
      s.gate = slice_rows(L.gate, rank * ff, (rank + 1) * ff);
      s.up = slice_rows(L.up, rank * ff, (rank + 1) * ff);
      s.down = slice_cols(L.down, rank * ff, (rank + 1) * ff);
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
  }
  if (!full.materialized) set_linear_shapes(w);
  return w;
}

}  // namespace fp4lab
