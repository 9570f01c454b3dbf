#include "model/weights.h"

#include <cmath>
#include <map>

#include "common/error.h"
#include "common/random.h"
#include "format/e4m3.h"
#include "io/safetensors.h"
#include "model/presets.h"

namespace fp4lab {

namespace {

std::vector<float> round_bf16(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(bf16_from_f32_rne(x));
  return v;
}

// Applies the plan to float weights: NVFP4 layers are quantized (shared scale per fusion group) and replaced
// by their exact dequantization; others are rounded to BF16 when the mode says the engine runs BF16.
void finalize_linears(ModelWeights& mw, bool round_others_bf16) {
  // FP8 at load: ModelOpt's recipe (one scale per tensor, amax / 448), the layers a GPU joins into one
  // product (q/k/v, gate/up) under one shared scale, so that the joined weight keeps a single scale.
  std::map<std::string, float> fp8_group_amax;
  for (const auto& p : mw.plans) {
    const LinearWeight* lw = &linear_weight(mw, p.spec);
    if (!p.fp8 || lw->fp8) continue;
    float& g = fp8_group_amax[fused_scale_group(p.spec)];
    g = std::max(g, amax_ref(lw->w));
  }
  for (const auto& p : mw.plans) {
    LinearWeight* lw = &linear_weight(mw, p.spec);
    if (!p.fp8 || lw->fp8) continue;
    lw->fp8 = fp8_quantize_ref(lw->w, lw->n, lw->k, fp8_group_amax[fused_scale_group(p.spec)]);
    fp8_dequantize_ref(*lw->fp8, lw->w);
  }
  std::map<std::string, float> group_amax;
  for (const auto& p : mw.plans) {
    if (!p.nvfp4) continue;
    LinearWeight* lw = &linear_weight(mw, p.spec);
    if (lw->nvfp4) continue;  // stored NVFP4: keep the checkpoint's own scales
    float& g = group_amax[fused_scale_group(p.spec)];
    g = std::max(g, amax_ref(lw->w));
  }
  for (const auto& p : mw.plans) {
    LinearWeight* lw = &linear_weight(mw, p.spec);
    if (p.nvfp4 && !lw->nvfp4) {
      lw->nvfp4 =
          nvfp4_quantize_ref(lw->w, lw->n, lw->k, nvfp4_tensor_scale(group_amax[fused_scale_group(p.spec)]));
      nvfp4_dequantize_ref(*lw->nvfp4, lw->w);
    } else if (!p.nvfp4 && lw->nvfp4) {
      lw->nvfp4.reset();  // --quant bf16 on an NVFP4 checkpoint: dequantized, then held in BF16
      if (round_others_bf16) lw->w = round_bf16(std::move(lw->w));
    } else if (!p.nvfp4 && !p.fp8 && round_others_bf16) {
      lw->w = round_bf16(std::move(lw->w));
    }
  }
}

void size_layers(ModelWeights& mw) {
  mw.layers.resize(static_cast<size_t>(mw.config.num_layers));
  for (int i = 0; i < mw.config.num_layers; ++i)
    mw.layers[static_cast<size_t>(i)].kind = mw.config.layers[static_cast<size_t>(i)];
}

// Weights, norms and scales are checked as they are read: a NaN or Inf in a checkpoint otherwise decodes
// token 0 forever with exit 0. (Streamed large tensors are not read on the host and are not scanned.)
std::vector<float> finite_or_throw(std::vector<float> v, const TensorStore& st, const std::string& name) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw Error(st.source() + ": tensor '" + name + "' holds " + (std::isnan(v[i]) ? "NaN" : "Inf") +
                  " at element " + std::to_string(i));
  return v;
}

// The tensor `name`, which must hold the elements of `shape` (its own shape may differ: [n] vs [n, 1]).
const TensorView& sized_tensor(const TensorStore& st, const std::string& name, const std::vector<int64_t>& shape) {
  const TensorView& t = st.get(name);
  int64_t want = 1;
  for (auto d : shape) want *= d;
  if (t.numel() != want) {
    std::string s;
    for (auto d : shape) s += (s.empty() ? "" : ", ") + std::to_string(d);
    throw Error(st.source() + ": '" + name + "' has " + std::to_string(t.numel()) + " elements, expected [" +
                s + "]");
  }
  return t;
}

std::vector<float> get_f32(const TensorStore& st, const std::string& name, std::vector<int64_t> shape) {
  return finite_or_throw(tensor_to_f32(sized_tensor(st, name, shape)), st, name);
}

float scalar_f32(const TensorStore& st, const std::string& name) {
  return finite_or_throw(tensor_to_f32(st.get(name)), st, name)[0];
}

// A float tensor of the given shape left in the mapped file (streamed loads).
const TensorView* float_view(const TensorStore& st, const std::string& name, std::vector<int64_t> shape) {
  const TensorView& t = sized_tensor(st, name, shape);
  if (t.dtype != DType::BF16 && t.dtype != DType::F16 && t.dtype != DType::F32)
    throw Error(t.file + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype) + ", expected BF16/F16/F32");
  return &t;
}

