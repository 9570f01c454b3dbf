// The CUDA backend against HF goldens (teacher-forced, BF16) and against the CPU backend. Skipped without a
// GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/backends.h"
#include "cpu/reference.h"
#include "cuda/cuda_ops.h"
#include "cuda/launch.h"
#include "cuda/tensor_parallel.h"
#include "engine/cuda_run.h"
#include "engine/generate.h"
#include "model/tensor_parallel.h"
#include "eval/metrics.h"
#include "gpu_util.h"
#include "io/safetensors.h"
#include "model/export.h"
#include "test_util.h"

using namespace fp4lab;
namespace fs = std::filesystem;

namespace {

struct TeacherForced {
  double agreement = 0, mean_kl = 0;
  int positions = 0, confident = 0, confident_miss = 0;
};

// Prompt + golden greedy continuation as one sequence; each position's argmax against the golden next token.
TeacherForced teacher_forced(const std::string& name, QuantMode mode) {
  const std::string dir = fp4lab::test::data_dir() + "/models/" + name;
  const json g = read_json_file(dir + "/golden.json");
  const auto prompt = g["prompt_ids"].get<std::vector<int>>();
  const auto greedy = g["greedy_new_ids"].get<std::vector<int>>();
  const auto margin = g["greedy_top1_top2_margin"].get<std::vector<float>>();
  const auto gl = tensor_to_f32(TensorStore::open_file(dir + "/golden_logits.safetensors").get("logits"));
  std::vector<int> seq = prompt;
  seq.insert(seq.end(), greedy.begin(), greedy.end() - 1);
  CudaOps ops;
  CudaModel model(load_weights(dir, mode), ops);
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  auto s = model.new_sequence(static_cast<int>(seq.size()));
  const auto logits = model.forward(s, seq, true);
  TeacherForced r;
  int agree = 0;
  for (size_t p = 0; p < seq.size(); ++p) {
    auto ours = std::span<const float>(logits).subspan(p * V, V);
    const int mine = static_cast<int>(std::max_element(ours.begin(), ours.end()) - ours.begin());
    int want;
    float m;
    if (p < prompt.size()) {
      auto ref = std::span<const float>(gl).subspan(p * V, V);
      std::vector<float> sorted(ref.begin(), ref.end());
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      want = static_cast<int>(std::max_element(ref.begin(), ref.end()) - ref.begin());
      m = sorted[0] - sorted[1];
      r.mean_kl += kl_divergence(ref, ours);
    } else {
      want = greedy[p - prompt.size() + 1];
      m = margin[p - prompt.size() + 1];
    }
    agree += mine == want;
    if (m > 0.1f) {
      ++r.confident;
      r.confident_miss += mine != want;
    }
  }
  r.positions = static_cast<int>(seq.size());
  r.agreement = double(agree) / seq.size();
  r.mean_kl /= prompt.size();
  std::printf(
      "%s %s CUDA teacher-forced: argmax agreement %.3f over %d positions, %d/%d confident positions missed, "
      "mean KL(golden || cuda) %.5f over the prompt\n",
      name.c_str(), quant_mode_name(mode), r.agreement, r.positions, r.confident_miss, r.confident,
      r.mean_kl);
  return r;
}

// Runs f(name, quantization, model, golden prompt) for the tiny Llama, Qwen3 and Nemotron-H models, each in
// BF16 and NVFP4, on the GPU.
template <class F>
void for_each_tiny_model(F&& f) {
  for (const char* m : {"tiny-llama", "tiny-qwen3", "tiny-nemotron-h"})
    for (QuantMode q : {QuantMode::BF16, QuantMode::NVFP4}) {
      const std::string dir = fp4lab::test::data_dir() + "/models/" + m;
      const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
      CudaOps ops;
      CudaModel model(load_weights(dir, q), ops);
      f(m, q, model, prompt);
    }
}

}  // namespace

TEST(GpuEngine, Bf16TeacherForcedAgainstGoldens) {
  REQUIRE_GPU();
  // Measured on H100 (docs/perf/engine-h100.md): agreement 0.94-0.98, no confident miss on the three random
  // tiny models; stories260k (hidden 64, BF16 weights and activations against float32 goldens) misses 4 of
  // 186 positions whose golden margin exceeds 0.1. The target (>= 95%, no confident miss) is recorded
  // as not met there.
  for (const char* m : {"stories260k", "tiny-llama", "tiny-qwen3", "tiny-nemotron-h"}) {
    const auto r = teacher_forced(m, QuantMode::BF16);
    EXPECT_GE(r.agreement, 0.93) << m;
    EXPECT_LE(r.confident_miss, std::string(m) == "stories260k" ? 6 : 0) << m;
    EXPECT_LT(r.mean_kl, 0.01) << m;
  }
}

