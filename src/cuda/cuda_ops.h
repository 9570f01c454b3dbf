// The CUDA backend for Runner: BF16 activations, NVFP4 (W4A16 kernels) or BF16 (cuBLAS) linear layers, FP32
// SSM state, BF16 KV cache. Device memory is planned up front: weights + per-sequence caches are checked
// against the free memory before anything is allocated.
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cpu/reference.h"
#include "cuda/attention_decode.h"
#include "cuda/fp8_linear.h"
#include "cuda/nvfp4_gemm.h"
#include "cuda/weight_upload.h"
#include "cuda/run_options.h"
#include "model/op.h"
#include "model/weights.h"

namespace fp4lab {

class LtGemm;

class CudaOps {
 public:
  struct Tensor {
    int64_t rows = 0, cols = 0;
    bf16_raw* data = nullptr;  // [rows, cols], owned by the forward arena: BF16, or FP32 when f32
    bool f32 = false;          // the residual stream
    float* fdata() const { return reinterpret_cast<float*>(data); }
  };
  // Owns an instantiated CUDA graph (the captured single-token decode step of one sequence).
  struct GraphExec {
    cudaGraphExec_t exec = nullptr;
    uint64_t arena_gen = 0;
    StepOut kind = StepOut::Logits;  // what the step ends with
    GraphExec() = default;
    GraphExec(GraphExec&& o) noexcept : exec(o.exec), arena_gen(o.arena_gen), kind(o.kind) {
      o.exec = nullptr;
    }
    GraphExec& operator=(GraphExec&& o) noexcept {
      std::swap(exec, o.exec);
      std::swap(arena_gen, o.arena_gen);
      std::swap(kind, o.kind);
      return *this;
    }
    ~GraphExec() {
      if (exec) cudaGraphExecDestroy(exec);
    }
  };
  struct State {
    int pos = 0, capacity = 0;
    DeviceBuffer pos_dev;  // int: the position on the device, so a captured step reads it at replay
    GraphExec graph;
    std::optional<StepOut> warmed;   // the kind of step last run eagerly to size the buffers
    std::vector<DeviceBuffer> k, v;  // per attention layer: BF16 [capacity, kv_heads * head_dim]
    std::vector<DeviceBuffer> conv;  // per Mamba layer: FP32 [conv_dim, kernel - 1]
    std::vector<DeviceBuffer> ssm;   // per Mamba layer: FP32 [heads, head_dim, state]
  };

  // graphs: capture the single-token decode step of each sequence in a CUDA graph (replayed every token).
  explicit CudaOps(int device = 0, bool graphs = true);
  ~CudaOps();
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  std::string name() const { return "cuda"; }
  bool supports(Op) const { return true; }
  void prepare(const ModelWeights& w);
  State new_state(const ModelConfig& c, int max_tokens);
  int state_pos(const State& s) const { return s.pos; }
  int state_capacity(const State& s) const { return s.capacity; }
  void advance(State& s, int t);
  bool graphs_enabled() const { return graphs_; }
  // The decode step of one sequence through its captured graph: the logits, or (greedy) only the argmax id,
  // so that a step copies 4 bytes to the host instead of the whole vocabulary's logits.
  template <class F>
  std::vector<float> run_decode_graph(State& s, int token, F&& body) {
    decode_graph_step(s, token, StepOut::Logits, body);
    return fetch_logits();
  }
  template <class F>
  std::vector<int> run_decode_graph_argmax(State& s, int token, F&& body) {
    decode_graph_step(s, token, StepOut::Ids, body);
    return fetch_argmax();
  }
  template <class F>
  std::vector<std::vector<cpu::TopLogit>> run_decode_graph_top(State& s, int token, F&& body) {
    decode_graph_step(s, token, StepOut::Top, body);
    return fetch_top_logits();
  }
  void logits_async(const Tensor& h, const LinearWeight& head);
  std::vector<float> fetch_logits();
  // Greedy steps: the argmax of each row computed on the device, only the ids copied back; after set_pick
  // with a temperature, a sample of each row's softmax instead (Gumbel-max, no top-k / top-p).
  void argmax_async(const Tensor& h, const LinearWeight& head);
  // What the next argmax_async picks: temperature 0 the argmax, > 0 a sample per row with seeds[row]. Written
  // to pinned memory that the step copies to the device (inside a captured graph too), so each replay takes
  // the values set before it; call between steps.
  void set_pick(float temperature, std::span<const uint64_t> seeds);
  std::vector<int> fetch_argmax();
  // Sampling with top-k: each row's cpu::kTopLogits largest logits, found on the device (per-part candidates,
  // about 16 KB per row to the host, merged there) instead of copying the logits.
  void top_logits_async(const Tensor& h, const LinearWeight& head);
  std::vector<std::vector<cpu::TopLogit>> fetch_top_logits();
  void begin_forward();
  void synchronize();
  cudaStream_t stream() const { return stream_; }
  size_t weight_bytes() const { return weight_bytes_; }  // on the GPU
  // Layers alone in their fusion group and larger than this are quantized at load in row chunks of about this
  // size (kQuantizeChunkBytes; tests lower it to run the chunked path on small models).
  void set_quantize_chunk_bytes(size_t b) { quantize_chunk_bytes_ = b; }
  // The embedding table in pinned host memory (set before the model is prepared).
  void set_embedding_on_host(bool on) { embedding_on_host_ = on; }
  bool embedding_on_host() const { return embedding_on_host_; }
  size_t state_bytes(const ModelConfig& c, int max_tokens) const;

