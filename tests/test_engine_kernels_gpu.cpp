// Engine kernels against their CPU reference twins on random data (llama.cpp's test-backend-ops in spirit):
// the tensor-core prefill attention, the chunked SSD scan, the prefill conv1d, the grouped decode GEMM
// and the GQA decode attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <tuple>
#include <utility>

#include "common/hd.h"
#include "common/random.h"
#include "cpu/reference.h"
#include "cuda/argmax.h"
#include "cuda/attention_decode.h"
#include "cuda/cuda_ops.h"
#include "cuda/flash_attention.h"
#include "cuda/mamba_decode.h"
#include "cuda/mamba_prefill.h"
#include "cuda/nvfp4_gemm.h"
#include "format/nvfp4.h"
#include "format/nvfp4_block.h"
#include "gpu_util.h"

using namespace fp4lab;
using fp4lab::test::to_device;
using fp4lab::test::to_host;

namespace {

// n values from N(0, sd), rounded to BF16: the raw bits and the float values the reference sees.
std::pair<std::vector<uint16_t>, std::vector<float>> random_bf16(size_t n, float sd, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<uint16_t> raw(n);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) {
    raw[i] = bf16_from_f32_rne(d(rng));
    f[i] = bf16_to_f32(raw[i]);
  }
  return {raw, f};
}

// Random BF16 q (t rows of nh heads), k and v (len rows of nkv heads), and cpu::attention's FP32 output for
// the t query rows at positions len - t .. len - 1: what both attention kernels are compared with. Values of
// N(0, 1) give scores of a realistic spread (q.k up to a few units): the softmax is neither flat nor one-hot.
struct AttentionProblem {
  std::vector<uint16_t> q, k, v;
  std::vector<float> ref;
};
AttentionProblem random_attention(int t, int len, int nh, int nkv, int hd, std::mt19937& rng) {
  AttentionProblem p;
  std::vector<float> qf, kf, vf;
  std::tie(p.q, qf) = random_bf16(static_cast<size_t>(t) * nh * hd, 1.0f, rng);
  std::tie(p.k, kf) = random_bf16(static_cast<size_t>(len) * nkv * hd, 1.0f, rng);
  std::tie(p.v, vf) = random_bf16(static_cast<size_t>(len) * nkv * hd, 1.0f, rng);
  p.ref.resize(qf.size());
  cpu::attention(qf, t, nh, nkv, hd, kf, vf, len - t, p.ref);
  return p;
}

// The largest and the mean |got - ref| of a BF16 output.
std::pair<double, double> abs_errors(const std::vector<uint16_t>& got, const std::vector<float>& ref) {
  double max_err = 0, sum_err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(bf16_to_f32(got[i]) - ref[i]);
    max_err = std::max(max_err, e);
    sum_err += e;
  }
  return {max_err, sum_err / static_cast<double>(ref.size())};
}

}  // namespace

