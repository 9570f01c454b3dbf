#include <algorithm>
#include <ctime>

#include "engine/run_environment.h"

#include <unistd.h>
#include "cuda/gpu_info.h"
#include "engine/nvfp4_path.h"

namespace fp4lab {

void run_environment(nlohmann::json& out, bool cuda) {
  out["tool"] = {{"name", "fp4lab"}, {"version", FP4LAB_VERSION}, {"commit", FP4LAB_GIT_COMMIT}};
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char ts[64];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  out["host"] = {{"name", host}, {"cpus", std::max(1L, sysconf(_SC_NPROCESSORS_ONLN))}};
  out["timestamp"] = ts;
  out["gpu"] = nullptr;
  if (!cuda) return;
  const GpuQuery q = query_gpus();
  if (!q.ok || q.gpus.empty()) return;
  const auto& g = q.gpus[0];
  const auto path = choose_nvfp4_path(g.cc_major, g.cc_minor, compiled_cuda_archs());
  out["gpu"] = {{"name", g.name},
                {"compute_capability", std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor)},
                {"memory_bytes", g.total_mem},
                {"sm_count", g.sm_count},
                {"peak_bandwidth_gbs", g.peak_bw_gbs()},
                {"driver", q.driver_version},
                {"cuda_runtime", q.runtime_version},
                {"nvfp4_path", nvfp4_path_name(path.path)}};
}

}  // namespace fp4lab
