// CudaOps: the Mamba-2 mixer's ops (dt softplus, causal conv1d + SiLU, the selective scan in its prefill
// (chunked) and decode (step) forms, the gated RMSNorm, the fused decode step), single-sequence, segmented
// and batched.
#include "cuda/cuda_ops_impl.cuh"

namespace fp4lab {

using namespace dev;

void CudaOps::softplus_dt(const Tensor& proj, int64_t col0, const std::vector<float>& bias, float lo,
                          float hi, Tensor& dt) {
  OpTimer timer_(this, "mamba.dt");
  launch_kernel(softplus_dt_kernel, grid_1d(dt.rows * dt.cols, 256), 256, 0, stream_,
                reinterpret_cast<const bf16*>(proj.data), proj.rows, proj.cols, col0, dev_f32(bias), lo, hi,
                reinterpret_cast<bf16*>(dt.data), dt.cols);
}

void CudaOps::causal_conv1d_silu(Tensor& xbc, State& s, size_t layer, int kernel, const std::vector<float>& w,
                                 const std::vector<float>& b) {
  OpTimer timer_(this, "mamba.conv1d");
  if (kernel > 8)
    throw Error("conv kernel " + std::to_string(kernel) + " > 8 is not supported by the CUDA backend");
  const int ch = static_cast<int>(xbc.cols);
  if (xbc.rows > 1) {  // prefill: every (token, channel) at once, out of place
    Tensor out = alloc(xbc.rows, xbc.cols);
    causal_conv1d_silu_prefill(xbc.data, static_cast<int>(xbc.rows), ch, kernel, dev_f32(w),
                               b.empty() ? nullptr : dev_f32(b), s.conv[layer].as<float>(), out.data,
                               stream_);
    xbc.data = out.data;
    return;
  }
  launch_kernel(conv1d_silu_kernel, static_cast<unsigned>((ch + 127) / 128), 128, 0, stream_,
                reinterpret_cast<const bf16*>(xbc.data), int64_t{ch}, reinterpret_cast<bf16*>(xbc.data),
                int64_t{ch}, static_cast<int>(xbc.rows), ch, kernel, dev_f32(w),
                b.empty() ? nullptr : dev_f32(b), s.conv[layer].as<float>(), nullptr);
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
  if (sh.state > 32 * kScanMaxPerLane)
    throw Error("SSM state size " + std::to_string(sh.state) + " > " + std::to_string(32 * kScanMaxPerLane) +
                " is not supported by the CUDA backend");
  const int rows = sh.heads * sh.head_dim;
  launch_kernel(ssm_scan_kernel, static_cast<unsigned>((rows + kScanWarps - 1) / kScanWarps), kScanWarps * 32,
                0, stream_, reinterpret_cast<const bf16*>(x.data), reinterpret_cast<const bf16*>(b.data),
                reinterpret_cast<const bf16*>(c.data), reinterpret_cast<const bf16*>(dt.data), dev_f32(a_log),
                dev_f32(d), static_cast<int>(x.rows), sh.heads, sh.head_dim, sh.state, sh.groups,
                s.ssm[layer].as<float>(), reinterpret_cast<bf16*>(y.data));
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
  if (kernel > 8)
    throw Error("conv kernel " + std::to_string(kernel) + " > 8 is not supported by the CUDA backend");
  if (src.f32 || xbc.f32 || src.rows != xbc.rows || col0 + xbc.cols > src.cols)
    throw Error("internal: conv1d_silu_batch reads BF16 columns of its source into a tensor of as many rows");
  const int ch = static_cast<int>(xbc.cols);
  launch_kernel(
      conv1d_silu_kernel, dim3(static_cast<unsigned>((ch + 127) / 128), static_cast<unsigned>(xbc.rows)), 128,
      0, stream_, reinterpret_cast<const bf16*>(src.data + col0), src.cols, reinterpret_cast<bf16*>(xbc.data),
      int64_t{ch}, 1, ch, kernel, dev_f32(w), b.empty() ? nullptr : dev_f32(b), nullptr,
      reinterpret_cast<float* const*>(batch_table(layer, 0)));
}

void CudaOps::ssm_step_batch(const Tensor& xbc, const Tensor& dt, const std::vector<float>& a_log,
                             const std::vector<float>& d, size_t layer, cpu::SsmShape sh, Tensor& y) {
  OpTimer timer_(this, "mamba.ssm_scan");
  const int rows = sh.heads * sh.head_dim;
  const int64_t gn = int64_t{sh.groups} * sh.state;
  if (xbc.cols != rows + 2 * gn || dt.cols != sh.heads || y.cols != rows || xbc.rows != y.rows)
    throw Error("internal: ssm_step_batch takes the conv output x | B | C of the step's rows");
  const bf16* base = reinterpret_cast<const bf16*>(xbc.data);
  launch_kernel(ssm_step_batch_kernel,
                dim3(static_cast<unsigned>((rows + kSsmStepWarps - 1) / kSsmStepWarps),
                     static_cast<unsigned>(xbc.rows)),
                kSsmStepWarps * 32, 0, stream_, base, base + rows, base + rows + gn, xbc.cols,
                reinterpret_cast<const bf16*>(dt.data), dev_f32(a_log), dev_f32(d), sh.heads, sh.head_dim,
                sh.state, sh.groups, reinterpret_cast<float* const*>(batch_table(layer, 1)),
                reinterpret_cast<bf16*>(y.data));
}

void CudaOps::gated_rmsnorm(Tensor& y, const Tensor& z_src, int64_t z_col, const std::vector<float>& w,
                            int groups, float eps) {
  OpTimer timer_(this, "mamba.gated_norm");
  if (z_src.f32 || z_src.rows != y.rows || z_col + y.cols > z_src.cols)
    throw Error("internal: gated_rmsnorm reads z from BF16 columns of a tensor of y's rows");
  const bf16_raw* z = z_src.data + z_col;
  // 16-byte accesses where the group, the rows and z's columns allow them (Nemotron-H: 1280-wide groups).
  if (gated_rmsnorm8_fits(y.cols, groups, z_src.cols, y.data, z)) {
    launch_kernel(gated_rmsnorm8_kernel, static_cast<unsigned>(y.rows * groups),
                  gated_rmsnorm8_threads(y.cols, groups), 0, stream_, reinterpret_cast<bf16*>(y.data),
                  reinterpret_cast<const bf16*>(z), z_src.cols, dev_f32(w), y.cols, groups, eps);
    return;
  }
  launch_kernel(gated_rmsnorm_kernel, static_cast<unsigned>(y.rows * groups), 256, 0, stream_,
                reinterpret_cast<bf16*>(y.data), reinterpret_cast<const bf16*>(z), z_src.cols, dev_f32(w),
                y.cols, groups, eps);
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
    a.conv_tab = reinterpret_cast<float* const*>(batch_table(layer, 0));
    a.ssm_tab = reinterpret_cast<float* const*>(batch_table(layer, 1));
  }
  fp4lab::mamba_decode_step(a, stream_);
  return true;
}

}  // namespace fp4lab
