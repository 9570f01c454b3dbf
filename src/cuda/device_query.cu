#include <array>
#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "cuda/gpu_info.h"

namespace fp4lab {

void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  std::string msg = std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                    ") in " + expr + " at " + std::filesystem::path(file).filename().string() + ":" +
                    std::to_string(line);
  if (e == cudaErrorMemoryAllocation) msg = "out of GPU memory: " + msg;
  // A failed call also leaves its error as the thread's last error; cleared here, so that the next
  // CUDA_CHECK_LAUNCH does not report it again against another kernel (sticky errors stay regardless).
  (void)cudaGetLastError();
  throw Error(msg);
}

void throw_launch_error(cudaError_t e, const void* kernel, dim3 grid, dim3 block, size_t smem) {
  (void)cudaGetLastError();
  const char* name = nullptr;
  if (cudaFuncGetName(&name, kernel) != cudaSuccess || !name) name = "?";
  // The kernel's own limits: an "invalid argument" is most often shared memory past them.
  std::string limits;
  cudaFuncAttributes fa{};
  if (cudaFuncGetAttributes(&fa, kernel) == cudaSuccess)
    limits = " (the kernel: " + std::to_string(fa.sharedSizeBytes) + " bytes static, at most " +
             std::to_string(fa.maxDynamicSharedSizeBytes) + " dynamic, " +
             std::to_string(fa.maxThreadsPerBlock) + " threads)";
  (void)cudaGetLastError();
  throw Error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
              ") launching " + name + " with grid (" + std::to_string(grid.x) + ", " +
              std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" +
              std::to_string(block.x) + ", " + std::to_string(block.y) + ", " + std::to_string(block.z) +
              "), " + std::to_string(smem) + " bytes of dynamic shared memory" + limits);
}

void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line) {
  throw Error(std::string("cuBLAS error ") + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) +
              ") in " + expr + " at " + std::filesystem::path(file).filename().string() + ":" +
              std::to_string(line));
}

namespace {
std::atomic<bool> g_pdl{true};
}  // namespace

void set_programmatic_launch(bool on) {
  g_pdl = on;
}

int current_device_cc_major() {
  // Per device, queried once per thread (tensor-parallel ranks are threads).
  thread_local std::array<int, 64> major{};
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= static_cast<int>(major.size())) {
    int v = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev));
    return v;
  }
  if (major[static_cast<size_t>(dev)] == 0)
    CUDA_CHECK(
        cudaDeviceGetAttribute(&major[static_cast<size_t>(dev)], cudaDevAttrComputeCapabilityMajor, dev));
  return major[static_cast<size_t>(dev)];
}

void allow_dynamic_smem(const void* kernel, size_t bytes) {
  // No early return at 48 KB of dynamic memory: the default limit holds static plus dynamic shared memory,
  // so a kernel with a static table and exactly 48 KB of stages (xs32: 1 KB + 48 KB) needs the attribute too;
  // without it every launch failed with "invalid argument".
  if (bytes == 0) return;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> set;
  const std::lock_guard lock(mu);
  size_t& have = set[{kernel, dev}];
  if (have >= bytes) return;
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  have = bytes;
}

bool programmatic_launch_active() {
  return g_pdl && current_device_cc_major() >= 9;
}

GpuQuery query_gpus() {
  GpuQuery q;
  q.cuda_built = true;
  cudaRuntimeGetVersion(&q.runtime_version);
  // cudaDriverGetVersion reports 0 without failing when no driver is installed.
  if (cudaDriverGetVersion(&q.driver_version) != cudaSuccess || q.driver_version == 0) {
    q.error = "no NVIDIA driver found (libcuda.so not loadable)";
    return q;
  }
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    q.error = e == cudaSuccess ? "no CUDA GPU visible"
                               : std::string("no usable CUDA GPU: ") + cudaGetErrorString(e);
    cudaGetLastError();
    return q;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    GpuInfo g;
    g.index = i;
    g.name = p.name;
    g.cc_major = p.major;
    g.cc_minor = p.minor;
    g.total_mem = p.totalGlobalMem;
    g.sm_count = p.multiProcessorCount;
    g.l2_bytes = static_cast<size_t>(p.l2CacheSize);
    CUDA_CHECK(cudaDeviceGetAttribute(&g.mem_bus_bits, cudaDevAttrGlobalMemoryBusWidth, i));
    CUDA_CHECK(cudaDeviceGetAttribute(&g.mem_clock_khz, cudaDevAttrMemoryClockRate, i));
    size_t fr = 0, tot = 0;
    CUDA_CHECK(cudaSetDevice(i));
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) g.free_mem = fr;
    q.gpus.push_back(g);
  }
  q.ok = true;
  return q;
}

std::vector<std::string> compiled_cuda_archs() {
  std::vector<std::string> out;
  std::string s = FP4LAB_CUDA_ARCHS;  // set by CMake from CMAKE_CUDA_ARCHITECTURES, e.g. "80,90a"
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t semi = s.find(',', pos);
    std::string a = s.substr(pos, semi == std::string::npos ? std::string::npos : semi - pos);
    const size_t dash = a.find('-');  // "80-real" -> "80"
    if (dash != std::string::npos) a = a.substr(0, dash);
    if (!a.empty()) out.push_back(a);
    if (semi == std::string::npos) break;
    pos = semi + 1;
  }
  return out;
}

}  // namespace fp4lab