// An FP8 (E4M3) weight with its weight_scale, one value per tensor or per output row, as ModelOpt and
// compressed-tensors mean it (plan_linears checked the scale's shape).
Fp8Tensor fp8_stored(const TensorStore& st, const LinearSpec& s) {
  const TensorView& w = st.get(s.name + ".weight");
  const std::vector<float> scale =
      finite_or_throw(tensor_to_f32(st.get(s.name + ".weight_scale")), st, s.name + ".weight_scale");
  Fp8Tensor t;
  t.rows = s.n;
  t.cols = s.k;
  t.data.assign(w.data, w.data + w.nbytes());
  for (size_t i = 0; i < t.data.size(); ++i)
    if ((t.data[i] & 0x7f) == 0x7f)
      throw Error(st.source() + ": tensor '" + w.name + "' holds a NaN (E4M3 code) at element " +
                  std::to_string(i));
  if (scale.size() == 1)
    t.scale = scale[0];
  else
    t.row_scales = scale;
  return t;
}

std::vector<float> fp8_dequantized(const Fp8Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.rows * t.cols));
  fp8_dequantize_ref(t, out);
  return out;
}

}  // namespace

ModelWeights load_weights(const std::string& dir, QuantMode mode, WeightHome home) {
  ModelWeights mw;
  mw.source = dir;
  mw.quant = mode;
  mw.config = load_model_config(dir);
  const ModelConfig& c = mw.config;
  const QuantConfig q = load_quant_config(dir);
  if (q.algo == QuantAlgo::Unsupported)
    throw Error(dir + ": quantization '" + q.raw_algo +
                "' is not supported (NVFP4, W4A16_NVFP4, FP8, MIXED_PRECISION)");
  auto store = std::make_shared<const TensorStore>(TensorStore::open_dir(dir));
  const TensorStore& st = *store;
  mw.plans = plan_linears(c, q, &st, mode);
  // Streaming copies stored bytes: BF16 (run as is or quantized on the GPU), F16/F32 run in BF16 (converted
  // on the GPU), NVFP4 run as stored. A layer that needs the host takes the whole load to the host path: an
  // NVFP4 layer run in BF16 (dequantized), an FP8 layer (scaled), and an F16/F32 layer quantized at load,
  // whose codes come from its stored values (as on the CPU backend and in `fp4lab quantize`), not from their
  // BF16 rounding.
  for (const auto& p : mw.plans) {
    const bool f16_f32 = p.storage == WeightStorage::F16 || p.storage == WeightStorage::F32;
    const bool streams = is_nvfp4_storage(p.storage) ? p.nvfp4
                         : p.storage == WeightStorage::FP8
                             ? p.fp8
                             : p.storage == WeightStorage::BF16 || (f16_f32 && !p.nvfp4 && !p.fp8);
    if (!streams) home = WeightHome::Host;
  }
  const bool streamed = home == WeightHome::Device;
  size_layers(mw);
  const ArchNames names = arch_names(c);
  const int64_t H = c.hidden_size;
  if (streamed) {
    mw.store = store;
    mw.materialized = false;
    mw.embed_stored = float_view(st, names.embed, {c.vocab_size, H});
  } else {
    mw.embed = get_f32(st, names.embed, {c.vocab_size, H});
  }
  mw.final_norm = get_f32(st, names.final_norm, {H});
  for (const auto& p : mw.plans) {
    LinearWeight* lw = &linear_weight(mw, p.spec);
    lw->n = p.spec.n;
    lw->k = p.spec.k;
    if (p.spec.role == "lm_head" && c.tie_embeddings) {
      if (!streamed) lw->w = mw.embed;
      continue;
    }
    if (is_nvfp4_storage(p.storage)) {
      const bool ct = p.storage == WeightStorage::NVFP4_CompressedTensors;
      const TensorView& pk = st.get(p.spec.name + (ct ? ".weight_packed" : ".weight"));
      const TensorView& sc = st.get(p.spec.name + ".weight_scale");
      const float ts = ct ? nvfp4_tensor_scale_from_global(scalar_f32(st, p.spec.name + ".weight_global_scale"))
                          : scalar_f32(st, p.spec.name + ".weight_scale_2");
      const std::string in_name = p.spec.name + (ct ? ".input_global_scale" : ".input_scale");
      if (st.find(in_name)) {
        const float v = scalar_f32(st, in_name);
        lw->input_scale = ct ? nvfp4_tensor_scale_from_global(v) : v;
        if (!(lw->input_scale > 0.0f) || !std::isfinite(lw->input_scale))
          throw Error(in_name + ": an activation scale must be positive and finite");
      }
      if (streamed) {
        lw->stored = &pk;
        lw->stored_scales = &sc;
        lw->stored_tensor_scale = ts;
      } else {
        Nvfp4Tensor t;
        t.rows = p.spec.n;
        t.cols = p.spec.k;
        t.packed.assign(pk.data, pk.data + pk.nbytes());
        t.block_scales.assign(sc.data, sc.data + sc.nbytes());
        t.tensor_scale = ts;
        lw->w.resize(static_cast<size_t>(t.rows * t.cols));
        nvfp4_dequantize_ref(t, lw->w);
        lw->w = finite_or_throw(std::move(lw->w), st, sc.name + " (NVFP4 block scales)");
        lw->nvfp4 = std::move(t);
      }
    } else if (p.storage == WeightStorage::FP8 && streamed) {
      lw->stored = &st.get(p.spec.name + ".weight");
      lw->stored_fp8_scale = &st.get(p.spec.name + ".weight_scale");
    } else if (p.storage == WeightStorage::FP8) {
      Fp8Tensor t = fp8_stored(st, p.spec);
      lw->w = fp8_dequantized(t);
      if (p.fp8) lw->fp8 = std::move(t);
    } else if (streamed) {
      lw->stored = float_view(st, p.spec.name + ".weight", {p.spec.n, p.spec.k});
    } else {
      lw->w = get_f32(st, p.spec.name + ".weight", {p.spec.n, p.spec.k});
    }
    if (const TensorView* b = st.find(p.spec.name + ".bias"))
      lw->bias = finite_or_throw(tensor_to_f32(*b), st, b->name);
  }
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights& L = mw.layers[static_cast<size_t>(i)];
    const std::string I = std::to_string(i);
    if (c.arch == Arch::NemotronH) {
      const std::string p = "backbone.layers." + I;
      L.norm = get_f32(st, p + ".norm.weight", {H});
      if (L.kind == LayerKind::Mamba) {
        const int64_t cd = c.mamba_conv_dim(), nh = c.mamba_num_heads;
        L.conv_w = get_f32(st, p + ".mixer.conv1d.weight", {cd, 1, c.conv_kernel});
        if (c.use_conv_bias)
          L.conv_b = get_f32(st, p + ".mixer.conv1d.bias", {cd});
        else
          L.conv_b.assign(static_cast<size_t>(cd), 0.0f);
        L.a_log = get_f32(st, p + ".mixer.A_log", {nh});
        L.d = get_f32(st, p + ".mixer.D", {nh});
        L.dt_bias = get_f32(st, p + ".mixer.dt_bias", {nh});
        L.gated_norm = get_f32(st, p + ".mixer.norm.weight", {c.mamba_d_inner()});
      }
    } else {
      const std::string p = "model.layers." + I;
      L.norm = get_f32(st, p + ".input_layernorm.weight", {H});
      L.post_norm = get_f32(st, p + ".post_attention_layernorm.weight", {H});
      if (c.arch == Arch::Qwen3) {
        L.q_norm = get_f32(st, p + ".self_attn.q_norm.weight", {c.head_dim});
        L.k_norm = get_f32(st, p + ".self_attn.k_norm.weight", {c.head_dim});
      }
    }
  }
  // Streamed: the GPU backend quantizes or converts on the device (the same recipe as finalize_linears).
  if (!streamed) finalize_linears(mw, mode == QuantMode::BF16);
  return mw;
}

