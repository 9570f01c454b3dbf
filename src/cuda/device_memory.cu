#include "cuda/device_memory.h"

#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "common/error.h"
#include "cuda/check.h"

namespace fp4lab {

namespace {

// Per GPU of the process (tensor parallelism runs one thread per GPU).
constexpr int kMaxDevices = 64;
struct Account {
  std::atomic<size_t> in_use{0}, peak{0}, cap{0};
  std::string why;  // set before the run starts, read only on the error path
};
Account g_account[kMaxDevices];

Account& account() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  if (d < 0 || d >= kMaxDevices) throw Error("GPU index " + std::to_string(d) + " is past the supported count");
  return g_account[d];
}

std::string mib(size_t b) { return std::to_string((b + (1u << 19)) >> 20) + " MiB"; }

}  // namespace

DeviceBuffer::DeviceBuffer(size_t n) : bytes(n) {
  if (!n) return;
  Account& a = account();
  const size_t now = a.in_use.fetch_add(n) + n;
  const size_t cap = a.cap.load();
  if (cap && now > cap) {
    a.in_use.fetch_sub(n);
    bytes = 0;
    throw Error("GPU memory limit: " + mib(n) + " more would make " + mib(now) + " of fp4lab's buffers, past the " +
                mib(cap) + " they may hold (" + a.why + ")");
  }
  size_t p = a.peak.load();
  while (now > p && !a.peak.compare_exchange_weak(p, now)) {
  }
  const cudaError_t e = cudaMalloc(&ptr, n);
  if (e != cudaSuccess) {
    a.in_use.fetch_sub(n);
    bytes = 0;
    ptr = nullptr;
    (void)cudaGetLastError();
    throw Error("out of GPU memory: could not allocate " + mib(n) + " with " + mib(now - n) +
                " held by fp4lab (" + cudaGetErrorString(e) + ")");
  }
}

DeviceBuffer DeviceBuffer::host_mapped(size_t n) {
  DeviceBuffer b;
  if (!n) return b;
  CUDA_CHECK(cudaHostAlloc(&b.ptr, n, cudaHostAllocMapped));
  b.bytes = n;
  b.on_host = true;
  return b;
}

void DeviceBuffer::release() noexcept {
  if (!ptr) return;
  if (on_host) {
    cudaFreeHost(ptr);
  } else {
    cudaFree(ptr);
    int d = 0;
    if (cudaGetDevice(&d) == cudaSuccess && d >= 0 && d < kMaxDevices) g_account[d].in_use.fetch_sub(bytes);
  }
  ptr = nullptr;
  bytes = 0;
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    release();
    ptr = o.ptr;
    bytes = o.bytes;
    on_host = o.on_host;
    o.ptr = nullptr;
    o.bytes = 0;
  }
  return *this;
}

DeviceMemoryUse device_memory_use() {
  const Account& a = account();
  return {a.in_use.load(), a.peak.load()};
}

void reset_device_memory_peak() {
  Account& a = account();
  a.peak.store(a.in_use.load());
}

void set_device_memory_cap(size_t bytes, const std::string& why) {
  Account& a = account();
  a.why = why;
  a.cap.store(bytes);
}

size_t device_memory_cap() { return account().cap.load(); }

size_t device_memory_used_now() {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

}  // namespace fp4lab
