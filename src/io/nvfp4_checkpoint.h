// Writes a ModelOpt-layout NVFP4 checkpoint from a BF16/F16/F32 one (the `fp4lab quantize` back end).
#pragma once
#include <string>
#include <vector>

namespace fp4lab {

struct QuantizeOptions {
  std::vector<std::string> exclude;  // empty: the architecture's defaults (default_nvfp4_excludes)
  bool weight_only = true;           // W4A16_NVFP4 (no input_scale) until activation calibration is given
};

struct QuantizeReport {
  int quantized = 0, kept = 0;
  double bytes_in = 0, bytes_out = 0;
};

QuantizeReport quantize_checkpoint_nvfp4(const std::string& in_dir, const std::string& out_dir,
                                         const QuantizeOptions& opt);

}  // namespace fp4lab
