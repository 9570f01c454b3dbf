// Calibration of `fp4lab quantize` on the CPU reference backend: the float checkpoint runs the calibration
// sequences, every linear layer records its inputs' maximum (W4A4 input scales) and, for GPTQ, the layers
// are quantized block by block, each block's Hessians taken from the inputs the already quantized blocks
// before it produce (GPTQ's sequential order: later layers compensate what earlier ones lost).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "format/nvfp4_gptq.h"

namespace fp4lab {

struct CalibrationOptions {
  std::vector<std::string> exclude;  // as QuantizeOptions::exclude (the layers that stay float)
  int threads = 0;                   // CPU threads (0: every core)
  bool gptq = false;
  GptqOptions gptq_options;
  bool search_tensor_scale = false;  // as QuantizeOptions::search_tensor_scale (GPTQ quantizes under it)
  bool fp8 = false;                  // the layers of an FP8 checkpoint (fp8_quantized_layers); no GPTQ
  // Called as each block starts: (block, blocks), for a progress line.
  std::function<void(int, int)> progress;
};

struct CalibrationResult {
  std::map<std::string, float> input_amax;  // per linear layer name, max |input| (the float model's)
  int tokens = 0;
  // gptq: the quantized layers (QuantizeOptions::prequantized), and the layers' output error on their
  // calibration inputs, trace((W - Q) H (W - Q)^T) summed, with GPTQ and with round-to-nearest under the
  // same scale rule.
  std::map<std::string, Nvfp4Tensor> quantized;
  double gptq_error = 0, rtn_error = 0;
};

CalibrationResult calibrate_checkpoint(const std::string& dir, const std::vector<std::vector<int>>& seqs,
                                       const CalibrationOptions& o);

}  // namespace fp4lab
