// Tensor-parallel sharding on the CPU: the shards of a column-parallel layer stack to the full layer, the
// row-parallel partial products sum to the full product, and NVFP4 codes and scales travel with their
// weights.
#include <gtest/gtest.h>

#include <cmath>
#include <exception>
#include <random>
#include <thread>

#include "common/error.h"
#include "engine/backends.h"
#include "cpu/reference.h"
#include "format/nvfp4.h"
#include "model/presets.h"
#include "model/inspect.h"
#include "model/tensor_parallel.h"
#include "report/roofline.h"
#include "test_util.h"

using namespace fp4lab;

namespace {

std::vector<float> dequant(const Nvfp4Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.rows * t.cols));
  nvfp4_dequantize_ref(t, v);
  return v;
}

LinearWeight random_linear(int64_t n, int64_t k, bool nvfp4) {
  LinearWeight w;
  w.n = n;
  w.k = k;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0, 0.02f);
  w.w.resize(static_cast<size_t>(n * k));
  for (auto& x : w.w) x = d(rng);
  if (nvfp4) {
    w.nvfp4 = nvfp4_quantize_ref(w.w, n, k, nvfp4_tensor_scale(amax_ref(w.w)));
    w.w = dequant(*w.nvfp4);
  }
  return w;
}

std::vector<float> matvec(const LinearWeight& w, const std::vector<float>& x) {
  std::vector<float> y(static_cast<size_t>(w.n), 0.0f);
  for (int64_t r = 0; r < w.n; ++r)
    for (int64_t c = 0; c < w.k; ++c)
      y[static_cast<size_t>(r)] += w.w[static_cast<size_t>(r * w.k + c)] * x[static_cast<size_t>(c)];
  return y;
}

TEST(TensorParallel, ShardsRecomposeTheLayer) {
  for (bool fp4 : {false, true}) {
    const LinearWeight w = random_linear(64, 96, fp4);
    std::vector<float> x(96);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.3f * static_cast<float>(i)) + 0.1f;
    const auto full = matvec(w, x);
    // Row (column-parallel) split: outputs concatenate.
    const auto a = slice_rows(w, 0, 32), b = slice_rows(w, 32, 64);
    const auto ya = matvec(a, x), yb = matvec(b, x);
    for (size_t i = 0; i < 32; ++i) {
      EXPECT_FLOAT_EQ(ya[i], full[i]);
      EXPECT_FLOAT_EQ(yb[i], full[32 + i]);
    }
    // K (row-parallel) split on block boundaries: partial products sum to the full one.
    const auto c0 = slice_cols(w, 0, 48), c1 = slice_cols(w, 48, 96);
    const auto p0 = matvec(c0, std::vector<float>(x.begin(), x.begin() + 48));
    const auto p1 = matvec(c1, std::vector<float>(x.begin() + 48, x.end()));
    for (size_t i = 0; i < 64; ++i) EXPECT_NEAR(p0[i] + p1[i], full[i], 1e-5f);
    if (fp4) {
      // The shards' codes decode to exactly the shards' values; the tensor scale is kept.
      EXPECT_EQ(dequant(*c1.nvfp4), c1.w);
      EXPECT_EQ(dequant(*b.nvfp4), b.w);
      EXPECT_EQ(c1.nvfp4->tensor_scale, w.nvfp4->tensor_scale);
      EXPECT_THROW(slice_cols(w, 0, 40), Error);  // not on a 16-element block boundary
    }
  }
}

