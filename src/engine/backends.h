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
#endif

}  // namespace fp4lab
