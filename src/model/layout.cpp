#include "model/layout.h"

#include "common/error.h"

namespace fp4lab {

ArchNames arch_names(const ModelConfig& c) {
  ArchNames n;
  if (c.arch == Arch::NemotronH) {
    n.embed = "backbone.embeddings.weight";
    n.final_norm = "backbone.norm_f.weight";
  } else {
    n.embed = "model.embed_tokens.weight";
    n.final_norm = "model.norm.weight";
  }
  n.lm_head = c.tie_embeddings ? n.embed : "lm_head.weight";
  return n;
}

std::vector<LinearSpec> linear_layers(const ModelConfig& c) {
  std::vector<LinearSpec> out;
  const int64_t h = c.hidden_size, q = int64_t{c.num_heads} * c.head_dim,
                kv = int64_t{c.num_kv_heads} * c.head_dim;
  auto add = [&](std::string name, std::string role, int layer, int64_t n, int64_t k) {
    out.push_back({std::move(name), std::move(role), layer, n, k});
  };
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string L = std::to_string(i);
    switch (c.layers[static_cast<size_t>(i)]) {
      case LayerKind::Decoder: {
        const std::string p = "model.layers." + L;
        add(p + ".self_attn.q_proj", "attn.q", i, q, h);
        add(p + ".self_attn.k_proj", "attn.k", i, kv, h);
        add(p + ".self_attn.v_proj", "attn.v", i, kv, h);
        add(p + ".self_attn.o_proj", "attn.o", i, h, q);
        add(p + ".mlp.gate_proj", "mlp.gate", i, c.intermediate_size, h);
        add(p + ".mlp.up_proj", "mlp.up", i, c.intermediate_size, h);
        add(p + ".mlp.down_proj", "mlp.down", i, h, c.intermediate_size);
        break;
      }
      case LayerKind::Attention: {
        const std::string p = "backbone.layers." + L + ".mixer";
        add(p + ".q_proj", "attn.q", i, q, h);
        add(p + ".k_proj", "attn.k", i, kv, h);
        add(p + ".v_proj", "attn.v", i, kv, h);
        add(p + ".o_proj", "attn.o", i, h, q);
        break;
      }
      case LayerKind::Mlp: {
        const std::string p = "backbone.layers." + L + ".mixer";
        add(p + ".up_proj", "mlp.up", i, c.intermediate_size, h);
        add(p + ".down_proj", "mlp.down", i, h, c.intermediate_size);
        break;
      }
      case LayerKind::Mamba: {
        const std::string p = "backbone.layers." + L + ".mixer";
        add(p + ".in_proj", "mamba.in", i, c.mamba_in_proj_dim(), h);
        add(p + ".out_proj", "mamba.out", i, h, c.mamba_d_inner());
        break;
      }
      case LayerKind::Moe:
        throw Error("layer " + L + " is a mixture-of-experts layer (E): not supported yet");
    }
  }
  const ArchNames names = arch_names(c);
  add(names.lm_head.substr(0, names.lm_head.size() - 7), "lm_head", -1, c.vocab_size, h);
  return out;
}

const char* storage_name(WeightStorage s) {
  switch (s) {
    case WeightStorage::BF16:
      return "BF16";
    case WeightStorage::F16:
      return "F16";
    case WeightStorage::F32:
      return "F32";
    case WeightStorage::NVFP4_ModelOpt:
      return "NVFP4";
    case WeightStorage::NVFP4_CompressedTensors:
      return "NVFP4(ct)";
    case WeightStorage::FP8:
      return "FP8";
    case WeightStorage::Missing:
      return "missing";
  }
  return "?";
}

QuantMode parse_quant_mode(const std::string& q) {
  if (q == "auto") return QuantMode::Auto;
  if (q == "bf16") return QuantMode::BF16;
  if (q == "nvfp4") return QuantMode::NVFP4;
  if (q == "fp8") return QuantMode::FP8;
  throw Error("--quant must be auto, bf16, nvfp4 or fp8 (got '" + q + "')");
}

const char* plan_format_name(const LinearPlan& p) {
  return p.nvfp4 ? "NVFP4" : p.fp8 ? "FP8" : "BF16";
}

double linear_weight_bytes(const LinearPlan& p) {
  const double nk = static_cast<double>(p.spec.n) * static_cast<double>(p.spec.k);
  return p.nvfp4 ? nk * 0.5625 + 4.0 : p.fp8 ? nk + 4.0 * static_cast<double>(p.spec.n) : 2.0 * nk;
}

const char* quant_mode_name(QuantMode m) {
  switch (m) {
    case QuantMode::Auto:
      return "auto";
    case QuantMode::BF16:
      return "bf16";
    case QuantMode::NVFP4:
      return "nvfp4";
    case QuantMode::FP8:
      return "fp8";
  }
  return "?";
}

std::string fused_scale_group(const LinearSpec& s) {
  if (s.role == "attn.q" || s.role == "attn.k" || s.role == "attn.v")
    return "L" + std::to_string(s.layer) + ".qkv";
  if (s.role == "mlp.gate" || (s.role == "mlp.up" && s.name.find(".mlp.") != std::string::npos))
    return "L" + std::to_string(s.layer) + ".gate_up";
  return s.name;
}