TEST(TensorParallel, ShardedConfigAndRefusals) {
  const ModelWeights full = synthetic_weights("preset:tiny", QuantMode::NVFP4, 1, true);
  const ModelWeights s = shard_for_tensor_parallel(full, 1, 2);
  EXPECT_EQ(s.config.num_heads, full.config.num_heads / 2);
  EXPECT_EQ(s.config.num_kv_heads, full.config.num_kv_heads / 2);
  EXPECT_EQ(s.config.intermediate_size, full.config.intermediate_size / 2);
  EXPECT_EQ(s.layers[0].o.k, full.layers[0].o.k / 2);
  EXPECT_EQ(s.layers[0].gate.n, full.layers[0].gate.n / 2);
  // Vocab-parallel: rank 1 of 2 holds the upper half of the vocabulary.
  EXPECT_EQ(s.lm_head.n, (full.lm_head.n + 1) / 2);
  EXPECT_EQ(s.vocab_begin, s.lm_head.n);
  EXPECT_EQ(s.embed.size(), static_cast<size_t>(s.lm_head.n * full.config.hidden_size));
  EXPECT_THROW(shard_for_tensor_parallel(full, 0, 3), Error);  // 4 heads do not split 3 ways
  // Nemotron-H: Mamba heads and groups split with the attention heads and the MLP.
  const ModelWeights nh = synthetic_weights("preset:tiny-nemotron-h", QuantMode::NVFP4, 1, true);
  const ModelWeights ns = shard_for_tensor_parallel(nh, 1, 2);
  EXPECT_EQ(ns.config.mamba_num_heads, nh.config.mamba_num_heads / 2);
  EXPECT_EQ(ns.config.n_groups, nh.config.n_groups / 2);
  for (size_t i = 0; i < nh.layers.size(); ++i)
    if (nh.layers[i].kind == LayerKind::Mamba) {
      EXPECT_EQ(ns.layers[i].in_proj.n, ns.config.mamba_in_proj_dim());
      EXPECT_EQ(ns.layers[i].out_proj.k, nh.layers[i].out_proj.k / 2);
      EXPECT_EQ(ns.layers[i].conv_w.size(), nh.layers[i].conv_w.size() / 2);
      EXPECT_EQ(ns.layers[i].a_log.size(), nh.layers[i].a_log.size() / 2);
    }
  EXPECT_THROW(shard_for_tensor_parallel(nh, 0, 3), Error);
}

// Vocab-parallel lm_head over 3 ranks of a 10-token vocabulary (shards of 4, the last padded with 2 zero
// rows): each rank scores its shard, and the gathered blocks reorder into the full logits exactly.
TEST(TensorParallel, VocabShardsGatherToTheFullLogits) {
  for (bool fp4 : {false, true}) {
    const int64_t V = 10, H = 32, tp = 3, vs = 4, rows = 2;
    const LinearWeight head = random_linear(V, H, fp4);
    std::vector<std::vector<float>> x(rows);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < H; ++i) x[r].push_back(std::cos(0.7f * static_cast<float>(i + r * H)));
    std::vector<float> gathered, full;
    for (int64_t r = 0; r < tp; ++r) {
      const LinearWeight sh = pad_rows(slice_rows(head, std::min(V, r * vs), std::min(V, (r + 1) * vs)), vs);
      ASSERT_EQ(sh.n, vs);
      if (fp4) {
        EXPECT_EQ(dequant(*sh.nvfp4), sh.w);  // the padding rows' codes decode to their zeros
      }
      for (int64_t row = 0; row < rows; ++row) {
        const auto y = matvec(sh, x[row]);
        gathered.insert(gathered.end(), y.begin(), y.end());
      }
    }
    for (int64_t row = 0; row < rows; ++row) {
      const auto y = matvec(head, x[row]);
      full.insert(full.end(), y.begin(), y.end());
    }
    std::vector<float> out(static_cast<size_t>(rows * V));
    cpu::gather_vocab_shards(gathered, rows, vs, V, out);
    EXPECT_EQ(out, full) << (fp4 ? "NVFP4" : "float");
  }
}