  Tensor alloc(int64_t rows, int64_t cols);
  // A layer's scratch scope: tensors allocated after the mark are dead once the layer's kernels are enqueued
  // (one stream, run in order), so the next layer reuses their room and the arena holds one layer's scratch
  // instead of every layer's. Addresses repeat from step to step, as captured graphs need.
  struct ArenaMark {
    size_t block, used;
  };
  ArenaMark arena_mark() const { return {arena_block_, arena_used_}; }
  void arena_rewind(ArenaMark m) {
    arena_block_ = m.block;
    arena_used_ = m.used;
  }
  // Sizes the arena for a forward that needs `bytes` (the memory plan's figure), so that it is one block
  // from the first step; a forward needing more still grows it.
  void reserve_arena(size_t bytes);
  // Bytes the arena holds, and how many times it had to grow past its reservation.
  size_t arena_bytes() const;
  int arena_growths() const { return arena_growths_; }
  Tensor alloc_residual(int64_t rows, int64_t cols);
  Tensor rows(const Tensor& x, int64_t from, int64_t n) const {
    return {n, x.cols,
            x.f32 ? reinterpret_cast<bf16_raw*>(x.fdata() + from * x.cols) : x.data + from * x.cols, x.f32};
  }
  // rows() is a view, so writing back rows computed through it is a no-op; other sources are copied.
  void write_rows(Tensor& dst, int64_t from, const Tensor& src);
  // Per-op-class GPU time (CUDA events around every op; graphs are off while profiling).
  void set_profile(bool on) {
    profile_ = on;
    if (on) graphs_ = false;
  }
  std::map<std::string, double> profile_ms() const { return profile_ms_; }
  // Ids outside [first_id, first_id + the table's rows) get zeros (vocab-parallel shards).
  void embed(std::span<const int> tokens, const std::vector<float>& table, int64_t first_id, Tensor& x);
  void linear(const Tensor& x, const LinearWeight& w, Tensor& y);
  // y = relu(x . W^T)^2: fused into the NVFP4 decode GEMV's epilogue where it runs, else linear + relu2.
  void linear_relu2(const Tensor& x, const LinearWeight& w, Tensor& y);
  // Several layers on the same input (q | k | v, gate | up): one NVFP4 decode launch for all of them when
  // they qualify (nvfp4_w4a16_gemm_group), else one by one.
  void linear_group(const Tensor& x, std::span<const LinearWeight* const> w, std::span<Tensor* const> y);
  // out = silu(x . gate^T) * (x . up^T): one launch with the activation in the decode GEMV's epilogue where
  // gate and up were joined at load (NVFP4), else the two projections and silu_mul.
  void linear_swiglu(const Tensor& x, const LinearWeight& gate, const LinearWeight& up, Tensor& out);
  void rmsnorm(const Tensor& x, const std::vector<float>& w, float eps, Tensor& y);
  // x += o (the residual add), then y = rmsnorm(x): one kernel.
  void add_rmsnorm(Tensor& x, const Tensor& o, const std::vector<float>& w, float eps, Tensor& y);
  void rmsnorm_heads(Tensor& x, int heads, const std::vector<float>& w, float eps);
  // RoPE on q and k when rope is set (q rotated in place), k and v appended to the cache, then attention of
  // the new rows over the cache.
  void attention(Tensor& q, const Tensor& k, const Tensor& v, State& s, size_t layer, int nh, int nkv, int hd,
                 const RopeConfig* rope, Tensor& out);
  void add(Tensor& x, const Tensor& y);
  void silu_mul(const Tensor& g, const Tensor& u, Tensor& o);
  void relu2(Tensor& x);
  void columns(const Tensor& src, int64_t col0, Tensor& dst);
  void softplus_dt(const Tensor& proj, int64_t col0, const std::vector<float>& bias, float lo, float hi,
                   Tensor& dt);
  void causal_conv1d_silu(Tensor& xbc, State& s, size_t layer, int kernel, const std::vector<float>& w,
                          const std::vector<float>& b);
  void ssm_scan(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                const std::vector<float>& a_log, const std::vector<float>& d, State& s, size_t layer,
                cpu::SsmShape shape, int chunk, Tensor& y);
  // Batched prefill: attention of several prompts whose rows (rows[i] for states[i]) follow each other in q,
  // k, v and out: RoPE and the cache append per prompt, then one tensor-core attention launch for all. False
  // (nothing done) for a head_dim the tensor-core kernel does not take.
  bool attention_segments(Tensor& q, const Tensor& k, const Tensor& v, std::span<State* const> states,
                          std::span<const int> rows, size_t layer, int nh, int nkv, int hd,
                          const RopeConfig* rope, Tensor& out);
  // Batched prefill: the conv1d + SiLU of several prompts' rows of xbc (rows[i] for states[i]) in one launch
  // (xbc then points at the output, as causal_conv1d_silu leaves it).
  void conv1d_silu_segments(Tensor& xbc, std::span<State* const> states, std::span<const int> rows,
                            size_t layer, int kernel, const std::vector<float>& w,
                            const std::vector<float>& b);
  // Batched prefill: the scan of several prompts whose rows (rows[i] for states[i]) follow each other in x,
  // b, c, dt and y, in one chunked-scan launch group per ~2048 tokens instead of launches per prompt. False
  // (nothing done) for shapes the chunked scan does not take.
  bool ssm_scan_segments(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                         const std::vector<float>& a_log, const std::vector<float>& d,
                         std::span<State* const> states, std::span<const int> rows, size_t layer,
                         cpu::SsmShape shape, int chunk, Tensor& y);
  // A decode step (one new row per sequence) of the Mamba mixer between in_proj and out_proj in two launches
  // instead of four (cuda/mamba_decode.h): one is the sequence of a one-row step, null for the batch of
  // begin_batch. False (nothing done) for shapes it does not take, or with set_fused_mamba(false).
  bool mamba_decode_step(const Tensor& proj, State* one, size_t layer, const LayerWeights& L,
                         const ModelConfig& c, Tensor& y);
  void set_fused_mamba(bool on) { fused_mamba_ = on; }
  // Decode attention does RoPE and the KV-cache append itself (GQA kernel) instead of a kernel before it.
  void set_fused_rope(bool on) { fused_rope_ = on; }
  // BF16 linear layers with at most this many rows run bf16_gemv (cuda/bf16_gemv.h) instead of cuBLAS.
  void set_bf16_gemv_rows(int rows) { bf16_gemv_rows_ = rows; }
  // The NVFP4 GEMM heuristic may pick the wgmma kernels (on an sm_90a build on Hopper; off by default, see
  // GemmWorkspace::wgmma).
  void set_wgmma(bool on) { ws_.set_wgmma(on); }
  // FP8 layers: up to this many rows run the W8A16 GEMV; more rows run W8A8 on FP8 tensor cores (sm_89+,
  // per-tensor scales) when w8a8 is on, else dequantize to BF16 for cuBLAS (fp8_linear.h).
  void set_fp8_gemv_rows(int rows) { fp8_gemv_rows_ = rows; }
  void set_fp8_w8a8(bool on) { fp8_w8a8_ = on; }
  // GPTQ's calibration (engine/calibrate.h): while set, the input of every BF16 linear layer raises the
  // layer's max |x| (amax: unsigned [1] each, a non-negative float's bits, made on first use) and, for the
  // layers with a `hessian` buffer (FP32 [k, k], zeroed by the caller), adds X^T X to it.
  struct Calibration {
    std::map<const LinearWeight*, DeviceBuffer> amax;
    std::map<const LinearWeight*, DeviceBuffer> hessian;
  };
  void set_calibration(Calibration* c) { calib_ = c; }
  // A BF16 layer's weights replaced by values on the device (BF16 [n, k]), alone or inside its joined
  // q|k|v or gate|up weight: GPTQ's quantized layers, which the blocks calibrated after them compute with.
  void replace_bf16_weight(const LinearWeight& w, const bf16_raw* values);
  // z: columns [z_col, z_col + y.cols) of z_src (the in_proj output, read in place).
  void gated_rmsnorm(Tensor& y, const Tensor& z_src, int64_t z_col, const std::vector<float>& w, int groups,
                     float eps);

