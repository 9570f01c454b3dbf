#include <cstdio>
#include <fstream>

#include "commands.h"
#include "common/error.h"
#include "cuda/gpu_info.h"
#include "engine/nvfp4_path.h"
#include "common/json_util.h"

namespace fp4lab::cli {

namespace {
std::string bandwidth_class(double gbs) {
  if (gbs >= 6000) return "HBM3e (datacenter Blackwell class)";
  if (gbs >= 3000) return "HBM3/HBM3e (H100 SXM / H200 class)";
  if (gbs >= 1500) return "HBM2e/HBM3 (A100 / H100 PCIe class)";
  if (gbs >= 700) return "GDDR6X/GDDR7 (high-end workstation/consumer)";
  return "GDDR (mainstream/laptop)";
}
}  // namespace

Action add_doctor(CLI::App& app) {
  auto json_out = std::make_shared<std::string>();
  app.add_option("--json", *json_out, "also write the report as JSON to this file");
  return [json_out]() {
    const GpuQuery q = query_gpus();
    const auto archs = compiled_cuda_archs();
    json j;
    j["version"] = FP4LAB_VERSION;
    j["commit"] = FP4LAB_GIT_COMMIT;
    j["cuda_built"] = q.cuda_built;
    j["compiled_archs"] = archs;
    std::printf("fp4lab %s (%s)\n", FP4LAB_VERSION, FP4LAB_GIT_COMMIT);
    if (q.cuda_built) {
      std::string a;
      for (const auto& s : archs) a += " sm_" + s;
      std::printf("CUDA: runtime %d.%d, driver %d.%d; kernels built for%s\n", q.runtime_version / 1000,
                  (q.runtime_version % 1000) / 10, q.driver_version / 1000, (q.driver_version % 1000) / 10,
                  a.c_str());
      j["cuda_runtime"] = q.runtime_version;
      j["cuda_driver"] = q.driver_version;
    }
    j["gpus"] = json::array();
    if (!q.ok) {
      std::printf("GPU: none (%s)\n", q.error.c_str());
      std::printf(
          "backend: CPU reference (float32, multi-threaded); NVFP4 runs as exact dequantization on the "
          "CPU\n");
      j["backend"] = "cpu";
      j["gpu_error"] = q.error;
    } else {
      j["backend"] = "cuda";
      for (const auto& g : q.gpus) {
        const auto path = choose_nvfp4_path(g.cc_major, g.cc_minor, archs);
        std::printf("GPU %d: %s, sm_%d%d, %.1f GiB (%.1f GiB free), %d SMs, L2 %.0f MB\n", g.index,
                    g.name.c_str(), g.cc_major, g.cc_minor, g.total_mem / 1073741824.0,
                    g.free_mem / 1073741824.0, g.sm_count, g.l2_bytes / 1e6);
        std::printf("  memory: %d-bit bus, peak %.0f GB/s: %s\n", g.mem_bus_bits, g.peak_bw_gbs(),
                    bandwidth_class(g.peak_bw_gbs()).c_str());
        std::printf("  NVFP4 path: %s\n    %s\n    why: %s\n", nvfp4_path_name(path.path),
                    path.summary.c_str(), path.reason.c_str());
        if (path.path == Nvfp4Path::W4A4_SM100 || path.path == Nvfp4Path::W4A4_SM120)
          std::printf(
              "    note: the native W4A4 cuBLASLt GEMM is compiled but has not been run on such a GPU by "
              "fp4lab's "
              "developers, and the engine does not use it yet: generate/bench run the W4A16 kernels here\n");
        j["gpus"].push_back(
            {{"index", g.index},
             {"name", g.name},
             {"compute_capability", std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor)},
             {"memory_bytes", g.total_mem},
             {"sm_count", g.sm_count},
             {"peak_bandwidth_gbs", g.peak_bw_gbs()},
             {"nvfp4_path", nvfp4_path_name(path.path)},
             {"reason", path.reason}});
      }
    }
    if (!json_out->empty()) {
      write_text_file(*json_out, j.dump(2) + "\n");
    }
    return 0;
  };
}

}  // namespace fp4lab::cli