LmHeadMode parse_lm_head_mode(const std::string& s) {
  if (s == "auto") return LmHeadMode::Auto;
  if (s == "bf16") return LmHeadMode::BF16;
  if (s == "nvfp4") return LmHeadMode::NVFP4;
  throw Error("--lm-head must be auto, bf16 or nvfp4, got '" + s + "'");
}

const char* lm_head_mode_name(LmHeadMode m) {
  return m == LmHeadMode::BF16 ? "bf16" : m == LmHeadMode::NVFP4 ? "nvfp4" : "auto";
}

void apply_lm_head_mode(ModelWeights& mw, LmHeadMode m) {
  if (m == LmHeadMode::Auto) return;
  for (auto& p : mw.plans) {
    if (p.spec.role != "lm_head") continue;
    const bool want = m == LmHeadMode::NVFP4;
    if (p.nvfp4 == want) return;
    if (want && p.spec.k % 16 != 0)
      throw Error("--lm-head nvfp4: the hidden size " + std::to_string(p.spec.k) + " is not a multiple of 16");
    LinearWeight& lw = mw.lm_head;
    if (!want && lw.stored_scales)
      throw Error("--lm-head bf16: " + mw.source +
                  " stores the lm_head in NVFP4; loading it dequantized needs the host path (--tp 1 is not it: "
                  "use --quant bf16)");
    p.nvfp4 = want;
    p.reason = want ? "--lm-head nvfp4: quantized at load (ModelOpt recipe)" : "--lm-head bf16";
    if (!lw.w.empty()) {
      if (want) {
        lw.nvfp4 = nvfp4_quantize_ref(lw.w, lw.n, lw.k, nvfp4_tensor_scale(amax_ref(lw.w)));
        nvfp4_dequantize_ref(*lw.nvfp4, lw.w);
      } else {
        lw.nvfp4.reset();  // lw.w holds the exact dequantized values
        lw.w = round_bf16(std::move(lw.w));
      }
    }
    return;
  }
}