TEST(GpuEngine, PrefillThenDecodeEqualsFullPrefill) {
  REQUIRE_GPU();
  for (const char* m : {"tiny-llama", "tiny-nemotron-h"}) {
    const std::string dir = fp4lab::test::data_dir() + "/models/" + m;
    const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
    CudaOps ops;
    CudaModel model(load_weights(dir, QuantMode::BF16), ops);
    const size_t V = 512;
    auto a = model.new_sequence(64), b = model.new_sequence(64);
    const auto full = model.forward(a, prompt, true);
    model.forward(b, std::span<const int>(prompt).first(17), false);
    for (size_t i = 17; i < prompt.size(); ++i) {
      const auto step = model.forward(b, std::span<const int>(prompt).subspan(i, 1), false);
      float md = 0, mx = 0;
      for (size_t v = 0; v < V; ++v) {
        md = std::max(md, std::fabs(step[v] - full[i * V + v]));
        mx = std::max(mx, std::fabs(full[i * V + v]));
      }
      // Same math, different kernels' rounding order (chunked prefill vs one-step decode): BF16-level
      // differences.
      EXPECT_LE(md, 0.05f * mx + 0.05f) << m << " position " << i;
    }
  }
}

TEST(GpuEngine, BatchedDecodeOfDifferentLengthsEqualsSingleSteps) {
  REQUIRE_GPU();
  for_each_tiny_model([](const char* m, QuantMode q, CudaModel& model, const std::vector<int>& prompt) {
    const size_t V = static_cast<size_t>(model.config().vocab_size);
    // 20 sequences (an M that takes the tensor-core GEMM path), lengths 5..24.
    const int B = 20;
    std::vector<CudaModel::State> solo, batched;
    std::vector<CudaModel::State*> ptrs;
    std::vector<int> toks;
    for (int j = 0; j < B; ++j) {
      solo.push_back(model.new_sequence(64));
      batched.push_back(model.new_sequence(64));
      const auto pre = std::span<const int>(prompt).first(static_cast<size_t>(5 + j));
      model.forward(solo.back(), pre, false);
      model.forward(batched.back(), pre, false);
      toks.push_back(prompt[static_cast<size_t>(5 + j)]);
    }
    for (auto& s : batched) ptrs.push_back(&s);
    for (int step = 0; step < 3; ++step) {
      const auto out = model.decode_batch(ptrs, toks);
      ASSERT_EQ(out.size(), B * V);
      for (int j = 0; j < B; ++j) {
        const int one[1] = {toks[static_cast<size_t>(j)]};
        const auto ref = model.forward(solo[static_cast<size_t>(j)], one, false);
        float md = 0, mx = 0;
        for (size_t v = 0; v < V; ++v) {
          md = std::max(md, std::fabs(out[static_cast<size_t>(j) * V + v] - ref[v]));
          mx = std::max(mx, std::fabs(ref[v]));
        }
        // Other GEMM variants for M = 20 than for M = 1: BF16 rounding-level differences only.
        EXPECT_LE(md, 0.05f * mx + 0.05f)
            << m << " " << quant_mode_name(q) << " row " << j << " step " << step;
      }
      for (int j = 0; j < B; ++j)
        toks[static_cast<size_t>(j)] = (toks[static_cast<size_t>(j)] + 7 * j + 1) % 64;
    }
  });
}