// Causal GQA prefill after a cached prefix (pos0 > 0) and from empty, sizes that leave partial query blocks
// and key tiles; every supported head dimension.
TEST(GpuKernels, FlashAttentionPrefillMatchesCpuAttention) {
  REQUIRE_GPU();
  std::mt19937 rng(11);
  struct Case {
    int hd, nh, nkv, pos0, t;
  };
  for (const Case c : {Case{32, 4, 2, 0, 40}, Case{64, 8, 2, 37, 150}, Case{128, 8, 8, 0, 200},
                       Case{128, 32, 8, 300, 129}, Case{128, 4, 1, 5, 1}}) {
    const int len = c.pos0 + c.t;
    const AttentionProblem p = random_attention(c.t, len, c.nh, c.nkv, c.hd, rng);
    DeviceBuffer dq = to_device(p.q), dk = to_device(p.k), dv = to_device(p.v),
                 dpos = to_device(std::vector<int>{c.pos0});
    DeviceBuffer dout(p.q.size() * 2);
    ASSERT_TRUE(flash_attention_supported(c.hd));
    flash_attention_prefill(dq.as<bf16_raw>(), dk.as<bf16_raw>(), dv.as<bf16_raw>(), dpos.as<int>(), c.t,
                            c.nh, c.nkv, c.hd, dout.as<bf16_raw>(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto [max_err, mean_err] = abs_errors(to_host<uint16_t>(dout, p.q.size()), p.ref);
    // BF16 probabilities in P.V and a BF16 output: errors of a few BF16 ulps of values of order 1.
    EXPECT_LT(max_err, 0.03) << "hd " << c.hd << " t " << c.t << " pos0 " << c.pos0;
    EXPECT_LT(mean_err, 0.003) << "hd " << c.hd << " t " << c.t;
  }
  EXPECT_FALSE(flash_attention_supported(8));
}

// The batched-prefill form: 70 sequences (two launch groups) of 1 to 90 new rows after 0 to 60 cached ones,
// each with its own cache, their rows one after another. Every output must be bit-identical to the same
// sequence through the one-sequence launch (the same block code on the same data) and close to the CPU.
TEST(GpuKernels, BatchedFlashAttentionEqualsOneSequenceAtATime) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  const int hd = 64, nh = 8, nkv = 2, n = 70;
  std::uniform_int_distribution<int> rows_d(1, 90), pos_d(0, 60);
  std::vector<AttentionProblem> ps;
  std::vector<DeviceBuffer> kc, vc, pos;
  std::vector<uint16_t> q_all;
  std::vector<FlashSeq> seqs;
  int64_t row0 = 0;
  for (int i = 0; i < n; ++i) {
    const int t = rows_d(rng), pos0 = pos_d(rng);
    ps.push_back(random_attention(t, pos0 + t, nh, nkv, hd, rng));
    kc.push_back(to_device(ps.back().k));
    vc.push_back(to_device(ps.back().v));
    pos.push_back(to_device(std::vector<int>{pos0}));
    q_all.insert(q_all.end(), ps.back().q.begin(), ps.back().q.end());
    seqs.push_back({row0, kc.back().as<bf16_raw>(), vc.back().as<bf16_raw>(), pos.back().as<int>(), t});
    row0 += t;
  }
  DeviceBuffer dq = to_device(q_all), solo(q_all.size() * 2), batch(q_all.size() * 2);
  for (const FlashSeq& sq : seqs)
    flash_attention_prefill(dq.as<bf16_raw>() + sq.row0 * nh * hd, sq.kc, sq.vc, sq.pos0, sq.rows, nh, nkv,
                            hd, solo.as<bf16_raw>() + sq.row0 * nh * hd, nullptr);
  flash_attention_prefill_batch(dq.as<bf16_raw>(), seqs, nh, nkv, hd, batch.as<bf16_raw>(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto a = to_host<uint16_t>(solo, q_all.size()), b = to_host<uint16_t>(batch, q_all.size());
  EXPECT_EQ(a, b);
  for (int i = 0; i < n; ++i) {
    const auto first = a.begin() + seqs[static_cast<size_t>(i)].row0 * nh * hd;
    const std::vector<uint16_t> got(first,
                                    first + static_cast<std::ptrdiff_t>(ps[static_cast<size_t>(i)].q.size()));
    EXPECT_LT(abs_errors(got, ps[static_cast<size_t>(i)].ref).first, 0.03) << "sequence " << i;
  }
}

// Throughput on a Llama-3.1-8B layer's shapes (32 query / 8 KV heads of 128) at 4096 tokens, median of CUDA
// events after warm-up; printed for docs/perf, checked only against the CPU above.
TEST(GpuKernels, FlashAttentionPrefillThroughput) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  const int t = 4096, nh = 32, nkv = 8, hd = 128;
  const auto q = random_bf16(static_cast<size_t>(t) * nh * hd, 1.0f, rng).first;
  const auto kv = random_bf16(static_cast<size_t>(t) * nkv * hd, 1.0f, rng).first;
  DeviceBuffer dq = to_device(q), dk = to_device(kv), dv = to_device(kv),
               dpos = to_device(std::vector<int>{0});
  DeviceBuffer dout(q.size() * 2);
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < 13; ++i) {
    CUDA_CHECK(cudaEventRecord(a));
    flash_attention_prefill(dq.as<bf16_raw>(), dk.as<bf16_raw>(), dv.as<bf16_raw>(), dpos.as<int>(), t, nh,
                            nkv, hd, dout.as<bf16_raw>(), nullptr);
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float x = 0;
    CUDA_CHECK(cudaEventElapsedTime(&x, a, b));
    if (i >= 3) ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  // Causal: half of the t x t score matrix, 4 hd FLOPs per (query, key) pair (QK and PV).
  const double flops = 0.5 * t * double(t) * nh * 4.0 * hd;
  std::printf("flash prefill attention, %d tokens, %d/%d heads of %d: %.3f ms median = %.1f TFLOP/s\n", t, nh,
              nkv, hd, med, flops / (med * 1e-3) / 1e12);
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
}

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

// q | k | v in one decode launch gives, bit for bit, what each weight gives alone under the same plan (the
// group is one launch of the same kernel over the weights' row tiles, each with its own tensor scale).
TEST(GpuKernels, GroupedDecodeGemmEqualsSeparateCalls) {
  REQUIRE_GPU();
  std::mt19937 rng(21);
  const int64_t k = 512, ns[3] = {256, 64, 48};
  std::vector<Nvfp4DeviceWeight> w;
  for (int64_t n : ns) {
    std::normal_distribution<float> d(0.0f,
                                      0.02f * static_cast<float>(n) / 64.0f);  // different tensor scales
    std::vector<float> f(static_cast<size_t>(n * k));
    for (auto& v : f) v = d(rng);
    const Nvfp4Tensor q = nvfp4_quantize_ref(f, n, k);
    DeviceBuffer pk = to_device(q.packed), sc = to_device(q.block_scales);
    w.push_back(nvfp4_repack_device(pk.as<uint8_t>(), sc.as<uint8_t>(), n, k, q.tensor_scale, nullptr));
  }
  GemmWorkspace ws;
  for (int64_t m : {1, 5}) {
    const auto xr = random_bf16(static_cast<size_t>(m * k), 1.0f, rng).first;
    DeviceBuffer dx = to_device(xr);
    std::vector<DeviceBuffer> yg, ys;
    for (int64_t n : ns) {
      yg.emplace_back(static_cast<size_t>(m * n * 2));
      ys.emplace_back(static_cast<size_t>(m * n * 2));
    }
    const Nvfp4DeviceWeight* wp[3] = {&w[0], &w[1], &w[2]};
    bf16_raw* yp[3] = {yg[0].as<bf16_raw>(), yg[1].as<bf16_raw>(), yg[2].as<bf16_raw>()};
    const int64_t ld[3] = {ns[0], ns[1], ns[2]};
    ASSERT_TRUE(nvfp4_w4a16_gemm_group(dx.as<bf16_raw>(), m, k, wp, yp, ld, ws, nullptr)) << "m " << m;
    const W4A16Plan plan = choose_w4a16_plan(m, ns[0] + ns[1] + ns[2], k, ws.sm_count());
    for (int i = 0; i < 3; ++i)
      nvfp4_w4a16_gemm(dx.as<bf16_raw>(), m, k, w[i], ys[i].as<bf16_raw>(), ns[i], 1.0f, ws, nullptr, &plan);
    CUDA_CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(to_host<uint16_t>(yg[i], m * ns[i]), to_host<uint16_t>(ys[i], m * ns[i]))
          << "weight " << i << " m " << m;
  }
  // Not for prefill-sized M or different K: the caller falls back to separate calls.
  const Nvfp4DeviceWeight* two[2] = {&w[0], &w[1]};
  DeviceBuffer dx(64 * k * 2), y0(64 * 256 * 2), y1(64 * 64 * 2);
  bf16_raw* yp[2] = {y0.as<bf16_raw>(), y1.as<bf16_raw>()};
  const int64_t ld[2] = {256, 64};
  EXPECT_FALSE(nvfp4_w4a16_gemm_group(dx.as<bf16_raw>(), 64, k, two, yp, ld, ws, nullptr));
}

// The decode GEMV with relu(y)^2 in its epilogue against the GEMM under the same plan followed by relu2 on
// the host: they differ only by the rounding of y to BF16 before squaring (one BF16 rounding instead of two).
// Shapes the heuristic sends to other kernels are refused, for the caller to run the two steps.
TEST(GpuKernels, Relu2EpilogueMatchesGemmThenRelu2) {
  REQUIRE_GPU();
  std::mt19937 rng(23);
  const int64_t n = 1040, k = 1024;
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> f(static_cast<size_t>(n * k));
  for (auto& v : f) v = d(rng);
  const Nvfp4Tensor q = nvfp4_quantize_ref(f, n, k);
  DeviceBuffer pk = to_device(q.packed), sc = to_device(q.block_scales);
  const Nvfp4DeviceWeight w =
      nvfp4_repack_device(pk.as<uint8_t>(), sc.as<uint8_t>(), n, k, q.tensor_scale, nullptr);
  GemmWorkspace ws;
  for (int64_t m : {1, 5, 20, 64}) {
    const auto xr = random_bf16(static_cast<size_t>(m * k), 1.0f, rng).first;
    DeviceBuffer dx = to_device(xr), yf(static_cast<size_t>(m * n * 2)), yr(static_cast<size_t>(m * n * 2));
    ASSERT_TRUE(nvfp4_w4a16_gemm_relu2(dx.as<bf16_raw>(), m, k, w, yf.as<bf16_raw>(), n, ws, nullptr)) << m;
    nvfp4_w4a16_gemm(dx.as<bf16_raw>(), m, k, w, yr.as<bf16_raw>(), n, 1.0f, ws, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto fused = to_host<uint16_t>(yf, m * n), plain = to_host<uint16_t>(yr, m * n);
    int negatives = 0;
    for (size_t i = 0; i < fused.size(); ++i) {
      const float y = bf16_to_f32(plain[i]), want = std::max(y, 0.0f) * std::max(y, 0.0f);
      negatives += y < 0;
      ASSERT_NEAR(bf16_to_f32(fused[i]), want, 0.02f * want + 1e-30f) << "m " << m << " i " << i;
    }
    EXPECT_GT(negatives, static_cast<int>(fused.size() / 4)) << "the data must exercise the relu";
  }
  DeviceBuffer dx(300 * k * 2), y(300 * n * 2);
  EXPECT_FALSE(nvfp4_w4a16_gemm_relu2(dx.as<bf16_raw>(), 300, k, w, y.as<bf16_raw>(), n, ws, nullptr));
}

// SwiGLU over a gate/up pair joined by nvfp4_repack_swiglu_pair_device (two tensor scales) against the two
// GEMMs on their own weights and silu(g) * u on the host: in the decode epilogue (M <= 32 here) and through
// the interleaved scratch and the activation kernel (M where the heuristic picks an mma or cuBLAS kernel).
TEST(GpuKernels, SwigluPairMatchesTwoGemmsThenSiluMul) {
  REQUIRE_GPU();
  std::mt19937 rng(29);
  const int64_t n = 1032, k = 1024;  // N a multiple of 8 but not 16: the last tile is half padding
  std::normal_distribution<float> d(0.0f, 0.05f);
  auto make = [&](float scale) {
    std::vector<float> f(static_cast<size_t>(n * k));
    for (auto& v : f) v = d(rng) * scale;
    return nvfp4_quantize_ref(f, n, k);
  };
  const Nvfp4Tensor qg = make(1.0f), qu = make(3.0f);  // different tensor scales
  DeviceBuffer pg = to_device(qg.packed), sg = to_device(qg.block_scales), pu = to_device(qu.packed),
               su = to_device(qu.block_scales);
  const Nvfp4DeviceWeight wg =
      nvfp4_repack_device(pg.as<uint8_t>(), sg.as<uint8_t>(), n, k, qg.tensor_scale, nullptr);
  const Nvfp4DeviceWeight wu =
      nvfp4_repack_device(pu.as<uint8_t>(), su.as<uint8_t>(), n, k, qu.tensor_scale, nullptr);
  const Nvfp4DeviceWeight gu = nvfp4_repack_swiglu_pair_device(
      pg.as<uint8_t>(), sg.as<uint8_t>(), pu.as<uint8_t>(), su.as<uint8_t>(), n, k, nullptr);
  EXPECT_EQ(gu.n_valid, 2 * n);
  GemmWorkspace ws;
  for (int64_t m : {1, 3, 8, 17, 32, 64, 300}) {
    const auto xr = random_bf16(static_cast<size_t>(m * k), 1.0f, rng).first;
    DeviceBuffer dx = to_device(xr), yf(static_cast<size_t>(m * n * 2)), yg(static_cast<size_t>(m * n * 2)),
                 yu(static_cast<size_t>(m * n * 2));
    nvfp4_w4a16_gemm_swiglu(dx.as<bf16_raw>(), m, k, gu, qg.tensor_scale, qu.tensor_scale, yf.as<bf16_raw>(),
                            n, ws, nullptr);
    nvfp4_w4a16_gemm(dx.as<bf16_raw>(), m, k, wg, yg.as<bf16_raw>(), n, 1.0f, ws, nullptr);
    nvfp4_w4a16_gemm(dx.as<bf16_raw>(), m, k, wu, yu.as<bf16_raw>(), n, 1.0f, ws, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto fused = to_host<uint16_t>(yf, m * n), g = to_host<uint16_t>(yg, m * n),
               u = to_host<uint16_t>(yu, m * n);
    double max_err = 0, max_ref = 0;
    for (size_t i = 0; i < fused.size(); ++i) {
      const float gv = bf16_to_f32(g[i]), want = gv / (1.0f + std::exp(-gv)) * bf16_to_f32(u[i]);
      max_err = std::max<double>(max_err, std::fabs(bf16_to_f32(fused[i]) - want));
      max_ref = std::max<double>(max_ref, std::fabs(want));
    }
    // Both sides round the GEMM outputs differently (FP32 in the epilogue, BF16 here): a few BF16 ulps.
    EXPECT_GT(max_ref, 0.1) << "m " << m;
    EXPECT_LT(max_err, 0.02 * max_ref) << "m " << m;
  }
}

// Decode attention with a GQA group per block against cpu::attention: one new query row over a long cache,
// with and without key splits (then merged by the combine kernel, or by the kernel's own last split), for the
// head dimensions and group sizes it takes.
TEST(GpuKernels, GqaDecodeAttentionMatchesCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(17);
  struct Case {
    int hd, nh, nkv, len, splits;
  };
  for (const Case c : {Case{128, 32, 8, 3000, 1}, Case{128, 32, 8, 3000, 12}, Case{64, 40, 8, 777, 5},
                       Case{32, 4, 2, 65, 3}, Case{128, 8, 8, 200, 32},
                       Case{128, 64, 8, 500, 4}}) {  // 8 query heads per KV head (Llama-70B): 32 KB shared
    ASSERT_TRUE(gqa_attention_supported(c.nh, c.nkv, c.hd));
    const AttentionProblem p = random_attention(1, c.len, c.nh, c.nkv, c.hd, rng);
    DeviceBuffer dq = to_device(p.q), dk = to_device(p.k), dv = to_device(p.v),
                 dpos = to_device(std::vector<int>{c.len - 1}), dout(p.q.size() * 2),
                 part(static_cast<size_t>(c.nh) * c.splits * (c.hd + 2) * 4);
    AttentionDecodeArgs a;
    a.q = dq.as<bf16_raw>();
    a.nh = c.nh, a.nkv = c.nkv, a.hd = c.hd;
    a.kv = KvCaches::one(dk.as<bf16_raw>(), dv.as<bf16_raw>(), dpos.as<int>());
    a.out = dout.as<bf16_raw>();
    a.part = c.splits > 1 ? part.as<float>() : nullptr;
    launch_attention_gqa(dim3(c.nkv, c.splits), a, nullptr);
    if (c.splits > 1)
      launch_attention_combine(c.nh, c.splits, c.hd, part.as<float>(), dout.as<bf16_raw>(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = to_host<uint16_t>(dout, p.q.size());
    const double err = abs_errors(got, p.ref).first;
    // FP32 softmax and sums, BF16 output: a few BF16 ulps of values of order 0.1-1.
    EXPECT_LT(err, 0.01) << "hd " << c.hd << " nh " << c.nh << " nkv " << c.nkv << " len " << c.len
                         << " splits " << c.splits;
    if (c.splits == 1) continue;
    // The in-kernel merge (the last split of each KV head combines) gives the combine kernel's bits, and
    // leaves its counters at zero: run it twice on the same counters.
    DeviceBuffer done(static_cast<size_t>(c.nkv) * 4), dout2(p.q.size() * 2);
    CUDA_CHECK(cudaMemset(done.ptr, 0, done.bytes));
    for (int rep = 0; rep < 2; ++rep) {
      CUDA_CHECK(cudaMemset(dout2.ptr, 0, dout2.bytes));
      AttentionDecodeArgs m = a;
      m.out = dout2.as<bf16_raw>();
      m.part = part.as<float>();
      m.done = done.as<int>();
      launch_attention_gqa(dim3(c.nkv, c.splits), m, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(to_host<uint16_t>(dout2, p.q.size()), got) << "in-kernel merge, splits " << c.splits;
      EXPECT_EQ(to_host<int>(done, static_cast<size_t>(c.nkv)), std::vector<int>(static_cast<size_t>(c.nkv)));
    }
  }
  EXPECT_FALSE(gqa_attention_supported(8, 8, 8));
  EXPECT_FALSE(gqa_attention_supported(12, 4, 128));  // 3 query heads per KV head: the per-head kernel runs
}

// Decode attention that does RoPE and the KV-cache append itself (CudaOps::set_fused_rope) against the
// separate rope_kv_append kernel then attention: the same output and caches, bit for bit, with Llama-3 RoPE
// and without RoPE (Nemotron-H), at context lengths from 1 key (one split) to 4097 (the automatic split
// count, the new key in the last split). The first key step of a split is loaded before the
// programmatic-launch wait, so the new key's row must come from this step's data, not the cache: 17 and 260
// keys put it in the first step of a split (the only one and the fifth of eight), 300, 1000 and 4097 in a
// later step.
TEST(GpuKernels, DecodeAttentionRotatesAndAppendsItself) {
  REQUIRE_GPU();
  std::mt19937 rng(23);
  struct Case {
    int hd, nh, nkv, len;
    bool rope;
  };
  RopeConfig llama3;
  llama3.type = "llama3";
  llama3.theta = 500000.0f;
  llama3.factor = 8.0f;
  for (const Case c : {Case{128, 32, 8, 300, true}, Case{128, 40, 8, 1000, false}, Case{64, 40, 8, 17, true},
                       Case{32, 4, 2, 1, true}, Case{128, 32, 8, 4097, true}, Case{128, 32, 8, 260, true},
                       Case{128, 40, 8, 260, false}}) {
    const int cap = c.len + 8;
    const auto [qraw, qf] = random_bf16(static_cast<size_t>(c.nh) * c.hd, 1.0f, rng);
    const auto [kraw, kf] = random_bf16(static_cast<size_t>(c.nkv) * c.hd, 1.0f, rng);
    const auto [vraw, vf] = random_bf16(static_cast<size_t>(c.nkv) * c.hd, 1.0f, rng);
    const auto [kc0, kcf] = random_bf16(static_cast<size_t>(cap) * c.nkv * c.hd, 1.0f, rng);
    const auto [vc0, vcf] = random_bf16(static_cast<size_t>(cap) * c.nkv * c.hd, 1.0f, rng);
    std::vector<std::vector<uint16_t>> outs, kcs, vcs;
    for (bool fused : {false, true}) {
      CudaOps ops;
      ops.set_fused_rope(fused);
      ops.begin_forward();
      CudaOps::State st;
      st.capacity = cap;
      st.pos = c.len - 1;
      st.pos_dev = to_device(std::vector<int>{c.len - 1});
      st.k.push_back(to_device(kc0));
      st.v.push_back(to_device(vc0));
      CudaOps::Tensor q = ops.alloc(1, int64_t{c.nh} * c.hd), k = ops.alloc(1, int64_t{c.nkv} * c.hd),
                      v = ops.alloc(1, int64_t{c.nkv} * c.hd), out = ops.alloc(1, int64_t{c.nh} * c.hd);
      CUDA_CHECK(cudaMemcpy(q.data, qraw.data(), qraw.size() * 2, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(k.data, kraw.data(), kraw.size() * 2, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(v.data, vraw.data(), vraw.size() * 2, cudaMemcpyHostToDevice));
      ops.attention(q, k, v, st, 0, c.nh, c.nkv, c.hd, c.rope ? &llama3 : nullptr, out);
      ops.synchronize();
      std::vector<uint16_t> o(qraw.size());
      CUDA_CHECK(cudaMemcpy(o.data(), out.data, o.size() * 2, cudaMemcpyDeviceToHost));
      outs.push_back(o);
      kcs.push_back(to_host<uint16_t>(st.k[0], kc0.size()));
      vcs.push_back(to_host<uint16_t>(st.v[0], vc0.size()));
    }
    const std::string what = "hd " + std::to_string(c.hd) + ", " + std::to_string(c.nh) + " / " +
                             std::to_string(c.nkv) + " heads, " + std::to_string(c.len) + " keys" +
                             (c.rope ? ", RoPE" : "");
    EXPECT_EQ(outs[1], outs[0]) << what;
    EXPECT_EQ(kcs[1], kcs[0]) << what;
    EXPECT_EQ(vcs[1], vcs[0]) << what;
    EXPECT_NE(kcs[0], kc0) << what << ": the new key was not written";
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

// CudaOps::columns (the Mamba prefill's z | xBC | dt and x | B | C splits) against the host: 16-byte units
// where the range allows, single elements where it does not, and more rows than one grid dimension holds.
TEST(GpuKernels, ColumnCopyMatchesHostAtAlignedAndOddRanges) {
  REQUIRE_GPU();
  std::mt19937 rng(37);
  const int64_t rows = 70000, cols = 40;
  const auto src_host = random_bf16(static_cast<size_t>(rows * cols), 1.0f, rng).first;
  for (const auto& [col0, width] : {std::pair<int64_t, int64_t>{8, 24}, {0, 40}, {3, 5}, {16, 8}, {33, 7}}) {
    CudaOps ops;
    ops.begin_forward();
    CudaOps::Tensor src = ops.alloc(rows, cols), dst = ops.alloc(rows, width);
    CUDA_CHECK(cudaMemcpy(src.data, src_host.data(), src_host.size() * 2, cudaMemcpyHostToDevice));
    ops.columns(src, col0, dst);
    ops.synchronize();
    std::vector<uint16_t> got(static_cast<size_t>(rows * width));
    CUDA_CHECK(cudaMemcpy(got.data(), dst.data, got.size() * 2, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < width; ++j)
        bad += got[static_cast<size_t>(r * width + j)] != src_host[static_cast<size_t>(r * cols + col0 + j)];
    EXPECT_EQ(bad, 0u) << "columns [" << col0 << ", " << col0 + width << ")";
  }
}

// The fused residual add + RMSNorm on rows from 64 to 16384 wide (the kernel's launch grows to 1024 threads
// and then loops; a register-hungry version failed to launch at the 70B row width of 8192) against the CPU
// twin: x + o, then cpu::rmsnorm.
TEST(GpuKernels, AddRmsNormMatchesCpuAtEveryWidth) {
  REQUIRE_GPU();
  std::mt19937 rng(23);
  for (const int64_t width : {64, 4096, 4480, 8192, 16384}) {
    const int64_t rows = 3;
    const size_t n = static_cast<size_t>(rows * width);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> xf(n), w(static_cast<size_t>(width));
    for (auto& v : xf) v = d(rng);
    for (auto& v : w) v = 1.0f + 0.1f * d(rng);
    const auto [oraw, of] = random_bf16(n, 1.0f, rng);
    CudaOps ops;
    ops.begin_forward();
    CudaOps::Tensor x = ops.alloc_residual(rows, width), o = ops.alloc(rows, width),
                    y = ops.alloc(rows, width);
    CUDA_CHECK(cudaMemcpy(x.data, xf.data(), n * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(o.data, oraw.data(), n * 2, cudaMemcpyHostToDevice));
    ops.add_rmsnorm(x, o, w, 1e-5f, y);
    ops.synchronize();
    std::vector<float> sum(n), ref(n), xs(n);
    std::vector<uint16_t> ys(n);
    CUDA_CHECK(cudaMemcpy(xs.data(), x.data, n * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(ys.data(), y.data, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) sum[i] = xf[i] + of[i];
    for (int64_t r = 0; r < rows; ++r) {
      const auto off = static_cast<size_t>(r * width);
      const auto len = static_cast<size_t>(width);
      cpu::rmsnorm(std::span<const float>(sum).subspan(off, len), w, 1e-5f,
                   std::span<float>(ref).subspan(off, len));
    }
    double ex = 0, ey = 0;
    for (size_t i = 0; i < n; ++i) {
      ex = std::max(ex, double(std::fabs(xs[i] - sum[i])));
      ey = std::max(ey, double(std::fabs(bf16_to_f32(ys[i]) - ref[i])) / (1.0 + std::fabs(ref[i])));
    }
    EXPECT_EQ(ex, 0.0) << "residual written back, width " << width;  // the same FP32 add
    EXPECT_LT(ey, 1e-2) << "normalized output, width " << width;     // BF16 rounding of y
  }
}

// Greedy decoding's device argmax against cpu::argmax: random logits with the maximum planted twice (the
// first index wins), NaNs (never win), a row of -inf and NaN only (the first -inf), the maximum in the last
// entry, an all-NaN row (cpu::kNoId), widths from one logit to past a 128K vocabulary (one part, many parts, a ragged
// last part; odd widths take the scalar loads), and three launches on the same workspace (the split counters
// must be back at zero): without a pick, with temperature 0, and sampling at temperature 0.7 (Gumbel-max)
// against cpu::sample_gumbel.
TEST(GpuKernels, ArgmaxRowsMatchesCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(31);
  std::normal_distribution<float> d(0.0f, 4.0f);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const int64_t cols : {1, 7, 1000, 4096, 4097, 128256, 131075}) {
    for (const int64_t rows : {1, 5, 33}) {
      std::vector<float> l(static_cast<size_t>(rows * cols));
      for (auto& v : l) v = d(rng);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = l.data() + r * cols;
        std::uniform_int_distribution<int64_t> pick(0, cols - 1);
        const int64_t a = pick(rng), b = pick(rng);
        switch (r % 4) {
          case 0:  // a tie for the maximum: the smaller index wins
            row[a] = row[b] = 100.0f;
            break;
          case 1:  // NaNs, one of them above everything
            row[a] = nan;
            row[(a + cols / 2) % cols] = nan;
            row[b] = 50.0f;
            break;
          case 2:
            row[cols - 1] = 99.0f;
            break;
          default:
            if (r == 3)
              for (int64_t i = 0; i < cols; ++i) row[i] = i % 3 ? -inf : nan;
            if (r == 7)
              for (int64_t i = 0; i < cols; ++i) row[i] = nan;
        }
      }
      const int parts = argmax_parts(cols);
      const DeviceBuffer dl = to_device(l);
      DeviceBuffer pv(static_cast<size_t>(rows * parts) * 4), pi(static_cast<size_t>(rows * parts) * 8),
          done(static_cast<size_t>(rows) * 4), out(static_cast<size_t>(rows) * 4);
      CUDA_CHECK(cudaMemset(done.ptr, 0, done.bytes));
      // The pick: none (argmax), temperature 0 (argmax), then a Gumbel-max sample at 0.7 with a seed per row.
      std::vector<uint8_t> pick(argmax_pick_bytes(rows));
      auto* ph = reinterpret_cast<ArgmaxPick*>(pick.data());
      std::vector<uint64_t> seeds(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) seeds[static_cast<size_t>(r)] = 1000003ull * r + 7 + cols;
      std::memcpy(ph + 1, seeds.data(), seeds.size() * 8);
      for (int launch = 0; launch < 3; ++launch) {
        ph->temperature = launch == 2 ? 0.7f : 0.0f;
        const DeviceBuffer dpick = to_device(pick);
        CUDA_CHECK(cudaMemset(out.ptr, 0xff, out.bytes));
        launch_argmax_rows(dl.as<float>(), rows, cols, launch == 0 ? nullptr : dpick.as<ArgmaxPick>(),
                           pv.as<float>(), pi.as<int64_t>(), done.as<int>(), out.as<int>(), nullptr);
        CUDA_CHECK(cudaDeviceSynchronize());
        const auto got = to_host<int>(out, static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          const auto row =
              std::span<const float>(l).subspan(static_cast<size_t>(r * cols), static_cast<size_t>(cols));
          const int g = got[static_cast<size_t>(r)];
          if (launch < 2) {
            ASSERT_EQ(g, cpu::argmax(row))
                << "cols " << cols << ", rows " << rows << ", row " << r << ", launch " << launch;
            continue;
          }
          // The device's logf may differ from the host's in the last bit: a different id is accepted only
          // where the two ids' scores tie to that precision.
          const int want = cpu::sample_gumbel(row, 0.7f, seeds[static_cast<size_t>(r)]);
          const auto sc = [&](int i) {
            return std::isnan(row[static_cast<size_t>(i)])
                       ? -INFINITY
                       : row[static_cast<size_t>(i)] / 0.7f + gumbel_noise(seeds[static_cast<size_t>(r)], i);
          };
          ASSERT_TRUE(g == want || (g >= 0 && g < cols &&
                                    std::fabs(sc(g) - sc(want)) <= 1e-5f * (1 + std::fabs(sc(want)))))
              << "sampled: cols " << cols << ", rows " << rows << ", row " << r << ": " << g << " vs "
              << want;
        }
      }
    }
  }
}

// Top-k sampling's device candidates against cpu::top_logits: the per-part bitonic sort and the host merge
// give each row's kTopLogits largest logits in (key descending, id ascending) order, exactly, with ties (the
// smaller ids first; -0 and +0 tie), NaN (as -inf), -inf, rows shorter than kTopLogits and widths of one to
// several parts.
TEST(GpuKernels, TopLogitsRowsMatchCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(37);
  std::normal_distribution<float> d(0.0f, 3.0f);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const int64_t cols : {7, 100, 4096, 4097, 128256, 131075}) {
    const int64_t rows = 3;
    std::vector<float> l(static_cast<size_t>(rows * cols));
    for (auto& v : l) v = std::round(d(rng) * 4.0f) / 4.0f;  // coarse values: many ties
    for (int64_t i = 0; i < cols; i += 13) l[static_cast<size_t>(i)] = nan;
    for (int64_t i = 5; i < cols; i += 17) l[static_cast<size_t>(cols + i)] = -inf;
    const int parts = argmax_parts(cols);
    ASSERT_TRUE(top_logits_supported(cols));
    const DeviceBuffer dl = to_device(l);
    DeviceBuffer out(static_cast<size_t>(rows * parts) * cpu::kTopLogits * 8);
    launch_top_logits_rows(dl.as<float>(), rows, cols, out.as<uint64_t>(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto words = to_host<uint64_t>(out, static_cast<size_t>(rows * parts) * cpu::kTopLogits);
    for (int64_t r = 0; r < rows; ++r) {
      const size_t per_row = static_cast<size_t>(parts) * cpu::kTopLogits;
      const auto got = top_logits_merge(words.data() + r * per_row, per_row);
      const auto want = cpu::top_logits(
          std::span<const float>(l).subspan(static_cast<size_t>(r * cols), static_cast<size_t>(cols)),
          cpu::kTopLogits);
      ASSERT_EQ(got.size(), want.size()) << "cols " << cols << ", row " << r;
      for (size_t j = 0; j < want.size(); ++j) {
        ASSERT_EQ(got[j].id, want[j].id) << "cols " << cols << ", row " << r << ", rank " << j;
        ASSERT_EQ(got[j].key, want[j].key) << "cols " << cols << ", row " << r << ", rank " << j;  // -0 == +0
      }
    }
  }
}
