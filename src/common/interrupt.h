// Ctrl-C for long runs (benchmarks, evaluations): while a guard lives, SIGINT only sets a flag; the run
// checks it between units of work, finishes the one in flight and keeps what is complete. A second Ctrl-C
// exits.
#pragma once
#include <atomic>
#include <csignal>
#include <cstdlib>

namespace fp4lab {

inline std::atomic<int>& interrupt_count() {
  static std::atomic<int> n{0};
  return n;
}

inline bool interrupted() {
  return interrupt_count().load() > 0;
}

extern "C" inline void fp4lab_on_sigint(int) {
  if (interrupt_count()++ > 0) std::_Exit(130);
}

class InterruptGuard {
 public:
  InterruptGuard() {
    interrupt_count() = 0;
    prev_ = std::signal(SIGINT, fp4lab_on_sigint);
  }
  ~InterruptGuard() { std::signal(SIGINT, prev_); }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  void (*prev_)(int) = SIG_DFL;
};

}  // namespace fp4lab
