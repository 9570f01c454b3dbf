#include "common/host_memory.h"

#include <chrono>
#include <cstdio>
#include <cstring>

namespace fp4lab {

HostMemory read_host_memory() {
  HostMemory m;
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long kb = 0;
    if (std::sscanf(line, "VmRSS: %llu kB", &kb) == 1) m.rss = kb * 1024;
    if (std::sscanf(line, "RssAnon: %llu kB", &kb) == 1) m.rss_anon = kb * 1024;
    if (std::sscanf(line, "VmHWM: %llu kB", &kb) == 1) m.peak_rss = kb * 1024;
  }
  std::fclose(f);
  return m;
}

PeakAnonMeter::PeakAnonMeter() {
  peak_ = read_host_memory().rss_anon;
  t_ = std::thread([this] {
    while (!stop_) {
      const uint64_t a = read_host_memory().rss_anon;
      if (a > peak_) peak_ = a;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
}

PeakAnonMeter::~PeakAnonMeter() {
  stop();
}

uint64_t PeakAnonMeter::stop() {
  if (!stop_.exchange(true) && t_.joinable()) t_.join();
  const uint64_t a = read_host_memory().rss_anon;
  if (a > peak_) peak_ = a;
  return peak_;
}

}  // namespace fp4lab
