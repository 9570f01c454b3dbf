#include "cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/parallel.h"
#include "cpu/linear_ref.h"
#include "format/nvfp4.h"

namespace fp4lab {

void CpuOps::prepare(const ModelWeights& w) {
  if (w.synthetic && !w.materialized)
    throw Error(w.source +
                ": synthetic weights were not materialized on the host (the CPU backend needs them)");
  vocab_parallel_ = w.vocab_parallel();
  vocab_ = w.config.vocab_size;
}

CpuOps::State CpuOps::new_state(const ModelConfig& c, int max_tokens) const {
  State s;
  s.capacity = max_tokens;
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

CpuOps::Tensor CpuOps::rows(const Tensor& x, int64_t from, int64_t n) const {
  Tensor r{n, x.cols, {}};
  r.v.assign(x.v.begin() + from * x.cols, x.v.begin() + (from + n) * x.cols);
  return r;
}

void CpuOps::embed(std::span<const int> tokens, const std::vector<float>& table, int64_t first_id,
                   Tensor& x) const {
  const int64_t rows = static_cast<int64_t>(table.size()) / x.cols;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t r = tokens[i] - first_id;
    const auto dst = x.v.begin() + static_cast<ptrdiff_t>(i) * x.cols;
    if (r >= 0 && r < rows)
      std::copy_n(table.begin() + static_cast<ptrdiff_t>(r) * x.cols, x.cols, dst);
    else
      std::fill_n(dst, x.cols, 0.0f);
  }
}

void CpuOps::linear(const Tensor& x_in, const LinearWeight& w, Tensor& y) const {
  float act_scale = 0.0f;
  if (w4a4_ && w.nvfp4) {
    if (!(w.input_scale > 0.0f))
      throw Error("W4A4 emulation: an NVFP4 layer (" + std::to_string(w.n) + " x " + std::to_string(w.k) +
                  ") has no input_scale; quantize with --calib to write them");
    act_scale = w.input_scale;
  }
  if (calib_ && calib_->quantize_inputs)
    if (const auto a = calib_->act_scale.find(&w); a != calib_->act_scale.end()) act_scale = a->second;
  Tensor x_w4a4;
  if (act_scale > 0.0f) {
    x_w4a4.rows = x_in.rows;
    x_w4a4.cols = x_in.cols;
    x_w4a4.v.resize(x_in.v.size());
    nvfp4_fake_quant_ref(x_in.v, x_in.rows, x_in.cols, act_scale, x_w4a4.v);
  }
  const Tensor& x = act_scale > 0.0f ? x_w4a4 : x_in;
  if (calib_) {
    float& a = calib_->amax[&w];
    for (float v : x.v) a = std::max(a, std::fabs(v));
    const bool wanted = calib_->hessian_only.empty() || calib_->hessian_only.count(&w);
    if (calib_->record && wanted) {
      auto& in = calib_->inputs[&w];
      in.insert(in.end(), x.v.begin(), x.v.end());
    }
    if (calib_->reference && calib_->hessians && wanted) {
      const auto ref = calib_->reference->find(&w);
      size_t& at = calib_->cursor[&w];
      const int64_t k = w.k;
      if (ref == calib_->reference->end() || at + x.v.size() > ref->second.size())
        throw Error("internal: the calibration passes saw different inputs");
      std::vector<double>& c = calib_->cross[&w];
      c.resize(static_cast<size_t>(k * k), 0.0);
      const float* xr0 = ref->second.data() + at;
      parallel_parts(k, threads_, [&](int64_t i) {
        double* ci = c.data() + i * k;
        for (int64_t r = 0; r < x.rows; ++r) {
          const double fi = xr0[r * k + i];
          if (fi == 0.0) continue;
          const float* xq = x.v.data() + r * k;
          for (int64_t j = 0; j < k; ++j) ci[j] += fi * xq[j];
        }
      });
      at += x.v.size();
    }
    if (calib_->hessians && wanted) {
      std::vector<double>& h = calib_->hessian[&w];
      const int64_t k = w.k;
      h.resize(static_cast<size_t>(k * k), 0.0);
      // Lower triangle per row of x, rows of h spread over the threads; mirrored at the end.
      parallel_parts(k, threads_, [&](int64_t i) {
        double* hi = h.data() + i * k;
        for (int64_t r = 0; r < x.rows; ++r) {
          const float* xr = x.v.data() + r * k;
          const double xi = xr[i];
          if (xi == 0.0) continue;
          for (int64_t j = 0; j <= i; ++j) hi[j] += xi * xr[j];
        }
      });
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = i + 1; j < k; ++j) h[i * k + j] = h[j * k + i];
    }
  }
  // NVFP4 layers hold their exact dequantized values in w.w: the CPU computes W4A16 exactly.
  linear_f32_ref(x.v, x.rows, w.k, w.w, w.n, y.v, threads_);
  if (!w.bias.empty())
    for (int64_t i = 0; i < x.rows; ++i)
      for (int64_t j = 0; j < w.n; ++j)
        y.v[static_cast<size_t>(i * w.n + j)] += w.bias[static_cast<size_t>(j)];
}