// Prompts of different lengths prefilled in one forward (their rows as one GEMM batch, attention / conv /
// scan for all prompts in one launch each, the last rows gathered): each prompt's logits and its next decode
// step match the same prompt prefilled alone, to BF16 rounding (the GEMMs run other variants at the joined
// M).
TEST(GpuEngine, BatchedPrefillEqualsOnePromptAtATime) {
  REQUIRE_GPU();
  for_each_tiny_model([](const char* m, QuantMode q, CudaModel& model, const std::vector<int>& prompt) {
    const size_t V = static_cast<size_t>(model.config().vocab_size);
    const std::vector<size_t> lens{prompt.size() - 1, 1, 17, 5, 33 % prompt.size() + 1};
    std::vector<CudaModel::State> solo, joined;
    std::vector<CudaModel::State*> ptrs;
    std::vector<std::vector<int>> prompts;
    std::vector<std::vector<float>> ref;
    for (size_t L : lens) {
      prompts.emplace_back(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(L));
      solo.push_back(model.new_sequence(64));
      joined.push_back(model.new_sequence(64));
      ref.push_back(model.forward(solo.back(), prompts.back(), false));
    }
    for (auto& st : joined) ptrs.push_back(&st);
    auto check = [&](const std::vector<float>& out, const char* what) {
      ASSERT_EQ(out.size(), lens.size() * V);
      for (size_t j = 0; j < lens.size(); ++j) {
        float md = 0, mx = 0;
        for (size_t v = 0; v < V; ++v) {
          md = std::max(md, std::fabs(out[j * V + v] - ref[j][v]));
          mx = std::max(mx, std::fabs(ref[j][v]));
        }
        EXPECT_LE(md, 0.05f * mx + 0.05f)
            << m << " " << quant_mode_name(q) << " " << what << ", prompt " << j;
      }
    };
    check(model.prefill_batch(ptrs, prompts), "batched prefill");
    std::vector<int> toks;
    for (size_t j = 0; j < lens.size(); ++j) {
      toks.push_back(prompt[lens[j]]);
      const int one[1] = {toks.back()};
      ref[j] = model.forward(solo[j], one, false);
    }
    check(model.decode_batch(ptrs, toks), "decode step after it");
  });
}

// Programmatic dependent launch lets each decode kernel start while the previous one drains; a kernel that
// touched its inputs before griddep_wait would race. With it on and off, graph-replayed and eager single
// steps and batched steps must give the same bits (the kernels and their order are the same). On GPUs before
// sm_90 both runs take the same path and the test passes trivially.
// The same holds for the fused decode kernels and the separate ones (--no-fused-mamba, --no-fused-rope).
TEST(GpuEngine, ProgrammaticLaunchIsBitIdentical) {
  REQUIRE_GPU();
  struct Restore {
    ~Restore() { set_programmatic_launch(true); }
  } restore;
  for (const char* m : {"tiny-llama", "tiny-qwen3", "tiny-nemotron-h"}) {
    for (QuantMode q : {QuantMode::BF16, QuantMode::NVFP4}) {
      const std::string dir = fp4lab::test::data_dir() + "/models/" + m;
      const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
      auto run = [&](bool pdl, bool graphs, bool fused = true) {
        set_programmatic_launch(pdl);
        CudaOps ops(0, graphs);
        ops.set_fused_mamba(fused);
        ops.set_fused_rope(fused);
        CudaModel model(load_weights(dir, q), ops);
        std::vector<float> all;
        auto s = model.new_sequence(96);
        auto out = model.forward(s, std::span<const int>(prompt).first(20), false);
        all.insert(all.end(), out.begin(), out.end());
        for (int i = 0; i < 24; ++i) {  // enough replays for a race to show
          const int t[1] = {prompt[static_cast<size_t>(20 + i % 16)]};
          out = model.forward(s, t, false);
          all.insert(all.end(), out.begin(), out.end());
        }
        std::vector<CudaModel::State> seqs;
        std::vector<CudaModel::State*> ptrs;
        std::vector<int> toks;
        for (int j = 0; j < 6; ++j) {
          seqs.push_back(model.new_sequence(64));
          model.forward(seqs.back(), std::span<const int>(prompt).first(static_cast<size_t>(4 + j)), false);
          toks.push_back(prompt[static_cast<size_t>(4 + j)]);
        }
        for (auto& st : seqs) ptrs.push_back(&st);
        for (int step = 0; step < 4; ++step) {
          out = model.decode_batch(ptrs, toks);
          all.insert(all.end(), out.begin(), out.end());
        }
        return all;
      };
      for (bool graphs : {true, false}) {
        const auto off = run(false, graphs), on = run(true, graphs);
        ASSERT_EQ(off.size(), on.size());
        size_t diff = 0;
        for (size_t i = 0; i < off.size(); ++i) diff += std::memcmp(&off[i], &on[i], sizeof(float)) != 0;
        EXPECT_EQ(diff, 0u) << m << " " << quant_mode_name(q) << (graphs ? " graphs" : " eager");
        // The fused decode kernels (the two-kernel Mamba step, RoPE and the cache append inside attention)
        // against the separate ones, at batch 1 and batched.
        const auto apart = run(true, graphs, false);
        diff = 0;
        for (size_t i = 0; i < apart.size(); ++i) diff += std::memcmp(&apart[i], &on[i], sizeof(float)) != 0;
        EXPECT_EQ(diff, 0u) << m << " " << quant_mode_name(q) << (graphs ? " graphs" : " eager")
                            << ": fused decode kernels against separate ones";
      }
    }
  }
}

