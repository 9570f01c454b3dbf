// f(i) for every i in [0, n) on up to `threads` threads (0: every core), each thread taking the next index
// when it finishes one, so that uneven pieces still spread. For the host-side loops that are not the CPU
// backend's kernels: the reference GEMMs and `fp4lab export`.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace fp4lab {

template <class F>
void parallel_parts(int64_t n, int threads, F&& f) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i; (i = next++) < n;) f(i);
  };
  const int64_t nt = std::min<int64_t>(threads, n);
  if (nt <= 1) return work();
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < nt; ++t) pool.emplace_back(work);
  for (auto& th : pool) th.join();
}

}  // namespace fp4lab
