// GPU clocks, temperature, power and throttle reasons through NVML, loaded at run time (libnvidia-ml ships
// with the driver, not the toolkit), so the binary runs where there is no driver and reports "unavailable".
#pragma once
#include <cstdint>
#include <string>

#include "common/json_util.h"

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

// GPU `index`'s used memory as NVML counts it (every process and the driver's reserve), or 0 without NVML.
// Read without creating a CUDA context, so a reading taken before the process touches CUDA and one taken
// later tell what the process holds, context included.
uint64_t nvml_memory_used(int index);
// Takes that first reading of GPU 0 (main does, before any command runs CUDA); 0 when NVML is missing.
void note_gpu_memory_baseline();
uint64_t gpu_memory_baseline();

}  // namespace fp4lab