// Prefill logits of the golden prompt, then six single-token decode steps (fixed ids): with graphs on, the
// first runs eagerly, the second is captured (NCCL all-reduces and the vocab all-gather included) and the
// rest replay it.
static std::vector<float> tp_logits(const ModelWeights& full, const std::vector<int>& prompt, int tp,
                                    bool graphs) {
  std::vector<float> out;
  auto body = [&](CudaModel& m, int rank) {
    auto s = m.new_sequence(64);
    auto l = m.forward(s, prompt, true);
    for (int step = 0; step < 6; ++step) {
      const int tok = (step * 37 + 5) % m.config().vocab_size;
      const auto d = m.forward(s, std::span<const int>(&tok, 1), false);
      l.insert(l.end(), d.begin(), d.end());
    }
    if (rank == 0) out = std::move(l);
  };
  if (tp == 0) {  // the single-GPU path, no NCCL
    CudaOps ops(0, graphs);
    CudaModel m(ModelWeights(full), ops);
    body(m, 0);
  } else {
    run_tensor_parallel(tp, graphs, [&](int rank, CudaOps& ops) {
      CudaModel m(shard_for_tensor_parallel(full, rank, tp), ops);
      body(m, rank);
    });
  }
  return out;
}

// The real loading path against the preset it was exported from: a checkpoint streamed from its files (BF16
// copied as stored, NVFP4 codes as stored, or the BF16 export quantized on the GPU at load) gives the preset's
// logits bit for bit, and so does the host path of the same checkpoint.
TEST(GpuEngine, ExportedCheckpointsStreamToThePresetsLogits) {
  REQUIRE_GPU();
  std::vector<int> prompt;
  for (int i = 0; i < 12; ++i) prompt.push_back(1 + i * 37);
  for (const char* preset : {"tiny", "tiny-nemotron-h"}) {
    fp4lab::test::TempDir d;
    ExportOptions eo;
    eo.seed = 9;
    eo.shard_bytes = 400000;
    eo.quant = QuantMode::BF16;
    export_preset(preset, d.str("bf16"), eo);
    eo.quant = QuantMode::NVFP4;
    export_preset(preset, d.str("nvfp4"), eo);
    for (QuantMode q : {QuantMode::BF16, QuantMode::NVFP4}) {
      const std::string what = std::string(preset) + " " + quant_mode_name(q);
      const std::string dir = d.str(q == QuantMode::BF16 ? "bf16" : "nvfp4");
      const std::vector<float> want = tp_logits(synthetic_weights(preset, q, 9, false), prompt, 0, true);
      const ModelWeights streamed = load_weights(dir, QuantMode::Auto, WeightHome::Device);
      ASSERT_TRUE(streamed.streamed()) << what;
      EXPECT_EQ(tp_logits(streamed, prompt, 0, true), want) << what << ": streamed checkpoint vs preset";
      EXPECT_EQ(tp_logits(load_weights(dir, QuantMode::Auto, WeightHome::Host), prompt, 0, true), want)
          << what << ": host-path checkpoint vs preset";
    }
    const ModelWeights at_load = load_weights(d.str("bf16"), QuantMode::NVFP4, WeightHome::Device);
    ASSERT_TRUE(at_load.streamed());
    EXPECT_EQ(tp_logits(at_load, prompt, 0, true),
              tp_logits(load_weights(d.str("nvfp4"), QuantMode::Auto, WeightHome::Device), prompt, 0, true))
        << preset << ": BF16 quantized on the GPU at load vs the NVFP4 export";
  }
}

// A NaN or an Inf in a large tensor streamed to the GPU (never read on the host) stops the load naming it: a
// BF16 linear weight (NaN), the embedding (-Inf), and an NVFP4 block scale (E4M3 NaN, 0x7f).
TEST(GpuEngine, StreamedNonFiniteWeightsAreRefused) {
  REQUIRE_GPU();
  fp4lab::test::TempDir d;
  ExportOptions eo;
  eo.quant = QuantMode::BF16;
  export_preset("tiny", d.str("bf16"), eo);
  eo.quant = QuantMode::NVFP4;
  export_preset("tiny", d.str("nvfp4"), eo);
  struct Poison {
    std::string src, target;
    size_t at;
    std::vector<uint8_t> bytes;
  };
  const std::vector<Poison> cases = {
      {"bf16", "model.layers.2.mlp.down_proj.weight", 2 * 1234, {0xc0, 0x7f}},
      {"bf16", "model.embed_tokens.weight", 2 * 1234, {0x80, 0xff}},
      {"nvfp4", "model.layers.2.mlp.down_proj.weight_scale", 77, {0x7f}},
  };
  for (const auto& c : cases) {
    const std::string dir = d.str("bad");
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const auto& f : fs::directory_iterator(d.str(c.src)))
      if (f.path().extension() == ".json") fs::copy_file(f.path(), dir + "/" + f.path().filename().string());
    fp4lab::test::rewrite_tensors(d.str(c.src), dir + "/model.safetensors", [&](const std::string& name, auto& b) {
      if (name == c.target) std::memcpy(b.data() + c.at, c.bytes.data(), c.bytes.size());
      return true;
    });
    const ModelWeights mw = load_weights(dir, QuantMode::Auto, WeightHome::Device);
    ASSERT_TRUE(mw.streamed());
    try {
      CudaOps ops(0, true);
      CudaModel m(ModelWeights(mw), ops);
      ADD_FAILURE() << c.target << ": a non-finite value was loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + c.target + "' holds 1 non-finite"), std::string::npos)
          << e.what();
    }
  }
}

