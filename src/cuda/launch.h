// Kernel launches for the engine's decode path, with programmatic dependent launch (PDL) on sm_90+: the next
// kernel's blocks are scheduled, and prefetch what does not depend on the previous kernel (a GEMV's weights),
// while the previous one drains, instead of after a full launch gap. Hundreds of small kernels make up one
// decode step, so the gaps are a measurable share of it. Every kernel launched here must begin with
// ptx::griddep_wait() (or griddep_enter()) before touching data another kernel writes (cuda/ptx.cuh).
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "cuda/check.h"

namespace fp4lab {

// Process-wide switch, set from the --no-pdl flag of the CUDA commands; on by default.
void set_programmatic_launch(bool on);
// Enabled and the current device is sm_90 or newer (the attribute means nothing before Hopper).
bool programmatic_launch_active();
// The current device's compute capability major, queried once per device and thread.
int current_device_cc_major();

// Opts a kernel into `bytes` of dynamic shared memory, once per kernel, size and device (call it for every
// kernel with dynamic shared memory: the 48 KB default limit counts its static shared memory as well): set on
// every launch, cudaFuncSetAttribute went with a ~35 us floor per GEMM call (kernel-notes #78).
void allow_dynamic_smem(const void* kernel, size_t bytes);
template <class... P>
void allow_dynamic_smem(void (*kernel)(P...), size_t bytes) {
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}

// A failed launch as one error naming the kernel and its launch shape (the runtime's "invalid argument"
// alone does not say which of a step's hundreds of launches it was).
[[noreturn]] void throw_launch_error(cudaError_t e, const void* kernel, dim3 grid, dim3 block, size_t smem);

template <class... P, class... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   A&&... args) {
  cudaLaunchAttribute attr[1] = {};
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  if (programmatic_launch_active()) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
  if (e != cudaSuccess) throw_launch_error(e, reinterpret_cast<const void*>(kernel), grid, block, smem);
}

}  // namespace fp4lab
