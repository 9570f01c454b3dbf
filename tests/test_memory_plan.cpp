// The GPU memory plan (cuda/memory_plan.h): sizes, the automatic fit, and the CLI that prints it. The plan
// against a measured peak is GpuEngine.MemoryPlanCoversTheMeasuredPeak (device run).
#include <gtest/gtest.h>

#include "common/error.h"
#include "cuda/run_options.h"
#include "cuda/memory_plan.h"
#include "model/layout.h"
#include "model/presets.h"
#include "test_util.h"

using namespace fp4lab;
using fp4lab::test::run_fp4lab;

namespace {

MemoryPlanInput preset_input(const std::string& name, QuantMode q, int batch, int tokens) {
  const auto p = find_preset("preset:" + name);
  EXPECT_TRUE(p);
  MemoryPlanInput in;
  in.config = p->config;
  in.plans = plan_linears(p->config, QuantConfig{}, nullptr, q);
  in.vocab_rows = p->config.vocab_size;
  in.batch = batch;
  in.tokens_per_sequence = in.forward_tokens = tokens;
  in.context_bytes = kContextEstimateBytes;
  return in;
}

uint64_t item(const std::vector<MemoryItem>& v, const std::string& prefix) {
  for (const auto& i : v)
    if (i.name.rfind(prefix, 0) == 0) return i.bytes;
  ADD_FAILURE() << "no item " << prefix;
  return 0;
}

}  // namespace

TEST(MemoryPlan, ByteSizesParseInBinaryAndDecimalUnits) {
  EXPECT_EQ(parse_byte_size("7.5GiB"), 8053063680ull);
  EXPECT_EQ(parse_byte_size("8000MB"), 8000000000ull);
  EXPECT_EQ(parse_byte_size("512MiB"), 512ull << 20);
  EXPECT_EQ(parse_byte_size("123456"), 123456ull);
  EXPECT_EQ(parse_byte_size("8e9"), 8000000000ull);
  for (const char* bad : {"", "GiB", "7.5 parsecs", "nan", "-1GiB", "0"}) EXPECT_THROW(parse_byte_size(bad), Error) << bad;
  EXPECT_EQ(format_bytes(8053063680ull), "7.50 GiB");
  EXPECT_EQ(format_bytes(96ull << 20), "96 MiB");
}

// Nemotron-Nano-9B-v2 in NVFP4: the weights bench reports (7.01 GB, of which the BF16 embedding and lm_head
// are 1.17 GB each), the state of a sequence, and what moving the embedding to the host frees.
TEST(MemoryPlan, CountsTheNemotronWeightsByKind) {
  const MemoryPlanInput in = preset_input("nemotron-nano-9b-v2", QuantMode::NVFP4, 1, 384);
  const MemoryPlan p = plan_memory(in);
  const uint64_t embed = 2ull * 131072 * 4480;
  EXPECT_EQ(item(p.weights, "embedding"), embed);
  EXPECT_EQ(item(p.weights, "lm_head, BF16"), embed);
  const double weights = static_cast<double>(p.weights_on_gpu());
  EXPECT_NEAR(weights / 1e9, 7.01, 0.05);  // `fp4lab bench` on the H100: NVFP4 weights 7.01 GB
  // Four attention layers of 8 KV heads x 128 at 384 tokens, plus 27 Mamba layers' conv and SSM state.
  EXPECT_EQ(p.state_per_sequence, 4ull * 2 * 384 * 8 * 128 * 2 +
                                      27ull * 4 * (static_cast<uint64_t>(in.config.mamba_conv_dim()) * 3 +
                                                   128ull * 80 * 128));
  MemoryPlanInput host = in;
  host.embedding_on_host = true;
  const MemoryPlan h = plan_memory(host);
  EXPECT_EQ(p.weights_on_gpu() - h.weights_on_gpu(), embed);
  EXPECT_EQ(h.host_pinned(), embed);
}