// The memory plan against what a run held (continuous batching of three prompts, prefill and decode, both
// architectures, BF16, NVFP4 and FP8, the embedding on the GPU and in pinned host memory): fp4lab's buffers
// never peak above the plan, the activation arena never grows past the plan's reservation, and the plan is
// not far above the peak. The embedding on the host gives the same tokens.
TEST(GpuEngine, MemoryPlanCoversTheMeasuredPeak) {
  REQUIRE_GPU();
  for (const char* name : {"tiny-llama", "tiny-nemotron-h"})
    for (QuantMode q : {QuantMode::BF16, QuantMode::NVFP4, QuantMode::FP8}) {
      const std::string dir = fp4lab::test::data_dir() + "/models/" + name;
      const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
      const std::vector<std::vector<int>> prompts(3, prompt);
      GenerateOptions g;
      g.max_new_tokens = 16;
      g.max_batch = 3;
      g.stop_ids = {};
      std::vector<std::vector<int>> want;
      for (const EmbeddingPlace e : {EmbeddingPlace::Gpu, EmbeddingPlace::Host}) {
        const std::string what = std::string(name) + " " + quant_mode_name(q) + " embedding " + embedding_place_name(e);
        CudaRunOptions ro;
        ro.embedding = e;
        ro.shape = memory_shape_for(std::vector<int>(3, static_cast<int>(prompt.size())), g.max_new_tokens,
                                    g.max_batch, g.prefill_tokens);
        MemoryReport rep;
        ro.report = &rep;
        std::vector<std::vector<int>> ids;
        run_cuda_model(load_weights(dir, q, WeightHome::Device), ro,
                       [&](CudaModel& m, CudaOps&, int) { ids = generate(m, prompts, g).new_ids; });
        EXPECT_EQ(rep.fit.embedding_on_host, e == EmbeddingPlace::Host) << what;
        EXPECT_GT(rep.buffers_peak, 0u) << what;
        EXPECT_LE(rep.buffers_peak, rep.fit.plan.buffers_peak()) << what;
        EXPECT_EQ(rep.arena_growths, 0) << what;
        EXPECT_LE(rep.fit.plan.buffers_peak(), 2 * rep.buffers_peak + (16ull << 20)) << what;
        if (want.empty())
          want = ids;
        else
          EXPECT_EQ(ids, want) << what;
      }
    }
}

