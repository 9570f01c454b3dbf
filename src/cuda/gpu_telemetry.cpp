#include "cuda/gpu_telemetry.h"

#include <dlfcn.h>

namespace fp4lab {

namespace {

using Dev = void*;
struct Nvml {
  void* lib = nullptr;
  int (*init)() = nullptr;
  int (*handle)(unsigned, Dev*) = nullptr;
  int (*clock)(Dev, int, unsigned*) = nullptr;
  int (*temp)(Dev, int, unsigned*) = nullptr;
  int (*power)(Dev, unsigned*) = nullptr;
  int (*reasons)(Dev, unsigned long long*) = nullptr;
  int (*nvlink_state)(Dev, unsigned, int*) = nullptr;  // nvmlDeviceGetNvLinkState: link, NVML_FEATURE_*
  int (*memory)(Dev, unsigned long long*) = nullptr;   // nvmlDeviceGetMemoryInfo: {total, free, used}
  std::string error;
  bool ok = false;
};

const Nvml& nvml() {
  static const Nvml n = [] {
    Nvml m;
    m.lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!m.lib) {
      m.error = "NVML (libnvidia-ml.so.1) not found: no NVIDIA driver";
      return m;
    }
    auto sym = [&](const char* a, const char* b = nullptr) {
      void* p = dlsym(m.lib, a);
      return p || !b ? p : dlsym(m.lib, b);
    };
    m.init = reinterpret_cast<int (*)()>(sym("nvmlInit_v2"));
    m.handle = reinterpret_cast<int (*)(unsigned, Dev*)>(sym("nvmlDeviceGetHandleByIndex_v2"));
    m.clock = reinterpret_cast<int (*)(Dev, int, unsigned*)>(sym("nvmlDeviceGetClockInfo"));
    m.temp = reinterpret_cast<int (*)(Dev, int, unsigned*)>(sym("nvmlDeviceGetTemperature"));
    m.power = reinterpret_cast<int (*)(Dev, unsigned*)>(sym("nvmlDeviceGetPowerUsage"));
    m.nvlink_state = reinterpret_cast<int (*)(Dev, unsigned, int*)>(sym("nvmlDeviceGetNvLinkState"));
    m.memory = reinterpret_cast<int (*)(Dev, unsigned long long*)>(sym("nvmlDeviceGetMemoryInfo"));
    m.reasons = reinterpret_cast<int (*)(Dev, unsigned long long*)>(
        sym("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"));
    if (!m.init || !m.handle || !m.clock || !m.temp) {
      m.error = "NVML is missing expected functions";
      return m;
    }
    if (m.init() != 0) {
      m.error = "nvmlInit failed";
      return m;
    }
    m.ok = true;
    return m;
  }();
  return n;
}

}  // namespace

int active_nvlinks(int index) {
  const Nvml& n = nvml();
  Dev d = nullptr;
  if (!n.ok || !n.nvlink_state || n.handle(static_cast<unsigned>(index), &d) != 0) return -1;
  int active = 0;
  // NVML_NVLINK_MAX_LINKS is 18 on Hopper; a link index the GPU does not have returns an error and ends it.
  for (unsigned link = 0; link < 18; ++link) {
    int on = 0;
    if (n.nvlink_state(d, link, &on) != 0) break;
    active += on == 1;
  }
  return active;
}

std::string GpuTelemetry::throttle_text() const {
  std::string s;
  auto add = [&](uint64_t bit, const char* name) {
    if (throttle_reasons & bit) s += (s.empty() ? "" : ",") + std::string(name);
  };
  add(0x1, "idle");
  add(0x2, "app-clocks");
  add(0x4, "power-cap");
  add(0x8, "hw-slowdown");
  add(0x20, "sw-thermal");
  add(0x40, "hw-thermal");
  add(0x80, "power-brake");
  return s.empty() ? "none" : s;
}

json GpuTelemetry::to_json() const {
  if (!available) return {{"available", false}, {"error", error}};
  return {{"available", true},
          {"sm_mhz", sm_mhz},
          {"mem_mhz", mem_mhz},
          {"temperature_c", temperature_c},
          {"power_w", power_mw / 1000.0},
          {"throttle_reasons", throttle_text()},
          {"throttled", throttled()}};
}

GpuTelemetry read_gpu_telemetry(int index) {
  GpuTelemetry t;
  const Nvml& n = nvml();
  if (!n.ok) {
    t.error = n.error;
    return t;
  }
  Dev d = nullptr;
  if (n.handle(static_cast<unsigned>(index), &d) != 0) {
    t.error = "NVML has no GPU " + std::to_string(index);
    return t;
  }
  n.clock(d, 1, &t.sm_mhz);        // NVML_CLOCK_SM
  n.clock(d, 2, &t.mem_mhz);       // NVML_CLOCK_MEM
  n.temp(d, 0, &t.temperature_c);  // NVML_TEMPERATURE_GPU
  if (n.power) n.power(d, &t.power_mw);
  unsigned long long r = 0;
  if (n.reasons && n.reasons(d, &r) == 0) t.throttle_reasons = r;
  t.available = true;
  return t;
}

uint64_t nvml_memory_used(int index) {
  const Nvml& n = nvml();
  Dev d = nullptr;
  unsigned long long m[3] = {0, 0, 0};  // nvmlMemory_t: total, free, used
  if (!n.ok || !n.memory || n.handle(static_cast<unsigned>(index), &d) != 0 || n.memory(d, m) != 0) return 0;
  return m[2];
}

namespace {
uint64_t g_baseline = 0;
}

void note_gpu_memory_baseline() {
  g_baseline = nvml_memory_used(0);
}
uint64_t gpu_memory_baseline() {
  return g_baseline;
}

}  // namespace fp4lab
