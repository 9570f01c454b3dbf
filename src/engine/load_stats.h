// What loading a model cost: wall time, the bytes of its checkpoint files, whether they were already in the
// page cache (cold or warm load), and the peak host memory, for bench and generate to report next to tok/s.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/host_memory.h"
#include "common/json_util.h"

namespace fp4lab {

struct LoadStats {
  double seconds = 0;
  uint64_t checkpoint_bytes = 0;    // the safetensors files (0 for a preset)
  double cached_fraction = -1;      // of those bytes in the page cache before the load (-1: a preset)
  uint64_t peak_rss_anon = 0;       // sampled during the load
  uint64_t peak_rss = 0;            // VmHWM at the end (the process so far)
  std::string cache() const;        // "cold" (< 10% cached), "warm" (> 90%), "partly cached", "preset"
  json to_json() const;
  std::string summary() const;      // one line for stderr
};

// Started before the model is loaded, finished once the backend holds it.
class LoadMeter {
 public:
  explicit LoadMeter(const std::string& model_path);  // a checkpoint directory or preset:NAME
  LoadStats finish();                                 // idempotent

 private:
  std::chrono::steady_clock::time_point t0_;
  std::unique_ptr<PeakAnonMeter> anon_;
  LoadStats s_;
  bool done_ = false;
};

}  // namespace fp4lab