void CpuOps::rope(Tensor& x, int heads, int hd, const State& s, const RopeConfig& r) {
  const int pos0 = s.pos;
  if (rope_dim_ != hd || rope_cfg_.theta != r.theta || rope_cfg_.type != r.type ||
      rope_cfg_.factor != r.factor) {
    inv_freq_ = cpu::rope_inv_freq(r, hd);
    rope_cfg_ = r;
    rope_dim_ = hd;
  }
  std::vector<int> pos(static_cast<size_t>(x.rows));
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = pos0 + static_cast<int>(i);
  cpu::rope_apply(x.v, heads, hd, pos, inv_freq_);
}

void CpuOps::attention(Tensor& q, const Tensor& k, const Tensor& v, State& s, size_t layer, int nh, int nkv,
                       int hd, const RopeConfig* rope, Tensor& out) {
  if (rope) {
    Tensor kr = k;
    this->rope(q, nh, hd, s, *rope);
    this->rope(kr, nkv, hd, s, *rope);
    s.k[layer].insert(s.k[layer].end(), kr.v.begin(), kr.v.end());
  } else {
    s.k[layer].insert(s.k[layer].end(), k.v.begin(), k.v.end());
  }
  s.v[layer].insert(s.v[layer].end(), v.v.begin(), v.v.end());
  cpu::attention(q.v, static_cast<int>(q.rows), nh, nkv, hd, s.k[layer], s.v[layer], s.pos, out.v);
}

void CpuOps::add(Tensor& x, const Tensor& y) const {
  for (size_t i = 0; i < x.v.size(); ++i) x.v[i] += y.v[i];
}

void CpuOps::columns(const Tensor& src, int64_t col0, Tensor& dst) const {
  for (int64_t r = 0; r < src.rows; ++r)
    std::copy_n(src.v.begin() + r * src.cols + col0, dst.cols, dst.v.begin() + r * dst.cols);
}

void CpuOps::softplus_dt(const Tensor& proj, int64_t col0, const std::vector<float>& bias, float lo, float hi,
                         Tensor& dt) const {
  for (int64_t r = 0; r < proj.rows; ++r)
    for (int64_t j = 0; j < dt.cols; ++j)
      dt.v[static_cast<size_t>(r * dt.cols + j)] = std::clamp(
          cpu::softplus(proj.v[static_cast<size_t>(r * proj.cols + col0 + j)] + bias[static_cast<size_t>(j)]),
          lo, hi);
}

void CpuOps::causal_conv1d_silu(Tensor& xbc, State& s, size_t layer, int kernel, const std::vector<float>& w,
                                const std::vector<float>& b) const {
  cpu::causal_conv1d_silu(xbc.v, static_cast<int>(xbc.rows), static_cast<int>(xbc.cols), kernel, w, b,
                          s.conv[layer]);
}

void CpuTpGroup::all_gather(int rank, const std::vector<float>& v, std::vector<float>& out) {
  slots_[static_cast<size_t>(rank)] = &v;
  bar_.arrive_and_wait();
  out.clear();
  for (const auto* s : slots_) {
    if (s->size() != v.size()) throw Error("tensor parallel: ranks gather tensors of different sizes");
    out.insert(out.end(), s->begin(), s->end());
  }
  bar_.arrive_and_wait();
}

void CpuTpGroup::all_reduce(int rank, std::vector<float>& v) {
  slots_[static_cast<size_t>(rank)] = &v;
  bar_.arrive_and_wait();  // every rank's partial is in place
  std::vector<float> sum(v.size(), 0.0f);
  for (const auto* s : slots_) {
    if (s->size() != v.size()) throw Error("tensor parallel: ranks reduce tensors of different sizes");
    for (size_t i = 0; i < v.size(); ++i) sum[i] += (*s)[i];
  }
  bar_.arrive_and_wait();  // every rank has read every partial; now each may overwrite its own
  v = std::move(sum);
}

void CpuOps::ssm_scan(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                      const std::vector<float>& a_log, const std::vector<float>& d, State& s, size_t layer,
                      cpu::SsmShape shape, int chunk, Tensor& y) const {
  std::vector<float> a(a_log.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = -std::exp(a_log[i]);
  const int t = static_cast<int>(x.rows);
  // Prefill runs the chunked SSD form, decode the one-step recurrence (the same function, as the tests
  // check).
  if (t > 1)
    cpu::ssm_scan_chunked(x.v, b.v, c.v, dt.v, a, d, t, shape, chunk, s.ssm[layer], y.v);
  else
    cpu::ssm_scan_sequential(x.v, b.v, c.v, dt.v, a, d, t, shape, s.ssm[layer], y.v);
}

}  // namespace fp4lab
