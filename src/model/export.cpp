#include "model/export.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "common/error.h"
#include "common/hd.h"
#include "common/parallel.h"
#include "common/random.h"
#include "format/nvfp4.h"
#include "common/json_util.h"
#include "model/quantize.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace fp4lab {

namespace fs = std::filesystem;

namespace {

// One tensor of the checkpoint: its header entry, and how to make its bytes when its turn to be written comes.
struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
  std::function<std::vector<uint8_t>()> make;
};

// f(begin, end) over [0, n) in pieces of 1M elements, in parallel.
template <class F>
void parallel_for(int64_t n, int threads, F&& f) {
  constexpr int64_t kPiece = 1 << 20;
  parallel_parts((n + kPiece - 1) / kPiece, threads,
                 [&](int64_t p) { f(p * kPiece, std::min(n, (p + 1) * kPiece)); });
}

// The values fill_random_bf16 generates on the device for (seed, sigma 0.02), as BF16 words.
std::vector<uint8_t> random_bf16_bytes(uint64_t seed, int64_t n, int threads) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * 2);
  parallel_for(n, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint16_t h = random_bf16_word(seed, static_cast<uint64_t>(i), 0.02f);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  });
  return out;
}

std::vector<float> random_bf16_values(uint64_t seed, int64_t n, int threads) {
  std::vector<float> out(static_cast<size_t>(n));
  parallel_for(n, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      out[static_cast<size_t>(i)] = bf16_to_f32(random_bf16_word(seed, static_cast<uint64_t>(i), 0.02f));
  });
  return out;
}

float parallel_amax(const std::vector<float>& v, int threads) {
  const int64_t n = static_cast<int64_t>(v.size());
  std::vector<float> part(static_cast<size_t>((n + (1 << 20) - 1) >> 20), 0.0f);
  parallel_for(n, threads, [&](int64_t b, int64_t e) {
    part[static_cast<size_t>(b >> 20)] = amax_ref(std::span<const float>(v.data() + b, static_cast<size_t>(e - b)));
  });
  float m = 0.0f;
  for (float p : part) m = std::max(m, p);
  return m;
}

