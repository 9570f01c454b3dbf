#include "cuda/weight_upload.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "cuda/check.h"

namespace fp4lab {

struct PrefetchThread {
  std::atomic<bool> stop{false};
  std::thread t;
  ~PrefetchThread() {
    stop = true;
    if (t.joinable()) t.join();
  }
};

WeightUploader::WeightUploader(cudaStream_t stream, size_t chunk, int slots, int threads)
    : stream_(stream), chunk_(chunk), threads_(threads) {
  CUDA_CHECK(cudaGetDevice(&device_));
  slots_.resize(static_cast<size_t>(slots));
  for (auto& s : slots_) {
    CUDA_CHECK(cudaMallocHost(&s.host, chunk_));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(s.done, stream_));
    free_.push_back(&s);
  }
}

WeightUploader::~WeightUploader() {
  prefetch_.reset();
  cudaStreamSynchronize(stream_);  // no throw from a destructor: a failed copy was already reported
  for (auto& s : slots_) {
    if (s.done) cudaEventDestroy(s.done);
    if (s.host) cudaFreeHost(s.host);
  }
  for (const auto& [path, fd] : fds_) ::close(fd);
}

int WeightUploader::fd_of(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = fds_.find(path); it != fds_.end()) return it->second;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  return fds_[path] = fd;
}

WeightUploader::Slot* WeightUploader::acquire() {
  Slot* s = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    s = free_.back();
    free_.pop_back();
  }
  // The slot's previous copy must have left the pinned buffer before it is overwritten.
  CUDA_CHECK(cudaEventSynchronize(s->done));
  return s;
}

void WeightUploader::release(Slot* s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(s);
  }
  cv_.notify_one();
}

void WeightUploader::copy_chunks(const TensorView& t, int fd, uint8_t* dst, uint64_t first, uint64_t count) {
  const uint64_t n = t.nbytes();
  for (uint64_t c = first; c < first + count; ++c) {
    const uint64_t off = c * chunk_, len = std::min<uint64_t>(chunk_, n - off);
    Slot* s = acquire();
    uint64_t got = 0;
    while (got < len) {
      const ssize_t r = ::pread(fd, static_cast<uint8_t*>(s->host) + got, len - got,
                                static_cast<off_t>(t.file_offset + off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        release(s);
        throw Error(t.file + ": read of tensor '" + t.name + "' failed (" +
                    (r < 0 ? std::strerror(errno) : "file shorter than its header says") + ")");
      }
      got += static_cast<uint64_t>(r);
    }
    // Copies of several threads interleave on the one stream; each slot's event follows its own copy.
    {
      std::lock_guard<std::mutex> lock(mu_);
      CUDA_CHECK(cudaMemcpyAsync(dst + off, s->host, len, cudaMemcpyDefault, stream_));
      CUDA_CHECK(cudaEventRecord(s->done, stream_));
    }
    release(s);
  }
}

void WeightUploader::copy(const TensorView& t, void* dst) {
  const uint64_t n = t.nbytes();
  if (n == 0) return;
  const int fd = fd_of(t.file);
  const uint64_t chunks = (n + chunk_ - 1) / chunk_;
  const int nt = static_cast<int>(std::min<uint64_t>(chunks, static_cast<uint64_t>(threads_)));
  auto* d = static_cast<uint8_t*>(dst);
  if (nt <= 1) {
    copy_chunks(t, fd, d, 0, chunks);
  } else {
    // Contiguous runs of chunks per thread, so each reader's requests stay sequential in the file.
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(static_cast<size_t>(nt));
    const uint64_t per = (chunks + nt - 1) / nt;
    for (int i = 0; i < nt; ++i) {
      const uint64_t first = i * per, count = first >= chunks ? 0 : std::min(per, chunks - first);
      pool.emplace_back([&, i, first, count] {
        try {
          CUDA_CHECK(cudaSetDevice(device_));  // a new thread starts on device 0
          copy_chunks(t, fd, d, first, count);
        } catch (...) {
          errors[static_cast<size_t>(i)] = std::current_exception();
        }
      });
    }
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }
  bytes_ += n;
  progress();
}

void WeightUploader::show_progress(uint64_t total_bytes, std::string label) {
  progress_total_ = total_bytes;
  progress_label_ = std::move(label);
}

void WeightUploader::progress() {
  if (!progress_total_) return;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const bool tty = ::isatty(2);
  const bool last = bytes_ >= progress_total_;
  if (s < 2.0 || (!last && s - progress_last_ < (tty ? 0.25 : 5.0)) || (last && !progress_shown_ && s < 2.0))
    return;
  progress_last_ = s;
  progress_shown_ = true;
  std::fprintf(stderr, "%sloading %s: %.2f / %.2f GB (%.0f%%), %.1f GB/s%s", tty ? "\r" : "",
               progress_label_.c_str(), bytes_ / 1e9, progress_total_ / 1e9,
               100.0 * static_cast<double>(bytes_) / static_cast<double>(progress_total_), bytes_ / s / 1e9,
               tty && !last ? "" : "\n");
}

void WeightUploader::prefetch(const std::vector<std::string>& files) {
  prefetch_ = std::make_unique<PrefetchThread>();
  std::vector<std::pair<std::string, int>> list;
  for (const auto& f : files) list.emplace_back(f, fd_of(f));
  // posix_fadvise(WILLNEED) starts asynchronous readahead of a range; issued in 64 MB steps so that the
  // page cache fills in file order just ahead of (and in parallel with) the readers.
  prefetch_->t = std::thread([p = prefetch_.get(), list] {
    for (const auto& [path, fd] : list) {
      const off_t size = ::lseek(fd, 0, SEEK_END);
      for (off_t off = 0; off < size && !p->stop; off += 64 << 20) {
        ::posix_fadvise(fd, off, 64 << 20, POSIX_FADV_WILLNEED);
        // Reading one byte per step blocks until the step is in flight, so the hints do not race ahead of
        // the disk and evict each other on small-memory machines.
        char b;
        (void)!::pread(fd, &b, 1, std::min<off_t>(off + (64 << 20) - 1, size - 1));
      }
    }
  });
}

}  // namespace fp4lab