  // Tensor parallelism: the communicator of this rank (an ncclComm_t); all_reduce sums a row-parallel layer's
  // partial outputs across ranks in place (a no-op without one).
  void set_tensor_parallel(void* comm, int rank, int tp) {
    tp_comm_ = comm;
    tp_rank_ = rank;
    tp_ = tp;
  }
  void all_reduce(Tensor& t);
  int tp() const { return tp_; }

  // Batched decode (one token for each of several sequences, row r = sequence r): begin_batch uploads the
  // sequences' cache pointers and positions once per step; the ops below then run every sequence in one
  // launch instead of one per sequence.
  void begin_batch(std::span<State* const> states);
  void attention_batch(Tensor& q, const Tensor& k, const Tensor& v, size_t layer, int nh, int nkv, int hd,
                       const RopeConfig* rope, Tensor& out);
  // Splits of the key range per (query, head) in decode attention (flash-decoding): 0 picks from the cache
  // capacity and the GPU size (attention_splits()), n >= 1 forces n. Fixed per captured graph, since it
  // depends on the capacity, not on the position.
  void set_attention_splits(int n) { attn_splits_ = n; }
  int attention_splits(int64_t blocks_per_split, int max_len);
  // xbc <- conv + SiLU of columns [col0, col0 + xbc.cols) of src (the in_proj output, read in place).
  void conv1d_silu_batch(const Tensor& src, int64_t col0, size_t layer, int kernel,
                         const std::vector<float>& w, const std::vector<float>& b, Tensor& xbc);
  // xbc: the conv output, columns x | B | C.
  void ssm_step_batch(const Tensor& xbc, const Tensor& dt, const std::vector<float>& a_log,
                      const std::vector<float>& d, size_t layer, cpu::SsmShape shape, Tensor& y);
  void advance_batch(std::span<State* const> states);

