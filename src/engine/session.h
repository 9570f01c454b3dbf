// Where a command runs a model: the one place that chooses between the CPU reference and the CUDA backend
// (one GPU, or tensor-parallel over several), so that a command is written once for both.
#pragma once
#include <string>
#include <utility>

#include "common/error.h"
#include "cuda/run_options.h"
#include "engine/backends.h"
#if FP4LAB_HAVE_CUDA
#include "engine/cuda_run.h"
#endif

namespace fp4lab {

struct SessionOptions {
  std::string backend = "cpu";  // "cpu" or "cuda"
  int threads = 0;              // CPU backend: worker threads (0: every core)
  CudaRunOptions cuda;  // the CUDA run (memory plan, graphs, TP, ...); its lm_head applies on the CPU too
  bool w4a4 = false;    // CPU backend: W4A4 emulation of NVFP4 layers (CpuOps::set_w4a4)
  // Whether load_model should keep host copies of the weights: the CPU backend computes from them, the CUDA
  // backend streams a checkpoint to the GPU tensor by tensor instead.
  bool host_weights() const { return backend != "cuda"; }
};

// A backend this build can run with these options, or one error naming the flag: run_session checks it, and
// a command checks it before the work that comes before loading a model.
inline void check_session_options(const SessionOptions& o) {
  if (o.backend != "cpu" && o.backend != "cuda")
    throw Error("--backend " + o.backend + ": expected cpu or cuda");
  if (o.cuda.tp > 1 && o.backend != "cuda")
    throw Error("--tp " + std::to_string(o.cuda.tp) + " needs --backend cuda");
  if (o.w4a4 && o.backend != "cpu")
    throw Error(
        "W4A4 emulation runs on the CPU backend (--backend cpu): the CUDA backend runs NVFP4 as W4A16");
#if !FP4LAB_HAVE_CUDA
  if (o.backend == "cuda") throw Error("--backend cuda: this fp4lab was built without CUDA");
#endif
}

// Loads `w` onto the backend and calls fn(model, ops, rank) with a CpuModel& / CpuOps& or a CudaModel& /
// CudaOps& (fn is a generic lambda): once on the CPU, on every rank of a tensor-parallel run, where each rank
// must do the same work and rank 0 is the one that reports.
template <class F>
void run_session(ModelWeights w, const SessionOptions& o, F&& fn) {
  check_session_options(o);
#if FP4LAB_HAVE_CUDA
  if (o.backend == "cuda") {
    run_cuda_model(std::move(w), o.cuda, [&](CudaModel& m, CudaOps& ops, int rank) { fn(m, ops, rank); });
    return;
  }
#endif
  CpuOps ops(o.threads);
  ops.set_w4a4(o.w4a4);
  CpuModel m(with_lm_head(std::move(w), o.cuda.lm_head), ops);
  fn(m, ops, 0);
}

}  // namespace fp4lab