// The seed's 8 GB laptop card: NVFP4 fits under 7.5 GiB only with the embedding on the host, which auto
// chooses and says; --embedding gpu forbids it and gets an error naming the sizes and the options; BF16 does
// not fit at all.
TEST(MemoryPlan, FitsNemotronNvfp4UnderAnEightGigabyteCardWithTheEmbeddingOnTheHost) {
  const uint64_t limit = parse_byte_size("7.5GiB");
  const MemoryPlanInput in = preset_input("nemotron-nano-9b-v2", QuantMode::NVFP4, 1, 384);
  ASSERT_GT(plan_memory(in).device_peak(), limit - plan_headroom(limit));
  const MemoryFit f = fit_memory(in, limit, EmbeddingPlace::Auto);
  EXPECT_TRUE(f.embedding_on_host);
  EXPECT_LE(f.plan.device_peak(), limit);
  ASSERT_EQ(f.choices.size(), 1u);
  EXPECT_NE(f.choices[0].find("embedding in pinned host memory"), std::string::npos);
  try {
    fit_memory(in, limit, EmbeddingPlace::Gpu);
    ADD_FAILURE() << "--embedding gpu fitted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("over the limit of 7.50 GiB"), std::string::npos) << m;
    EXPECT_NE(m.find("--embedding host"), std::string::npos) << m;
  }
  EXPECT_THROW(fit_memory(preset_input("nemotron-nano-9b-v2", QuantMode::BF16, 1, 384), limit, EmbeddingPlace::Auto),
               Error);
  // Without a limit nothing moves.
  EXPECT_FALSE(fit_memory(in, 0, EmbeddingPlace::Auto).embedding_on_host);
}

// State grows with the batch and the context, activations with the forward's tokens.
TEST(MemoryPlan, StateAndActivationsGrowWithTheWorkload) {
  const MemoryPlan a = plan_memory(preset_input("llama-3.1-8b", QuantMode::NVFP4, 1, 1024));
  const MemoryPlan b = plan_memory(preset_input("llama-3.1-8b", QuantMode::NVFP4, 8, 1024));
  const MemoryPlan c = plan_memory(preset_input("llama-3.1-8b", QuantMode::NVFP4, 1, 4096));
  EXPECT_EQ(a.state_per_sequence, 32ull * 2 * 1024 * 8 * 128 * 2);  // 128 MiB: 32 layers' K and V
  EXPECT_EQ(item(b.run, "KV cache"), 8 * a.state_per_sequence);
  EXPECT_EQ(c.state_per_sequence, 4 * a.state_per_sequence);
  EXPECT_GT(c.arena_bytes, a.arena_bytes);
  EXPECT_EQ(a.weights_on_gpu(), c.weights_on_gpu());
}

// Where the embedding on the host is not enough, the prefill budget is halved until the plan fits, never below
// the longest prompt.
TEST(MemoryPlan, LowersThePrefillBudgetBeforeTouchingTheLmHead) {
  MemoryPlanInput in = preset_input("nemotron-nano-9b-v2", QuantMode::NVFP4, 4, 1300);
  in.forward_tokens = 4400;
  in.longest_prompt = 1100;
  MemoryPlanInput small = in, big = in;
  small.embedding_on_host = big.embedding_on_host = true;
  small.forward_tokens = 1100;
  const uint64_t lo = plan_memory(small).device_peak(), hi = plan_memory(big).device_peak();
  ASSERT_LT(lo, hi);
  const uint64_t limit = (lo + hi) / 2 + (160ull << 20);
  const MemoryFit f = fit_memory(in, limit, EmbeddingPlace::Auto, true);
  EXPECT_TRUE(f.embedding_on_host);
  EXPECT_FALSE(f.lm_head_nvfp4);
  EXPECT_LT(f.forward_tokens, 4400);
  EXPECT_GE(f.forward_tokens, 1100);
  ASSERT_EQ(f.choices.size(), 2u);
  EXPECT_NE(f.choices[1].find("prefill passes of at most"), std::string::npos) << f.choices[1];
  EXPECT_LE(f.plan.device_peak(), limit - plan_headroom(limit));
}

TEST(MemoryPlan, ShapeFollowsPromptsAndPrefillBudget) {
  const MemoryShape s = memory_shape_for({100, 300, 50}, 64, 2, 256);
  EXPECT_EQ(s.batch, 2);
  EXPECT_EQ(s.tokens_per_sequence, 364);
  EXPECT_EQ(s.forward_tokens, 300);  // the longest prompt alone beats the 256-token budget
  EXPECT_EQ(memory_shape_for({100, 100, 100, 100}, 8, 4, 8192).forward_tokens, 400);
  EXPECT_EQ(memory_shape_for({100, 100}, 8, 4, 0).forward_tokens, 100);
  EXPECT_EQ(memory_shape_for({100, 100, 100, 100}, 8, 2, 8192).forward_tokens, 200);  // a batch of 2 at most
  EXPECT_EQ(s.longest_prompt, 300);
}

