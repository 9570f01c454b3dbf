#include "eval/python_random.h"

#include <bit>
#include <cmath>
#include <unordered_set>

#include "common/error.h"

namespace fp4lab {

void PythonRandom::init_genrand(uint32_t s) {
  mt_[0] = s;
  for (int i = 1; i < N; ++i)
    mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  mti_ = N;
}

PythonRandom::PythonRandom(uint64_t seed) {
  // init_by_array with the seed's little-endian 32-bit words ([0] for zero), as random_seed() does.
  std::vector<uint32_t> key;
  do {
    key.push_back(static_cast<uint32_t>(seed));
    seed >>= 32;
  } while (seed);
  init_genrand(19650218u);
  int i = 1;
  size_t j = 0;
  for (int k = std::max<int>(N, static_cast<int>(key.size())); k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + static_cast<uint32_t>(j);
    ++i;
    ++j;
    if (i >= N) {
      mt_[0] = mt_[N - 1];
      i = 1;
    }
    if (j >= key.size()) j = 0;
  }
  for (int k = N - 1; k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
    ++i;
    if (i >= N) {
      mt_[0] = mt_[N - 1];
      i = 1;
    }
  }
  mt_[0] = 0x80000000u;
  mti_ = N;
}

uint32_t PythonRandom::genrand_uint32() {
  constexpr uint32_t kMatrixA = 0x9908b0dfu, kUpper = 0x80000000u, kLower = 0x7fffffffu;
  auto twist = [&](int a, int b, int c) {
    const uint32_t y = (mt_[a] & kUpper) | (mt_[b] & kLower);
    mt_[a] = mt_[c] ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
  };
  if (mti_ >= N) {
    int kk = 0;
    for (; kk < N - M; ++kk) twist(kk, kk + 1, kk + M);
    for (; kk < N - 1; ++kk) twist(kk, kk + 1, kk + (M - N));
    twist(N - 1, 0, M - 1);
    mti_ = 0;
  }
  uint32_t y = mt_[mti_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t PythonRandom::getrandbits(int k) {
  if (k <= 0 || k > 64) throw Error("getrandbits: k must be in 1..64");
  if (k <= 32) return genrand_uint32() >> (32 - k);
  // Wider values are assembled from 32-bit words, least significant first; the top word keeps its high bits.
  const uint64_t lo = genrand_uint32();
  const uint64_t hi = genrand_uint32() >> (64 - k);
  return (hi << 32) | lo;
}

uint64_t PythonRandom::randbelow(uint64_t n) {
  if (n == 0) throw Error("randbelow: n must be positive");
  const int k = std::bit_width(n);
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

std::vector<uint64_t> PythonRandom::sample(uint64_t n, int k) {
  if (k < 0 || static_cast<uint64_t>(k) > n) throw Error("sample: k larger than the population");
  std::vector<uint64_t> out(static_cast<size_t>(k));
  // Lib/random.py picks a pool-based or a set-based selection by the population size; both must be followed
  // exactly, since they consume the stream differently.
  uint64_t setsize = 21;
  if (k > 5) setsize += static_cast<uint64_t>(std::pow(4.0, std::ceil(std::log(k * 3.0) / std::log(4.0))));
  if (n <= setsize) {
    std::vector<uint64_t> pool(n);
    for (uint64_t i = 0; i < n; ++i) pool[i] = i;
    for (int i = 0; i < k; ++i) {
      const uint64_t j = randbelow(n - static_cast<uint64_t>(i));
      out[static_cast<size_t>(i)] = pool[j];
      pool[j] = pool[n - static_cast<uint64_t>(i) - 1];
    }
  } else {
    std::unordered_set<uint64_t> selected;
    for (int i = 0; i < k; ++i) {
      uint64_t j = randbelow(n);
      while (selected.count(j)) j = randbelow(n);
      selected.insert(j);
      out[static_cast<size_t>(i)] = j;
    }
  }
  return out;
}

}  // namespace fp4lab