// The whole model split over 2 ranks on the CPU (threads, CpuTpGroup all-reduce) gives the unsplit
// model's logits: prefill of the golden prompt, then decode steps (KV cache, conv and SSM state per shard).
// This is the sharding the CUDA path runs, checked in CI without GPUs.
std::vector<float> run_ranks(const ModelWeights& full, int tp, const std::vector<int>& prompt, int steps) {
  CpuTpGroup group(tp);
  std::vector<std::vector<float>> out(static_cast<size_t>(tp));
  std::vector<std::thread> th;
  std::vector<std::exception_ptr> err(static_cast<size_t>(tp));
  for (int r = 0; r < tp; ++r)
    th.emplace_back([&, r] {
      try {
        CpuOps ops(1);
        ops.set_tensor_parallel(tp > 1 ? &group : nullptr, r);
        CpuModel m(shard_for_tensor_parallel(full, r, tp), ops);
        auto st = m.new_sequence(static_cast<int>(prompt.size()) + steps);
        auto& o = out[static_cast<size_t>(r)];
        o = m.forward(st, prompt, true);
        for (int i = 0; i < steps; ++i) {
          const auto l =
              m.forward(st, std::span<const int>(prompt).subspan(static_cast<size_t>(i), 1), false);
          o.insert(o.end(), l.begin(), l.end());
        }
      } catch (...) {
        err[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : th) t.join();
  for (auto& e : err)
    if (e) std::rethrow_exception(e);
  for (int r = 1; r < tp; ++r) EXPECT_EQ(out[static_cast<size_t>(r)], out[0]) << "rank " << r;
  return out[0];
}

TEST(TensorParallel, CpuRanksReproduceTheUnsplitModel) {
  for (const char* name : {"tiny-llama", "tiny-nemotron-h"})
    for (QuantMode q : {QuantMode::BF16, QuantMode::NVFP4}) {
      const std::string dir = fp4lab::test::data_dir() + "/models/" + name;
      const ModelWeights full = load_weights(dir, q);
      std::vector<int> prompt;
      for (int i = 0; i < 24; ++i) prompt.push_back((i * 37 + 11) % full.config.vocab_size);
      const auto ref = run_ranks(full, 1, prompt, 4);
      float mx = 0;
      for (float v : ref) mx = std::max(mx, std::fabs(v));
      // TP = 2 only: both tiny models have 2 KV heads (and tiny-nemotron-h 2 groups).
      const auto got = run_ranks(full, 2, prompt, 4);
      ASSERT_EQ(got.size(), ref.size());
      float md = 0;
      for (size_t i = 0; i < ref.size(); ++i) md = std::max(md, std::fabs(got[i] - ref[i]));
      // Float32 sums in another order (the all-reduce adds per-rank partials): rounding-level differences.
      EXPECT_LE(md, 1e-4f * mx + 1e-5f) << name << " " << quant_mode_name(q) << " TP=2";
    }
}

}  // namespace

// The roofline's tensor-parallel model: each GPU's share of the bytes, and the all-reduces charged on top.
TEST(TensorParallelRoofline, SharesBytesAndChargesAllReduces) {
  const auto p = find_preset("llama-3.1-8b");
  ASSERT_TRUE(p);
  const ModelSummary s = summarize_config("llama-3.1-8b", p->config);
  const DecodeBytes one = decode_bytes(p->config, s.nvfp4_plan, 512);
  const DecodeBytes tp1 = decode_bytes_tp(p->config, s.nvfp4_plan, 512, 1);
  EXPECT_EQ(tp1.weights, one.weights);
  EXPECT_EQ(tp1.allreduces, 0);
  const DecodeBytes tp2 = decode_bytes_tp(p->config, s.nvfp4_plan, 512, 2);
  EXPECT_DOUBLE_EQ(tp2.weights, one.weights / 2);
  EXPECT_DOUBLE_EQ(tp2.kv_cache, one.kv_cache / 2);
  EXPECT_DOUBLE_EQ(tp2.embedding, one.embedding);
  // After o_proj and down_proj of each of the 32 layers, and after the vocab-parallel embedding lookup.
  EXPECT_EQ(tp2.allreduces, 2 * 32 + 1);
  EXPECT_DOUBLE_EQ(tp2.allreduce_bytes, 2.0 * 4096);
  EXPECT_DOUBLE_EQ(tp2.allgather_bytes, 4.0 * p->config.vocab_size);

  const CommSpec& nv = comm_spec("nvlink");
  EXPECT_THROW(comm_spec("infiniband"), Error);
  EXPECT_EQ(allreduce_seconds(8192, 1, nv), 0.0);
  // Ring: 2 (tp - 1) / tp of the message per GPU after the fixed latency.
  EXPECT_DOUBLE_EQ(allreduce_seconds(8192, 2, nv), nv.latency_us * 1e-6 + 8192 / (nv.bus_gbs * 1e9));
  EXPECT_DOUBLE_EQ(allreduce_seconds(8192, 4, nv), nv.latency_us * 1e-6 + 1.5 * 8192 / (nv.bus_gbs * 1e9));

  const double bw = 3000, batch = 4;
  const double t_mem = tp2.per_step(4) / (bw * 1e9);
  const double t_comm = 65 * allreduce_seconds(batch * 8192, 2, nv) +
                        allgather_seconds(batch * 4.0 * p->config.vocab_size, 2, nv);
  EXPECT_DOUBLE_EQ(step_comm_seconds(tp2, 4, nv), t_comm);
  EXPECT_DOUBLE_EQ(roofline_decode_tok_s(tp2, 4, bw, 0, &nv), batch / (t_mem + t_comm));
  EXPECT_DOUBLE_EQ(roofline_decode_tok_s(tp2, 4, bw), batch / t_mem);  // no link model: bytes only
  // At batch 1 on NVLink the 65 latency-bound all-reduces and the gather cost ~1.3 ms: next to a TP=2 weight
  // read of ~0.8 ms (2.5 GB at 3 TB/s) they dominate the step, which is why TP=2 cannot double batch-1 decode
  // of an 8B model.
  EXPECT_NEAR(step_comm_seconds(tp2, 1, nv), 66 * nv.latency_us * 1e-6, 2e-5);
  EXPECT_GE(nv.latency_us, 10.0);
}
