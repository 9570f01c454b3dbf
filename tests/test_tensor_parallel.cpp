// Tensor-parallel sharding on the CPU: the shards of a column-parallel layer stack to the full layer, the
// row-parallel partial products sum to the full product, and NVFP4 codes and scales travel with their
// weights.
#include <gtest/gtest.h>

#include <random>

#include "common/error.h"
#include "format/nvfp4.h"
#include "model/presets.h"
#include "model/inspect.h"
#include "model/tensor_parallel.h"
#include "report/roofline.h"

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
  EXPECT_EQ(s.lm_head.n, full.lm_head.n);
  EXPECT_THROW(shard_for_tensor_parallel(full, 0, 3), Error);  // 4 heads do not split 3 ways
  EXPECT_THROW(
      shard_for_tensor_parallel(synthetic_weights("preset:tiny-nemotron-h", QuantMode::BF16, 1, false), 0, 2),
      Error);
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
  EXPECT_DOUBLE_EQ(tp2.embedding, one.embedding);  // replicated
  EXPECT_EQ(tp2.allreduces, 2 * 32);               // after o_proj and down_proj of each of the 32 layers
  EXPECT_DOUBLE_EQ(tp2.allreduce_bytes, 2.0 * 4096);

  const CommSpec& nv = comm_spec("nvlink");
  EXPECT_THROW(comm_spec("infiniband"), Error);
  EXPECT_EQ(allreduce_seconds(8192, 1, nv), 0.0);
  // Ring: 2 (tp - 1) / tp of the message per GPU after the fixed latency.
  EXPECT_DOUBLE_EQ(allreduce_seconds(8192, 2, nv), nv.latency_us * 1e-6 + 8192 / (nv.bus_gbs * 1e9));
  EXPECT_DOUBLE_EQ(allreduce_seconds(8192, 4, nv), nv.latency_us * 1e-6 + 1.5 * 8192 / (nv.bus_gbs * 1e9));

  const double bw = 3000, batch = 4;
  const double t_mem = tp2.per_step(4) / (bw * 1e9);
  const double t_comm = 64 * allreduce_seconds(batch * 8192, 2, nv);
  EXPECT_DOUBLE_EQ(step_allreduce_seconds(tp2, 4, nv), t_comm);
  EXPECT_DOUBLE_EQ(roofline_decode_tok_s(tp2, 4, bw, 0, &nv), batch / (t_mem + t_comm));
  EXPECT_DOUBLE_EQ(roofline_decode_tok_s(tp2, 4, bw), batch / t_mem);  // no link model: bytes only
  // At batch 1 on NVLink the 64 latency-bound all-reduces cost 0.64 ms: with a TP=2 weight read of ~1 ms
  // (2.5 GB at 3 TB/s) they are a third of the step, which is why TP=2 cannot double batch-1 decode.
  EXPECT_NEAR(step_allreduce_seconds(tp2, 1, nv), 64 * 10e-6, 1e-5);
}
