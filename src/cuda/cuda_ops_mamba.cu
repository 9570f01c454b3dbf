// CudaOps: the Mamba-2 mixer's ops (dt softplus, causal conv1d + SiLU, the selective scan in its prefill
// (chunked) and decode (step) forms, the gated RMSNorm, the fused decode step), single-sequence, segmented
// and batched.
#include "cuda/cuda_ops_impl.cuh"

namespace fp4lab {

void CudaOps::softplus_dt(const Tensor& proj, int64_t col0, const std::vector<float>& bias, float lo,
                          float hi, Tensor& dt) {
  OpTimer timer_(this, "mamba.dt");
  launch_softplus_dt(proj.data, proj.rows, proj.cols, col0, dev_f32(bias), lo, hi, dt.data, dt.cols, stream_);
}

void CudaOps::causal_conv1d_silu(Tensor& xbc, State& s, size_t layer, int kernel, const std::vector<float>& w,
                                 const std::vector<float>& b) {
  OpTimer timer_(this, "mamba.conv1d");
  const int ch = static_cast<int>(xbc.cols);
  if (xbc.rows > 1) {  // prefill: every (token, channel) at once, out of place
    Tensor out = alloc(xbc.rows, xbc.cols);
    causal_conv1d_silu_prefill(xbc.data, static_cast<int>(xbc.rows), ch, kernel, dev_f32(w),
                               b.empty() ? nullptr : dev_f32(b), s.conv[layer].as<float>(), out.data,
                               stream_);
    xbc.data = out.data;
    return;
  }
  Conv1dArgs a;
  a.in = xbc.data;
  a.in_ld = ch;
  a.out = xbc.data;
  a.out_ld = ch;
  a.tokens = static_cast<int>(xbc.rows);
  a.channels = ch;
  a.kernel = kernel;
  a.w = dev_f32(w);
  a.b = b.empty() ? nullptr : dev_f32(b);
  a.state_one = s.conv[layer].as<float>();
  launch_conv1d_silu(a, stream_);
}

void CudaOps::conv1d_silu_segments(Tensor& xbc, std::span<State* const> states, std::span<const int> rows,
                                   size_t layer, int kernel, const std::vector<float>& w,
                                   const std::vector<float>& b) {
  OpTimer timer_(this, "mamba.conv1d");
  std::vector<ConvSeq> seqs;
  int64_t row0 = 0;
  for (size_t i = 0; i < states.size(); ++i) {
    seqs.push_back({row0, rows[i], states[i]->conv[layer].as<float>()});
    row0 += rows[i];
  }
  Tensor out = alloc(xbc.rows, xbc.cols);
  causal_conv1d_silu_prefill_batch(xbc.data, seqs, static_cast<int>(xbc.cols), kernel, dev_f32(w),
                                   b.empty() ? nullptr : dev_f32(b), out.data, stream_);
  xbc.data = out.data;
}

void CudaOps::ssm_scan(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                       const std::vector<float>& a_log, const std::vector<float>& d, State& s, size_t layer,
                       cpu::SsmShape sh, int chunk, Tensor& y) {
  OpTimer timer_(this, "mamba.ssm_scan");
  // Prompts run the chunked SSD form; a few tokens (decode) the sequential recurrence.
  if (x.rows > 16 && ssd_chunked_supported(sh, chunk)) {
    const int t = static_cast<int>(x.rows);
    ensure_device(ssd_ws_, ssd_workspace_bytes(t, sh, chunk), "the chunked-scan workspace");
    ssd_chunked_scan(x.data, b.data, c.data, dt.data, dev_f32(a_log), dev_f32(d), t, sh, chunk,
                     s.ssm[layer].as<float>(), y.data, ssd_ws_.ptr, stream_);
    return;
  }
  SsmScanArgs a;
  a.x = x.data, a.b = b.data, a.c = c.data, a.dt = dt.data;
  a.a_log = dev_f32(a_log);
  a.d = dev_f32(d);
  a.t = static_cast<int>(x.rows);
  a.shape = sh;
  a.state = s.ssm[layer].as<float>();
  a.y = y.data;
  launch_ssm_scan(a, stream_);
}

bool CudaOps::ssm_scan_segments(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                                const std::vector<float>& a_log, const std::vector<float>& d,
                                std::span<State* const> states, std::span<const int> rows, size_t layer,
                                cpu::SsmShape sh, int chunk, Tensor& y) {
  if (!ssd_chunked_supported(sh, chunk)) return false;  // the runner loops over the prompts
  OpTimer timer_(this, "mamba.ssm_scan");
  const SsdBatchPlan plan = plan_ssd_batch(rows, chunk, ssd_group_chunks(chunk));
  int64_t most = 0;
  for (const auto& g : plan.groups) most = std::max<int64_t>(most, g.chunk_end - g.chunk_begin);
  ensure_device(ssd_ws_, ssd_workspace_bytes_chunks(most, sh, chunk), "the chunked-scan workspace");
  std::vector<float*> st;
  for (State* s : states) st.push_back(s->ssm[layer].as<float>());
  ssd_chunked_scan_batch(x.data, b.data, c.data, dt.data, dev_f32(a_log), dev_f32(d), plan, st, sh, chunk,
                         y.data, ssd_ws_.ptr, stream_);
  return true;
}

void CudaOps::conv1d_silu_batch(const Tensor& src, int64_t col0, size_t layer, int kernel,
                                const std::vector<float>& w, const std::vector<float>& b, Tensor& xbc) {
  OpTimer timer_(this, "mamba.conv1d");
  if (src.f32 || xbc.f32 || src.rows != xbc.rows || col0 + xbc.cols > src.cols)
    throw Error("internal: conv1d_silu_batch reads BF16 columns of its source into a tensor of as many rows");
  Conv1dArgs a;
  a.in = src.data + col0;
  a.in_ld = src.cols;
  a.out = xbc.data;
  a.out_ld = xbc.cols;
  a.seqs = static_cast<int>(xbc.rows);
  a.channels = static_cast<int>(xbc.cols);
  a.kernel = kernel;
  a.w = dev_f32(w);
  a.b = b.empty() ? nullptr : dev_f32(b);
  a.state_tab = reinterpret_cast<float* const*>(batch_table(layer, BatchTable::Conv));
  launch_conv1d_silu(a, stream_);
}

void CudaOps::ssm_step_batch(const Tensor& xbc, const Tensor& dt, const std::vector<float>& a_log,
                             const std::vector<float>& d, size_t layer, cpu::SsmShape sh, Tensor& y) {
  OpTimer timer_(this, "mamba.ssm_scan");
  const int rows = sh.heads * sh.head_dim;
  const int64_t gn = int64_t{sh.groups} * sh.state;
  if (xbc.cols != rows + 2 * gn || dt.cols != sh.heads || y.cols != rows || xbc.rows != y.rows)
    throw Error("internal: ssm_step_batch takes the conv output x | B | C of the step's rows");
  SsmStepBatchArgs a;
  a.xbc = xbc.data;
  a.xbc_ld = xbc.cols;
  a.seqs = static_cast<int>(xbc.rows);
  a.dt = dt.data;
  a.a_log = dev_f32(a_log);
  a.d = dev_f32(d);
  a.shape = sh;
  a.state_tab = reinterpret_cast<float* const*>(batch_table(layer, BatchTable::Ssm));
  a.y = y.data;
  launch_ssm_step_batch(a, stream_);
}

void CudaOps::gated_rmsnorm(Tensor& y, const Tensor& z_src, int64_t z_col, const std::vector<float>& w,
                            int groups, float eps) {
  OpTimer timer_(this, "mamba.gated_norm");
  if (z_src.f32 || z_src.rows != y.rows || z_col + y.cols > z_src.cols)
    throw Error("internal: gated_rmsnorm reads z from BF16 columns of a tensor of y's rows");
  launch_gated_rmsnorm(y.data, y.rows, y.cols, z_src.data + z_col, z_src.cols, dev_f32(w), groups, eps,
                       stream_);
}

bool CudaOps::mamba_decode_step(const Tensor& proj, State* one, size_t layer, const LayerWeights& L,
                                const ModelConfig& c, Tensor& y) {
  if (!fused_mamba_) return false;
  if (proj.f32 || y.f32 || proj.rows != y.rows || proj.cols != c.mamba_in_proj_dim() ||
      y.cols != c.mamba_d_inner() || (one && proj.rows != 1) ||
      (!one && proj.rows != static_cast<int64_t>(batch_size_)))
    throw Error("internal: mamba_decode_step takes one in_proj row per sequence of the step");
  MambaStepArgs a;
  a.proj = proj.data;
  a.proj_ld = proj.cols;
  a.rows = static_cast<int>(proj.rows);
  a.kernel = c.conv_kernel;
  a.dt_lo = c.time_step_limit_min;
  a.dt_hi = c.time_step_limit_max;
  a.eps = c.norm_eps;
  a.shape = {c.mamba_num_heads, c.mamba_head_dim, c.ssm_state_size, c.n_groups};
  a.y = y.data;
  if (!mamba_decode_step_supported(a)) return false;
  OpTimer timer_(this, "mamba.step");
  a.conv_w = dev_f32(L.conv_w);
  a.conv_b = L.conv_b.empty() ? nullptr : dev_f32(L.conv_b);
  a.dt_bias = dev_f32(L.dt_bias);
  a.a_log = dev_f32(L.a_log);
  a.d = dev_f32(L.d);
  a.norm = dev_f32(L.gated_norm);
  if (one) {
    a.conv_one = one->conv[layer].as<float>();
    a.ssm_one = one->ssm[layer].as<float>();
  } else {
    a.conv_tab = reinterpret_cast<float* const*>(batch_table(layer, BatchTable::Conv));
    a.ssm_tab = reinterpret_cast<float* const*>(batch_table(layer, BatchTable::Ssm));
  }
  fp4lab::mamba_decode_step(a, stream_);
  return true;
}

}  // namespace fp4lab
