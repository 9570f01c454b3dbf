#include "cuda/tensor_parallel.h"
#include "cuda/gpu_telemetry.h"

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "cuda/check.h"
#if FP4LAB_HAVE_NCCL
#include <nccl.h>
#endif

namespace fp4lab {

int visible_gpu_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

namespace {

// How GPU 0 reaches GPU 1: peer access at all, and NVML's count of its active NVLinks (-1: unknown).
struct PeerLink {
  bool p2p = false;
  int nvlinks = -1;
};
PeerLink peer_link() {
  int p2p = 0;
  CUDA_CHECK(cudaDeviceCanAccessPeer(&p2p, 0, 1));
  return {p2p != 0, p2p ? active_nvlinks(0) : -1};
}

}  // namespace

std::string gpu_interconnect() {
  if (visible_gpu_count() < 2) return "single GPU";
  const PeerLink l = peer_link();
  if (!l.p2p) return "PCIe (no peer access)";
  if (l.nvlinks > 0) return "NVLink (" + std::to_string(l.nvlinks) + " active links on GPU 0)";
  return l.nvlinks == 0 ? "PCIe peer access (no active NVLink)" : "peer access (NVLink or PCIe P2P)";
}

std::string gpu_link_kind() {
  if (visible_gpu_count() < 2) return "nvlink";
  const PeerLink l = peer_link();
  return l.p2p && l.nvlinks != 0 ? "nvlink" : "pcie";
}

#if FP4LAB_HAVE_NCCL
bool tensor_parallel_available() {
  return true;
}

void run_tensor_parallel(int tp, bool graphs, const std::function<void(int, CudaOps&)>& body) {
  if (tp < 1) throw Error("--tp must be at least 1");
  const int have = visible_gpu_count();
  if (tp > have)
    throw Error("--tp " + std::to_string(tp) + " needs " + std::to_string(tp) + " GPUs; " +
                std::to_string(have) + " visible");
  ncclUniqueId id;
  if (ncclGetUniqueId(&id) != ncclSuccess) throw Error("NCCL: ncclGetUniqueId failed");
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int r = 0; r < tp; ++r)
    threads.emplace_back([&, r] {
      try {
        CudaOps ops(r, graphs);
        ncclComm_t comm = nullptr;
        const ncclResult_t rc = ncclCommInitRank(&comm, tp, id, r);
        if (rc != ncclSuccess)
          throw Error(std::string("NCCL: ncclCommInitRank failed: ") + ncclGetErrorString(rc));
        ops.set_tensor_parallel(comm, r, tp);
        try {
          body(r, ops);
        } catch (...) {
          ncclCommAbort(comm);
          throw;
        }
        ops.synchronize();
        ncclCommDestroy(comm);
      } catch (...) {
        std::lock_guard lock(mu);
        if (!first) first = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

#else
bool tensor_parallel_available() {
  return false;
}

void run_tensor_parallel(int tp, bool graphs, const std::function<void(int, CudaOps&)>& body) {
  if (tp != 1)
    throw Error("--tp > 1: this fp4lab was built without NCCL (the CUDA toolkit's nccl.h was not found)");
  CudaOps ops(0, graphs);
  body(0, ops);
}
#endif

}  // namespace fp4lab
