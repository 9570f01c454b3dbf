// Tensor-parallel runs: one thread per GPU, each with its own CudaOps and an NCCL communicator (NCCL is the
// library the field uses for this; fp4lab has no communication layer of its own). Built when the CUDA toolkit
// ships NCCL (FP4LAB_HAVE_NCCL); elsewhere --tp > 1 is a clear error.
#pragma once
#include <functional>
#include <string>

#include "cuda/cuda_ops.h"

namespace fp4lab {

bool tensor_parallel_available();
int visible_gpu_count();
// "NVLink/P2P" or "PCIe (no peer access)" between GPU 0 and 1, for the results.
std::string gpu_interconnect();
// The link model the roofline charges collectives to: "pcie" when GPU 0 and 1 reach each other over PCIe
// only, else "nvlink" (comm_spec in report/roofline.h).
std::string gpu_link_kind();

// Runs body(rank, ops) on tp GPUs at once (ranks 0..tp-1 on devices 0..tp-1); graphs: each rank captures its
// single-sequence decode steps, all-reduces included (NCCL collectives can be captured), in CUDA graphs. The
// first exception is rethrown. Keep NCCL_NVLS_ENABLE=0 in the environment of such runs on machines without
// NVLink multicast.
void run_tensor_parallel(int tp, bool graphs, const std::function<void(int rank, CudaOps& ops)>& body);

}  // namespace fp4lab
