// The Mamba-2 kernels against their CPU reference twins on random data: the chunked SSD scan (one sequence
// and batched), the prefill conv1d, the gated RMSNorm and the two-kernel decode step.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <tuple>
#include <utility>

#include "common/hd.h"
#include "cpu/reference.h"
#include "cuda/cuda_ops.h"
#include "cuda/mamba_decode.h"
#include "cuda/mamba_prefill.h"
#include "gpu_util.h"

using namespace fp4lab;
using fp4lab::test::abs_errors;
using fp4lab::test::random_bf16;
using fp4lab::test::to_device;
using fp4lab::test::to_host;

// Inputs of a scan over t tokens as Mamba-2 sees them, BF16 bits and the floats the reference sees: x, B, C;
// dt after softplus in (0.001, 0.1]; A = -exp(a_log) in [-16, -1] as Mamba-2 initializes it; D in [0, 1).
struct ScanInputs {
  std::pair<std::vector<uint16_t>, std::vector<float>> x, b, c, dt;
  std::vector<float> a_log, a, d;
};
ScanInputs random_scan_inputs(const cpu::SsmShape& s, int t, std::mt19937& rng) {
  const size_t xw = static_cast<size_t>(s.heads) * s.head_dim, bw = static_cast<size_t>(s.groups) * s.state;
  ScanInputs in;
  in.x = random_bf16(t * xw, 1.0f, rng);
  in.b = random_bf16(t * bw, 0.5f, rng);
  in.c = random_bf16(t * bw, 0.5f, rng);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  auto& [dtr, dtf] = in.dt;
  dtr.resize(static_cast<size_t>(t) * s.heads);
  dtf.resize(dtr.size());
  for (size_t i = 0; i < dtr.size(); ++i) {
    dtr[i] = bf16_from_f32_rne(0.001f + 0.099f * u(rng));
    dtf[i] = bf16_to_f32(dtr[i]);
  }
  in.a_log.resize(static_cast<size_t>(s.heads));
  in.a.resize(in.a_log.size());
  in.d.resize(in.a_log.size());
  for (size_t h = 0; h < in.a_log.size(); ++h) {
    in.a_log[h] = std::log(1.0f + 15.0f * u(rng));
    in.a[h] = -std::exp(in.a_log[h]);
    in.d[h] = u(rng);
  }
  return in;
}

// A scan's largest errors against its reference: output y (BF16) and final state(s), with the largest
// reference magnitudes they are judged against: {y err, y max, state err, state max}.
std::array<double, 4> scan_errors(const std::vector<uint16_t>& y, const std::vector<float>& ref,
                                  const std::vector<float>& st, const std::vector<float>& ref_st) {
  std::array<double, 4> e{};
  for (size_t i = 0; i < ref.size(); ++i) {
    e[1] = std::max(e[1], double(std::fabs(ref[i])));
    e[0] = std::max(e[0], double(std::fabs(bf16_to_f32(y[i]) - ref[i])));
  }
  for (size_t i = 0; i < st.size(); ++i) {
    e[3] = std::max(e[3], double(std::fabs(ref_st[i])));
    e[2] = std::max(e[2], double(std::fabs(st[i] - ref_st[i])));
  }
  return e;
}

