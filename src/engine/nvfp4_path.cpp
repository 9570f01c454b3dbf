#include "engine/nvfp4_path.h"

#include <algorithm>

namespace fp4lab {

const char* nvfp4_path_name(Nvfp4Path p) {
  switch (p) {
    case Nvfp4Path::W4A16_SM80:
      return "w4a16-sm80";
    case Nvfp4Path::W4A16_SM90:
      return "w4a16-sm90";
    case Nvfp4Path::W4A4_SM100:
      return "w4a4-sm100";
    case Nvfp4Path::W4A4_SM120:
      return "w4a4-sm120";
    case Nvfp4Path::Unsupported:
      return "unsupported";
  }
  return "?";
}

Nvfp4PathChoice choose_nvfp4_path(int major, int minor, const std::vector<std::string>& archs) {
  auto has = [&](const char* a) { return std::find(archs.begin(), archs.end(), a) != archs.end(); };
  const std::string sm = "sm_" + std::to_string(major) + std::to_string(minor);
  Nvfp4PathChoice c;
  const std::string w4a16 =
      "W4A16: NVFP4 weights dequantized to BF16 in registers, mma.sync BF16 tensor cores";
  if (major < 8) {
    c.path = Nvfp4Path::Unsupported;
    c.summary = "none";
    c.reason = sm + ": pre-Ampere GPUs have no BF16 tensor cores; fp4lab needs sm_80 or newer";
    return c;
  }
  if (major == 10 && (minor == 0 || minor == 3) && has("100a")) {
    c.path = Nvfp4Path::W4A4_SM100;
    c.summary = "W4A4: native FP4 tensor cores (tcgen05 block-scaled MMA) through cuBLASLt";
    c.reason =
        sm + ": Blackwell datacenter GPU with FP4 tensor cores (path compiled, not yet run on such a GPU)";
    return c;
  }
  if (major == 12 && has("120a")) {
    c.path = Nvfp4Path::W4A4_SM120;
    c.summary = "W4A4: native FP4 tensor cores (mma.sync kind::mxf4nvf4) through cuBLASLt";
    c.reason = sm +
               ": Blackwell consumer/workstation GPU with FP4 tensor cores (path compiled, not yet run on "
               "such a GPU)";
    return c;
  }
  if (major == 9 && has("90a")) {
    c.path = Nvfp4Path::W4A16_SM90;
    c.summary = w4a16;
    c.reason = sm + ": Hopper has FP8 but no FP4 tensor cores";
    c.tested_here = true;
    return c;
  }
  c.path = Nvfp4Path::W4A16_SM80;
  c.summary = w4a16;
  if (major >= 10)
    c.reason =
        sm +
        ": FP4 tensor cores present, but this binary has no native kernels for them; portable W4A16 path";
  else if (major == 8 && minor == 9)
    c.reason = sm + ": Ada has FP8 but no FP4 tensor cores";
  else
    c.reason = sm + ": Ampere has no FP4 (or FP8) tensor cores";
  return c;
}

}  // namespace fp4lab