 private:
  void set_rope(int head_dim, const RopeConfig& r);
  void observe_input(const Tensor& x, const LinearWeight& w);  // set_calibration's accumulation
  Calibration* calib_ = nullptr;
  // One launch: RoPE on q (in place) and k, k and v written to the caches (one sequence or the batch tables).
  void rope_kv_append(Tensor& q, const Tensor& k, const Tensor& v, int nh, int nkv, int hd,
                      const RopeConfig* rope, const KvCaches& kv);
  // One row per block; with `add` (x the FP32 residual stream), x += add first and is written back.
  void launch_rmsnorm(const Tensor& x, const bf16_raw* add, const std::vector<float>& w, float eps,
                      Tensor& y);
  size_t logits_on_device(const Tensor& h, const LinearWeight& head);  // FP32 [rows, vocab] in logits_dev_
  DeviceBuffer argmax_dev_;   // ids and per-part maxima of argmax_async
  DeviceBuffer argmax_done_;  // int per row: argmax_async's split counters, zero between launches
  // The per-step tables of a batched decode (begin_batch): for every layer one table per kind, each holding
  // the B sequences' buffers, then one table of their position counters.
  enum class BatchTable : size_t { Conv, Ssm, K, V };
  static constexpr size_t kBatchTables = 4;
  void** batch_table(size_t layer, BatchTable kind) const;
  int* const* batch_positions() const;
  void* tp_comm_ = nullptr;
  int tp_rank_ = 0, tp_ = 1;
  std::vector<void*> batch_tab_host_;
  DeviceBuffer batch_tab_;
  size_t batch_size_ = 0, batch_layers_ = 0;
  int batch_max_capacity_ = 0;
  int attn_splits_ = 0;
  bool fused_mamba_ = true;
  // The K split the BF16 GEMV runs this product with, or 0 where cuBLAS does (more than bf16_gemv_rows_ rows,
  // or a shape the GEMV does not take).
  int bf16_gemv_split_for(int64_t m, int64_t n, int64_t k, int64_t ldx, const void* x, const void* w);
  // Y[m, n] = X[m, k] . W[n, k]^T in BF16: the GEMV up to bf16_gemv_rows_ rows, cuBLAS otherwise.
  void bf16_matmul(const bf16_raw* x, int64_t m, int64_t k, const bf16_raw* w, int64_t n, bf16_raw* y);
  bool fused_rope_ = true;
  int bf16_gemv_rows_ = kDefaultBf16GemvRows;
  DeviceBuffer attn_part_;
  DeviceBuffer attn_done_;  // int per (row, KV head): finished splits of the GQA decode attention
  DeviceBuffer ssd_ws_;     // chunked-scan scratch (prefill only)  // split attention partials: FP32
                            // [query_heads, splits, head_dim + 2]
  // Decode attention over one sequence's caches or the batch's tables, the kernel form and its key splits
  // chosen here; max_len bounds the visible keys. append: RoPE and the cache append of decode inside the GQA
  // kernel (rope_kv_append not run before).
  void launch_attention(const Tensor& q, const KvCaches& kv, int nh, int nkv, int hd, int max_len,
                        Tensor& out, const GqaAppend* append = nullptr);
  GqaAppend append_args(const Tensor& k, const Tensor& v, int hd, const RopeConfig* rope);
  struct DevLinear {
    bool nvfp4 = false;
    Nvfp4DeviceWeight fp4;
    bool fp8 = false;
    Fp8DeviceWeight f8;
    DeviceBuffer bf16;  // [n, k]
    DeviceBuffer bias;  // FP32 [n] or empty
    int64_t n = 0, k = 0;
  };
  const float* dev_f32(const std::vector<float>& host);  // uploaded small tensors, keyed by host pointer
  struct PackedNvfp4 {
    DeviceBuffer packed, scales;  // ModelOpt layout: U8 [n, k/2], E4M3 [n, k/16]
    float tensor_scale = 0.0f;
  };
  // Where prepare takes values from: generated from the seed (presets without host tensors), the mapped
  // checkpoint through `up` (streamed loads), or the host's float32 tensors.
  struct WeightSource {
    bool synthetic = false;
    WeightUploader* up = nullptr;
  };
  // BF16 [r1 - r0, k]: rows [r0, r1) of the layer's weight (r1 < 0: to the last), generated, copied as stored,
  // or converted from host floats.
  DeviceBuffer bf16_source(const LinearWeight& lw, uint64_t gen_seed, const WeightSource& src, int64_t r0 = 0,
                           int64_t r1 = -1);
  // A stored float tensor (BF16 copied as is, F16/F32 converted on the device) into dst, BF16 [numel].
  void bf16_from_stored(const TensorView& t, DeviceBuffer& dst, WeightUploader& up);
  // Host float32 values rounded to BF16 into dst (BF16 [host.size()]).
  void bf16_from_host(std::span<const float> host, DeviceBuffer& dst);
  // The largest |value| of BF16 values on the device (waits for it).
  float bf16_amax(const DeviceBuffer& bf16_values);
  // Throws naming t when the values on the device (BF16, or E4M3 block scales) hold a NaN or Inf.
  void require_finite(const DeviceBuffer& values, DType dtype, const TensorView& t);
  // The NVFP4 codes a checkpoint (or the host's quantization) already holds, copied as stored.
  PackedNvfp4 stored_nvfp4(const LinearWeight& lw, WeightUploader* up);
  // Quantizes BF16 [n, k] on the device with a given tensor scale (nvfp4_quantize_ref's codec).
  PackedNvfp4 quantize_nvfp4(const DeviceBuffer& src, int64_t n, int64_t k, float tensor_scale);
  // The same for a layer alone in its group, its BF16 rows made chunk by chunk by rows(r0, r1): an amax pass,
  // then a pass writing each chunk's codes (kQuantizeChunkBytes of source at a time).
  PackedNvfp4 quantize_nvfp4_in_chunks(const std::function<DeviceBuffer(int64_t, int64_t)>& rows, int64_t n,
                                       int64_t k);
  // Places an NVFP4 weight: joined with its gate/up partner (swiglu_) or repacked alone (linears_).
  void place_nvfp4(const LinearWeight& lw, PackedNvfp4 p);
  void place_bf16(const LinearWeight& lw, DeviceBuffer bf16);
  // An FP8 layer's codes and scales: the host's (checkpoint or quantized at load), the mapped checkpoint's,
  // or quantized here from the layer's BF16 values (`source`, BF16 [n, k]) by ModelOpt's FP8 recipe under its
  // fusion group's amax (group_amax / 448).
  Fp8DeviceWeight fp8_weight(const LinearWeight& lw, WeightUploader* up, const DeviceBuffer* source,
                             float group_amax);
  void place_fp8(const LinearWeight& lw, Fp8DeviceWeight f8);
  // FP8 members of one input (q | k | v, gate | up), already placed, joined into fused_fp8_.
  void join_fp8(const std::vector<const LinearWeight*>& group);
  // Y[m, n] (row stride ldy) = X[m, k] (row stride ldx) . W^T for an FP8 layer, by the path fp8_linear.h
  // describes.
  void fp8_matmul(const bf16_raw* x, int64_t m, int64_t ldx, const Fp8Weight& w, bf16_raw* y, int64_t ldy);
  // Its W8A8 parts: whether cuBLASLt's FP8 GEMM takes the shape (on this GPU, with --fp8-w8a8); X [m, k] to
  // E4M3 with one scale in fp8_act_ (the scale's device address returned); Y[m, n] = those codes . W^T.
  bool fp8_w8a8_shape(const Fp8Weight& w, int64_t ldy) const;
  const float* fp8_quantize_act(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx);
  void fp8_w8a8_gemm(const Fp8Weight& w, int64_t m, const float* act_scale, bf16_raw* y);
  bool fp8_rowwise_ = true;  // cuBLASLt took a row-wise FP8 product (false once it has refused one)
  int fp8_gemv_rows_ = kDefaultFp8GemvRows;
  bool fp8_w8a8_ = true;
  int cc_ = 0;                  // compute capability, major * 10 + minor (prepare)
  std::unique_ptr<LtGemm> lt_;  // cuBLASLt FP8 GEMMs (W8A8), created on first use
  DeviceBuffer fp8_act_;        // E4M3 [m, k]: the activations of a W8A8 product
  DeviceBuffer fp8_act_scale_;  // FP32 [m]: their per-token scales (row-wise products)
  DeviceBuffer fp8_act_state_;  // FP32 [3]: their per-tensor scale and fp8_quantize_tensor's two words
  std::map<const LinearWeight*, std::pair<const LinearWeight*, const LinearWeight*>> swiglu_pair_;
  std::map<const LinearWeight*, PackedNvfp4> swiglu_pending_;

