// This process's host memory, for the load figures that bench and generate report: a checkpoint load must not
// hold the model in anonymous memory (a 9B NVFP4 model has to load on a 16 GB machine).
#pragma once
#include <atomic>
#include <cstdint>
#include <thread>

namespace fp4lab {

// From /proc/self/status (Linux): resident set, its anonymous part, and the peak resident set (VmHWM).
struct HostMemory {
  uint64_t rss = 0, rss_anon = 0, peak_rss = 0;
};
HostMemory read_host_memory();

// Linux keeps the peak of the whole resident set but not of its anonymous part (the page cache that mapped
// files bring in is not what runs a machine out of memory), so this samples RssAnon every 5 ms on a
// background thread from construction until stop().
class PeakAnonMeter {
 public:
  PeakAnonMeter();
  ~PeakAnonMeter();
  PeakAnonMeter(const PeakAnonMeter&) = delete;
  PeakAnonMeter& operator=(const PeakAnonMeter&) = delete;
  uint64_t stop();  // the peak RssAnon seen, in bytes (idempotent)

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_{0};
  std::thread t_;
};

}  // namespace fp4lab
