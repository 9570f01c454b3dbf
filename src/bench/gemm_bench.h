// `fp4lab bench gemm`: NVFP4 W4A16 against cuBLAS BF16 and cuBLASLt FP8 on real model shapes.
#pragma once
#include <string>
#include <vector>

#include "common/json_util.h"

namespace fp4lab {

struct GemmShape {
  std::string name;  // e.g. "nemotron-nano-9b-v2 mamba.in_proj"
  int64_t n = 0, k = 0;
};

// The distinct linear-layer shapes of a built-in model (fused q/k/v and gate/up as one GEMM).
std::vector<GemmShape> gemm_shapes_for(const std::string& model);

struct GemmBenchOptions {
  std::vector<std::string> models{"nemotron-nano-9b-v2", "llama-3.1-8b", "qwen3-8b"};
  std::vector<std::string> extra_shapes;  // "NxK"
  std::vector<int64_t> ms{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  int warmup = 5;
  int reps = 20;               // timed batches (the median is reported)
  int calls_per_rep = 0;       // 0: enough calls to fill ~0.3 ms per batch
  double rotate_factor = 3.0;  // rotating weight copies totalling this multiple of L2
  bool baselines = true;
  bool pdl = true;         // programmatic dependent launch between the timed back-to-back calls (sm_90+)
  std::string variant;     // force a W4A16 variant (decode8, mma64, ...); empty: heuristic
  int rows_per_block = 0;  // with variant decode*: 16 or 32
  int splits = 0;          // with variant mma*: K splits (0: heuristic)
  int decode_warps = 0;    // with variant decode*: 4, 8 or 16 (0: heuristic)
  bool wgmma = true;       // the heuristic may pick the wgmma variants (sm_90a), as the engine does
  std::string json_out;
  bool verbose = false;
};

// Device-to-device copy bandwidth of the current GPU in GB/s (bytes read + written), median of 10 1-GiB
// copies.
double measure_copy_bandwidth_gbs();
// Dense BF16 matrix rate (TFLOP/s) of this GPU through cuBLAS, for the compute side of the roofline.
double measure_bf16_tflops();

// Runs the benchmark, prints the table, returns the JSON document (also written to json_out when set).
json run_gemm_bench(const GemmBenchOptions& o);

}  // namespace fp4lab