// --lm-head nvfp4 on the GPU against the CPU backend with the same lm_head: a tied one (stories260k, quantized
// from the embedding), an untied one read on the host (tiny-llama, F32), and a preset's, generated and
// quantized on the device. Same codes on both sides, so the logits differ only by BF16 activations.
TEST(GpuEngine, Nvfp4LmHeadMatchesTheCpu) {
  REQUIRE_GPU();
  for (const std::string model : {"stories260k", "tiny-llama", "preset:tiny"}) {
    const bool preset = model.rfind("preset:", 0) == 0;
    const std::string src = preset ? model : fp4lab::test::data_dir() + "/models/" + model;
    const std::vector<int> seq = {1, 5, 9, 33, 70, 12, 8, 100, 3, 44};
    for (const LmHeadMode head : {LmHeadMode::BF16, LmHeadMode::NVFP4}) {
      const std::string what = model + " lm_head " + lm_head_mode_name(head);
      CpuOps cops;
      CpuModel cpu(with_lm_head(load_model(src, QuantMode::BF16, 7, true), head), cops);
      ASSERT_EQ(cpu.weights().lm_head.nvfp4.has_value(), head == LmHeadMode::NVFP4) << what;
      auto cs = cpu.new_sequence(static_cast<int>(seq.size()));
      const auto want = cpu.forward(cs, seq, true);
      CudaRunOptions ro;
      ro.lm_head = head;
      ro.shape.tokens_per_sequence = ro.shape.forward_tokens = ro.shape.logits_rows = static_cast<int>(seq.size());
      MemoryReport rep;
      ro.report = &rep;
      std::vector<float> got;
      run_cuda_model(load_model(src, QuantMode::BF16, 7, false), ro, [&](CudaModel& m, CudaOps&, int) {
        auto s = m.new_sequence(static_cast<int>(seq.size()));
        got = m.forward(s, seq, true);
      });
      ASSERT_EQ(got.size(), want.size()) << what;
      const size_t V = want.size() / seq.size();
      double kl = 0;
      int agree = 0;
      float max_abs = 0, max_diff = 0;
      for (size_t p = 0; p < seq.size(); ++p) {
        const auto a = std::span<const float>(want).subspan(p * V, V), b = std::span<const float>(got).subspan(p * V, V);
        kl += kl_divergence(a, b);
        agree += std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(b.begin(), b.end()) - b.begin();
        for (size_t i = 0; i < V; ++i) {
          max_abs = std::max(max_abs, std::fabs(a[i]));
          max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
        }
      }
      std::printf("%s: KL(cpu || cuda) %.3g, argmax agreement %d/%zu, max |logit| %.3g, max diff %.3g\n", what.c_str(),
                  kl / seq.size(), agree, seq.size(), max_abs, max_diff);
      EXPECT_LT(kl / seq.size(), 2e-3) << what;
      EXPECT_LE(max_diff, 0.05f * max_abs + 1e-3f) << what;
      bool head_fp4 = false;
      for (const auto& i : rep.fit.plan.weights) head_fp4 = head_fp4 || i.name == "lm_head, NVFP4";
      EXPECT_EQ(head_fp4, head == LmHeadMode::NVFP4) << what;
      if (head != LmHeadMode::NVFP4) continue;
      // The lm_head quantized in row chunks (two passes over its source, 7 rows' worth at a time) gives the
      // same codes, so the same logits bit for bit.
      CudaOps ops;
      ops.set_quantize_chunk_bytes(7 * 2 * static_cast<size_t>(cpu.config().hidden_size));
      CudaModel chunked(with_lm_head(load_model(src, QuantMode::BF16, 7, false), head), ops);
      auto s = chunked.new_sequence(static_cast<int>(seq.size()));
      EXPECT_EQ(chunked.forward(s, seq, true), got) << what << ", chunked";
    }
  }
}

// A limit below what the context needs is refused before anything loads, and a buffer past the cap is one
// line naming the cap, never an out-of-memory crash.
TEST(GpuEngine, GpuMemoryLimitIsOneClearError) {
  REQUIRE_GPU();
  const std::string dir = fp4lab::test::data_dir() + "/models/tiny-llama";
  CudaRunOptions ro;
  ro.gpu_memory_limit = 8ull << 20;
  ro.shape.tokens_per_sequence = 64;
  try {
    run_cuda_model(load_weights(dir, QuantMode::Auto, WeightHome::Device), ro, [](CudaModel&, CudaOps&, int) {});
    ADD_FAILURE() << "an 8 MiB limit was accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("over the limit of 8 MiB") != std::string::npos ||
                m.find("leaves nothing beside the CUDA context") != std::string::npos)
        << m;
  }
  set_device_memory_cap(1ull << 20, "a test cap");
  try {
    DeviceBuffer b(4ull << 20);
    ADD_FAILURE() << "a buffer past the cap was allocated";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPU memory limit: 4 MiB more"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(a test cap)"), std::string::npos) << e.what();
  }
  set_device_memory_cap(0, "");
}

// Every (model, quantization, graphs) case of the tensor-parallel checks.
template <class F>
static void for_each_tp_case(F&& f) {
  for (const char* name : {"tiny-llama", "tiny-nemotron-h"})
    for (QuantMode q : {QuantMode::BF16, QuantMode::NVFP4})
      for (bool graphs : {false, true}) {
        const std::string dir = fp4lab::test::data_dir() + "/models/" + name;
        const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
        const ModelWeights full = load_weights(dir, q);
        const std::string what =
            std::string(name) + " " + quant_mode_name(q) + (graphs ? " graphs" : " eager");
        f(full, prompt, graphs, what);
      }
}

