// Writes a ModelOpt-layout NVFP4 or FP8 checkpoint from a BF16/F16/F32 one (the `fp4lab quantize` back end).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "format/nvfp4.h"
#include "common/json_util.h"
#include "model/layout.h"

namespace fp4lab {

struct QuantizeOptions {
  // FP8: ModelOpt's FP8 layout instead (E4M3 weight, F32 weight_scale = amax / 448 per tensor, and with
  // input_amax an input_scale = amax / 448); method, search_tensor_scale and prequantized are NVFP4's.
  bool fp8 = false;
  std::vector<std::string> exclude;  // empty: the architecture's defaults (default_nvfp4_excludes / fp8)
  // Calibrated max |input| per linear layer name. Empty: a weight-only W4A16_NVFP4 checkpoint; given: NVFP4
  // (W4A4) with <p>.input_scale = amax / (6 * 448), fused q/k/v and gate/up sharing the max.
  std::map<std::string, float> input_amax;
  // How block scales are chosen (rtn: ModelOpt's amax / 6, bit-identical to its export).
  Nvfp4ScaleRule method = Nvfp4ScaleRule::Amax;
  // The tensor scale: ModelOpt's amax / 2688 (false, bit-identical to its export) or the error-minimizing
  // one under `method` (nvfp4_search_tensor_scale).
  bool search_tensor_scale = false;
  // Layers already quantized elsewhere (GPTQ, engine/calibrate.h), by linear layer name, written as they
  // are; their tensor scale must be the one this function would use (nvfp4_group_tensor_scales).
  std::map<std::string, Nvfp4Tensor> prequantized;
  // Per layer name, the tensor scales nvfp4_group_tensor_scales gives under search_tensor_scale and method,
  // where the caller has them already (GPTQ searched them on the GPU); empty: computed here.
  std::map<std::string, float> tensor_scales;
};

// The linear layers quantize_checkpoint_nvfp4 makes NVFP4: every one but the excluded patterns (empty: the
// architecture's defaults), K not a multiple of 16, and a tied lm_head.
std::vector<LinearSpec> nvfp4_quantized_layers(const ModelConfig& cfg,
                                               const std::vector<std::string>& exclude);
// The same for FP8: every linear layer but the excluded patterns (empty: default_fp8_excludes) and a tied
// lm_head.
std::vector<LinearSpec> fp8_quantized_layers(const ModelConfig& cfg, const std::vector<std::string>& exclude);
// Per layer name, the shared tensor scale (weight_scale_2) of its fused group (q/k/v, gate/up), from
// `weight_of(spec)`, the layer's [n, k] weights: ModelOpt's (the group's max |w| / 2688), or with `search`
// the one with the least weight error under `rule` (nvfp4_search_tensor_scale, or `searcher` in its place:
// the CUDA backend's twin).
using TensorScaleSearch = std::function<float(std::span<const Nvfp4Matrix>, Nvfp4ScaleRule)>;
std::map<std::string, float> nvfp4_group_tensor_scales(
    const std::vector<LinearSpec>& layers,
    const std::function<std::vector<float>(const LinearSpec&)>& weight_of, bool search = false,
    Nvfp4ScaleRule rule = Nvfp4ScaleRule::Amax, const TensorScaleSearch& searcher = {});

// NVFP4 W4A4: each layer's input_scale, its fused group's (q/k/v, gate/up share it) max |input| / 2688, from
// the per-layer input maxima; a layer whose group saw no positive maximum gets none. The writer's and the
// calibration's (GPTQ on NVFP4 inputs) one rule.
std::map<std::string, float> nvfp4_input_scales(const std::vector<LinearSpec>& layers,
                                                const std::map<std::string, float>& input_amax);

struct QuantizeReport {
  int quantized = 0, kept = 0;
  bool calibrated = false;
  double bytes_in = 0, bytes_out = 0;
};

// hf_quant_config.json and config.json (config plus its quantization_config) of a weight-only W4A16_NVFP4
// (calibrated: NVFP4) or an FP8 ModelOpt checkpoint whose linear layers other than `excluded` are quantized.
void write_modelopt_configs(const std::string& out_dir, json config, const std::vector<std::string>& excluded,
                            bool calibrated, bool fp8 = false);

// NVFP4, or FP8 with opt.fp8.
QuantizeReport quantize_checkpoint_nvfp4(const std::string& in_dir, const std::string& out_dir,
                                         const QuantizeOptions& opt);

}  // namespace fp4lab