LinearWeight& linear_weight(ModelWeights& mw, const LinearSpec& s) {
  if (s.role == "lm_head") return mw.lm_head;
  LayerWeights& L = mw.layers[static_cast<size_t>(s.layer)];
  if (s.role == "attn.q") return L.q;
  if (s.role == "attn.k") return L.k;
  if (s.role == "attn.v") return L.v;
  if (s.role == "attn.o") return L.o;
  if (s.role == "mlp.gate") return L.gate;
  if (s.role == "mlp.up") return L.up;
  if (s.role == "mlp.down") return L.down;
  if (s.role == "mamba.in") return L.in_proj;
  if (s.role == "mamba.out") return L.out_proj;
  throw Error("internal: unknown linear role " + s.role);
}

const LinearWeight& linear_weight(const ModelWeights& w, const LinearSpec& s) {
  return linear_weight(const_cast<ModelWeights&>(w), s);
}

uint64_t preset_embed_seed(uint64_t seed) {
  return seed * 7 + 1;
}

std::vector<uint64_t> preset_linear_seeds(const ModelWeights& w) {
  std::vector<uint64_t> out;
  uint64_t gen = w.seed * 1000003ull + 17;
  for (const auto& p : w.plans)
    out.push_back(p.spec.role == "lm_head" && w.config.tie_embeddings ? 0 : ++gen);
  return out;
}

void set_linear_shapes(ModelWeights& mw) {
  for (const auto& pl : mw.plans) {
    LinearWeight* lw = &linear_weight(mw, pl.spec);
    lw->n = pl.spec.n;
    lw->k = pl.spec.k;
  }
}