  void capture(State& s, const std::function<void()>& body);
  // Captured graphs hold the device and pinned pointers of this backend's buffers: a buffer reallocated
  // (grown) makes them stale, so they are re-captured (graph_gen() moves on). Growing one during a capture
  // is a bug (the eager first step sizes them).
  void invalidate_graphs(const char* what);
  void ensure_device(DeviceBuffer& b, size_t bytes, const char* what);
  // At least n ints, all zero when (re)allocated: counters that kernels leave at zero for the next launch
  // (the last block of a group resets its own), so only a new buffer needs clearing.
  int* zeroed_counters(DeviceBuffer& b, size_t n, const char* what);
  // One block of `bytes` in place of the arena's blocks.
  void replace_arena(size_t bytes);
  uint64_t graph_gen() const { return arena_gen_ + ws_.generation(); }
  template <class F>
  void decode_graph_step(State& s, int token, StepOut kind, F&& body) {
    if (!s.graph.exec || s.graph.arena_gen != graph_gen() || s.graph.kind != kind) {
      // The first step of a kind runs eagerly: it sizes the arena and every workspace the capture reuses.
      if (s.warmed != kind) {
        s.warmed = kind;
        body();
        return;
      }
      begin_forward();
      capture(s, [&] { body(); });
      s.graph.kind = kind;
    }
    replay(s, token);
  }
  void replay(State& s, int token);
  // Grows a host-pinned buffer to n elements of T. Captured steps hold its address (growing it re-captures
  // them) and copies may still use the old one (growing waits for them). True when it was reallocated: the
  // contents are then undefined.
  template <class T>
  bool ensure_pinned(T*& p, size_t& cap, size_t n, const char* what);
  void synchronize_if_not_capturing();

