// Calibration of `fp4lab quantize`: the checkpoint runs the calibration sequences, every linear layer
// records its inputs' maximum (W4A4 input scales) and, for GPTQ, the layers are quantized block by block,
// each block's Hessians taken from the inputs the already quantized blocks before it produce (GPTQ's
// sequential order: later layers compensate what earlier ones lost). On the CPU reference backend (float32
// forward, FP64 GPTQ: format/nvfp4_gptq.h) or on the GPU (BF16 forward, cuda/nvfp4_gptq.h: minutes for an
// 8B model where the CPU takes hours).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "format/nvfp4_gptq.h"

namespace fp4lab {

enum class CalibrationDevice { Auto, Cpu, Cuda };  // Auto: the GPU where this build and the machine have one
CalibrationDevice parse_calibration_device(const std::string& s);  // "auto" | "cpu" | "cuda"

struct CalibrationOptions {
  CalibrationDevice device = CalibrationDevice::Cpu;
  std::vector<std::string> exclude;  // as QuantizeOptions::exclude (the layers that stay float)
  int threads = 0;                   // CPU threads (0: every core)
  bool gptq = false;
  GptqOptions gptq_options;
  bool search_tensor_scale = false;  // as QuantizeOptions::search_tensor_scale (GPTQ quantizes under it)
  // GPTQ's passes: each transformer block's layers quantized from one calibration pass (block), or each
  // fused group's (q/k/v, o, gate/up, down) from its own (group), so that o_proj compensates what q/k/v lost
  // and down_proj what gate/up lost, at one forward per group instead of per block. Auto: group on the
  // CPU, block on the GPU (a quarter of the forwards of an 8B model).
  enum class Sequential { Auto, Block, Group } sequential = Sequential::Auto;
  // What each layer's GPTQ reproduces: its own output on the partly quantized model's inputs (layer,
  // GPTQ's), or the float model's output (float: gptq_float_target, one more pass per step through the float
  // weights; CPU only). Auto: float on the CPU, layer on the GPU.
  enum class Objective { Auto, Layer, Float } objective = Objective::Auto;
  // GPTQ on the inputs a W4A4 engine (Blackwell) gives the layers: each linear layer's input quantized to
  // NVFP4 under its input scale (the float model's group max |input| / 2688, taken in a first pass), so the
  // Hessians and the passes see what the checkpoint will run on there. CPU only.
  bool w4a4_inputs = false;
  bool fp8 = false;  // the layers of an FP8 checkpoint (fp8_quantized_layers); no GPTQ
  // For a progress line: called as each step's calibration passes start, with layer null, and as GPTQ
  // starts on each of the step's layers, with its name.
  std::function<void(int step, int steps, const std::string* layer)> progress;
};

struct CalibrationResult {
  std::map<std::string, float> input_amax;  // per linear layer name, max |input| (the float model's)
  int tokens = 0;
  bool on_gpu = false;  // where it ran, and how (the options' Auto resolved)
  bool group_sequential = false, toward_float = false, w4a4_inputs = false;
  // gptq: the quantized layers (QuantizeOptions::prequantized), and the layers' output error on their
  // calibration inputs, trace((W - Q) H (W - Q)^T) summed, with GPTQ and with round-to-nearest under the
  // same scale rule.
  std::map<std::string, Nvfp4Tensor> quantized;
  std::map<std::string, float>
      tensor_scales;  // gptq: each quantized layer's (QuantizeOptions::tensor_scales)
  double gptq_error = 0, rtn_error = 0;
};

CalibrationResult calibrate_checkpoint(const std::string& dir, const std::vector<std::vector<int>>& seqs,
                                       const CalibrationOptions& o);

}  // namespace fp4lab
