// Linked only into builds without CUDA.
#include "cuda/gpu_info.h"

namespace fp4lab {

GpuQuery query_gpus() {
  GpuQuery q;
  q.cuda_built = false;
  q.error = "this fp4lab was built without CUDA (no nvcc at configure time, or -DFP4LAB_CUDA=OFF)";
  return q;
}

std::vector<std::string> compiled_cuda_archs() {
  return {};
}

}  // namespace fp4lab