// Both architectures go through the CUDA kernels and NCCL, vocab-parallel embeddings and lm_head included,
// eagerly and with the decode steps captured in graphs. A build without NCCL fails here rather than
// skipping: the CLI's --tp would not work either.
TEST(GpuTensorParallel, Tp1IsBitIdentical) {
  REQUIRE_GPU();
  ASSERT_TRUE(tensor_parallel_available()) << "built without NCCL: --tp is unavailable (FP4LAB_NCCL)";
  for_each_tp_case([](const ModelWeights& full, const std::vector<int>& prompt, bool graphs,
                      const std::string& what) {
    EXPECT_EQ(tp_logits(full, prompt, 1, graphs), tp_logits(full, prompt, 0, graphs))
        << what << ": TP=1 must be the single-GPU path bit for bit";
  });
}

// Nemotron-H's Mamba split is also checked on CPU ranks in CI (TensorParallel.CpuRanksReproduceTheUnsplitModel).
TEST(GpuTensorParallel, Tp2MatchesWithinBf16) {
  REQUIRE_GPUS(2);
  ASSERT_TRUE(tensor_parallel_available()) << "built without NCCL: --tp is unavailable (FP4LAB_NCCL)";
  for_each_tp_case([](const ModelWeights& full, const std::vector<int>& prompt, bool graphs,
                      const std::string& what) {
    const std::vector<float> single = tp_logits(full, prompt, 0, graphs), tp2 = tp_logits(full, prompt, 2, graphs);
    ASSERT_EQ(tp2.size(), single.size()) << what;
    float md = 0, mx = 0;
    for (size_t i = 0; i < single.size(); ++i) {
      md = std::max(md, std::fabs(tp2[i] - single[i]));
      mx = std::max(mx, std::fabs(single[i]));
    }
    // Partial sums in BF16 added by the all-reduce: BF16-rounding-level differences only.
    EXPECT_LE(md, 0.05f * mx + 0.05f) << what << " TP=2 vs TP=1";
    std::printf("%s TP=2 vs TP=1 (prefill + 6 decode steps): max |logit diff| %.4f over max |logit| %.3f\n",
                what.c_str(), md, mx);
  });
}

TEST(GpuEngine, Nvfp4CudaAgreesWithCpu) {
  REQUIRE_GPU();
  for (const char* m : {"stories260k", "tiny-nemotron-h"}) {
    const std::string dir = fp4lab::test::data_dir() + "/models/" + m;
    const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
    std::vector<int> seq = prompt;
    for (int i = 0; seq.size() < 40; ++i) seq.push_back((i * 37 + 11) % 512);
    CpuOps cops;
    CpuModel cpu(load_weights(dir, QuantMode::NVFP4), cops);
    CudaOps gops;
    CudaModel gpu(load_weights(dir, QuantMode::NVFP4), gops);
    auto sc = cpu.new_sequence(64);
    auto sg = gpu.new_sequence(64);
    const auto lc = cpu.forward(sc, seq, true), lg = gpu.forward(sg, seq, true);
    const size_t V = 512;
    int agree = 0;
    double kl = 0;
    for (size_t p = 0; p < seq.size(); ++p) {
      auto c = std::span<const float>(lc).subspan(p * V, V), g = std::span<const float>(lg).subspan(p * V, V);
      agree += std::max_element(c.begin(), c.end()) - c.begin() ==
               std::max_element(g.begin(), g.end()) - g.begin();
      kl += kl_divergence(c, g);
    }
    std::printf("%s NVFP4: CUDA vs CPU argmax agreement %.3f, mean KL %.5f over %zu positions\n", m,
                double(agree) / seq.size(), kl / seq.size(), seq.size());
    // BF16 activations on the GPU against float32 on the CPU, same NVFP4 weights: the 64-wide stories260k is
    // the most sensitive (measured 0.85, KL 0.003); tiny-nemotron-h 0.975.
    EXPECT_GE(double(agree) / seq.size(), 0.8) << m;
    EXPECT_LT(kl / seq.size(), 0.01) << m;
  }
}