// The chunked SSD scan on the GPU against the CPU's token-by-token recurrence, from a non-zero state, over
// sequences longer than one segment (2048 tokens) and chunk sizes that leave a partial last chunk; the state
// after the last token must agree too.
TEST(GpuKernels, ChunkedSsdScanMatchesSequentialRecurrence) {
  REQUIRE_GPU();
  std::mt19937 rng(3);
  struct Case {
    cpu::SsmShape s;
    int chunk, t;
  };
  // The first three take the FP32 chunk_state, the last two the tensor-core one (state size 128).
  for (const Case cs :
       {Case{{8, 16, 32, 2}, 16, 2100}, Case{{8, 16, 32, 2}, 64, 2500}, Case{{4, 24, 64, 1}, 128, 700},
        Case{{8, 64, 128, 2}, 64, 900}, Case{{16, 80, 128, 2}, 128, 600}}) {
    const cpu::SsmShape& s = cs.s;
    const int t = cs.t;
    ASSERT_TRUE(ssd_chunked_supported(s, cs.chunk));
    const size_t xw = static_cast<size_t>(s.heads) * s.head_dim;
    const ScanInputs in = random_scan_inputs(s, t, rng);
    const auto& [xr, xf] = in.x;
    const auto& [br, bf] = in.b;
    const auto& [cr, cf] = in.c;
    const auto& [dtr, dtf] = in.dt;
    const std::vector<float>&a_log = in.a_log, &a = in.a, &dvec = in.d;
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> state(static_cast<size_t>(s.heads) * s.head_dim * s.state);
    for (auto& v : state) v = 0.3f * (u(rng) - 0.5f);
    std::vector<float> ref_state = state, ref(t * xw);
    cpu::ssm_scan_sequential(xf, bf, cf, dtf, a, dvec, t, s, ref_state, ref);

    DeviceBuffer dx = to_device(xr), db = to_device(br), dc = to_device(cr), ddt = to_device(dtr),
                 dal = to_device(a_log), dd = to_device(dvec), dst = to_device(state), dy(t * xw * 2),
                 ws(ssd_workspace_bytes(t, s, cs.chunk));
    ssd_chunked_scan(dx.as<bf16_raw>(), db.as<bf16_raw>(), dc.as<bf16_raw>(), ddt.as<bf16_raw>(),
                     dal.as<float>(), dd.as<float>(), t, s, cs.chunk, dst.as<float>(), dy.as<bf16_raw>(),
                     ws.ptr, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto y = to_host<uint16_t>(dy, t * xw);
    const auto st = to_host<float>(dst, state.size());
    const auto [yerr, ymax, serr, smax] = scan_errors(y, ref, st, ref_state);
    // y is BF16 (relative rounding 2^-8); the state stays FP32 (sums in another order).
    EXPECT_LE(yerr, 0.01 * ymax) << "chunk " << cs.chunk << " t " << t << " head_dim " << s.head_dim;
    EXPECT_LE(serr, 1e-4 * smax + 1e-6) << "chunk " << cs.chunk << " t " << t;
    std::printf(
        "chunked scan chunk %d, %d tokens, %dx%dx%d: max |y err| %.2e of %.2f, max |state err| %.2e of "
        "%.2f\n",
        cs.chunk, t, s.heads, s.head_dim, s.state, yerr, ymax, serr, smax);
  }
}

// The batched-prefill plan: chunks in sequence order, launch groups of at most group_chunks chunks, a
// sequence cut by a group boundary listed in both groups with its chunks split between them. Host code only.
TEST(SsdBatchPlan, GroupsChunksAndSplitsSequencesAtGroupBoundaries) {
  const std::vector<int> rows{5, 40, 1, 16};  // chunk 16: 1 + 3 + 1 + 1 chunks
  const SsdBatchPlan p = plan_ssd_batch(rows, 16, 3);
  ASSERT_EQ(p.chunks.size(), 6u);
  const std::vector<std::pair<int, int>> want{{0, 5}, {5, 16}, {21, 16}, {37, 8}, {45, 1}, {46, 16}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(p.chunks[i].x, want[i].first) << i;
    EXPECT_EQ(p.chunks[i].y, want[i].second) << i;
  }
  ASSERT_EQ(p.groups.size(), 2u);
  EXPECT_EQ(p.groups[0].chunk_end - p.groups[0].chunk_begin, 3);
  EXPECT_EQ(p.groups[1].chunk_end - p.groups[1].chunk_begin, 3);
  // Group 0: sequence 0 (chunk 0), sequence 1 (chunks 1, 2); group 1: sequence 1 again (its last chunk),
  // then 2 and 3. Chunk ranges are relative to the group.
  ASSERT_EQ(p.seq_index, (std::vector<int>{0, 1, 1, 2, 3}));
  const std::vector<std::pair<int, int>> ranges{{0, 1}, {1, 3}, {0, 1}, {1, 2}, {2, 3}};
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(p.seqs[i].x, ranges[i].first) << i;
    EXPECT_EQ(p.seqs[i].y, ranges[i].second) << i;
  }
  EXPECT_THROW(plan_ssd_batch(rows, 16, kSsdMaxGroupChunks + 1), Error);
}