  struct OpTimer;
  void prof_begin(const char* op);
  void prof_collect();
  bool profile_ = false;
  std::map<std::string, double> profile_ms_;
  struct PendingEvent {
    std::string op;
    cudaEvent_t a, b;
  };
  std::vector<PendingEvent> pending_;

  int device_ = 0;
  bool graphs_ = true;
  uint64_t arena_gen_ = 1;
  int* pinned_tokens_ = nullptr;  // host-pinned token ids (graph replays read the current value)
  size_t pinned_tokens_cap_ = 0;
  float* pinned_logits_ = nullptr;  // host-pinned FP32 logits
  DeviceBuffer logits_dev_;         // FP32 [rows, vocab]
  size_t pinned_logits_cap_ = 0;
  int* pinned_ids_ = nullptr;  // host-pinned argmax ids [rows]
  size_t pinned_ids_cap_ = 0;
  uint64_t* pinned_pick_ = nullptr;  // host-pinned ArgmaxPick (one word) and seeds [rows] (set_pick)
  size_t pinned_pick_cap_ = 0;       // words
  DeviceBuffer pick_dev_;            // its device copy, made by each step
  DeviceBuffer top_dev_;             // top_logits_async: [rows][parts][cpu::kTopLogits] sortable words
  uint64_t* pinned_top_ = nullptr;   // their host-pinned copy
  size_t pinned_top_cap_ = 0;        // words
  void ensure_pick(int64_t rows);
  int64_t logits_rows_ = 0, logits_cols_ = 0;
  DeviceBuffer cublas_ws_;
  cudaStream_t stream_ = nullptr;
  GemmWorkspace ws_;
  std::map<const void*, DevLinear> linears_;
  // BF16 projections on one input stored as one weight (prepare), keyed by the first member.
  struct FusedBf16 {
    std::vector<const LinearWeight*> members;
    std::vector<int64_t> offsets;  // first output column of each member
    DeviceBuffer w;                // BF16 [n_total, k]
    int64_t n_total = 0, k = 0;
  };
  std::map<const void*, FusedBf16> fused_bf16_;
  // FP8 projections on one input joined the same way: the members' codes one after the other and their scales
  // per row (exact, whatever each member's scale), keyed by the first member.
  struct FusedFp8 {
    std::vector<const LinearWeight*> members;
    std::vector<int64_t> offsets;      // first output column of each member
    std::vector<int64_t> rows;         // each member's n
    std::vector<bool> member_per_row;  // whether a member has its own per-row scales
    std::vector<float> member_scale;   // a per-tensor member's scale (host)
    Fp8DeviceWeight w;                 // [sum of n, k]
    // Member i's rows as the weight it was: its own scale (a pointer into w.row_scales, where its first row's
    // scale is that scale) or its per-row scales.
    Fp8Weight member(size_t i) const {
      Fp8Weight v = w.view(offsets[i], rows[i]);
      v.per_row = member_per_row[i];
      v.scales = w.row_scales.as<float>() + offsets[i];
      v.tensor_scale = member_per_row[i] ? 0.0f : member_scale[i];
      return v;
    }
  };
  std::map<const void*, FusedFp8> fused_fp8_;
  // NVFP4 gate and up joined at load (nvfp4_repack_swiglu_pair_device), keyed by the gate.
  struct FusedSwiglu {
    Nvfp4DeviceWeight w;  // [2n, k], 8 gate rows then 8 up rows per tile
    float gate_scale = 0.0f, up_scale = 0.0f;
  };
  std::map<const void*, FusedSwiglu> swiglu_;
  std::map<const void*, DeviceBuffer> f32_;
  DeviceBuffer embed_;  // BF16 [vocab, hidden]
  int64_t hidden_ = 0;
  int64_t vocab_ = 0, vocab_rows_ = 0;  // the vocabulary, and the rows of this rank's embed / lm_head shard
  bool vocab_parallel_ = false;
  DeviceBuffer vocab_gather_;        // FP32 [tp, rows, vocab_rows_]: every rank's logits before reordering
  std::vector<DeviceBuffer> arena_;  // activation blocks, reused every forward
  size_t arena_block_ = 0, arena_used_ = 0;
  int arena_growths_ = 0;
  DeviceBuffer tokens_;  // int [max tokens]
  DeviceBuffer inv_freq_;
  RopeConfig rope_cfg_;
  int rope_dim_ = 0;
  size_t weight_bytes_ = 0;
  bool embedding_on_host_ = false;
  size_t quantize_chunk_bytes_ = kQuantizeChunkBytes;
  std::vector<float> synth_norm_ones_;
};

}  // namespace fp4lab
