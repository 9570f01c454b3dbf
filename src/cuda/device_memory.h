// Device memory owned by fp4lab: one allocation path (DeviceBuffer), counted per GPU, so that a run can be
// held under --gpu-memory-limit and its peak compared with the memory plan (cuda/memory_plan.h).
#pragma once
#include <cstddef>
#include <string>

namespace fp4lab {

// Owns device memory (cudaMalloc) or, made by host_mapped(), pinned host memory the GPU reads over PCIe
// (cudaHostAllocMapped; the pointer is valid on host and device under unified addressing). Frees it on
// destruction.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  bool on_host = false;  // pinned, mapped host memory: not counted against the GPU
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n);
  static DeviceBuffer host_mapped(size_t n);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes), on_host(o.on_host) {
    o.ptr = nullptr, o.bytes = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }

 private:
  void release() noexcept;
};

// What DeviceBuffers hold on the current GPU now, and the most they held since the last reset.
struct DeviceMemoryUse {
  size_t in_use = 0, peak = 0;
};
DeviceMemoryUse device_memory_use();
void reset_device_memory_peak();

// Caps what DeviceBuffers may hold together on the current GPU (0: no cap). An allocation past the cap throws
// one line naming the cap, the request and what is in use, with `why` (the flag that set it) appended.
void set_device_memory_cap(size_t bytes, const std::string& why);
size_t device_memory_cap();

// Device memory used by every process and the driver, as cudaMemGetInfo reports it (total - free).
size_t device_memory_used_now();

}  // namespace fp4lab
