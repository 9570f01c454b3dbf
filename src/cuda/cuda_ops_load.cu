// CudaOps: the weights onto the GPU. Stored NVFP4 codes are repacked into the kernels' tile layout, BF16/F16/
// F32 tensors converted to BF16 (and checked for NaN/Inf), FP8 layers dequantized with their scale, layers
// quantized at load (--quant nvfp4) quantized on the device, fused groups (q|k|v, gate|up) joined.
#include "cuda/cuda_ops_impl.cuh"

namespace fp4lab {

void CudaOps::bf16_from_stored(const TensorView& t, DeviceBuffer& dst, WeightUploader& up) {
  const int64_t n = t.numel();
  if (dst.bytes != static_cast<size_t>(n) * 2)
    throw Error("internal: " + t.name + " has the wrong device size");
  if (t.dtype == DType::BF16) {
    up.copy(t, dst.ptr);
    require_finite(dst, DType::BF16, t);
    return;
  }
  DeviceBuffer raw(t.nbytes());
  up.copy(t, raw.ptr);
  if (t.dtype == DType::F32)
    launch_f32_to_bf16(raw.as<float>(), n, dst.as<bf16_raw>(), stream_);
  else if (t.dtype == DType::F16)
    launch_f16_to_bf16(raw.ptr, n, dst.as<bf16_raw>(), stream_);
  else
    throw Error(t.file + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                ", expected BF16/F16/F32");
  // raw is freed on return: the conversion must have read it (require_finite synchronizes).
  require_finite(dst, DType::BF16, t);
}

void CudaOps::require_finite(const DeviceBuffer& values, DType dtype, const TensorView& t) {
  // Large tensors streamed to the GPU are never read on the host: a NaN or Inf in them would otherwise
  // decode garbage or stop at the first step with no tensor named. One extra pass over the tensor on the
  // device (~6 ms for 17 GB).
  DeviceBuffer count(4);
  CUDA_CHECK(cudaMemsetAsync(count.ptr, 0, 4, stream_));
  if (dtype == DType::BF16) {
    const int64_t n = static_cast<int64_t>(values.bytes / 2);
    launch_count_nonfinite_bf16(values.as<uint16_t>(), n, count.as<unsigned int>(), stream_);
  } else if (dtype == DType::F8_E4M3) {
    const int64_t n = static_cast<int64_t>(values.bytes);
    launch_count_nan_e4m3(values.as<uint8_t>(), n, count.as<unsigned int>(), stream_);
  } else {
    throw Error("internal: no finiteness scan for " + std::string(dtype_name(dtype)));
  }
  unsigned int bad = 0;
  CUDA_CHECK(cudaMemcpyAsync(&bad, count.ptr, 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (bad)
    throw Error(t.file + ": tensor '" + t.name + "' holds " + std::to_string(bad) +
                " non-finite values (NaN or Inf)");
}

DeviceBuffer CudaOps::bf16_source(const LinearWeight& lw, uint64_t gen_seed, const WeightSource& src,
                                  int64_t r0, int64_t r1) {
  if (r1 < 0) r1 = lw.n;
  const int64_t rows = r1 - r0;
  DeviceBuffer out(static_cast<size_t>(rows * lw.k * 2));
  if (src.synthetic) {
    fill_random_bf16(out.as<uint16_t>(), rows * lw.k, gen_seed, 0.02f, 0, stream_,
                     static_cast<uint64_t>(r0 * lw.k));
  } else if (lw.stored) {
    if (r0 == 0 && r1 == lw.n) {
      bf16_from_stored(*lw.stored, out, *src.up);
    } else {
      // The rows' bytes: a view into the same file.
      TensorView v = *lw.stored;
      const uint64_t row_bytes = static_cast<uint64_t>(lw.k) * dtype_size(v.dtype), skip = row_bytes * r0;
      v.begin += skip;
      v.end = v.begin + row_bytes * rows;
      v.file_offset += skip;
      if (v.data) v.data += skip;
      v.shape = {rows, lw.k};
      bf16_from_stored(v, out, *src.up);
    }
  } else {
    bf16_from_host(std::span<const float>(lw.w).subspan(static_cast<size_t>(r0 * lw.k),
                                                        static_cast<size_t>(rows * lw.k)),
                   out);
  }
  return out;
}

CudaOps::PackedNvfp4 CudaOps::quantize_nvfp4_in_chunks(
    const std::function<DeviceBuffer(int64_t, int64_t)>& rows, int64_t n, int64_t k) {
  const int64_t per = std::max<int64_t>(1, static_cast<int64_t>(quantize_chunk_bytes_) / (2 * k));
  float amax = 0.0f;
  for (int64_t r0 = 0; r0 < n; r0 += per) amax = std::max(amax, bf16_amax(rows(r0, std::min(n, r0 + per))));
  PackedNvfp4 p;
  p.tensor_scale = nvfp4_tensor_scale(amax);
  p.packed = DeviceBuffer(static_cast<size_t>(n * k / 2));
  p.scales = DeviceBuffer(static_cast<size_t>(n * k / 16));
  DeviceBuffer ts(4);
  CUDA_CHECK(cudaMemcpyAsync(ts.ptr, &p.tensor_scale, 4, cudaMemcpyHostToDevice, stream_));
  // Each row's codes and block scales depend only on the row and the tensor scale: chunks quantize alone.
  for (int64_t r0 = 0; r0 < n; r0 += per) {
    const int64_t r1 = std::min(n, r0 + per);
    const DeviceBuffer src = rows(r0, r1);
    nvfp4_quantize_act(src.as<bf16_raw>(), r1 - r0, k, p.packed.as<uint8_t>() + r0 * k / 2,
                       p.scales.as<uint8_t>() + r0 * k / 16, ts.as<float>(), false, stream_);
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // src is freed at the end of the iteration
  }
  return p;
}

float CudaOps::bf16_amax(const DeviceBuffer& bf16_values) {
  DeviceBuffer dev(4);
  float a = 0.0f;
  amax_bf16(bf16_values.as<bf16_raw>(), static_cast<int64_t>(bf16_values.bytes / 2), dev.as<float>(),
            stream_);
  CUDA_CHECK(cudaMemcpyAsync(&a, dev.ptr, 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return a;
}

void CudaOps::bf16_from_host(std::span<const float> host, DeviceBuffer& dst) {
  const int64_t n = static_cast<int64_t>(host.size());
  if (dst.bytes != host.size() * 2) throw Error("internal: a host tensor has the wrong device size");
  DeviceBuffer f(host.size() * 4);
  CUDA_CHECK(cudaMemcpyAsync(f.ptr, host.data(), f.bytes, cudaMemcpyHostToDevice, stream_));
  launch_f32_to_bf16(f.as<float>(), n, dst.as<bf16_raw>(), stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // f is freed on return
}

CudaOps::PackedNvfp4 CudaOps::stored_nvfp4(const LinearWeight& lw, WeightUploader* up) {
  PackedNvfp4 p;
  if (lw.nvfp4) {
    // Exactly the host's NVFP4 codes and scales (checkpoint or quantized at load on the host).
    p.packed = DeviceBuffer(lw.nvfp4->packed.size());
    p.scales = DeviceBuffer(lw.nvfp4->block_scales.size());
    CUDA_CHECK(cudaMemcpyAsync(p.packed.ptr, lw.nvfp4->packed.data(), p.packed.bytes, cudaMemcpyHostToDevice,
                               stream_));
    CUDA_CHECK(cudaMemcpyAsync(p.scales.ptr, lw.nvfp4->block_scales.data(), p.scales.bytes,
                               cudaMemcpyHostToDevice, stream_));
    p.tensor_scale = lw.nvfp4->tensor_scale;
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return p;
  }
  // The checkpoint's codes as stored (plan_linears checked their shapes against the config).
  p.packed = DeviceBuffer(lw.stored->nbytes());
  p.scales = DeviceBuffer(lw.stored_scales->nbytes());
  up->copy(*lw.stored, p.packed.ptr);
  up->copy(*lw.stored_scales, p.scales.ptr);
  require_finite(p.scales, DType::F8_E4M3, *lw.stored_scales);  // E2M1 codes have no NaN; the scales do
  p.tensor_scale = lw.stored_tensor_scale;
  return p;
}

CudaOps::PackedNvfp4 CudaOps::quantize_nvfp4(const DeviceBuffer& src, int64_t n, int64_t k,
                                             float tensor_scale) {
  PackedNvfp4 p;
  p.packed = DeviceBuffer(static_cast<size_t>(n * k / 2));
  p.scales = DeviceBuffer(static_cast<size_t>(n * k / 16));
  DeviceBuffer ts(4);
  CUDA_CHECK(cudaMemcpyAsync(ts.ptr, &tensor_scale, 4, cudaMemcpyHostToDevice, stream_));
  nvfp4_quantize_act(src.as<bf16_raw>(), n, k, p.packed.as<uint8_t>(), p.scales.as<uint8_t>(), ts.as<float>(),
                     false, stream_);
  p.tensor_scale = tensor_scale;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return p;
}

void CudaOps::place_nvfp4(const LinearWeight& lw, PackedNvfp4 p) {
  if (const auto pr = swiglu_pair_.find(&lw); pr != swiglu_pair_.end()) {
    swiglu_pending_[&lw] = std::move(p);
    const auto [g, u] = pr->second;
    if (!swiglu_pending_.count(g) || !swiglu_pending_.count(u)) return;
    const PackedNvfp4 &pg = swiglu_pending_[g], &pu = swiglu_pending_[u];
    FusedSwiglu f;
    f.w = nvfp4_repack_swiglu_pair_device(pg.packed.as<uint8_t>(), pg.scales.as<uint8_t>(),
                                          pu.packed.as<uint8_t>(), pu.scales.as<uint8_t>(), g->n, g->k,
                                          stream_);
    f.gate_scale = pg.tensor_scale;
    f.up_scale = pu.tensor_scale;
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    weight_bytes_ += f.w.bytes();
    swiglu_[g] = std::move(f);
    swiglu_pending_.erase(g);
    swiglu_pending_.erase(u);
    return;
  }
  DevLinear d;
  d.n = lw.n;
  d.k = lw.k;
  d.nvfp4 = true;
  d.fp4 = nvfp4_repack_device(p.packed.as<uint8_t>(), p.scales.as<uint8_t>(), lw.n, lw.k, p.tensor_scale,
                              stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  weight_bytes_ += d.fp4.bytes();
  if (!lw.bias.empty()) {
    d.bias = DeviceBuffer(lw.bias.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(d.bias.ptr, lw.bias.data(), d.bias.bytes, cudaMemcpyHostToDevice, stream_));
  }
  linears_[&lw] = std::move(d);
}

void CudaOps::place_bf16(const LinearWeight& lw, DeviceBuffer bf16) {
  DevLinear d;
  d.n = lw.n;
  d.k = lw.k;
  d.bf16 = std::move(bf16);
  weight_bytes_ += d.bf16.bytes;
  if (!lw.bias.empty()) {
    d.bias = DeviceBuffer(lw.bias.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(d.bias.ptr, lw.bias.data(), d.bias.bytes, cudaMemcpyHostToDevice, stream_));
  }
  linears_[&lw] = std::move(d);
}

Fp8DeviceWeight CudaOps::fp8_weight(const LinearWeight& lw, WeightUploader* up, const DeviceBuffer* source,
                                    float group_amax) {
  Fp8DeviceWeight f;
  f.n = lw.n;
  f.k = lw.k;
  f.codes = DeviceBuffer(static_cast<size_t>(lw.n * lw.k));
  std::vector<float> scales;
  if (lw.fp8) {
    CUDA_CHECK(
        cudaMemcpyAsync(f.codes.ptr, lw.fp8->data.data(), f.codes.bytes, cudaMemcpyHostToDevice, stream_));
    scales = lw.fp8->row_scales.empty() ? std::vector<float>{lw.fp8->scale} : lw.fp8->row_scales;
  } else if (lw.stored && lw.stored_fp8_scale) {
    // The checkpoint's codes as stored (plan_linears checked the shapes and the scale's size); the scale is a
    // handful of floats, read on the host.
    up->copy(*lw.stored, f.codes.ptr);
    require_finite(f.codes, DType::F8_E4M3, *lw.stored);
    scales = tensor_to_f32(*lw.stored_fp8_scale);
    for (const float v : scales)
      if (!std::isfinite(v))
        throw Error(lw.stored_fp8_scale->file + ": tensor '" + lw.stored_fp8_scale->name + "' holds " +
                    (std::isnan(v) ? "NaN" : "Inf"));
  } else {
    // ModelOpt's FP8 recipe on the BF16 values under the fusion group's amax, as finalize_linears does it on
    // the host.
    if (!source) throw Error("internal: an FP8 layer to quantize without its values");
    f.scales = DeviceBuffer(sizeof(float));
    CUDA_CHECK(cudaMemcpyAsync(f.scales.ptr, &group_amax, sizeof(float), cudaMemcpyHostToDevice, stream_));
    fp8_quantize_bf16(source->as<bf16_raw>(), lw.n * lw.k, f.codes.as<uint8_t>(), f.scales.as<float>(),
                      stream_, true);
    CUDA_CHECK(
        cudaMemcpyAsync(&f.tensor_scale, f.scales.ptr, sizeof(float), cudaMemcpyDeviceToHost, stream_));
    f.row_scales = fp8_row_scales(f.scales.as<float>(), false, lw.n, stream_);
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller frees the source after this
    return f;
  }
  f.per_row = scales.size() > 1;
  f.tensor_scale = f.per_row ? 0.0f : scales[0];
  f.scales = DeviceBuffer(scales.size() * sizeof(float));
  CUDA_CHECK(cudaMemcpyAsync(f.scales.ptr, scales.data(), f.scales.bytes, cudaMemcpyHostToDevice, stream_));
  f.row_scales = fp8_row_scales(f.scales.as<float>(), f.per_row, lw.n, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return f;
}

void CudaOps::place_fp8(const LinearWeight& lw, Fp8DeviceWeight f8) {
  DevLinear d;
  d.n = lw.n;
  d.k = lw.k;
  d.fp8 = true;
  d.f8 = std::move(f8);
  weight_bytes_ += d.f8.bytes();
  if (!lw.bias.empty()) {
    d.bias = DeviceBuffer(lw.bias.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(d.bias.ptr, lw.bias.data(), d.bias.bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  linears_[&lw] = std::move(d);
}

void CudaOps::join_fp8(const std::vector<const LinearWeight*>& group) {
  // Each row keeps its member's scale: one scale for the joined weight where the members share it.
  FusedFp8 f;
  f.members = group;
  f.w.k = linears_.at(group[0]).k;
  bool same_scale = true;
  for (const auto* m : group) {
    const Fp8DeviceWeight& d = linears_.at(m).f8;
    f.w.n += d.n;
    same_scale = same_scale && !d.per_row && d.tensor_scale == linears_.at(group[0]).f8.tensor_scale;
  }
  f.w.codes = DeviceBuffer(static_cast<size_t>(f.w.n * f.w.k));
  f.w.row_scales = DeviceBuffer(static_cast<size_t>(f.w.n) * sizeof(float));
  int64_t off = 0;
  for (const auto* m : group) {
    const Fp8DeviceWeight& d = linears_.at(m).f8;
    f.offsets.push_back(off);
    f.rows.push_back(d.n);
    f.member_per_row.push_back(d.per_row);
    f.member_scale.push_back(d.tensor_scale);
    CUDA_CHECK(cudaMemcpyAsync(f.w.codes.as<uint8_t>() + off * f.w.k, d.codes.ptr, d.codes.bytes,
                               cudaMemcpyDeviceToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(f.w.row_scales.as<float>() + off, d.row_scales.ptr, d.row_scales.bytes,
                               cudaMemcpyDeviceToDevice, stream_));
    off += d.n;
  }
  f.w.per_row = !same_scale;
  f.w.tensor_scale = same_scale ? linears_.at(group[0]).f8.tensor_scale : 0.0f;
  f.w.scales = DeviceBuffer(same_scale ? sizeof(float) : f.w.row_scales.bytes);
  CUDA_CHECK(cudaMemcpyAsync(f.w.scales.ptr, f.w.row_scales.ptr, f.w.scales.bytes, cudaMemcpyDeviceToDevice,
                             stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (const auto* m : group) {
    weight_bytes_ -= linears_.at(m).f8.bytes();
    linears_.erase(m);
  }
  weight_bytes_ += f.w.bytes();
  fused_fp8_[group[0]] = std::move(f);
}

void CudaOps::prepare(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  {
    int major = 0, minor = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_));
    cc_ = major * 10 + minor;
  }
  hidden_ = c.hidden_size;
  vocab_ = c.vocab_size;
  vocab_rows_ = w.vocab_rows();
  vocab_parallel_ = w.vocab_parallel();
  // Plan: weights as they will sit on the GPU, against the free memory, before allocating.
  double need = embedding_on_host_ ? 0.0 : 2.0 * vocab_rows_ * c.hidden_size;
  for (const auto& p : w.plans) {
    if (p.spec.role == "lm_head" && c.tie_embeddings) continue;
    need += linear_weight_bytes(p);
  }
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (need + (1ull << 30) > static_cast<double>(free_b))
    throw Error("model needs " + std::to_string(need / 1e9).substr(0, 5) +
                " GB of weights on the GPU (plus ~1 GB of "
                "workspace) but only " +
                std::to_string(free_b / 1e9).substr(0, 5) + " GB are free");
  WeightSource src;
  src.synthetic = w.synthetic && !w.materialized;
  std::unique_ptr<WeightUploader> uploader;
  if (w.streamed()) {
    uploader = std::make_unique<WeightUploader>(stream_);
    uploader->prefetch(w.store->files());
    uint64_t total = w.embed_stored ? w.embed_stored->nbytes() : 0;
    for (const auto& p : w.plans) {
      const LinearWeight& lw = linear_weight(w, p.spec);
      total += (lw.stored ? lw.stored->nbytes() : 0) + (lw.stored_scales ? lw.stored_scales->nbytes() : 0) +
               (lw.stored_fp8_scale ? lw.stored_fp8_scale->nbytes() : 0);
    }
    uploader->show_progress(total, w.source);
    src.up = uploader.get();
  }
  // On the host (mapped, pinned), the embedding costs the GPU nothing; a decode step gathers its rows over
  // PCIe (hidden x 2 bytes per token).
  const size_t embed_bytes = static_cast<size_t>(vocab_rows_) * c.hidden_size * 2;
  embed_ = embedding_on_host_ ? DeviceBuffer::host_mapped(embed_bytes) : DeviceBuffer(embed_bytes);
  if (src.synthetic) {
    fill_random_bf16(embed_.as<uint16_t>(), vocab_rows_ * c.hidden_size, preset_embed_seed(w.seed), 0.02f, 0,
                     stream_);
  } else if (w.embed_stored) {
    bf16_from_stored(*w.embed_stored, embed_, *src.up);
  } else {
    bf16_from_host(w.embed, embed_);
  }
  if (!embedding_on_host_) weight_bytes_ += embed_.bytes;
  // Llama-style MLPs with NVFP4 gate and up: one weight, rows interleaved by 8, so the decode GEMV applies
  // SwiGLU in its epilogue (linear_swiglu); place_nvfp4 joins the pair once both are on the device.
  std::map<const LinearWeight*, bool> nvfp4_plan;
  for (const auto& p : w.plans) nvfp4_plan[&linear_weight(w, p.spec)] = p.nvfp4;
  for (const auto& L : w.layers) {
    const LinearWeight &g = L.gate, &u = L.up;
    if (nvfp4_plan[&g] && nvfp4_plan[&u] && g.n == u.n && g.k == u.k && g.n % 8 == 0 && g.n > 0 &&
        g.bias.empty() && u.bias.empty())
      swiglu_pair_[&g] = swiglu_pair_[&u] = {&g, &u};
  }
  // NVFP4 layers quantized here from BF16 values (presets, BF16 checkpoints with --quant nvfp4) share one
  // tensor scale per ModelOpt fusion group (q/k/v, gate/up), as the host recipe and ModelOpt do: a group is
  // quantized once all its members' BF16 values are on the device.
  // FP8 layers quantized here share one scale per fusion group the same way (finalize_linears).
  const auto from_bf16 = [](const LinearWeight& lw) {
    return !lw.nvfp4 && !lw.stored_scales && !lw.fp8 && !lw.stored_fp8_scale;
  };
  const auto group_of = [](const LinearPlan& p) { return fused_scale_group(p.spec) + (p.fp8 ? " fp8" : ""); };
  std::map<std::string, size_t> group_size;
  for (const auto& p : w.plans)
    if ((p.nvfp4 || p.fp8) && from_bf16(linear_weight(w, p.spec))) ++group_size[group_of(p)];
  struct Waiting {
    const LinearWeight* lw;
    DeviceBuffer src;
  };
  std::map<std::string, std::vector<Waiting>> waiting;
  const std::vector<uint64_t> seeds = preset_linear_seeds(w);
  for (size_t i = 0; i < w.plans.size(); ++i) {
    const LinearPlan& p = w.plans[i];
    const LinearWeight* lw = &linear_weight(w, p.spec);
    const bool tied = p.spec.role == "lm_head" && c.tie_embeddings;
    // Rows [r0, r1) of the layer's BF16 source; a tied lm_head's is the embedding (on the device or the
    // host).
    const auto rows = [&](int64_t r0, int64_t r1) {
      if (!tied) return bf16_source(*lw, seeds[i], src, r0, r1);
      const size_t row_bytes = static_cast<size_t>(c.hidden_size) * 2;
      DeviceBuffer b(row_bytes * static_cast<size_t>(r1 - r0));
      CUDA_CHECK(cudaMemcpyAsync(b.ptr, static_cast<const uint8_t*>(embed_.ptr) + row_bytes * r0, b.bytes,
                                 cudaMemcpyDefault, stream_));
      return b;
    };
    const auto source = [&] { return rows(0, lw->n); };
    if (tied && !p.nvfp4) {
      DevLinear d;
      d.n = vocab_rows_;
      d.k = c.hidden_size;
      d.bf16 = source();
      weight_bytes_ += d.bf16.bytes;
      linears_[lw] = std::move(d);
      continue;
    }
    if (p.fp8 && !from_bf16(*lw)) {
      place_fp8(*lw, fp8_weight(*lw, src.up, nullptr, 0.0f));
      continue;
    }
    if (!p.nvfp4 && !p.fp8) {
      place_bf16(*lw, source());
      continue;
    }
    if (!from_bf16(*lw)) {
      place_nvfp4(*lw, stored_nvfp4(*lw, src.up));
      continue;
    }
    const std::string g = group_of(p);
    if (p.nvfp4 && group_size[g] == 1 && static_cast<uint64_t>(lw->n * lw->k * 2) > quantize_chunk_bytes_) {
      place_nvfp4(*lw, quantize_nvfp4_in_chunks(rows, lw->n, lw->k));
      continue;
    }
    auto& members = waiting[g];
    members.push_back({lw, source()});
    if (members.size() < group_size[g]) continue;
    float amax = 0.0f;
    for (const auto& m : members) amax = std::max(amax, bf16_amax(m.src));
    const float ts = nvfp4_tensor_scale(amax);
    for (auto& m : members) {
      if (p.fp8) {
        Fp8DeviceWeight f = fp8_weight(*m.lw, nullptr, &m.src, amax);
        m.src = DeviceBuffer();
        place_fp8(*m.lw, std::move(f));
        continue;
      }
      PackedNvfp4 q = quantize_nvfp4(m.src, m.lw->n, m.lw->k, ts);
      m.src = DeviceBuffer();
      place_nvfp4(*m.lw, std::move(q));
    }
    waiting.erase(g);
  }
  if (!waiting.empty() || !swiglu_pending_.empty())
    throw Error("internal: prepare left NVFP4 layers unplaced (fusion group or gate/up pair incomplete)");
  uploader.reset();  // every copy has been issued; its destructor waits for them
  for (const auto& L : w.layers) {
    for (const auto* v : {&L.norm, &L.post_norm, &L.q_norm, &L.k_norm, &L.conv_w, &L.conv_b, &L.a_log, &L.d,
                          &L.dt_bias, &L.gated_norm})
      if (!v->empty()) dev_f32(*v);
  }
  dev_f32(w.final_norm);
  // Projections that read the same input (q | k | v, gate | up) become one weight [sum of N, K] when every
  // member is uploaded in the same format (BF16 or FP8), without a bias: one product instead of two or three
  // small ones. The members' own buffers are released.
  const auto all_members = [&](const std::vector<const LinearWeight*>& group, auto&& in_format) {
    for (const auto* m : group) {
      const auto it = linears_.find(m);
      if (it == linears_.end() || !in_format(it->second) || it->second.bias.ptr ||
          it->second.k != linears_.at(group[0]).k)
        return false;
    }
    return true;
  };
  for (const auto& L : w.layers)
    for (std::vector<const LinearWeight*> group : {std::vector<const LinearWeight*>{&L.q, &L.k, &L.v},
                                                   std::vector<const LinearWeight*>{&L.gate, &L.up}}) {
      if (all_members(group, [](const DevLinear& d) { return d.fp8; })) {
        join_fp8(group);
        continue;
      }
      if (!all_members(group, [](const DevLinear& d) { return !d.nvfp4 && !d.fp8; })) continue;
      FusedBf16 f;
      f.members = group;
      f.k = linears_.at(group[0]).k;
      for (const auto* m : group) f.n_total += linears_.at(m).n;
      f.w = DeviceBuffer(static_cast<size_t>(f.n_total * f.k) * 2);
      int64_t off = 0;
      for (const auto* m : group) {
        const DevLinear& d = linears_.at(m);
        f.offsets.push_back(off);
        CUDA_CHECK(cudaMemcpyAsync(f.w.as<bf16_raw>() + off * f.k, d.bf16.ptr, d.bf16.bytes,
                                   cudaMemcpyDeviceToDevice, stream_));
        off += d.n;
      }
      CUDA_CHECK(cudaStreamSynchronize(stream_));
      for (const auto* m : group) linears_.erase(m);
      fused_bf16_[group[0]] = std::move(f);
    }
  tokens_ = DeviceBuffer(1 << 20);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace fp4lab
