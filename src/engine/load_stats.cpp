#include "engine/load_stats.h"

#include <cstdio>
#include <filesystem>

#include "io/safetensors.h"

namespace fp4lab {

std::string LoadStats::cache() const {
  if (cached_fraction < 0) return "preset";
  if (cached_fraction < 0.1) return "cold";
  if (cached_fraction > 0.9) return "warm";
  return "partly cached";
}

json LoadStats::to_json() const {
  return {{"load_s", seconds},
          {"checkpoint_bytes", checkpoint_bytes},
          {"page_cache_fraction_before", cached_fraction},
          {"cache", cache()},
          {"read_gb_s", seconds > 0 && checkpoint_bytes ? checkpoint_bytes / seconds / 1e9 : 0.0},
          {"peak_rss_anon_bytes", peak_rss_anon},
          {"peak_rss_bytes", peak_rss}};
}

std::string LoadStats::summary() const {
  char b[256];
  if (checkpoint_bytes)
    std::snprintf(b, sizeof b, "load %.2f s (%s, %.2f GB at %.2f GB/s), peak host memory %.2f GiB anonymous",
                  seconds, cache().c_str(), checkpoint_bytes / 1e9, checkpoint_bytes / seconds / 1e9,
                  peak_rss_anon / 1073741824.0);
  else
    std::snprintf(b, sizeof b, "load %.2f s (preset), peak host memory %.2f GiB anonymous", seconds,
                  peak_rss_anon / 1073741824.0);
  return b;
}

LoadMeter::LoadMeter(const std::string& model_path)
    : t0_(std::chrono::steady_clock::now()), anon_(std::make_unique<PeakAnonMeter>()) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(model_path)) return;
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_path, ec))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") files.push_back(e.path().string());
  for (const auto& f : files) s_.checkpoint_bytes += fs::file_size(f, ec);
  s_.cached_fraction = page_cache_fraction(files);
}

LoadStats LoadMeter::finish() {
  if (done_) return s_;
  done_ = true;
  s_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  s_.peak_rss_anon = anon_->stop();
  s_.peak_rss = read_host_memory().peak_rss;
  return s_;
}

}  // namespace fp4lab