ModelWeights synthetic_weights(const std::string& preset, QuantMode mode, uint64_t seed, bool materialize,
                               int vocab_override) {
  const auto p = find_preset(preset);
  if (!p) {
    std::string names;
    for (const auto& q : presets()) names += " " + q.name;
    throw Error("unknown preset '" + preset + "' (available:" + names + ")");
  }
  ModelWeights mw;
  mw.source = "preset:" + p->name;
  mw.quant = mode;
  mw.config = p->config;
  if (vocab_override > 0) mw.config.vocab_size = vocab_override;
  const ModelConfig& c = mw.config;
  QuantConfig none;
  // A preset is "stored" in BF16; --quant nvfp4 (and auto, which for presets means NVFP4 as NVIDIA ships such
  // a model) quantizes it at load.
  mw.plans = plan_linears(c, none, nullptr,
                          mode == QuantMode::BF16 || mode == QuantMode::FP8 ? mode : QuantMode::NVFP4);
  size_layers(mw);
  mw.synthetic = true;
  mw.seed = seed;
  mw.materialized = materialize;
  set_linear_shapes(mw);
  uint64_t stream = seed * 1000003ull;
  // Every value is BF16-representable, as a preset is "stored" in BF16: the CPU backend, the GPU's on-device
  // generation (fill_random_bf16) and an exported checkpoint (`fp4lab export`) hold the same weights.
  auto gauss = [&](size_t n, float sigma) {
    std::vector<float> v(n);
    const uint64_t s = ++stream;
    for (size_t i = 0; i < n; ++i) v[i] = bf16_to_f32(random_bf16_word(s, i, sigma));
    return v;
  };
  const int64_t H = c.hidden_size;
  // Small tensors always live on the host; the big ones (embeddings, linear layers) only when materialized.
  mw.final_norm.assign(static_cast<size_t>(H), 1.0f);
  for (auto& L : mw.layers) {
    L.norm.assign(static_cast<size_t>(H), 1.0f);
    if (L.kind == LayerKind::Decoder) L.post_norm.assign(static_cast<size_t>(H), 1.0f);
    if (c.arch == Arch::Qwen3) {
      L.q_norm.assign(static_cast<size_t>(c.head_dim), 1.0f);
      L.k_norm.assign(static_cast<size_t>(c.head_dim), 1.0f);
    }
    if (L.kind == LayerKind::Mamba) {
      const int nh = c.mamba_num_heads;
      L.conv_w = gauss(static_cast<size_t>(c.mamba_conv_dim() * c.conv_kernel), 0.2f);
      L.conv_b.assign(static_cast<size_t>(c.mamba_conv_dim()), 0.0f);
      L.a_log.resize(static_cast<size_t>(nh));
      for (int h = 0; h < nh; ++h)
        L.a_log[static_cast<size_t>(h)] =
            bf16_to_f32(bf16_from_f32_rne(std::log(1.0f + 15.0f * h / std::max(1, nh - 1))));
      L.d.assign(static_cast<size_t>(nh), 1.0f);
      L.dt_bias.assign(static_cast<size_t>(nh), -2.0f);
      L.gated_norm.assign(static_cast<size_t>(c.mamba_d_inner()), 1.0f);
    }
  }
  if (!materialize) return mw;
  // The large tensors from the seeds the GPU generates them from and `fp4lab export` writes them with, so
  // that a preset holds the same weights on every backend.
  auto large = [&](size_t n, uint64_t s) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = bf16_to_f32(random_bf16_word(s, i, 0.02f));
    return v;
  };
  mw.embed = large(static_cast<size_t>(c.vocab_size * H), preset_embed_seed(seed));
  const std::vector<uint64_t> seeds = preset_linear_seeds(mw);
  for (size_t i = 0; i < mw.plans.size(); ++i) {
    const LinearSpec& s = mw.plans[i].spec;
    linear_weight(mw, s).w = s.role == "lm_head" && c.tie_embeddings
                                 ? mw.embed
                                 : large(static_cast<size_t>(s.n * s.k), seeds[i]);
  }
  finalize_linears(mw, true);
  return mw;
}

ModelWeights load_model(const std::string& model, QuantMode mode, uint64_t seed, bool host_copy,
                        int preset_vocab_override) {
  if (is_preset_ref(model)) return synthetic_weights(model, mode, seed, host_copy, preset_vocab_override);
  return load_weights(model, mode, host_copy ? WeightHome::Host : WeightHome::Device);
}

}  // namespace fp4lab