// The batched-prefill scan (several prompts' rows in one launch group, each with its own state) against the
// CPU's recurrence per prompt: prompts of 1 to 300 tokens, groups small enough that prompts are cut by group
// boundaries, non-zero starting states; outputs and every final state must agree.
TEST(GpuKernels, BatchedChunkedScanMatchesPerSequenceRecurrence) {
  REQUIRE_GPU();
  std::mt19937 rng(11);
  const cpu::SsmShape s{8, 16, 32, 2};
  for (const int chunk : {16, 64}) {
    const std::vector<int> rows{37, 1, 300, 16, 5, 129};
    const int t = std::accumulate(rows.begin(), rows.end(), 0);
    const size_t xw = static_cast<size_t>(s.heads) * s.head_dim, bw = static_cast<size_t>(s.groups) * s.state,
                 sn = xw * s.state;
    const ScanInputs in = random_scan_inputs(s, t, rng);
    const auto& [xr, xf] = in.x;
    const auto& [br, bf] = in.b;
    const auto& [cr, cf] = in.c;
    const auto& [dtr, dtf] = in.dt;
    const std::vector<float>&a_log = in.a_log, &a = in.a, &dvec = in.d;
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> states(rows.size() * sn);
    for (auto& v : states) v = 0.3f * (u(rng) - 0.5f);
    // The reference: each prompt on its own rows, from its own state.
    std::vector<float> ref(t * xw), ref_states = states;
    size_t row0 = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t r = static_cast<size_t>(rows[i]);
      auto sub = [&](const std::vector<float>& v, size_t w) {
        return std::vector<float>(v.begin() + row0 * w, v.begin() + (row0 + r) * w);
      };
      std::vector<float> st(ref_states.begin() + i * sn, ref_states.begin() + (i + 1) * sn), y(r * xw);
      cpu::ssm_scan_sequential(sub(xf, xw), sub(bf, bw), sub(cf, bw), sub(dtf, s.heads), a, dvec, rows[i], s,
                               st, y);
      std::copy(y.begin(), y.end(), ref.begin() + row0 * xw);
      std::copy(st.begin(), st.end(), ref_states.begin() + i * sn);
      row0 += r;
    }
    const int group = 3;  // chunks per launch group: the 300-token prompt spans several groups
    const SsdBatchPlan plan = plan_ssd_batch(rows, chunk, group);
    ASSERT_GT(plan.groups.size(), 2u);
    DeviceBuffer dx = to_device(xr), db = to_device(br), dc = to_device(cr), ddt = to_device(dtr),
                 dal = to_device(a_log), dd = to_device(dvec), dst = to_device(states), dy(t * xw * 2),
                 ws(ssd_workspace_bytes_chunks(group, s, chunk));
    std::vector<float*> sp;
    for (size_t i = 0; i < rows.size(); ++i) sp.push_back(dst.as<float>() + i * sn);
    ssd_chunked_scan_batch(dx.as<bf16_raw>(), db.as<bf16_raw>(), dc.as<bf16_raw>(), ddt.as<bf16_raw>(),
                           dal.as<float>(), dd.as<float>(), plan, sp, s, chunk, dy.as<bf16_raw>(), ws.ptr,
                           nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto y = to_host<uint16_t>(dy, t * xw);
    const auto st = to_host<float>(dst, states.size());
    const auto [yerr, ymax, serr, smax] = scan_errors(y, ref, st, ref_states);
    EXPECT_LE(yerr, 0.01 * ymax) << "chunk " << chunk;
    EXPECT_LE(serr, 1e-4 * smax + 1e-6) << "chunk " << chunk;
    std::printf(
        "batched chunked scan, chunk %d, %zu prompts in %zu launch groups: max |y err| %.2e of %.2f, "
        "max |state err| %.2e of %.2f\n",
        chunk, rows.size(), plan.groups.size(), yerr, ymax, serr, smax);
  }
}

