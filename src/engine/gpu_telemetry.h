// GPU clocks, temperature, power and throttle reasons through NVML, loaded at run time (libnvidia-ml ships
// with the driver, not the toolkit), so the binary runs where there is no driver and reports "unavailable".
#pragma once
#include <cstdint>
#include <string>

#include "io/json_util.h"

namespace fp4lab {

struct GpuTelemetry {
  bool available = false;
  std::string error;  // why not
  unsigned sm_mhz = 0, mem_mhz = 0, temperature_c = 0, power_mw = 0;
  uint64_t throttle_reasons = 0;  // NVML clocks-event reason bits
  // Reasons that slow a benchmark down (power cap, thermal, hardware slowdown); idle and application clocks
  // are not.
  bool throttled() const { return (throttle_reasons & (0x4ull | 0x8ull | 0x20ull | 0x40ull | 0x80ull)) != 0; }
  std::string throttle_text() const;
  json to_json() const;
};

GpuTelemetry read_gpu_telemetry(int index);

// Active NVLink links of GPU `index` (NVML), or -1 where NVML cannot tell (no driver, no NVLink support).
int active_nvlinks(int index);

}  // namespace fp4lab
