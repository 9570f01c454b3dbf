// Checkpoint bytes to the GPU without a host copy of the model: reader threads pread chunks of the mapped
// checkpoint files into a ring of pinned staging buffers, and each chunk is copied to its device destination
// on the upload stream as soon as it is read. Disk (or page-cache) reads overlap the DMA copies and each other;
// the host holds at most the ring (slots x chunk bytes).
#pragma once
#include <cuda_runtime.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace fp4lab {

class WeightUploader {
 public:
  // chunk: bytes per read and copy; slots: pinned buffers in the ring; threads: concurrent readers.
  WeightUploader(cudaStream_t stream, size_t chunk = 16u << 20, int slots = 8, int threads = 4);
  ~WeightUploader();
  WeightUploader(const WeightUploader&) = delete;
  WeightUploader& operator=(const WeightUploader&) = delete;

  // Copies the tensor's stored bytes to dst (device, t.nbytes() bytes). Returns once every chunk has been read
  // and its copy queued on the stream: work queued after it on the stream sees the data.
  void copy(const TensorView& t, void* dst);
  // Hints the kernel to read these files ahead, in file order (cold loads), on a background thread.
  void prefetch(const std::vector<std::string>& files);
  // Shows progress on stderr against this total once a load has taken more than two seconds.
  void show_progress(uint64_t total_bytes, std::string label);

 private:
  struct Slot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;  // recorded after the slot's last copy
  };
  int fd_of(const std::string& path);
  Slot* acquire();
  void release(Slot* s);
  void copy_chunks(const TensorView& t, int fd, uint8_t* dst, uint64_t first, uint64_t count);

  cudaStream_t stream_;
  int device_ = 0;  // the stream's device, made current in the reader threads
  size_t chunk_;
  int threads_;
  std::vector<Slot> slots_;
  std::vector<Slot*> free_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int> fds_;
  uint64_t bytes_ = 0;
  uint64_t progress_total_ = 0;
  std::string progress_label_;
  double progress_last_ = 0;
  bool progress_shown_ = false;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  void progress();
  std::unique_ptr<struct PrefetchThread> prefetch_;
};

}  // namespace fp4lab
