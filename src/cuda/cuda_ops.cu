// The CUDA engine backend (CudaOps): buffers, graph capture, the token pick, and the dispatch of each op to
// the launchers of its kernel family (elementwise.h, attention_decode.h, flash_attention.h, nvfp4_gemm.h,
// ...); the weights' upload is in cuda_ops_load.cu, the Mamba-2 ops in cuda_ops_mamba.cu.
// tests/test_engine_gpu.cpp compares whole models against the CPU backend, tests/test_engine_kernels_gpu.cpp
// single kernels against their CPU twins.
#include "cuda/cuda_ops_impl.cuh"
#include "cuda/nvfp4_gptq.h"

namespace fp4lab {

void CudaOps::prof_begin(const char* op) {
  PendingEvent e{op, nullptr, nullptr};
  CUDA_CHECK(cudaEventCreate(&e.a));
  CUDA_CHECK(cudaEventCreate(&e.b));
  CUDA_CHECK(cudaEventRecord(e.a, stream_));
  pending_.push_back(e);
}

void CudaOps::prof_collect() {
  for (auto& e : pending_) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e.a, e.b));
    profile_ms_[e.op] += ms;
    cudaEventDestroy(e.a);
    cudaEventDestroy(e.b);
  }
  pending_.clear();
}

CudaOps::CudaOps(int device, bool graphs) : device_(device), graphs_(graphs) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreate(&stream_));
  // cuBLAS gets a fixed workspace so that its calls can be captured in graphs.
  cublas_ws_ = DeviceBuffer(32ull << 20);
  CUBLAS_CHECK(
      cublasSetWorkspace(static_cast<cublasHandle_t>(ws_.cublas_handle()), cublas_ws_.ptr, cublas_ws_.bytes));
}

CudaOps::~CudaOps() {
  if (pinned_tokens_) cudaFreeHost(pinned_tokens_);
  if (pinned_logits_) cudaFreeHost(pinned_logits_);
  if (pinned_ids_) cudaFreeHost(pinned_ids_);
  if (pinned_pick_) cudaFreeHost(pinned_pick_);
  if (pinned_top_) cudaFreeHost(pinned_top_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaOps::invalidate_graphs(const char* what) {
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream_, &cs));
  if (cs != cudaStreamCaptureStatusNone)
    throw Error(std::string("internal: ") + what + " would be reallocated during graph capture");
  ++arena_gen_;
}

void CudaOps::ensure_device(DeviceBuffer& b, size_t bytes, const char* what) {
  if (b.bytes >= bytes) return;
  invalidate_graphs(what);
  b = DeviceBuffer(bytes);
}

int* CudaOps::zeroed_counters(DeviceBuffer& b, size_t n, const char* what) {
  if (b.bytes < n * sizeof(int)) {
    ensure_device(b, n * sizeof(int), what);
    CUDA_CHECK(cudaMemsetAsync(b.ptr, 0, b.bytes, stream_));
  }
  return b.as<int>();
}

template <class T>
bool CudaOps::ensure_pinned(T*& p, size_t& cap, size_t n, const char* what) {
  if (n <= cap) return false;
  invalidate_graphs(what);
  synchronize();  // a copy from or into the old buffer may still be in flight
  if (p) CUDA_CHECK(cudaFreeHost(p));
  p = nullptr;
  CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&p), n * sizeof(T)));
  cap = n;
  return true;
}

void CudaOps::logits_async(const Tensor& h, const LinearWeight& head) {
  const size_t n = logits_on_device(h, head);
  ensure_pinned(pinned_logits_, pinned_logits_cap_, n, "the pinned logits buffer");
  CUDA_CHECK(cudaMemcpyAsync(pinned_logits_, logits_dev_.ptr, n * 4, cudaMemcpyDeviceToHost, stream_));
}

void CudaOps::argmax_async(const Tensor& h, const LinearWeight& head) {
  logits_on_device(h, head);
  OpTimer timer_(this, "argmax");
  const int64_t rows = logits_rows_, parts = argmax_parts(logits_cols_);
  // The split counters must read zero at every launch (each row's last block resets its own), so row r's
  // stays at one place however the batch's size changes from step to step (a server's does): a buffer of
  // their own, not a region laid out by the row count, where a smaller step would read a larger one's ids.
  int* done = zeroed_counters(argmax_done_, static_cast<size_t>(rows), "the argmax counters");
  // [rows] ids, [rows * parts] indices, then values: written before they are read within one launch.
  const size_t ids_bytes = static_cast<size_t>(rows) * 4, parts_n = static_cast<size_t>(rows * parts);
  ensure_device(argmax_dev_, (ids_bytes + 7) / 8 * 8 + parts_n * 12, "the argmax buffer");
  auto* base = static_cast<uint8_t*>(argmax_dev_.ptr);
  int* ids = reinterpret_cast<int*>(base);
  auto* part_i = reinterpret_cast<int64_t*>(base + (ids_bytes + 7) / 8 * 8);
  auto* part_v = reinterpret_cast<float*>(part_i + parts_n);
  ensure_pick(rows);
  ensure_device(pick_dev_, argmax_pick_bytes(rows), "the sampling parameters");
  CUDA_CHECK(
      cudaMemcpyAsync(pick_dev_.ptr, pinned_pick_, argmax_pick_bytes(rows), cudaMemcpyHostToDevice, stream_));
  launch_argmax_rows(logits_dev_.as<float>(), rows, logits_cols_, pick_dev_.as<ArgmaxPick>(), part_v, part_i,
                     done, ids, stream_);
  // Pinned, so that the copy can sit in a captured decode step.
  ensure_pinned(pinned_ids_, pinned_ids_cap_, static_cast<size_t>(rows), "the pinned argmax buffer");
  CUDA_CHECK(cudaMemcpyAsync(pinned_ids_, ids, ids_bytes, cudaMemcpyDeviceToHost, stream_));
}