// Flash-decoding: the decode attention split over the key range (forced 8 splits, and the automatic choice
// for a 2048-token cache) gives the logits of the one-block-per-head kernel, through a 1400-token prefill and
// 24 graph-replayed decode steps, and agrees with the CPU reference.
TEST(GpuEngine, SplitAttentionMatchesOneBlockAndCpuAtLongContext) {
  REQUIRE_GPU();
  const std::string dir = fp4lab::test::data_dir() + "/models/tiny-llama";
  std::vector<int> seq;
  for (int i = 0; i < 1424; ++i) seq.push_back((i * 7919 + 13) % 512);
  const int prefill = 1400;
  const size_t V = 512;
  auto run_gpu = [&](int splits) {
    CudaOps ops;
    ops.set_attention_splits(splits);
    CudaModel model(load_weights(dir, QuantMode::BF16), ops);
    auto st = model.new_sequence(2048);
    std::vector<float> out = model.forward(st, std::span<const int>(seq).first(prefill), false);
    out.clear();
    for (size_t i = prefill; i < seq.size(); ++i) {
      const auto step = model.forward(st, std::span<const int>(seq).subspan(i, 1), false);
      out.insert(out.end(), step.begin(), step.end());
    }
    return out;
  };
  const auto one = run_gpu(1), eight = run_gpu(8), automatic = run_gpu(0);
  CpuOps cops;
  CpuModel cpu(load_weights(dir, QuantMode::BF16), cops);
  auto sc = cpu.new_sequence(2048);
  const auto all = cpu.forward(sc, seq, true);
  const std::vector<float> ref(all.begin() + static_cast<std::ptrdiff_t>(prefill * V), all.end());
  ASSERT_EQ(one.size(), ref.size());
  int agree = 0;
  for (size_t p = 0; p < seq.size() - prefill; ++p) {
    float mx = 0, d8 = 0, da = 0;
    for (size_t v = 0; v < V; ++v) {
      const size_t i = p * V + v;
      mx = std::max(mx, std::fabs(one[i]));
      d8 = std::max(d8, std::fabs(eight[i] - one[i]));
      da = std::max(da, std::fabs(automatic[i] - one[i]));
    }
    // The split kernels round the attention output once, from FP32 partials merged in FP32: differences at
    // the BF16 rounding level of the attention output, not more.
    EXPECT_LE(d8, 0.02f * mx + 0.02f) << "step " << p;
    EXPECT_LE(da, 0.02f * mx + 0.02f) << "step " << p;
    auto c = std::span<const float>(ref).subspan(p * V, V),
         g = std::span<const float>(eight).subspan(p * V, V);
    agree +=
        std::max_element(c.begin(), c.end()) - c.begin() == std::max_element(g.begin(), g.end()) - g.begin();
  }
  std::printf("split attention at 1400-1424 tokens: CPU argmax agreement %d/%zu\n", agree,
              seq.size() - prefill);
  EXPECT_GE(agree, static_cast<int>(0.7 * (seq.size() - prefill)));  // random tokens: small margins
}

TEST(GpuEngine, OutOfMemoryPlanIsAClearError) {
  REQUIRE_GPU();
  CudaOps ops;
  CudaModel model(synthetic_weights("tiny", QuantMode::NVFP4, 1, false), ops);
  try {
    model.new_sequence(1 << 30);
    FAIL() << "a billion-token cache was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPU memory are free"), std::string::npos) << e.what();
  }
}

// A prompt-sized NVFP4 prefill with the wgmma kernels (the heuristic's choice past 256 tokens) gives the
// logits of the mma.sync and decode kernels, and finite ones, on each architecture's layer set (the
// SwiGLU pair's interleaved scratch, Mamba's in/out projections, attention).
TEST(GpuEngine, WgmmaPrefillMatchesMmaPrefill) {
  REQUIRE_GPU();
  if (!wgmma_supported()) GTEST_SKIP() << "no sm_90a wgmma on this GPU or build";
  std::vector<int> seq;
  for (int i = 0; i < 700; ++i) seq.push_back((i * 7919 + 13) % 512);
  for (const char* m : {"tiny-llama", "tiny-nemotron-h", "tiny-qwen3"}) {
    const std::string dir = fp4lab::test::data_dir() + "/models/" + m;
    auto run = [&](bool wgmma) {
      CudaOps ops;
      ops.set_wgmma(wgmma);
      CudaModel model(load_weights(dir, QuantMode::NVFP4), ops);
      auto s = model.new_sequence(static_cast<int>(seq.size()));
      return model.forward(s, seq, true);
    };
    const auto a = run(true), b = run(false);
    ASSERT_EQ(a.size(), b.size());
    float md = 0, mx = 0;
    size_t nonfinite = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      nonfinite += !std::isfinite(a[i]);
      md = std::max(md, std::fabs(a[i] - b[i]));
      mx = std::max(mx, std::fabs(b[i]));
    }
    EXPECT_EQ(nonfinite, 0u) << m;
    // Same math, FP32 accumulation in another order, BF16 activations between the layers.
    EXPECT_LE(md, 0.05f * mx + 0.05f) << m;
    std::printf("%s NVFP4 prefill of %zu tokens, wgmma vs mma.sync: max |logit diff| %.4f over max %.3f\n", m,
                seq.size(), md, mx);
  }
}