uint64_t sequence_state_bytes(const ModelConfig& c, int64_t tokens) {
  uint64_t b = 0;
  for (const auto k : c.layers) {
    if (k == LayerKind::Attention || k == LayerKind::Decoder)
      b += 2ull * static_cast<uint64_t>(tokens) * static_cast<uint64_t>(c.num_kv_heads) *
           static_cast<uint64_t>(c.head_dim) * 2;
    if (k == LayerKind::Mamba)
      b += 4ull * (static_cast<uint64_t>(c.mamba_conv_dim()) * static_cast<uint64_t>(c.conv_kernel - 1) +
                   static_cast<uint64_t>(c.mamba_num_heads) * static_cast<uint64_t>(c.mamba_head_dim) *
                       static_cast<uint64_t>(c.ssm_state_size));
  }
  return b;
}

std::vector<std::string> default_nvfp4_excludes(const ModelConfig& c) {
  std::vector<std::string> ex{"lm_head"};
  if (c.arch == Arch::NemotronH)
    for (const char* p : {"*.q_proj", "*.k_proj", "*.v_proj", "*.o_proj"}) ex.emplace_back(p);
  return ex;
}

std::vector<std::string> default_fp8_excludes(const ModelConfig&) {
  return {"lm_head"};
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

WeightStorage detect_storage(const LinearSpec& l, const TensorStore& st) {
  const auto* w = st.find(l.name + ".weight");
  const auto* wp = st.find(l.name + ".weight_packed");
  if (wp) {
    if (wp->dtype != DType::U8) throw Error(st.source() + ": '" + wp->name + "' must be U8 (packed E2M1)");
    return WeightStorage::NVFP4_CompressedTensors;
  }
  if (!w) return WeightStorage::Missing;
  if (w->dtype == DType::U8 && st.find(l.name + ".weight_scale")) return WeightStorage::NVFP4_ModelOpt;
  if (w->dtype == DType::F8_E4M3) {
    // ModelOpt and compressed-tensors FP8 scale the E4M3 codes by weight_scale (per tensor or per output
    // channel). DeepSeek-style 128x128 block scales (weight_scale_inv) are another format: refused by name
    // rather than read as unscaled values.
    if (st.find(l.name + ".weight_scale_inv"))
      throw Error(st.source() + ": '" + w->name +
                  "' is FP8 with block scales (weight_scale_inv), a format fp4lab does not read");
    if (!st.find(l.name + ".weight_scale"))
      throw Error(st.source() + ": '" + w->name + "' is FP8 (E4M3) but '" + l.name +
                  ".weight_scale' is missing: its values cannot be known");
    return WeightStorage::FP8;
  }
  if (w->dtype == DType::BF16) return WeightStorage::BF16;
  if (w->dtype == DType::F16) return WeightStorage::F16;
  if (w->dtype == DType::F32) return WeightStorage::F32;
  throw Error(st.source() + ": '" + w->name + "' has unsupported dtype " + dtype_name(w->dtype));
}

void expect_shape(const TensorStore& st, const std::string& name, std::vector<int64_t> want, DType dt) {
  const TensorView& t = st.get(name);
  if (t.dtype != dt)
    throw Error(st.source() + ": '" + name + "' has dtype " + dtype_name(t.dtype) + ", expected " +
                dtype_name(dt));
  if (t.shape != want)
    throw Error(st.source() + ": '" + name + "' has shape " + shape_str(t.shape) + ", expected " +
                shape_str(want));
}

void check_scalar(const TensorStore& st, const std::string& name) {
  const TensorView& t = st.get(name);
  if (t.dtype != DType::F32 || t.numel() != 1)
    throw Error(st.source() + ": '" + name + "' must be a single F32 value, got " + dtype_name(t.dtype) +
                " " + shape_str(t.shape));
}

}  // namespace