void CudaOps::ensure_pick(int64_t rows) {
  const size_t words = argmax_pick_bytes(rows) / 8;
  if (ensure_pinned(pinned_pick_, pinned_pick_cap_, words, "the pinned sampling parameters"))
    std::memset(pinned_pick_, 0, words * 8);  // temperature 0 (argmax) until set_pick
}

void CudaOps::set_pick(float temperature, std::span<const uint64_t> seeds) {
  if (temperature > 0.0f && seeds.empty())
    throw Error("internal: sampling on the device needs a seed per row");
  ensure_pick(std::max<int64_t>(1, static_cast<int64_t>(seeds.size())));
  auto* h = reinterpret_cast<ArgmaxPick*>(pinned_pick_);
  h->temperature = temperature;
  std::copy(seeds.begin(), seeds.end(), reinterpret_cast<uint64_t*>(h + 1));
}

void CudaOps::top_logits_async(const Tensor& h, const LinearWeight& head) {
  logits_on_device(h, head);
  OpTimer timer_(this, "top_logits");
  if (!top_logits_supported(logits_cols_))
    throw Error("sampling with top-k on the device: a vocabulary of " + std::to_string(logits_cols_) +
                " is more than it handles (" + std::to_string(int64_t{kArgmaxPerBlock} * kArgmaxMaxParts) +
                ")");
  const size_t words = static_cast<size_t>(logits_rows_ * argmax_parts(logits_cols_)) * cpu::kTopLogits;
  ensure_device(top_dev_, words * 8, "the top-k candidates");
  ensure_pinned(pinned_top_, pinned_top_cap_, words, "the pinned top-k candidates");
  launch_top_logits_rows(logits_dev_.as<float>(), logits_rows_, logits_cols_, top_dev_.as<uint64_t>(),
                         stream_);
  CUDA_CHECK(cudaMemcpyAsync(pinned_top_, top_dev_.ptr, words * 8, cudaMemcpyDeviceToHost, stream_));
}

std::vector<std::vector<cpu::TopLogit>> CudaOps::fetch_top_logits() {
  synchronize();
  if (profile_) prof_collect();
  const size_t per_row = static_cast<size_t>(argmax_parts(logits_cols_)) * cpu::kTopLogits;
  std::vector<std::vector<cpu::TopLogit>> out(static_cast<size_t>(logits_rows_));
  for (size_t r = 0; r < out.size(); ++r) out[r] = top_logits_merge(pinned_top_ + r * per_row, per_row);
  return out;
}

std::vector<int> CudaOps::fetch_argmax() {
  synchronize();
  if (profile_) prof_collect();
  return std::vector<int>(pinned_ids_, pinned_ids_ + logits_rows_);
}

