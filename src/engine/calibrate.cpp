#include "engine/calibrate.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "cuda/gpu_info.h"
#include "engine/backends.h"
#include "io/safetensors.h"
#include "model/quantize.h"
#if FP4LAB_HAVE_CUDA
#include "cuda/check.h"
#include "cuda/nvfp4_gptq.h"
#endif

namespace fp4lab {

CalibrationDevice parse_calibration_device(const std::string& s) {
  if (s == "auto") return CalibrationDevice::Auto;
  if (s == "cpu") return CalibrationDevice::Cpu;
  if (s == "cuda") return CalibrationDevice::Cuda;
  throw Error("unknown calibration device '" + s + "' (auto, cpu, cuda)");
}

namespace {

// What both backends share: the layers, their stored weights and tensor scales, and the order of the blocks.
struct CalibrationPlan {
  std::vector<LinearSpec> layers;
  TensorStore store;
  std::map<std::string, float> scales;  // GPTQ: each layer's tensor scale (its fused group's)
  // GPTQ: the layers quantized together, in order (each block, or with group passes each fused group of
  // it, the lm_head last), each step calibrated on the outputs of the steps before it; else one step.
  std::vector<std::vector<const LinearSpec*>> steps;
  std::vector<float> stored(const LinearSpec& s) const {
    return tensor_to_f32(store.get(s.name + ".weight"));
  }
};

CalibrationPlan plan_calibration(const std::string& dir, const ModelConfig& config,
                                 const CalibrationOptions& o, bool group_sequential,
                                 const TensorScaleSearch& searcher = {}) {
  if (o.fp8 && o.gptq) throw Error("internal: GPTQ writes NVFP4 only");
  CalibrationPlan p{
      o.fp8 ? fp8_quantized_layers(config, o.exclude) : nvfp4_quantized_layers(config, o.exclude),
      TensorStore::open_dir(dir),
      {},
      {}};
  // GPTQ starts from the stored weights, and their tensor scales are the checkpoint writer's.
  if (o.gptq)
    p.scales = nvfp4_group_tensor_scales(
        p.layers, [&](const LinearSpec& s) { return p.stored(s); }, o.search_tensor_scale,
        o.gptq_options.scale_rule, searcher);
  if (!o.gptq) {
    p.steps.resize(1);
    return p;
  }
  std::vector<const LinearSpec*> order;
  for (const auto& s : p.layers) order.push_back(&s);
  // The listing's order within a block (q, k, v, o, gate, up, down: the order of the forward), blocks in
  // order, the lm_head (layer -1) last.
  std::stable_sort(order.begin(), order.end(), [](const LinearSpec* a, const LinearSpec* b) {
    return (a->layer < 0 ? 1 << 30 : a->layer) < (b->layer < 0 ? 1 << 30 : b->layer);
  });
  for (const LinearSpec* s : order) {
    const bool same =
        !p.steps.empty() && p.steps.back().front()->layer == s->layer &&
        (!group_sequential || fused_scale_group(*p.steps.back().front()) == fused_scale_group(*s));
    if (!same) p.steps.emplace_back();
    p.steps.back().push_back(s);
  }
  return p;
}

CalibrationResult calibrate_on_cpu(const std::string& dir, const std::vector<std::vector<int>>& seqs,
                                   const CalibrationOptions& o) {
  CalibrationResult r;
  r.group_sequential = o.gptq && o.sequential != CalibrationOptions::Sequential::Block;
  r.toward_float = o.gptq && o.objective != CalibrationOptions::Objective::Layer;
  CpuOps ops(o.threads);
  CpuModel m(load_weights(dir, QuantMode::Auto), ops);
  ModelWeights& w = m.host_weights_for_update();
  const CalibrationPlan p = plan_calibration(dir, w.config, o, r.group_sequential);
  CpuOps::Calibration cal;
  // toward_float: each quantized layer's float values, swapped with its quantized ones for the float passes.
  std::vector<std::pair<LinearWeight*, std::vector<float>>> float_weights;
  auto run = [&] {
    ops.set_calibration(&cal);
    for (const auto& s : seqs) {
      auto st = m.new_sequence(static_cast<int>(s.size()));
      m.forward(st, s, false);
    }
    ops.set_calibration(nullptr);
  };
  r.w4a4_inputs = o.gptq && o.w4a4_inputs;
  if (r.w4a4_inputs) {
    // The input scales come first (one pass of the float model), since the first step's Hessians already
    // take inputs quantized under them: each fused group's max |input| / 2688, as the checkpoint's
    // input_scale will be.
    cal.hessians = false;
    run();
    for (const auto& s : p.layers) r.input_amax[s.name] = cal.amax[&linear_weight(w, s)];
    const std::map<std::string, float> scales = nvfp4_input_scales(p.layers, r.input_amax);
    for (const auto& s : p.layers)
      if (const auto sc = scales.find(s.name); sc != scales.end())
        cal.act_scale[&linear_weight(w, s)] = sc->second;
  }
  for (size_t bi = 0; bi < p.steps.size(); ++bi) {
    if (o.progress) o.progress(static_cast<int>(bi), static_cast<int>(p.steps.size()), nullptr);
    cal.hessians = o.gptq;
    cal.hessian_only.clear();
    cal.hessian.clear();
    for (const LinearSpec* s : p.steps[bi]) cal.hessian_only.insert(&linear_weight(w, *s));
    // With W4A4 inputs even the first step's inputs differ from the float model's.
    const bool toward = r.toward_float && (!float_weights.empty() || r.w4a4_inputs);
    if (toward) {
      // The float model's inputs to this step's layers: the quantized layers swapped back for the pass, and
      // the inputs not quantized.
      const auto swap_all = [&] {
        for (auto& [lw, f] : float_weights) std::swap(lw->w, f);
      };
      swap_all();
      cal.inputs.clear();
      cal.record = true;
      cal.hessians = false;
      cal.quantize_inputs = false;
      run();
      cal.record = false;
      cal.hessians = true;
      swap_all();
      cal.reference = &cal.inputs;
      cal.cursor.clear();
      cal.cross.clear();
    }
    cal.quantize_inputs = r.w4a4_inputs;
    run();
    cal.reference = nullptr;
    if (bi == 0 && !r.w4a4_inputs)  // the float model's maxima: the first pass has nothing quantized yet
      for (const auto& s : p.layers) r.input_amax[s.name] = cal.amax[&linear_weight(w, s)];
    if (!o.gptq) break;
    for (const LinearSpec* sp : p.steps[bi]) {
      const LinearSpec& s = *sp;
      if (o.progress) o.progress(static_cast<int>(bi), static_cast<int>(p.steps.size()), &s.name);
      LinearWeight& lw = linear_weight(w, s);
      const auto h = cal.hessian.find(&lw);
      if (h == cal.hessian.end()) throw Error("gptq: the calibration never reached " + s.name);
      const float ts = p.scales.at(s.name);
      std::vector<float> w0 = p.stored(s);
      if (toward) w0 = gptq_float_target(w0, s.n, s.k, h->second, cal.cross.at(&lw), o.gptq_options.damp);
      Nvfp4Tensor q = nvfp4_quantize_gptq(w0, s.n, s.k, ts, h->second, o.gptq_options);
      r.gptq_error += nvfp4_output_error(w0, q, h->second);
      r.rtn_error +=
          nvfp4_output_error(w0, nvfp4_quantize_ref(w0, s.n, s.k, ts, o.gptq_options.scale_rule), h->second);
      // The blocks after this one calibrate on its quantized output; its float values are kept for the
      // float model's passes.
      if (r.toward_float) float_weights.emplace_back(&lw, lw.w);
      nvfp4_dequantize_ref(q, lw.w);
      r.quantized[s.name] = std::move(q);
    }
  }
  r.tensor_scales = p.scales;  // empty without GPTQ
  return r;
}

#if FP4LAB_HAVE_CUDA
CalibrationResult calibrate_on_cuda(const std::string& dir, const std::vector<std::vector<int>>& seqs,
                                    const CalibrationOptions& o) {
  CalibrationResult r;
  r.on_gpu = true;
  if (o.gptq && o.objective == CalibrationOptions::Objective::Float)
    throw Error("--gptq-objective float runs on the CPU only for now (--device cpu), not on the GPU");
  r.group_sequential = o.gptq && o.sequential == CalibrationOptions::Sequential::Group;
  if (o.gptq && o.w4a4_inputs)
    throw Error("--gptq-act nvfp4 runs on the CPU only for now (--device cpu), not on the GPU");
  // No graphs: the calibration hooks launch work of their own inside each linear layer.
  CudaOps ops(0, false);
  CudaModel m(load_weights(dir, QuantMode::BF16, WeightHome::Device), ops);
  const ModelWeights& w = m.weights();
  const CalibrationPlan p = plan_calibration(dir, w.config, o, r.group_sequential,
                                             [&](std::span<const Nvfp4Matrix> g, Nvfp4ScaleRule rule) {
                                               return nvfp4_search_tensor_scale_device(g, rule, ops.stream());
                                             });
  CudaOps::Calibration cal;
  GptqDevice gptq(ops.stream());
  for (size_t bi = 0; bi < p.steps.size(); ++bi) {
    if (o.progress) o.progress(static_cast<int>(bi), static_cast<int>(p.steps.size()), nullptr);
    cal.hessian.clear();
    for (const LinearSpec* s : p.steps[bi]) {
      DeviceBuffer h(static_cast<size_t>(s->k * s->k) * sizeof(float));
      CUDA_CHECK(cudaMemsetAsync(h.ptr, 0, h.bytes, ops.stream()));
      cal.hessian[&linear_weight(w, *s)] = std::move(h);
    }
    ops.set_calibration(&cal);
    try {
      for (const auto& s : seqs) {
        auto st = m.new_sequence(static_cast<int>(s.size()));
        m.forward(st, s, false);
      }
    } catch (...) {
      ops.set_calibration(nullptr);
      throw;
    }
    ops.set_calibration(nullptr);
    ops.synchronize();
    if (bi == 0) {  // the unquantized model's maxima
      for (const auto& s : p.layers) {
        const auto a = cal.amax.find(&linear_weight(w, s));
        unsigned bits = 0;
        if (a != cal.amax.end())
          CUDA_CHECK(cudaMemcpy(&bits, a->second.ptr, sizeof(bits), cudaMemcpyDeviceToHost));
        float v = 0.0f;
        std::memcpy(&v, &bits, sizeof(v));
        r.input_amax[s.name] = v;
      }
    }
    if (!o.gptq) break;
    for (const LinearSpec* sp : p.steps[bi]) {
      const LinearSpec& s = *sp;
      if (o.progress) o.progress(static_cast<int>(bi), static_cast<int>(p.steps.size()), &s.name);
      const LinearWeight& lw = linear_weight(w, s);
      if (!cal.amax.count(&lw)) throw Error("gptq: the calibration never reached " + s.name);
      const std::vector<float> w0 = p.stored(s);
      DeviceBuffer dq(static_cast<size_t>(s.n * s.k) * sizeof(bf16_raw));
      GptqDevice::Result q = gptq.quantize(w0, s.n, s.k, p.scales.at(s.name), cal.hessian.at(&lw).as<float>(),
                                           o.gptq_options, dq.as<bf16_raw>());
      // The blocks after this one calibrate on its quantized output.
      ops.replace_bf16_weight(lw, dq.as<bf16_raw>());
      ops.synchronize();
      r.gptq_error += q.error;
      r.rtn_error += q.rtn_error;
      r.quantized[s.name] = std::move(q.q);
    }
  }
  r.tensor_scales = p.scales;  // empty without GPTQ
  return r;
}
#endif

}  // namespace

CalibrationResult calibrate_checkpoint(const std::string& dir, const std::vector<std::vector<int>>& seqs,
                                       const CalibrationOptions& o) {
  const GpuQuery q = o.device == CalibrationDevice::Cpu ? GpuQuery{} : query_gpus();
  if (o.device == CalibrationDevice::Cuda && !q.ok)
    throw Error("--device cuda: " + (q.cuda_built ? q.error : std::string("this build has no CUDA backend")));
  CalibrationResult r;
#if FP4LAB_HAVE_CUDA
  // Auto leaves what only the CPU path does (toward the float model, W4A4 inputs) to the CPU.
  const bool cpu_only = o.gptq && (o.objective == CalibrationOptions::Objective::Float || o.w4a4_inputs);
  if (o.device == CalibrationDevice::Cuda || (o.device == CalibrationDevice::Auto && q.ok && !cpu_only))
    r = calibrate_on_cuda(dir, seqs, o);
  else
    r = calibrate_on_cpu(dir, seqs, o);
#else
  r = calibrate_on_cpu(dir, seqs, o);
#endif
  for (const auto& s : seqs) r.tokens += static_cast<int>(s.size());
  return r;
}

}  // namespace fp4lab