std::vector<LinearPlan> plan_linears(const ModelConfig& c, const QuantConfig& q, const TensorStore* st,
                                     QuantMode mode) {
  std::vector<LinearPlan> plans;
  const auto excludes = default_nvfp4_excludes(c);
  for (const auto& spec : linear_layers(c)) {
    LinearPlan p;
    p.spec = spec;
    if (st) {
      p.storage = detect_storage(spec, *st);
      if (p.storage == WeightStorage::Missing)
        throw Error(st->source() + ": missing tensor '" + spec.name + ".weight'");
      if (p.storage == WeightStorage::NVFP4_ModelOpt) {
        expect_shape(*st, spec.name + ".weight", {spec.n, spec.k / 2}, DType::U8);
        expect_shape(*st, spec.name + ".weight_scale", {spec.n, spec.k / 16}, DType::F8_E4M3);
        check_scalar(*st, spec.name + ".weight_scale_2");
        if (st->find(spec.name + ".input_scale")) check_scalar(*st, spec.name + ".input_scale");
      } else if (p.storage == WeightStorage::NVFP4_CompressedTensors) {
        expect_shape(*st, spec.name + ".weight_packed", {spec.n, spec.k / 2}, DType::U8);
        expect_shape(*st, spec.name + ".weight_scale", {spec.n, spec.k / 16}, DType::F8_E4M3);
        check_scalar(*st, spec.name + ".weight_global_scale");
      } else {
        const TensorView& w = st->get(spec.name + ".weight");
        if (p.storage == WeightStorage::FP8) {
          const TensorView& sc = st->get(spec.name + ".weight_scale");
          if ((sc.dtype != DType::F32 && sc.dtype != DType::BF16 && sc.dtype != DType::F16) ||
              (sc.numel() != 1 && sc.numel() != spec.n))
            throw Error(st->source() + ": '" + sc.name + "' must hold one float (per tensor) or " +
                        std::to_string(spec.n) + " (per output channel), got " + dtype_name(sc.dtype) + " " +
                        shape_str(sc.shape));
        }
        if (w.shape != std::vector<int64_t>{spec.n, spec.k})
          throw Error(st->source() + ": '" + w.name + "' has shape " + shape_str(w.shape) +
                      ", config implies " + shape_str({spec.n, spec.k}));
      }
    } else {
      p.storage = WeightStorage::BF16;  // synthetic preset
    }
    const bool stored_fp4 = is_nvfp4_storage(p.storage);
    // A quantization config that names a format fp4lab cannot read for this layer: stop, whatever the bytes
    // (SmoothQuant or AWQ weights, say, are wrong without their activation scales). Otherwise the stored dtype
    // decides: ModelOpt FP8 configs that do not list lm_head in exclude_modules still store it in BF16.
    if (st && q.algo_for(spec.name) == QuantAlgo::Unsupported)
      throw Error(q.source + ": layer '" + spec.name + "' is quantized as '" + q.raw_algo_for(spec.name) +
                  "', a format fp4lab does not read (NVFP4, W4A16_NVFP4, FP8, or unquantized)");

    std::string matched;
    const auto excluded = [&](const std::vector<std::string>& list) {
      for (const auto& e : list)
        if (exclude_matches(e, spec.name)) {
          matched = e;
          return true;
        }
      return false;
    };
    const bool stored_fp8 = p.storage == WeightStorage::FP8;
    if (mode == QuantMode::BF16) {
      p.reason = stored_fp4 || stored_fp8 ? "--quant bf16: dequantized at load" : "--quant bf16";
    } else if (stored_fp4 && spec.k % 16 != 0) {
      p.reason = "K=" + std::to_string(spec.k) + " is not a multiple of 16: dequantized at load";
    } else if (stored_fp4) {
      p.nvfp4 = true;
      p.reason = "checkpoint stores NVFP4";
    } else if (stored_fp8 && spec.role == "lm_head") {
      // The logits kernels take a BF16 or NVFP4 head only.
      p.reason = "checkpoint stores FP8: the lm_head is dequantized at load and runs in BF16";
    } else if (stored_fp8) {
      p.fp8 = true;
      p.fp8_per_channel = st->get(spec.name + ".weight_scale").numel() > 1;
      p.reason = std::string("checkpoint stores FP8 (E4M3, per-") +
                 (p.fp8_per_channel ? "channel" : "tensor") + " scale)";
    } else if (spec.k % 16 != 0) {
      p.reason = "K=" + std::to_string(spec.k) + " is not a multiple of 16";
    } else if (mode == QuantMode::FP8 && spec.role == "lm_head") {
      p.reason = c.tie_embeddings ? "tied to the embeddings: kept in BF16 (ModelOpt default)"
                                  : "lm_head: kept in BF16 (ModelOpt default)";
    } else if (mode == QuantMode::FP8) {
      const bool ex = excluded(default_fp8_excludes(c));
      p.fp8 = !ex;
      p.reason = ex ? "default exclusion '" + matched + "'"
                    : "--quant fp8: quantized at load (ModelOpt recipe: per-tensor amax / 448)";
    } else if (mode == QuantMode::NVFP4 && spec.role == "lm_head") {
      p.reason = c.tie_embeddings ? "tied to the embeddings: kept in BF16 (ModelOpt default)"
                                  : "lm_head: kept in BF16 (ModelOpt default)";
    } else if (mode == QuantMode::NVFP4) {
      const bool ex = excluded(excludes);
      p.nvfp4 = !ex;
      p.reason =
          ex ? "default exclusion '" + matched + "'" : "--quant nvfp4: quantized at load (ModelOpt recipe)";
    } else {  // Auto on a float tensor
      if (q.is_nvfp4() && q.algo_for(spec.name, &matched) == QuantAlgo::None && !matched.empty())
        p.reason = "excluded by '" + matched + "' in " + q.source;
      else if (q.is_nvfp4())
        p.reason = "stored unquantized in the checkpoint";
      else
        p.reason = "unquantized checkpoint (use --quant nvfp4 or fp8 to quantize at load)";
    }
    plans.push_back(std::move(p));
  }
  return plans;
}

}  // namespace fp4lab
