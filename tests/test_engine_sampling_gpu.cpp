// The CUDA backend's token pick against the host's: the device argmax of a batch (fixed and changing in size
// from step to step, as a server's), and the captured single-sequence step ending in the argmax, a sampled
// draw or the top-k candidates, against the same step's logits. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <span>
#include <vector>

#include "common/json_util.h"
#include "cpu/reference.h"
#include "engine/backends.h"
#include "engine/generate.h"
#include "engine/scheduler.h"
#include "gpu_util.h"
#include "test_util.h"

using namespace fp4lab;

TEST(GpuEngine, GreedyBatchArgmaxOnDeviceMatchesHostArgmax) {
  REQUIRE_GPU();
  const std::string dir = fp4lab::test::data_dir() + "/models/tiny-nemotron-h";
  const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
  CudaOps ops;
  CudaModel model(load_weights(dir, QuantMode::NVFP4), ops);
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  std::vector<CudaModel::State> a, b;
  std::vector<CudaModel::State*> pa, pb;
  std::vector<int> toks;
  for (int j = 0; j < 9; ++j) {
    const auto pre = std::span<const int>(prompt).first(static_cast<size_t>(3 + j));
    a.push_back(model.new_sequence(32));
    b.push_back(model.new_sequence(32));
    model.forward(a.back(), pre, false);
    model.forward(b.back(), pre, false);
    toks.push_back(prompt[static_cast<size_t>(3 + j)]);
  }
  for (int j = 0; j < 9; ++j)
    pa.push_back(&a[static_cast<size_t>(j)]), pb.push_back(&b[static_cast<size_t>(j)]);
  const auto logits = model.decode_batch(pa, toks);
  const auto ids = model.decode_batch_greedy(pb, toks);
  ASSERT_EQ(ids.size(), 9u);
  for (size_t j = 0; j < 9; ++j) {
    const auto row = logits.begin() + static_cast<ptrdiff_t>(j * V);
    EXPECT_EQ(ids[j], std::max_element(row, row + static_cast<ptrdiff_t>(V)) - row) << "row " << j;
  }
}

// A server's batch changes size from step to step as requests join and leave: the device argmax must pick
// the host argmax at every size, shrinking and growing (its split counters once sat behind each step's ids,
// so a smaller batch read the larger one's ids as counters and returned stale ids).
TEST(GpuEngine, GreedyArgmaxHoldsAsTheBatchChangesSize) {
  REQUIRE_GPU();
  const std::string dir = fp4lab::test::data_dir() + "/models/tiny-llama";
  const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
  CudaOps ops;
  CudaModel model(load_weights(dir, QuantMode::BF16), ops);
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  constexpr size_t kSeqs = 9;
  std::vector<CudaModel::State> a, b;
  std::vector<int> next(kSeqs);
  for (size_t j = 0; j < kSeqs; ++j) {
    const auto pre = std::span<const int>(prompt).first(2 + j % 4);
    a.push_back(model.new_sequence(64));
    b.push_back(model.new_sequence(64));
    model.forward(a.back(), pre, false);
    model.forward(b.back(), pre, false);
    next[j] = prompt[j % prompt.size()];
  }
  for (const size_t n : {9, 5, 9, 2, 7, 1, 9, 3}) {
    std::vector<CudaModel::State*> pa, pb;
    for (size_t j = 0; j < n; ++j) pa.push_back(&a[j]), pb.push_back(&b[j]);
    const std::vector<int> toks(next.begin(), next.begin() + static_cast<ptrdiff_t>(n));
    const auto logits = model.decode_batch(pa, toks);
    const auto ids = model.decode_batch_greedy(pb, toks);
    ASSERT_EQ(ids.size(), n);
    for (size_t j = 0; j < n; ++j) {
      const auto row = logits.begin() + static_cast<ptrdiff_t>(j * V);
      ASSERT_EQ(ids[j], std::max_element(row, row + static_cast<ptrdiff_t>(V)) - row)
          << "batch of " << n << ", row " << j;
      next[j] = ids[j];
    }
  }
}

// One greedy sequence: its steps go through the captured graph ending in the device argmax (an eager first
// step, the capture, then replays) and must pick the host argmax of the logits step at every step; a logits
// step in between (step 6) makes the sequence re-capture both ways. Then sampled steps through the same graph
// (a temperature and a seed per replay), and top-k steps through the graph that ends in the candidates.
TEST(GpuEngine, GreedyGraphStepMatchesHostArgmaxOfLogits) {
  REQUIRE_GPU();
  for (const char* name : {"tiny-llama", "tiny-nemotron-h"}) {
    const std::string dir = fp4lab::test::data_dir() + "/models/" + name;
    const auto prompt = read_json_file(dir + "/golden.json")["prompt_ids"].get<std::vector<int>>();
    CudaOps ops;
    CudaModel model(load_weights(dir, QuantMode::NVFP4), ops);
    auto a = model.new_sequence(64), b = model.new_sequence(64);
    int tok = cpu::argmax(model.forward(a, prompt, false));
    ASSERT_EQ(cpu::argmax(model.forward(b, prompt, false)), tok);
    CudaModel::State* pb[] = {&b};
    for (int step = 0; step < 10; ++step) {
      const int in = tok;
      const int want = cpu::argmax(model.forward(a, std::span<const int>(&in, 1), false));
      const int got = step == 6 ? cpu::argmax(model.forward(b, std::span<const int>(&in, 1), false))
                                : model.decode_batch_greedy(pb, std::span<const int>(&in, 1)).at(0);
      EXPECT_EQ(got, want) << name << ", step " << step;
      tok = want;
    }
    // Sampling without top-k / top-p: the graph step draws on the device what cpu::sample_gumbel draws from
    // the logits step's output with the same seed.
    for (int step = 0; step < 6; ++step) {
      const int in = tok;
      const uint64_t seed = 977 * step + 5;
      const float temp = 0.8f;
      const int want = cpu::sample_gumbel(model.forward(a, std::span<const int>(&in, 1), false), temp, seed);
      const int got = model
                          .decode_batch_sampled(pb, std::span<const int>(&in, 1), temp,
                                                std::span<const uint64_t>(&seed, 1))
                          .at(0);
      EXPECT_EQ(got, want) << name << ", sampled step " << step;
      tok = want;
    }
    // Top-k sampling: the graph step's candidates are cpu::top_logits of the logits step's output, so the
    // draw is sample_token's.
    for (int step = 0; step < 6; ++step) {
      const int in = tok;
      const SamplingOptions so{false, 0.8f, 40, step % 2 ? 0.9f : 1.0f, 3};
      const auto logits = model.forward(a, std::span<const int>(&in, 1), false);
      const auto want = cpu::top_logits(logits, cpu::kTopLogits);
      const auto got = model.decode_batch_top(pb, std::span<const int>(&in, 1)).at(0);
      ASSERT_EQ(got.size(), want.size()) << name << ", top-k step " << step;
      for (size_t j = 0; j < want.size(); ++j)
        ASSERT_TRUE(got[j].id == want[j].id && got[j].key == want[j].key)
            << name << ", top-k step " << step << ", rank " << j;
      EXPECT_EQ(sample_top(got, so, 77 + step), sample_token(logits, so, 77 + step))
          << name << ", step " << step;
      tok = want[0].id;
    }
  }
}