size_t CudaOps::logits_on_device(const Tensor& h, const LinearWeight& head) {
  OpTimer timer_(this, "lm_head");
  const DevLinear& d = linears_.at(&head);
  const size_t n = static_cast<size_t>(h.rows * d.n);
  ensure_device(logits_dev_, static_cast<size_t>(h.rows * std::max<int64_t>(d.n, vocab_)) * 4,
                "the logits buffer");
  // A BF16 head multiplies here, not through linear(), so a calibration observes its input here.
  if (calib_ && !d.nvfp4) observe_input(h, head);
  if (d.nvfp4) {
    Tensor l = alloc(h.rows, d.n);
    linear(h, head, l);
    launch_bf16_to_f32(l.data, static_cast<int64_t>(n), logits_dev_.as<float>(), stream_);
  } else if (const int split = bf16_gemv_split_for(h.rows, d.n, d.k, h.cols, h.data, d.bf16.ptr)) {
    bf16_gemv(h.data, h.rows, h.cols, d.bf16.as<bf16_raw>(), d.n, d.k, logits_dev_.as<float>(), d.n, split,
              stream_);
  } else {
    // BF16 x BF16 with an FP32 result.
    auto hb = static_cast<cublasHandle_t>(ws_.cublas_handle());
    CUBLAS_CHECK(cublasSetStream(hb, stream_));
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(d.n), static_cast<int>(h.rows),
                              static_cast<int>(d.k), &one, d.bf16.ptr, CUDA_R_16BF, static_cast<int>(d.k),
                              h.data, CUDA_R_16BF, static_cast<int>(h.cols), &zero, logits_dev_.ptr,
                              CUDA_R_32F, static_cast<int>(d.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  logits_rows_ = h.rows;
  logits_cols_ = d.n;
  if (vocab_parallel_ && tp_comm_) {
#if FP4LAB_HAVE_NCCL
    // Every rank scored its shard of the vocabulary: gather the shards, then put each row's in id order.
    OpTimer timer_g(this, "all_gather");
    ensure_device(vocab_gather_, n * 4 * static_cast<size_t>(tp_), "the vocab gather buffer");
    const ncclResult_t rc = ncclAllGather(logits_dev_.ptr, vocab_gather_.ptr, n, ncclFloat32,
                                          static_cast<ncclComm_t>(tp_comm_), stream_);
    if (rc != ncclSuccess) throw Error(std::string("NCCL all-gather failed: ") + ncclGetErrorString(rc));
    launch_gather_vocab(vocab_gather_.as<float>(), h.rows, d.n, vocab_, logits_dev_.as<float>(), stream_);
    logits_cols_ = vocab_;
    return static_cast<size_t>(h.rows * vocab_);
#endif
  }
  return n;
}

std::vector<float> CudaOps::fetch_logits() {
  synchronize();
  if (profile_) prof_collect();
  return std::vector<float>(pinned_logits_, pinned_logits_ + logits_rows_ * logits_cols_);
}

void CudaOps::write_rows(Tensor& dst, int64_t from, const Tensor& src) {
  const Tensor view = rows(dst, from, src.rows);
  if (view.data == src.data) return;
  if (src.f32 != dst.f32 || src.cols != dst.cols)
    throw Error("internal: write_rows between different layouts");
  CUDA_CHECK(cudaMemcpyAsync(view.data, src.data,
                             static_cast<size_t>(src.rows * src.cols) * (src.f32 ? 4 : 2),
                             cudaMemcpyDeviceToDevice, stream_));
}

void CudaOps::advance(State& s, int t) {
  s.pos += t;
  launch_pos_add(s.pos_dev.as<int>(), t, stream_);
}

void CudaOps::capture(State& s, const std::function<void()>& body) {
  const int pos_before = s.pos;
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  try {
    body();
  } catch (...) {
    cudaStreamEndCapture(stream_, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
  s.pos = pos_before;  // the captured advance() ran on the host once; replays advance it instead
  GraphExec e;
  const cudaError_t err = cudaGraphInstantiate(&e.exec, g, 0);
  cudaGraphDestroy(g);
  CUDA_CHECK(err);
  e.arena_gen = graph_gen();
  s.graph = std::move(e);
}

void CudaOps::replay(State& s, int token) {
  pinned_tokens_[0] = token;
  CUDA_CHECK(cudaGraphLaunch(s.graph.exec, stream_));
  s.pos += 1;
}

void CudaOps::synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

const float* CudaOps::dev_f32(const std::vector<float>& host) {
  auto it = f32_.find(host.data());
  if (it != f32_.end()) return it->second.as<float>();
  if (host.empty()) throw Error("internal: an empty weight vector reached the CUDA backend");
  DeviceBuffer b(host.size() * 4);
  CUDA_CHECK(cudaMemcpyAsync(b.ptr, host.data(), host.size() * 4, cudaMemcpyHostToDevice, stream_));
  weight_bytes_ += b.bytes;
  return (f32_[host.data()] = std::move(b)).as<float>();
}

size_t CudaOps::state_bytes(const ModelConfig& c, int max_tokens) const {
  return static_cast<size_t>(sequence_state_bytes(c, max_tokens));
}

CudaOps::State CudaOps::new_state(const ModelConfig& c, int max_tokens) {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const size_t need = state_bytes(c, max_tokens);
  if (need + (256ull << 20) > free_b)
    throw Error("a sequence of " + std::to_string(max_tokens) + " tokens needs " +
                std::to_string(need >> 20) + " MiB of KV/SSM cache but only " + std::to_string(free_b >> 20) +
                " MiB of GPU memory are free");
  State s;
  s.capacity = max_tokens;
  s.pos_dev = DeviceBuffer(sizeof(int));
  CUDA_CHECK(cudaMemsetAsync(s.pos_dev.ptr, 0, sizeof(int), stream_));
  const size_t L = static_cast<size_t>(c.num_layers);
  s.k.resize(L);
  s.v.resize(L);
  s.conv.resize(L);
  s.ssm.resize(L);
  for (size_t i = 0; i < L; ++i) {
    const auto k = c.layers[i];
    if (k == LayerKind::Attention || k == LayerKind::Decoder) {
      s.k[i] = DeviceBuffer(static_cast<size_t>(max_tokens) * c.num_kv_heads * c.head_dim * 2);
      s.v[i] = DeviceBuffer(s.k[i].bytes);
    }
    if (k == LayerKind::Mamba) {
      s.conv[i] = DeviceBuffer(static_cast<size_t>(c.mamba_conv_dim()) * (c.conv_kernel - 1) * 4);
      s.ssm[i] =
          DeviceBuffer(static_cast<size_t>(c.mamba_num_heads) * c.mamba_head_dim * c.ssm_state_size * 4);
      CUDA_CHECK(cudaMemsetAsync(s.conv[i].ptr, 0, s.conv[i].bytes, stream_));
      CUDA_CHECK(cudaMemsetAsync(s.ssm[i].ptr, 0, s.ssm[i].bytes, stream_));
    }
  }
  return s;
}

void CudaOps::reserve_arena(size_t bytes) {
  if (arena_bytes() < bytes) replace_arena(bytes);
}

void CudaOps::replace_arena(size_t bytes) {
  synchronize();  // kernels of the last forward may still read the old blocks
  arena_.clear();
  arena_.emplace_back(bytes);
  arena_block_ = arena_used_ = 0;
  ++arena_gen_;  // captured graphs that point into the old blocks must be re-captured
}

size_t CudaOps::arena_bytes() const {
  size_t total = 0;
  for (const auto& b : arena_) total += b.bytes;
  return total;
}

void CudaOps::begin_forward() {
  // Several arena blocks were needed last time: replace them by one block of the total size.
  if (arena_.size() > 1) replace_arena(arena_bytes());
  arena_block_ = 0;
  arena_used_ = 0;
}

CudaOps::Tensor CudaOps::alloc_residual(int64_t rows, int64_t cols) {
  Tensor t = alloc(rows, 2 * cols);  // FP32 takes the room of two BF16 columns
  t.cols = cols;
  t.f32 = true;
  return t;
}

CudaOps::Tensor CudaOps::alloc(int64_t rows, int64_t cols) {
  const size_t bytes = (static_cast<size_t>(rows * cols) * 2 + 255) / 256 * 256;
  if (arena_.empty() || arena_used_ + bytes > arena_[arena_block_].bytes) {
    // Next block, or a new one (only while a new shape is first seen; begin_forward merges them).
    if (!arena_.empty() && arena_block_ + 1 < arena_.size() && arena_[arena_block_ + 1].bytes >= bytes) {
      ++arena_block_;
    } else {
      arena_.emplace_back(std::max<size_t>(bytes, 32ull << 20));
      arena_block_ = arena_.size() - 1;
      if (arena_.size() > 1) ++arena_growths_;
      ++arena_gen_;  // captured graphs that point into the old blocks must be re-captured
    }
    arena_used_ = 0;
  }
  Tensor t{rows, cols,
           reinterpret_cast<bf16_raw*>(static_cast<uint8_t*>(arena_[arena_block_].ptr) + arena_used_)};
  arena_used_ += bytes;
  return t;
}

void CudaOps::embed(std::span<const int> tokens, const std::vector<float>&, int64_t first_id, Tensor& x) {
  OpTimer timer_(this, "embed");
  ensure_device(tokens_, tokens.size() * 4, "the token buffer");
  if (!ensure_pinned(pinned_tokens_, pinned_tokens_cap_, tokens.size(), "the pinned token buffer"))
    synchronize_if_not_capturing();
  std::copy(tokens.begin(), tokens.end(), pinned_tokens_);
  CUDA_CHECK(
      cudaMemcpyAsync(tokens_.ptr, pinned_tokens_, tokens.size() * 4, cudaMemcpyHostToDevice, stream_));
  if (!x.f32) throw Error("internal: embed writes the FP32 residual stream");
  launch_embed(tokens_.as<int>(), static_cast<int>(x.rows), embed_.as<bf16_raw>(), first_id, vocab_rows_,
               hidden_, x.fdata(), stream_);
}

int CudaOps::bf16_gemv_split_for(int64_t m, int64_t n, int64_t k, int64_t ldx, const void* x, const void* w) {
  return m <= bf16_gemv_rows_ && bf16_gemv_supported(m, k, ldx, x, w) ? bf16_gemv_split(n, k, ws_.sm_count())
                                                                      : 0;
}

void CudaOps::bf16_matmul(const bf16_raw* x, int64_t m, int64_t k, const bf16_raw* w, int64_t n,
                          bf16_raw* y) {
  if (const int split = bf16_gemv_split_for(m, n, k, k, x, w))
    bf16_gemv(x, m, k, w, n, k, y, n, split, stream_);
  else
    cublas_bf16_gemm(ws_.cublas_handle(), x, m, w, n, k, y, stream_);
}

bool CudaOps::fp8_w8a8_shape(const Fp8Weight& w, int64_t ldy) const {
  return fp8_w8a8_ && cc_ >= 89 && w.k % 16 == 0 && w.n % 8 == 0 && ldy == w.n &&
         reinterpret_cast<uintptr_t>(w.codes) % 16 == 0;
}

const float* CudaOps::fp8_quantize_act(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx) {
  ensure_device(fp8_act_, static_cast<size_t>(m * k), "the FP8 activation buffer");
  float* state = reinterpret_cast<float*>(zeroed_counters(fp8_act_state_, 3, "the FP8 activation scale"));
  fp8_quantize_tensor(x, m, k, ldx, fp8_act_.as<uint8_t>(), state, stream_);
  return state;
}

void CudaOps::fp8_w8a8_gemm(const Fp8Weight& w, int64_t m, const float* act_scale, bf16_raw* y) {
  if (!lt_) lt_ = std::make_unique<LtGemm>();
  lt_->run(LtGemm::Kind::Fp8E4M3, w.codes, w.scales, fp8_act_.ptr, act_scale, m, w.n, w.k, 1.0f, y, stream_);
}

void CudaOps::fp8_matmul(const bf16_raw* x, int64_t m, int64_t ldx, const Fp8Weight& w, bf16_raw* y,
                         int64_t ldy) {
  if (m <= fp8_gemv_rows_ && fp8_gemv_supported(m, w.k, ldx, x, w.codes)) {
    fp8_w8a16_gemv(x, m, ldx, w, y, ldy, fp8_gemv_split(m, w.n, w.k, ws_.sm_count()), stream_);
    return;
  }
  // cuBLASLt's FP8 GEMM on sm_89 (Ada) and sm_90 (Hopper) tensor cores, K and the leading dimensions in
  // 16-byte steps. A weight with one scale: the activations quantized with one scale too (two launches), the
  // product with scalar scales, which cuBLASLt runs 1.1-1.7x faster than with vector ones at decode sizes
  // (H100, docs/perf/fp8-h100.md). Per-row weight scales: the activations per token, the row-wise product.
  const bool w8a8 = fp8_w8a8_shape(w, ldy);
  if (w8a8 && !w.per_row && fp8_quantize_tensor_supported(x, w.k, ldx)) {
    const float* act_scale = fp8_quantize_act(x, m, w.k, ldx);
    fp8_w8a8_gemm(w, m, act_scale, y);
    return;
  }
  if (w8a8 && fp8_rowwise_) {
    if (!lt_) lt_ = std::make_unique<LtGemm>();
    ensure_device(fp8_act_, static_cast<size_t>(m * w.k), "the FP8 activation buffer");
    ensure_device(fp8_act_scale_, static_cast<size_t>(m) * sizeof(float), "the FP8 activation scales");
    try {
      fp8_quantize_rows(x, m, w.k, ldx, fp8_act_.as<uint8_t>(), fp8_act_scale_.as<float>(), stream_);
      lt_->run(LtGemm::Kind::Fp8RowWise, w.codes, w.row_scales, fp8_act_.ptr, fp8_act_scale_.ptr, m, w.n, w.k,
               1.0f, y, stream_);
      return;
    } catch (const Error& e) {
      // cuBLAS without outer-vector FP8 scaling for this GPU: W8A16 from here on, said once.
      if (std::string(e.what()).find("cuBLASLt has no") == std::string::npos) throw;
      fp8_rowwise_ = false;
      std::fprintf(stderr,
                   "fp4lab: %s; FP8 layers with per-row scales dequantize to BF16 for cuBLAS instead\n",
                   e.what());
    }
  }
  // W8A16 through cuBLAS: the codes as BF16 (exact), the scale as alpha or on the output columns.
  bf16_raw* wb = ws_.dequant_scratch(static_cast<size_t>(w.n * w.k));
  fp8_codes_to_bf16(w.codes, w.n * w.k, wb, stream_);
  auto hb = static_cast<cublasHandle_t>(ws_.cublas_handle());
  CUBLAS_CHECK(cublasSetStream(hb, stream_));
  const float alpha = w.per_row ? 1.0f : w.tensor_scale, zero = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.n), static_cast<int>(m),
                            static_cast<int>(w.k), &alpha, wb, CUDA_R_16BF, static_cast<int>(w.k), x,
                            CUDA_R_16BF, static_cast<int>(ldx), &zero, y, CUDA_R_16BF, static_cast<int>(ldy),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (w.per_row) scale_columns_bf16(y, m, w.n, ldy, w.scales, stream_);
}

void CudaOps::observe_input(const Tensor& x, const LinearWeight& w) {
  if (x.f32) throw Error("internal: calibration of a linear layer with an FP32 input");
  DeviceBuffer& a = calib_->amax[&w];
  if (!a.ptr) {
    a = DeviceBuffer(sizeof(unsigned));
    CUDA_CHECK(cudaMemsetAsync(a.ptr, 0, sizeof(unsigned), stream_));
  }
  bf16_absmax_accumulate(x.data, x.rows, x.cols, x.cols, a.as<unsigned>(), stream_);
  if (const auto h = calib_->hessian.find(&w); h != calib_->hessian.end())
    gptq_accumulate_hessian(ws_.cublas_handle(), x.data, x.rows, x.cols, x.cols, h->second.as<float>(),
                            stream_);
}

void CudaOps::replace_bf16_weight(const LinearWeight& w, const bf16_raw* values) {
  const size_t bytes = static_cast<size_t>(w.n * w.k) * sizeof(bf16_raw);
  bf16_raw* dst = nullptr;
  if (const auto it = linears_.find(&w); it != linears_.end()) {
    if (!it->second.nvfp4 && !it->second.fp8 && it->second.bf16.bytes == bytes)
      dst = it->second.bf16.as<bf16_raw>();
  } else {
    for (auto& [first, f] : fused_bf16_)
      for (size_t i = 0; i < f.members.size(); ++i)
        if (f.members[i] == &w) dst = f.w.as<bf16_raw>() + f.offsets[i] * f.k;
  }
  if (!dst) throw Error("internal: replace_bf16_weight on a layer that is not BF16 [n, k] on the GPU");
  CUDA_CHECK(cudaMemcpyAsync(dst, values, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaOps::linear(const Tensor& x, const LinearWeight& w, Tensor& y) {
  if (calib_) observe_input(x, w);
  auto it = linears_.find(&w);
  if (it == linears_.end()) throw Error("internal: linear layer was not uploaded");
  const DevLinear& d = it->second;
  OpTimer timer_(this, d.nvfp4 ? "linear.nvfp4" : d.fp8 ? "linear.fp8" : "linear.bf16");
  if (d.nvfp4)
    nvfp4_w4a16_gemm(x.data, x.rows, x.cols, d.fp4, y.data, y.cols, 1.0f, ws_, stream_);
  else if (d.fp8)
    fp8_matmul(x.data, x.rows, x.cols, d.f8.view(), y.data, y.cols);
  else
    bf16_matmul(x.data, x.rows, d.k, d.bf16.as<bf16_raw>(), d.n, y.data);
  if (d.bias.ptr) launch_bias(y.data, d.bias.as<float>(), y.rows, y.cols, stream_);
}

void CudaOps::linear_relu2(const Tensor& x, const LinearWeight& w, Tensor& y) {
  const auto it = linears_.find(&w);
  if (it != linears_.end() && it->second.nvfp4 && !it->second.bias.ptr && !x.f32) {
    OpTimer timer_(this, "linear.nvfp4");
    if (nvfp4_w4a16_gemm_relu2(x.data, x.rows, x.cols, it->second.fp4, y.data, y.cols, ws_, stream_)) return;
  }
  linear(x, w, y);
  relu2(y);
}

void CudaOps::linear_swiglu(const Tensor& x, const LinearWeight& gate, const LinearWeight& up, Tensor& out) {
  if (const auto f = swiglu_.find(&gate); f != swiglu_.end()) {
    if (x.f32) throw Error("internal: the SwiGLU projection takes a BF16 input");
    OpTimer timer_(this, "linear.nvfp4");
    nvfp4_w4a16_gemm_swiglu(x.data, x.rows, x.cols, f->second.w, f->second.gate_scale, f->second.up_scale,
                            out.data, out.cols, ws_, stream_);
    return;
  }
  Tensor u = alloc(x.rows, up.n);
  const LinearWeight* gu[] = {&gate, &up};
  Tensor* gu_out[] = {&out, &u};
  linear_group(x, gu, gu_out);
  silu_mul(out, u, out);
}

void CudaOps::linear_group(const Tensor& x, std::span<const LinearWeight* const> w,
                           std::span<Tensor* const> y) {
  if (const auto f = fused_bf16_.find(w[0]); f != fused_bf16_.end()) {
    if (!std::equal(w.begin(), w.end(), f->second.members.begin(), f->second.members.end()))
      throw Error("internal: a fused BF16 projection was called with other members");
    if (calib_)
      for (const LinearWeight* m : w) observe_input(x, *m);
    if (x.rows > 32) {
      // Prompts: one cuBLAS call per member on its rows of the joined weight, straight into its output. At
      // this M each call is a full-size GEMM, and the column copies below cost more than the extra launches
      // (Llama-8B, 4096 rows: 37 ms of copies per forward). Decode batches keep the joined call, which
      // measured faster there (kernel-notes #48).
      OpTimer timer_(this, "linear.bf16");
      for (size_t i = 0; i < w.size(); ++i)
        cublas_bf16_gemm(ws_.cublas_handle(), x.data, x.rows,
                         f->second.w.as<bf16_raw>() + f->second.offsets[i] * f->second.k, y[i]->cols,
                         f->second.k, y[i]->data, stream_);
      return;
    }
    Tensor all = alloc(x.rows, f->second.n_total);
    {
      OpTimer timer_(this, "linear.bf16");
      bf16_matmul(x.data, x.rows, f->second.k, f->second.w.as<bf16_raw>(), f->second.n_total, all.data);
    }
    // One row: the members' outputs become views of it; more rows: copied out column block by block.
    for (size_t i = 0; i < w.size(); ++i) columns(all, f->second.offsets[i], *y[i]);
    return;
  }
  if (const auto f = fused_fp8_.find(w[0]); f != fused_fp8_.end()) {
    const FusedFp8& g = f->second;
    if (!std::equal(w.begin(), w.end(), g.members.begin(), g.members.end()))
      throw Error("internal: a fused FP8 projection was called with other members");
    OpTimer timer_(this, "linear.fp8");
    // Prompts (as for BF16 above), and members of different scales past the GEMV's rows (a product takes one
    // scale per operand): each member's rows of the joined weight straight into its output.
    if (x.rows > 32 || (g.w.per_row && x.rows > fp8_gemv_rows_)) {
      // The activations quantized once for all members where every member takes W8A8 with one scale.
      bool shared = fp8_quantize_tensor_supported(x.data, x.cols, x.cols);
      for (size_t i = 0; i < w.size(); ++i)
        shared = shared && !g.member(i).per_row && fp8_w8a8_shape(g.member(i), y[i]->cols);
      if (shared) {
        const float* act_scale = fp8_quantize_act(x.data, x.rows, x.cols, x.cols);
        for (size_t i = 0; i < w.size(); ++i) fp8_w8a8_gemm(g.member(i), x.rows, act_scale, y[i]->data);
        return;
      }
      for (size_t i = 0; i < w.size(); ++i)
        fp8_matmul(x.data, x.rows, x.cols, g.member(i), y[i]->data, y[i]->cols);
      return;
    }
    Tensor all = alloc(x.rows, g.w.n);
    fp8_matmul(x.data, x.rows, x.cols, g.w.view(), all.data, all.cols);
    for (size_t i = 0; i < w.size(); ++i) columns(all, g.offsets[i], *y[i]);
    return;
  }
  const Nvfp4DeviceWeight* dw[3];
  bf16_raw* out[3];
  int64_t ld[3];
  bool grouped = w.size() >= 2 && w.size() <= 3 && x.rows <= 32 && !x.f32;
  for (size_t i = 0; grouped && i < w.size(); ++i) {
    const auto it = linears_.find(w[i]);
    if (it == linears_.end()) throw Error("internal: linear layer was not uploaded");
    grouped = it->second.nvfp4 && !it->second.bias.ptr;
    dw[i] = &it->second.fp4;
    out[i] = y[i]->data;
    ld[i] = y[i]->cols;
  }
  if (grouped) {
    OpTimer timer_(this, "linear.nvfp4");
    if (nvfp4_w4a16_gemm_group(x.data, x.rows, x.cols, std::span(dw, w.size()), std::span(out, w.size()),
                               std::span<const int64_t>(ld, w.size()), ws_, stream_))
      return;
  }
  for (size_t i = 0; i < w.size(); ++i) linear(x, *w[i], *y[i]);
}

void CudaOps::launch_rmsnorm(const Tensor& x, const bf16_raw* add, const std::vector<float>& w, float eps,
                             Tensor& y) {
  OpTimer timer_(this, "rmsnorm");
  RmsNormArgs a;
  a.x = x.data;
  a.x_f32 = x.f32;
  a.add = add;
  a.w = dev_f32(w);
  a.rows = x.rows;
  a.width = x.cols;
  a.eps = eps;
  a.y = y.data;
  fp4lab::launch_rmsnorm(a, stream_);
}

void CudaOps::rmsnorm(const Tensor& x, const std::vector<float>& w, float eps, Tensor& y) {
  launch_rmsnorm(x, nullptr, w, eps, y);
}

void CudaOps::add_rmsnorm(Tensor& x, const Tensor& o, const std::vector<float>& w, float eps, Tensor& y) {
  if (!x.f32 || o.f32 || o.rows != x.rows || o.cols != x.cols)
    throw Error("internal: add_rmsnorm takes the FP32 residual stream and a BF16 layer output of its shape");
  launch_rmsnorm(x, o.data, w, eps, y);
}

void CudaOps::rmsnorm_heads(Tensor& x, int heads, const std::vector<float>& w, float eps) {
  OpTimer timer_(this, "rmsnorm");
  launch_rmsnorm_heads(x.data, x.rows, heads, x.cols / heads, dev_f32(w), eps, stream_);
}

void CudaOps::synchronize_if_not_capturing() {
  // The pinned token buffer is rewritten for this forward; an earlier copy from it must have finished.
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream_, &st));
  if (st == cudaStreamCaptureStatusNone) synchronize();
}

void CudaOps::set_rope(int hd, const RopeConfig& r) {
  if (rope_dim_ != hd || rope_cfg_.theta != r.theta || rope_cfg_.type != r.type ||
      rope_cfg_.factor != r.factor) {
    const auto f = cpu::rope_inv_freq(r, hd);
    inv_freq_ = DeviceBuffer(f.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(inv_freq_.ptr, f.data(), f.size() * 4, cudaMemcpyHostToDevice, stream_));
    rope_cfg_ = r;
    rope_dim_ = hd;
  }
}

void CudaOps::rope_kv_append(Tensor& q, const Tensor& k, const Tensor& v, int nh, int nkv, int hd,
                             const RopeConfig* rope, const KvCaches& kv) {
  if (rope) set_rope(hd, *rope);
  RopeKvAppendArgs a;
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  a.rows = static_cast<int>(q.rows);
  a.nh = nh, a.nkv = nkv, a.hd = hd;
  a.inv_freq = rope ? inv_freq_.as<float>() : nullptr;
  a.kv = kv;
  launch_rope_kv_append(a, stream_);
}

void CudaOps::attention(Tensor& q, const Tensor& k, const Tensor& v, State& s, size_t layer, int nh, int nkv,
                        int hd, const RopeConfig* rope, Tensor& out) {
  OpTimer timer_(this, "attention");
  const KvCaches kv =
      KvCaches::one(s.k[layer].as<bf16_raw>(), s.v[layer].as<bf16_raw>(), s.pos_dev.as<int>());
  // Decode: RoPE and the cache append inside the GQA attention kernel where it runs.
  if (q.rows == 1 && fused_rope_ && gqa_attention_supported(nh, nkv, hd)) {
    const GqaAppend app = append_args(k, v, hd, rope);
    launch_attention(q, kv, nh, nkv, hd, s.capacity, out, &app);
    return;
  }
  rope_kv_append(q, k, v, nh, nkv, hd, rope, kv);
  if (q.rows > 1 && flash_attention_supported(hd)) {  // prefill on tensor cores
    flash_attention_prefill(q.data, kv.k, kv.v, kv.pos, static_cast<int>(q.rows), nh, nkv, hd, out.data,
                            stream_);
    return;
  }
  launch_attention(q, kv, nh, nkv, hd, s.capacity, out);
}

GqaAppend CudaOps::append_args(const Tensor& k, const Tensor& v, int hd, const RopeConfig* rope) {
  if (rope) set_rope(hd, *rope);
  return {k.data, v.data, rope ? inv_freq_.as<float>() : nullptr};
}

bool CudaOps::attention_segments(Tensor& q, const Tensor& k, const Tensor& v, std::span<State* const> states,
                                 std::span<const int> rows, size_t layer, int nh, int nkv, int hd,
                                 const RopeConfig* rope, Tensor& out) {
  if (!flash_attention_supported(hd)) return false;  // the runner loops over the prompts
  OpTimer timer_(this, "attention");
  std::vector<FlashSeq> seqs;
  int64_t row0 = 0;
  for (size_t i = 0; i < states.size(); ++i) {
    State& s = *states[i];
    Tensor qs = this->rows(q, row0, rows[i]);
    rope_kv_append(qs, this->rows(k, row0, rows[i]), this->rows(v, row0, rows[i]), nh, nkv, hd, rope,
                   KvCaches::one(s.k[layer].as<bf16_raw>(), s.v[layer].as<bf16_raw>(), s.pos_dev.as<int>()));
    seqs.push_back(
        {row0, s.k[layer].as<bf16_raw>(), s.v[layer].as<bf16_raw>(), s.pos_dev.as<int>(), rows[i]});
    row0 += rows[i];
  }
  flash_attention_prefill_batch(q.data, seqs, nh, nkv, hd, out.data, stream_);
  return true;
}

int CudaOps::attention_splits(int64_t blocks_per_split, int max_len) {
  if (attn_splits_ > 0) return std::min(attn_splits_, kAttnMaxSplits);
  // About two blocks per SM (rounded down: at batch 32, 256 blocks of one split decode 2% faster than two
  // splits, kernel-notes #43), and no split shorter than one key group of a block. Short contexts gain too:
  // Llama-3.1-8B NVFP4 batch 1 at a 384-token capacity decodes at 185 / 215 / 236 / 246 tok/s with 1 / 2 / 4
  // / 8 splits (H200, 4-warp kernel); the old 512-key minimum kept it at 1.
  const int64_t want = std::max<int64_t>(1, 2 * ws_.sm_count() / blocks_per_split);
  const int64_t by_len = max_len / (kAttnWarps * kAttnUnroll);
  return static_cast<int>(std::clamp<int64_t>(std::min(want, by_len), 1, kAttnMaxSplits));
}

void CudaOps::launch_attention(const Tensor& q, const KvCaches& kv, int nh, int nkv, int hd, int max_len,
                               Tensor& out, const GqaAppend* append) {
  if (hd > kAttnMaxDimsPerLane * 32)
    throw Error("head_dim " + std::to_string(hd) + " > 256 is not supported by the CUDA attention");
  const int64_t qh = q.rows * nh;
  // Decode (one query row per sequence) takes the GQA kernel where it applies; its blocks are per KV head.
  const bool gqa = (q.rows == 1 || kv.batched()) && gqa_attention_supported(nh, nkv, hd);
  if (append && !gqa)
    throw Error("internal: RoPE and the cache append run inside the GQA decode kernel only");
  const int splits = attention_splits(gqa ? q.rows * nkv : qh, max_len);
  AttentionDecodeArgs a;
  a.q = q.data;
  a.nh = nh, a.nkv = nkv, a.hd = hd;
  a.kv = kv;
  a.out = out.data;
  a.append = append;
  if (splits > 1) {
    const size_t bytes = static_cast<size_t>(qh) * splits * (hd + 2) * sizeof(float);
    ensure_device(attn_part_, bytes, "the split-attention workspace");  // sized by the eager first step
    a.part = attn_part_.as<float>();
  }
  if (gqa) {
    if (splits > 1)  // the GQA kernel merges its splits itself: a zeroed counter per (row, KV head)
      a.done = zeroed_counters(attn_done_, static_cast<size_t>(q.rows * nkv), "the split-attention counters");
    launch_attention_gqa(dim3(static_cast<unsigned>(q.rows * nkv), static_cast<unsigned>(splits)), a,
                         stream_);
    return;
  }
  launch_attention_decode(dim3(static_cast<unsigned>(qh), static_cast<unsigned>(splits)), a, stream_);
  if (splits > 1) launch_attention_combine(static_cast<int>(qh), splits, hd, a.part, out.data, stream_);
}

void CudaOps::add(Tensor& x, const Tensor& y) {
  OpTimer timer_(this, "elementwise");
  launch_add(x.data, x.f32, y.data, x.rows * x.cols, stream_);
}

void CudaOps::silu_mul(const Tensor& g, const Tensor& u, Tensor& o) {
  OpTimer timer_(this, "elementwise");
  launch_silu_mul(g.data, u.data, o.data, g.rows * g.cols, stream_);
}

void CudaOps::relu2(Tensor& x) {
  OpTimer timer_(this, "elementwise");
  launch_relu2(x.data, x.rows * x.cols, stream_);
}

void CudaOps::columns(const Tensor& src, int64_t col0, Tensor& dst) {
  if (src.rows == 1 && !src.f32) {
    // One row: the column range is contiguous, so dst becomes a view instead of a copy (decode steps).
    dst.data = src.data + col0;
    return;
  }
  OpTimer timer_(this, "split");
  if (src.f32 || dst.f32 || dst.rows != src.rows || col0 < 0 || col0 + dst.cols > src.cols)
    throw Error("internal: columns copies a BF16 column range of a tensor into one of its rows");
  launch_columns(src.data, src.rows, src.cols, col0, dst.data, dst.cols, stream_);
}

void CudaOps::all_reduce(Tensor& t) {
  if (!tp_comm_) return;
#if FP4LAB_HAVE_NCCL
  OpTimer timer_(this, "all_reduce");
  const ncclResult_t rc =
      ncclAllReduce(t.data, t.data, static_cast<size_t>(t.rows * t.cols), t.f32 ? ncclFloat32 : ncclBfloat16,
                    ncclSum, static_cast<ncclComm_t>(tp_comm_), stream_);
  if (rc != ncclSuccess) throw Error(std::string("NCCL all-reduce failed: ") + ncclGetErrorString(rc));
#else
  throw Error("internal: a tensor-parallel communicator without NCCL");
#endif
}

void CudaOps::begin_batch(std::span<State* const> states) {
  // One table per step: for every layer the B sequences' conv, SSM, K and V cache pointers, then their
  // positions; uploaded once, read by every batched kernel of the step.
  const size_t B = states.size(), L = states.empty() ? 0 : states[0]->k.size();
  const size_t n = kBatchTables * L * B + B;
  if (batch_tab_host_.size() < n) {
    batch_tab_host_.resize(n);
    batch_tab_ = DeviceBuffer(n * sizeof(void*));
  }
  const auto at = [&](size_t l, BatchTable t, size_t b) -> void*& {
    return batch_tab_host_[(kBatchTables * l + static_cast<size_t>(t)) * B + b];
  };
  for (size_t l = 0; l < L; ++l)
    for (size_t b = 0; b < B; ++b) {
      State& st = *states[b];
      at(l, BatchTable::Conv, b) = st.conv[l].ptr;
      at(l, BatchTable::Ssm, b) = st.ssm[l].ptr;
      at(l, BatchTable::K, b) = st.k[l].ptr;
      at(l, BatchTable::V, b) = st.v[l].ptr;
    }
  for (size_t b = 0; b < B; ++b) batch_tab_host_[kBatchTables * L * B + b] = states[b]->pos_dev.ptr;
  // Synchronous on purpose: the host table is rewritten by the next step, and the step ends in a sync anyway.
  CUDA_CHECK(cudaMemcpyAsync(batch_tab_.ptr, batch_tab_host_.data(), n * sizeof(void*),
                             cudaMemcpyHostToDevice, stream_));
  batch_size_ = B;
  batch_layers_ = L;
  batch_max_capacity_ = 0;
  for (const State* st : states) batch_max_capacity_ = std::max(batch_max_capacity_, st->capacity);
}

void** CudaOps::batch_table(size_t layer, BatchTable kind) const {
  return batch_tab_.as<void*>() + (kBatchTables * layer + static_cast<size_t>(kind)) * batch_size_;
}

int* const* CudaOps::batch_positions() const {
  return reinterpret_cast<int* const*>(batch_tab_.as<void*>() + kBatchTables * batch_layers_ * batch_size_);
}

void CudaOps::attention_batch(Tensor& q, const Tensor& k, const Tensor& v, size_t layer, int nh, int nkv,
                              int hd, const RopeConfig* rope, Tensor& out) {
  OpTimer timer_(this, "attention");
  const KvCaches kv = KvCaches::tables(reinterpret_cast<bf16_raw* const*>(batch_table(layer, BatchTable::K)),
                                       reinterpret_cast<bf16_raw* const*>(batch_table(layer, BatchTable::V)),
                                       batch_positions());
  if (fused_rope_ && gqa_attention_supported(nh, nkv, hd)) {
    const GqaAppend app = append_args(k, v, hd, rope);
    launch_attention(q, kv, nh, nkv, hd, batch_max_capacity_, out, &app);
    return;
  }
  rope_kv_append(q, k, v, nh, nkv, hd, rope, kv);
  launch_attention(q, kv, nh, nkv, hd, batch_max_capacity_, out);
}

void CudaOps::advance_batch(std::span<State* const> states) {
  for (State* st : states) ++st->pos;
  launch_pos_add_batch(batch_positions(), static_cast<int>(states.size()), stream_);
}

}  // namespace fp4lab
