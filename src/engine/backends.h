// The backends a model runs on, as Runner types: the CPU reference (every build) and the CUDA backend (builds
// with CUDA, where FP4LAB_HAVE_CUDA is defined).
#pragma once
#include "cpu/cpu_ops.h"
#include "engine/runner.h"
#if FP4LAB_HAVE_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace fp4lab {

using CpuModel = Runner<CpuOps>;
#if FP4LAB_HAVE_CUDA
using CudaModel = Runner<CudaOps>;
// The optional parts are detected, not declared: a signature that drifts would silently send every batched
// decode step down the per-sequence loop. These pin what the CUDA backend is meant to provide.
static_assert(TensorParallelBackend<CudaOps> && BatchedBackend<CudaOps> && SegmentBackend<CudaOps> &&
              FusedMambaStepBackend<CudaOps>);
#endif

}  // namespace fp4lab
