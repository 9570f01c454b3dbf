// What the files of CudaOps (cuda_ops.cu, cuda_ops_load.cu, cuda_ops_mamba.cu) share: the launchers of the
// kernel families they dispatch to and the per-op profiling timer.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "cpu/reference.h"
#include "cuda/argmax.h"
#include "cuda/baseline_gemm.h"
#include "cuda/bf16_gemv.h"
#include "cuda/check.h"
#include "cuda/flash_attention.h"
#include "cuda/cuda_ops.h"
#include "cuda/elementwise.h"
#include "cuda/launch.h"
#include "cuda/mamba_decode.h"
#include "cuda/mamba_prefill.h"
#if FP4LAB_HAVE_NCCL
#include <nccl.h>
#endif
#include "cuda/random_fill.h"

namespace fp4lab {

// Records an op's end event when --profile is on (the start is recorded at construction).
struct CudaOps::OpTimer {
  CudaOps* ops;
  size_t index = 0;
  OpTimer(CudaOps* o, const char* name) : ops(o) {
    if (ops->profile_) {
      index = ops->pending_.size();
      ops->prof_begin(name);
    }
  }
  ~OpTimer() {
    if (ops->profile_) CUDA_CHECK(cudaEventRecord(ops->pending_[index].b, ops->stream_));
  }
};

}  // namespace fp4lab
