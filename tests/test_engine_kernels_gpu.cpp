// Engine kernels against their CPU reference twins on random data (llama.cpp's test-backend-ops in spirit):
// the tensor-core prefill attention, the fused GEMM epilogues, the GQA decode attention, the column copy,
// RMSNorm, and the device argmax and top-k. The Mamba-2 kernels are in test_mamba_kernels_gpu.cpp.
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
using fp4lab::test::abs_errors;
using fp4lab::test::random_bf16;
using fp4lab::test::to_device;
using fp4lab::test::to_host;

namespace {

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