// The commands that print the plan: inspect --memory, and explain's fit column from the same plan.
TEST(MemoryPlan, InspectAndExplainPrintThePlan) {
  auto r = run_fp4lab(
      "inspect preset:nemotron-nano-9b-v2 --memory --quant nvfp4 --context 384 --gpu-memory-limit 7.5GiB");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("embedding, BF16 (pinned host memory)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("chosen: embedding in pinned host memory"), std::string::npos) << r.out;
  r = run_fp4lab("inspect preset:nemotron-nano-9b-v2 --memory --quant bf16 --gpu-memory-limit 7.5GiB");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("over the limit of 7.50 GiB"), std::string::npos) << r.out;
  r = run_fp4lab("explain --gpu \"RTX 4060 Laptop\"");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto row = r.out.substr(r.out.find("RTX 4060 Laptop"));
  const auto line = row.substr(0, row.find('\n'));
  // BF16 and FP8 (9 GB of weights) do not fit; NVFP4 does, with the embedding on the host.
  const auto first = line.find("no fit"), second = line.find("no fit", first + 1);
  EXPECT_NE(first, std::string::npos) << line;
  EXPECT_NE(second, std::string::npos) << line;
  EXPECT_EQ(line.find("no fit", second + 1), std::string::npos) << line;
  EXPECT_NE(line.find("host emb"), std::string::npos) << line;
  // 12 and 16 GB cards: BF16 (17.6 GiB) still does not fit, NVFP4 fits with the embedding on the GPU.
  r = run_fp4lab("explain --gpu \"RTX 3060 12GB,RTX 4080\"");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* gpu : {"RTX 3060 12GB", "RTX 4080"}) {
    const auto at = r.out.find(std::string(gpu) + " ");
    ASSERT_NE(at, std::string::npos) << gpu << r.out;
    const auto l = r.out.substr(at, r.out.find('\n', at) - at);
    EXPECT_NE(l.find("no fit"), std::string::npos) << l;
    EXPECT_EQ(l.find("host emb"), std::string::npos) << l;
    EXPECT_EQ(l.find("no fit", l.find("no fit") + 1), std::string::npos) << l;
  }
}

// With the wgmma kernels allowed, forwards of 256-511 tokens stage X as B images for the wide layers: even
// when the largest forward is 4096 tokens (dequant + cuBLAS there), the workspace holds the B image of a
// 511-token pass on Llama's gate and up projections (K 4096, BF16) on top of what dequant + cuBLAS needs.
TEST(MemoryPlan, WgmmaWorkspaceHoldsTheLargestBImage) {
  MemoryPlanInput in = preset_input("llama-3.1-8b", QuantMode::NVFP4, 1, 4096);
  const uint64_t without = item(plan_memory(in).run, "workspaces");
  in.wgmma = true;
  const uint64_t with = item(plan_memory(in).run, "workspaces");
  EXPECT_GE(with, without + 511ull * 4096 * 2);
}

// --quant fp8: the linear weights at one byte each (plus a scale per row), the lm_head in BF16; past the
// GEMV's rows the workspaces hold the quantized activations and cuBLASLt's workspace (W8A8) or a BF16 copy of
// the largest FP8 weight (dequantize + cuBLAS).
TEST(MemoryPlan, Fp8WeightsAndWorkspaces) {
  MemoryPlanInput in = preset_input("llama-3.1-8b", QuantMode::FP8, 1, 2048);
  uint64_t want = 0;
  for (const auto& p : in.plans)
    if (p.fp8) want += static_cast<uint64_t>(p.spec.n * p.spec.k + 4 * p.spec.n);
  const uint64_t largest = 2ull * 28672 * 4096;  // gate | up joined, in BF16
  const MemoryPlan plan = plan_memory(in);
  EXPECT_EQ(item(plan.weights, "linear weights, FP8"), want);
  EXPECT_EQ(item(plan.weights, "lm_head, BF16"), 2ull * 128256 * 4096);
  const uint64_t dequant = item(plan.run, "workspaces");
  in.fp8_w8a8 = true;
  const uint64_t w8a8 = item(plan_memory(in).run, "workspaces");
  EXPECT_GE(dequant, largest);
  EXPECT_GE(w8a8, kLtGemmWorkspaceBytes + 2048ull * 14336);
  EXPECT_LT(w8a8, dequant);
}
