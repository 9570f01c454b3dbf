#include "engine/calibrate.h"

#include <algorithm>

#include "common/error.h"
#include "engine/backends.h"
#include "io/safetensors.h"
#include "model/quantize.h"

namespace fp4lab {

CalibrationResult calibrate_checkpoint(const std::string& dir, const std::vector<std::vector<int>>& seqs,
                                       const CalibrationOptions& o) {
  CalibrationResult r;
  CpuOps ops(o.threads);
  CpuModel m(load_weights(dir, QuantMode::Auto), ops);
  ModelWeights& w = m.host_weights_for_update();
  if (o.fp8 && o.gptq) throw Error("internal: GPTQ writes NVFP4 only");
  const auto layers =
      o.fp8 ? fp8_quantized_layers(w.config, o.exclude) : nvfp4_quantized_layers(w.config, o.exclude);
  // GPTQ starts from the stored weights, and their tensor scales are the checkpoint writer's.
  const TensorStore store = TensorStore::open_dir(dir);
  auto stored = [&](const LinearSpec& s) { return tensor_to_f32(store.get(s.name + ".weight")); };
  const auto scales =
      o.gptq ? nvfp4_group_tensor_scales(layers, stored, o.search_tensor_scale, o.gptq_options.scale_rule)
             : std::map<std::string, float>{};

  CpuOps::Calibration cal;
  auto run = [&] {
    ops.set_calibration(&cal);
    for (const auto& s : seqs) {
      auto st = m.new_sequence(static_cast<int>(s.size()));
      m.forward(st, s, false);
    }
    ops.set_calibration(nullptr);
  };
  // Blocks in order; the lm_head (layer -1) last. Without GPTQ one pass records the maxima.
  std::vector<int> blocks;
  for (const auto& s : layers)
    if (std::find(blocks.begin(), blocks.end(), s.layer) == blocks.end()) blocks.push_back(s.layer);
  std::sort(blocks.begin(), blocks.end(),
            [](int a, int b) { return (a < 0 ? 1 << 30 : a) < (b < 0 ? 1 << 30 : b); });
  if (!o.gptq) blocks.assign(1, 0);
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    if (o.progress) o.progress(static_cast<int>(bi), static_cast<int>(blocks.size()));
    cal.hessians = o.gptq;
    cal.hessian_only.clear();
    cal.hessian.clear();
    for (const auto& s : layers)
      if (s.layer == blocks[bi]) cal.hessian_only.insert(&linear_weight(w, s));
    run();
    if (bi == 0) {  // the float model's maxima: the first pass has nothing quantized yet
      for (const auto& s : layers) r.input_amax[s.name] = cal.amax[&linear_weight(w, s)];
      for (const auto& s : seqs) r.tokens += static_cast<int>(s.size());
    }
    if (!o.gptq) break;
    for (const auto& s : layers) {
      if (s.layer != blocks[bi]) continue;
      LinearWeight& lw = linear_weight(w, s);
      const auto h = cal.hessian.find(&lw);
      if (h == cal.hessian.end()) throw Error("gptq: the calibration never reached " + s.name);
      const float ts = scales.at(s.name);
      const std::vector<float> w0 = stored(s);
      Nvfp4Tensor q = nvfp4_quantize_gptq(w0, s.n, s.k, ts, h->second, o.gptq_options);
      r.gptq_error += nvfp4_output_error(w0, q, h->second);
      r.rtn_error +=
          nvfp4_output_error(w0, nvfp4_quantize_ref(w0, s.n, s.k, ts, o.gptq_options.scale_rule), h->second);
      // The blocks after this one calibrate on its quantized output.
      nvfp4_dequantize_ref(q, lw.w);
      r.quantized[s.name] = std::move(q);
    }
  }
  return r;
}

}  // namespace fp4lab
