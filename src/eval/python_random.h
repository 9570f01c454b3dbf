// CPython's `random.Random(seed)` for integer seeds: MT19937 seeded by init_by_array with the seed's 32-bit
// words, getrandbits/_randbelow/sample as Lib/random.py defines them. lm-evaluation-harness draws GSM8K's
// few-shot exemplars with random.Random(1234).sample(...), so reproducing its prompts needs the same stream.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace fp4lab {

class PythonRandom {
 public:
  explicit PythonRandom(uint64_t seed);
  uint32_t genrand_uint32();
  uint64_t getrandbits(int k);  // 1 <= k <= 64
  uint64_t randbelow(uint64_t n);
  // random.sample(range(n), k): k distinct indices, in Python's order.
  std::vector<uint64_t> sample(uint64_t n, int k);

 private:
  static constexpr int N = 624, M = 397;
  std::array<uint32_t, N> mt_{};
  int mti_ = N + 1;
  void init_genrand(uint32_t s);
};

}  // namespace fp4lab