// The parallel prefill conv1d against the CPU's rolling-window one, including a prompt shorter than the
// window (the state shifts instead of being replaced).
TEST(GpuKernels, Conv1dPrefillMatchesCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(9);
  const int ch = 200, kernel = 4, hist = kernel - 1;
  for (int t : {300, 2}) {
    const auto [xr, xf] = random_bf16(static_cast<size_t>(t) * ch, 1.0f, rng);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    std::vector<float> w(static_cast<size_t>(ch) * kernel), bias(ch), state(static_cast<size_t>(ch) * hist);
    for (auto* v : {&w, &bias, &state})
      for (auto& e : *v) e = nd(rng);
    std::vector<float> ref = xf, ref_state = state;
    cpu::causal_conv1d_silu(ref, t, ch, kernel, w, bias, ref_state);
    DeviceBuffer din = to_device(xr), dw = to_device(w), dbias = to_device(bias), dst = to_device(state),
                 dout(xr.size() * 2);
    causal_conv1d_silu_prefill(din.as<bf16_raw>(), t, ch, kernel, dw.as<float>(), dbias.as<float>(),
                               dst.as<float>(), dout.as<bf16_raw>(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto out = to_host<uint16_t>(dout, xr.size());
    const auto st = to_host<float>(dst, state.size());
    double err = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      err = std::max(err, double(std::fabs(bf16_to_f32(out[i]) - ref[i])));
    EXPECT_LT(err, 0.02) << "t " << t;
    EXPECT_EQ(st, ref_state) << "t " << t;  // the state is a copy of inputs: exact
  }
}

// The batched-prefill form: 70 sequences (two launches) of 1 to 300 rows, each with its own state (rows
// shorter than the window shift it), for kernel sizes 4 and 2, against the CPU per sequence.
TEST(GpuKernels, BatchedConv1dPrefillMatchesCpuPerSequence) {
  REQUIRE_GPU();
  std::mt19937 rng(21);
  const int ch = 200, n = 70;
  for (const int kernel : {4, 2}) {
    const int hist = kernel - 1;
    std::uniform_int_distribution<int> rows_d(1, 300);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    std::vector<float> w(static_cast<size_t>(ch) * kernel), bias(ch);
    for (auto* v : {&w, &bias})
      for (auto& e : *v) e = nd(rng);
    std::vector<int> rows;
    for (int i = 0; i < n; ++i) rows.push_back(i < 3 ? i + 1 : rows_d(rng));  // 1, 2, 3: inside the window
    const int t = std::accumulate(rows.begin(), rows.end(), 0);
    const auto [xr, xf] = random_bf16(static_cast<size_t>(t) * ch, 1.0f, rng);
    std::vector<float> states(static_cast<size_t>(n) * ch * hist);
    for (auto& e : states) e = nd(rng);
    std::vector<float> ref(xf.size()), ref_states = states;
    std::vector<ConvSeq> seqs;
    DeviceBuffer din = to_device(xr), dw = to_device(w), dbias = to_device(bias), dst = to_device(states),
                 dout(xr.size() * 2);
    size_t row0 = 0;
    for (int i = 0; i < n; ++i) {
      const size_t r = static_cast<size_t>(rows[static_cast<size_t>(i)]),
                   so = static_cast<size_t>(i) * ch * hist;
      std::vector<float> x(xf.begin() + row0 * ch, xf.begin() + (row0 + r) * ch);
      std::vector<float> st(ref_states.begin() + so, ref_states.begin() + so + ch * hist);
      cpu::causal_conv1d_silu(x, static_cast<int>(r), ch, kernel, w, bias, st);
      std::copy(x.begin(), x.end(), ref.begin() + row0 * ch);
      std::copy(st.begin(), st.end(), ref_states.begin() + so);
      seqs.push_back({static_cast<int64_t>(row0), static_cast<int>(r), dst.as<float>() + so});
      row0 += r;
    }
    causal_conv1d_silu_prefill_batch(din.as<bf16_raw>(), seqs, ch, kernel, dw.as<float>(), dbias.as<float>(),
                                     dout.as<bf16_raw>(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto out = to_host<uint16_t>(dout, xr.size());
    double err = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      err = std::max(err, double(std::fabs(bf16_to_f32(out[i]) - ref[i])));
    EXPECT_LT(err, 0.02) << "kernel " << kernel;
    EXPECT_EQ(to_host<float>(dst, states.size()), ref_states) << "kernel " << kernel;
  }
}

// The gated RMSNorm of the Mamba mixer against cpu::gated_rmsnorm: Nemotron-H's 8 groups of 1280 (the
// 16-byte form), and groups of 12 (the strided form), z read in place from wider rows.
TEST(GpuKernels, GatedRmsNormMatchesCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(41);
  for (const auto& [width, groups] : {std::pair<int64_t, int>{10240, 8}, {48, 4}}) {
    const int64_t rows = 5, zcols = width + 24;
    const auto [yraw, yf] = random_bf16(static_cast<size_t>(rows * width), 1.0f, rng);
    const auto [zraw, zf] = random_bf16(static_cast<size_t>(rows * zcols), 1.0f, rng);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> w(static_cast<size_t>(width));
    for (auto& v : w) v = 1.0f + 0.1f * d(rng);
    CudaOps ops;
    ops.begin_forward();
    CudaOps::Tensor y = ops.alloc(rows, width), z = ops.alloc(rows, zcols);
    CUDA_CHECK(cudaMemcpy(y.data, yraw.data(), yraw.size() * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(z.data, zraw.data(), zraw.size() * 2, cudaMemcpyHostToDevice));
    ops.gated_rmsnorm(y, z, 8, w, groups, 1e-5f);  // z: columns 8 .. 8 + width of each row
    ops.synchronize();
    std::vector<uint16_t> got(yraw.size());
    CUDA_CHECK(cudaMemcpy(got.data(), y.data, got.size() * 2, cudaMemcpyDeviceToHost));
    double err = 0;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> yr(yf.begin() + r * width, yf.begin() + (r + 1) * width),
          zr(zf.begin() + r * zcols + 8, zf.begin() + r * zcols + 8 + width);
      cpu::gated_rmsnorm(yr, zr, w, groups, 1e-5f);
      for (int64_t i = 0; i < width; ++i)
        err = std::max(err, std::fabs(bf16_to_f32(got[static_cast<size_t>(r * width + i)]) -
                                      yr[static_cast<size_t>(i)]) /
                                (1.0 + std::fabs(yr[static_cast<size_t>(i)])));
    }
    EXPECT_LT(err, 1e-2) << "width " << width << ", " << groups << " groups";  // BF16 rounding of y
  }
}

// The two-kernel Mamba decode step against its CPU twin, cpu::mamba_decode_step: y and both states, for one
// sequence (its own state pointers) and for a batch (pointer tables); Nemotron-H's shape, tiny-nemotron-h's
// (state 16: half the lanes idle), and one with conv kernel 2 and a clamped dt. Then the same step through
// the four separate kernels must give the same bits.
TEST(GpuKernels, MambaDecodeStepMatchesCpuAndSeparateKernels) {
  REQUIRE_GPU();
  struct Case {
    cpu::SsmShape sh;
    int kernel, rows;
    float dt_hi;
  };
  const Case cases[] = {{{128, 80, 128, 8}, 4, 1, 1e9f},
                        {{128, 80, 128, 8}, 4, 3, 1e9f},
                        {{8, 16, 16, 2}, 4, 2, 1e9f},
                        {{16, 64, 64, 4}, 2, 2, 0.05f}};
  std::mt19937 rng(77);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto normal = [&](size_t n, float sd, float mean = 0.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = mean + sd * nd(rng);
    return v;
  };
  for (const Case& cs : cases) {
    const cpu::SsmShape& sh = cs.sh;
    const size_t di = static_cast<size_t>(sh.heads) * sh.head_dim,
                 gn = static_cast<size_t>(sh.groups) * sh.state, cd = di + 2 * gn, pc = di + cd + sh.heads,
                 hist = static_cast<size_t>(cs.kernel - 1);
    const auto [praw, pf] = random_bf16(cs.rows * pc, 1.0f, rng);
    const std::vector<float> conv_w = normal(cd * cs.kernel, 0.5f), conv_b = normal(cd, 0.2f),
                             dt_bias = normal(sh.heads, 0.5f, -2.0f), d = normal(sh.heads, 1.0f),
                             norm = normal(di, 0.1f, 1.0f);
    std::vector<float> a_log(static_cast<size_t>(sh.heads));
    for (auto& v : a_log) v = std::log(1.0f + 15.0f * std::fabs(nd(rng)));
    cpu::MambaStepWeights mw{conv_w, conv_b, dt_bias, a_log, d, norm, cs.kernel, 0.0f, cs.dt_hi, 1e-5f, sh};
    std::vector<std::vector<float>> conv0, ssm0, conv_ref, ssm_ref, y_ref;
    std::vector<DeviceBuffer> conv_dev, ssm_dev;
    std::vector<float*> conv_ptr, ssm_ptr;
    for (int r = 0; r < cs.rows; ++r) {
      conv0.push_back(normal(cd * hist, 1.0f));
      ssm0.push_back(normal(di * sh.state, 0.5f));
      conv_ref.push_back(conv0.back());
      ssm_ref.push_back(ssm0.back());
      y_ref.emplace_back(di);
      cpu::mamba_decode_step(std::span<const float>(pf).subspan(r * pc, pc), mw, conv_ref.back(),
                             ssm_ref.back(), y_ref.back());
      conv_dev.push_back(to_device(conv0.back()));
      ssm_dev.push_back(to_device(ssm0.back()));
      conv_ptr.push_back(conv_dev.back().as<float>());
      ssm_ptr.push_back(ssm_dev.back().as<float>());
    }
    const DeviceBuffer proj = to_device(praw), y = DeviceBuffer(cs.rows * di * 2), cw = to_device(conv_w),
                       cb = to_device(conv_b), dtb = to_device(dt_bias), al = to_device(a_log),
                       dd = to_device(d), nw = to_device(norm), ctab = to_device(conv_ptr),
                       stab = to_device(ssm_ptr);
    MambaStepArgs a;
    a.proj = proj.as<bf16_raw>();
    a.proj_ld = static_cast<int64_t>(pc);
    a.rows = cs.rows;
    a.conv_w = cw.as<float>();
    a.conv_b = cb.as<float>();
    a.kernel = cs.kernel;
    a.dt_bias = dtb.as<float>();
    a.dt_hi = cs.dt_hi;
    a.a_log = al.as<float>();
    a.d = dd.as<float>();
    a.norm = nw.as<float>();
    a.shape = sh;
    if (cs.rows == 1) {
      a.conv_one = conv_ptr[0];
      a.ssm_one = ssm_ptr[0];
    } else {
      a.conv_tab = ctab.as<float*>();
      a.ssm_tab = stab.as<float*>();
    }
    a.y = y.as<bf16_raw>();
    ASSERT_TRUE(mamba_decode_step_supported(a));
    mamba_decode_step(a, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = to_host<uint16_t>(y, cs.rows * di);
    double y_err = 0, y_range = 0, conv_err = 0, ssm_err = 0, ssm_range = 0;
    for (int r = 0; r < cs.rows; ++r) {
      for (size_t i = 0; i < di; ++i) {
        y_err = std::max<double>(y_err, std::fabs(bf16_to_f32(got[r * di + i]) - y_ref[r][i]));
        y_range = std::max<double>(y_range, std::fabs(y_ref[r][i]));
      }
      const auto cg = to_host<float>(conv_dev[r], cd * hist), sg = to_host<float>(ssm_dev[r], di * sh.state);
      for (size_t i = 0; i < cg.size(); ++i)
        conv_err = std::max<double>(conv_err, std::fabs(cg[i] - conv_ref[r][i]));
      for (size_t i = 0; i < sg.size(); ++i) {
        ssm_err = std::max<double>(ssm_err, std::fabs(sg[i] - ssm_ref[r][i]));
        ssm_range = std::max<double>(ssm_range, std::fabs(ssm_ref[r][i]));
      }
    }
    const std::string what = std::to_string(sh.heads) + " heads of " + std::to_string(sh.head_dim) +
                             ", state " + std::to_string(sh.state) + ", " + std::to_string(cs.rows) + " rows";
    std::printf("  %s: y error %.2e of %.2f, SSM state %.2e of %.2f, conv state %.1e\n", what.c_str(), y_err,
                y_range, ssm_err, ssm_range, conv_err);
    // The conv state is the inputs (exact); y and the state carry the BF16 roundings of dt and the conv
    // output that the separate kernels make too.
    EXPECT_EQ(conv_err, 0.0) << what;
    EXPECT_LT(y_err, 0.02 * y_range) << what;
    EXPECT_LT(ssm_err, 0.01 * ssm_range) << what;

    if (cs.rows != 1) continue;
    // The four separate kernels on the same input and states, as the runner calls them at batch 1.
    CudaOps ops;
    ops.begin_forward();
    CudaOps::State st;
    st.conv.push_back(to_device(conv0[0]));
    st.ssm.push_back(to_device(ssm0[0]));
    CudaOps::Tensor tp = ops.alloc(1, static_cast<int64_t>(pc)), dt = ops.alloc(1, sh.heads),
                    ty = ops.alloc(1, static_cast<int64_t>(di)), xbc{1, static_cast<int64_t>(cd)},
                    x{1, static_cast<int64_t>(di)}, b{1, static_cast<int64_t>(gn)},
                    c{1, static_cast<int64_t>(gn)};
    CUDA_CHECK(cudaMemcpy(tp.data, praw.data(), pc * 2, cudaMemcpyHostToDevice));
    ops.softplus_dt(tp, static_cast<int64_t>(di + cd), dt_bias, 0.0f, cs.dt_hi, dt);
    ops.columns(tp, static_cast<int64_t>(di), xbc);
    ops.causal_conv1d_silu(xbc, st, 0, cs.kernel, conv_w, conv_b);
    ops.columns(xbc, 0, x);
    ops.columns(xbc, static_cast<int64_t>(di), b);
    ops.columns(xbc, static_cast<int64_t>(di + gn), c);
    ops.ssm_scan(x, b, c, dt, a_log, d, st, 0, sh, 16, ty);
    ops.gated_rmsnorm(ty, tp, 0, norm, sh.groups, 1e-5f);
    ops.synchronize();
    std::vector<uint16_t> sep(di);
    CUDA_CHECK(cudaMemcpy(sep.data(), ty.data, di * 2, cudaMemcpyDeviceToHost));
    size_t y_diff = 0;
    for (size_t i = 0; i < di; ++i) y_diff += sep[i] != got[i];
    EXPECT_EQ(y_diff, 0u) << what << ": y differs from the separate kernels'";
    EXPECT_EQ(to_host<float>(st.ssm[0], di * sh.state), to_host<float>(ssm_dev[0], di * sh.state)) << what;
    EXPECT_EQ(to_host<float>(st.conv[0], cd * hist), to_host<float>(conv_dev[0], cd * hist)) << what;
  }
}
