// The one place that decides how NVFP4 linear layers run on a given GPU.
#pragma once
#include <string>
#include <vector>

namespace fp4lab {

enum class Nvfp4Path {
  W4A16_SM80,   // Ampere/Ada: mma.sync BF16 with in-register E2M1 x E4M3 dequantization
  W4A16_SM90,   // Hopper: same kernels, built for sm_90a
  W4A4_SM100,   // Blackwell datacenter: native FP4 tensor cores through cuBLASLt block-scaled GEMM
  W4A4_SM120,   // Blackwell consumer/workstation: native FP4 through cuBLASLt
  Unsupported,  // pre-Ampere: no BF16 tensor cores
};
const char* nvfp4_path_name(Nvfp4Path p);

struct Nvfp4PathChoice {
  Nvfp4Path path = Nvfp4Path::Unsupported;
  std::string summary;       // e.g. "W4A16 (dequantize in registers, mma.sync BF16)"
  std::string reason;        // e.g. "sm_89: no FP4 tensor cores"
  bool tested_here = false;  // run on the project's own hardware (H100) before release
};

// compiled_archs as reported by compiled_cuda_archs(): a native path needs its kernels in the binary.
Nvfp4PathChoice choose_nvfp4_path(int cc_major, int cc_minor, const std::vector<std::string>& compiled_archs);

}  // namespace fp4lab