std::vector<uint8_t> bf16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = bf16_from_f32_rne(v[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

// nvfp4_quantize_ref over row ranges in parallel (rows are independent once the tensor scale is fixed).
Nvfp4Tensor quantize_rows(const std::vector<float>& w, int64_t n, int64_t k, float ts, int threads) {
  Nvfp4Tensor t;
  t.rows = n;
  t.cols = k;
  t.tensor_scale = ts;
  t.packed.resize(static_cast<size_t>(n * k / 2));
  t.block_scales.resize(static_cast<size_t>(n * k / 16));
  const int64_t rows_per = std::max<int64_t>(1, (1 << 20) / k);
  parallel_parts((n + rows_per - 1) / rows_per, threads, [&](int64_t p) {
    const int64_t r0 = p * rows_per, r1 = std::min(n, r0 + rows_per);
    const Nvfp4Tensor q = nvfp4_quantize_ref(
        std::span<const float>(w.data() + r0 * k, static_cast<size_t>((r1 - r0) * k)), r1 - r0, k, ts);
    std::copy(q.packed.begin(), q.packed.end(), t.packed.begin() + r0 * k / 2);
    std::copy(q.block_scales.begin(), q.block_scales.end(), t.block_scales.begin() + r0 * k / 16);
  });
  return t;
}

void write_shard(const std::string& path, const std::vector<const Entry*>& entries, uint64_t& done,
                 uint64_t total, const ExportOptions& o) {
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (const Entry* e : entries) {
    h[e->name] = {{"dtype", dtype_name(e->dtype)}, {"shape", e->shape}, {"data_offsets", {off, off + e->bytes}}};
    off += e->bytes;
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs.push_back(' ');
  const std::string tmp = path + ".tmp";
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(tmp + ": cannot create file");
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(hs.size()) >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (const Entry* e : entries) {
    const std::vector<uint8_t> b = e->make();
    if (b.size() != e->bytes) throw Error("internal: export of '" + e->name + "' made the wrong byte count");
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!f) break;
    done += e->bytes;
    if (o.progress) o.progress(done, total);
  }
  f.flush();
  if (!f) {
    f.close();
    fs::remove(tmp);
    throw Error(path + ": write failed (disk full?)");
  }
  f.close();
  fs::rename(tmp, path);
}

}  // namespace

ExportReport export_preset(const std::string& preset, const std::string& out_dir, const ExportOptions& o) {
  if (o.quant == QuantMode::Auto) throw Error("export: choose bf16 or nvfp4");
  const int threads = o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  // Shapes, plans and the small host tensors; the large ones are generated one at a time below.
  const ModelWeights mw = synthetic_weights(preset, o.quant, o.seed, false);
  const ModelConfig& c = mw.config;
  const ArchNames names = arch_names(c);
  const std::vector<uint64_t> seeds = preset_linear_seeds(mw);
  ExportReport rep;

  std::vector<Entry> entries;
  auto small = [&](const std::string& name, const std::vector<float>& v, std::vector<int64_t> shape) {
    entries.push_back({name, DType::BF16, std::move(shape), v.size() * 2, [&v] { return bf16_bytes(v); }});
  };
  const int64_t H = c.hidden_size;
  entries.push_back({names.embed, DType::BF16, {c.vocab_size, H}, static_cast<uint64_t>(c.vocab_size * H) * 2,
                     [&] { return random_bf16_bytes(preset_embed_seed(o.seed), c.vocab_size * H, threads); }});

  // NVFP4 layers of one ModelOpt fusion group share a tensor scale (the group's amax / 2688), as the GPU
  // backend quantizes the preset: the whole group is made when its first member's turn comes.
  std::map<std::string, std::vector<size_t>> group_members;
  for (size_t i = 0; i < mw.plans.size(); ++i)
    if (mw.plans[i].nvfp4) group_members[fused_scale_group(mw.plans[i].spec)].push_back(i);
  auto cache = std::make_shared<std::map<std::string, Nvfp4Tensor>>();
  auto nvfp4_of = [&, cache](size_t i) -> const Nvfp4Tensor& {
    const LinearSpec& s = mw.plans[i].spec;
    if (!cache->count(s.name)) {
      std::vector<std::vector<float>> vals;
      float amax = 0.0f;
      const auto& members = group_members.at(fused_scale_group(s));
      for (size_t m : members) {
        const LinearSpec& ms = mw.plans[m].spec;
        vals.push_back(random_bf16_values(seeds[m], ms.n * ms.k, threads));
        amax = std::max(amax, parallel_amax(vals.back(), threads));
      }
      const float ts = nvfp4_tensor_scale(amax);
      for (size_t j = 0; j < members.size(); ++j) {
        const LinearSpec& ms = mw.plans[members[j]].spec;
        (*cache)[ms.name] = quantize_rows(vals[j], ms.n, ms.k, ts, threads);
        vals[j] = {};
      }
    }
    return cache->at(s.name);
  };
  auto linear = [&](size_t i) {
    const LinearPlan& p = mw.plans[i];
    const LinearSpec& s = p.spec;
    if (s.role == "lm_head" && c.tie_embeddings) return;
    if (!p.nvfp4) {
      ++rep.bf16_layers;
      entries.push_back({s.name + ".weight", DType::BF16, {s.n, s.k}, static_cast<uint64_t>(s.n * s.k) * 2,
                         [&, i, s] { return random_bf16_bytes(seeds[i], s.n * s.k, threads); }});
      return;
    }
    ++rep.nvfp4_layers;
    entries.push_back({s.name + ".weight", DType::U8, {s.n, s.k / 2}, static_cast<uint64_t>(s.n * s.k / 2),
                       [&, i] { return nvfp4_of(i).packed; }});
    entries.push_back({s.name + ".weight_scale", DType::F8_E4M3, {s.n, s.k / 16},
                       static_cast<uint64_t>(s.n * s.k / 16), [&, i] { return nvfp4_of(i).block_scales; }});
    entries.push_back({s.name + ".weight_scale_2", DType::F32, {}, 4, [&, i, cache, name = s.name] {
                         std::vector<uint8_t> b(4);
                         const float ts = nvfp4_of(i).tensor_scale;
                         std::memcpy(b.data(), &ts, 4);
                         cache->erase(name);  // the member's last tensor
                         return b;
                       }});
  };
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = mw.layers[static_cast<size_t>(l)];
    const std::string I = std::to_string(l);
    if (c.arch == Arch::NemotronH) {
      const std::string p = "backbone.layers." + I;
      small(p + ".norm.weight", L.norm, {H});
      if (L.kind == LayerKind::Mamba) {
        small(p + ".mixer.conv1d.weight", L.conv_w, {c.mamba_conv_dim(), 1, c.conv_kernel});
        if (c.use_conv_bias) small(p + ".mixer.conv1d.bias", L.conv_b, {c.mamba_conv_dim()});
        small(p + ".mixer.A_log", L.a_log, {c.mamba_num_heads});
        small(p + ".mixer.D", L.d, {c.mamba_num_heads});
        small(p + ".mixer.dt_bias", L.dt_bias, {c.mamba_num_heads});
        small(p + ".mixer.norm.weight", L.gated_norm, {c.mamba_d_inner()});
      }
    } else {
      const std::string p = "model.layers." + I;
      small(p + ".input_layernorm.weight", L.norm, {H});
      small(p + ".post_attention_layernorm.weight", L.post_norm, {H});
      if (c.arch == Arch::Qwen3) {
        small(p + ".self_attn.q_norm.weight", L.q_norm, {c.head_dim});
        small(p + ".self_attn.k_norm.weight", L.k_norm, {c.head_dim});
      }
    }
    for (size_t i = 0; i < mw.plans.size(); ++i)
      if (mw.plans[i].spec.layer == l && mw.plans[i].spec.role != "lm_head") linear(i);
  }
  small(names.final_norm, mw.final_norm, {H});
  for (size_t i = 0; i < mw.plans.size(); ++i)
    if (mw.plans[i].spec.role == "lm_head") linear(i);

  // Shards in entry order; each closes before it would pass shard_bytes.
  std::vector<std::vector<const Entry*>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const Entry& e : entries) {
    if (!shards.back().empty() && in_shard + e.bytes > o.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&e);
    in_shard += e.bytes;
    total += e.bytes;
  }
  fs::create_directories(out_dir);
  const size_t ns = shards.size();
  auto shard_name = [&](size_t i) {
    if (ns == 1) return std::string("model.safetensors");
    char b[64];
    std::snprintf(b, sizeof b, "model-%05zu-of-%05zu.safetensors", i + 1, ns);
    return std::string(b);
  };
  uint64_t done = 0;
  json weight_map = json::object();
  for (size_t i = 0; i < ns; ++i) {
    write_shard((fs::path(out_dir) / shard_name(i)).string(), shards[i], done, total, o);
    for (const Entry* e : shards[i]) weight_map[e->name] = shard_name(i);
  }
  if (ns > 1)
    write_text_file((fs::path(out_dir) / "model.safetensors.index.json").string(),
                    json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n");
  json cfg = model_config_to_json(c);
  if (o.quant == QuantMode::NVFP4) {
    std::vector<std::string> excluded;
    for (const auto& p : mw.plans)
      if (!p.nvfp4) excluded.push_back(p.spec.name);
    write_modelopt_configs(out_dir, cfg, excluded, false);
  } else {
    write_text_file((fs::path(out_dir) / "config.json").string(), dump_json_config(cfg) + "\n");
  }
  rep.shards = static_cast<int>(ns);
  rep.tensors = static_cast<int>(entries.size());
  rep.bytes = total;
  return rep;
}

}  // namespace fp4lab
