// What GPUs this process can see, and which NVFP4 path each one gets. Implemented by src/cuda when CUDA is
// built, and by a stub that reports "built without CUDA" otherwise.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace fp4lab {

struct GpuInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  size_t total_mem = 0, free_mem = 0;
  int sm_count = 0;
  int mem_bus_bits = 0;
  int mem_clock_khz = 0;
  size_t l2_bytes = 0;
  double peak_bw_gbs() const { return 2.0 * mem_clock_khz * 1e3 * (mem_bus_bits / 8.0) / 1e9; }
};

struct GpuQuery {
  bool cuda_built = false;
  bool ok = false;         // driver present and at least one GPU
  std::string error;       // why not, in words
  int driver_version = 0;  // e.g. 13000
  int runtime_version = 0;
  std::vector<GpuInfo> gpus;
};

GpuQuery query_gpus();

// The CUDA architectures this binary carries kernels for, e.g. {"80", "90a", "100a", "120a"}.
std::vector<std::string> compiled_cuda_archs();

}  // namespace fp4lab
