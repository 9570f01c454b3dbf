// The CPU reference backend for Runner: float32 activations, multi-threaded linear layers. Used by CI and as
// the spec the CUDA backend is tested against.
#pragma once
#include <algorithm>
#include <barrier>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/reference.h"
#include "model/op.h"
#include "model/weights.h"

namespace fp4lab {

// Tensor parallelism on the CPU reference: the ranks are threads of one process, each with its own CpuOps and
// shard; all_reduce sums a tensor across them in rank order (deterministic), as NCCL does across GPUs. It
// lets CI check the sharding of every architecture against the unsplit model without GPUs.
class CpuTpGroup {
 public:
  explicit CpuTpGroup(int ranks) : slots_(static_cast<size_t>(ranks)), bar_(ranks) {}
  void all_reduce(int rank, std::vector<float>& v);
  // out = every rank's v, concatenated in rank order (all the same size).
  void all_gather(int rank, const std::vector<float>& v, std::vector<float>& out);
  int size() const { return static_cast<int>(slots_.size()); }

 private:
  std::vector<const std::vector<float>*> slots_;
  std::barrier<> bar_;
};

class CpuOps {
 public:
  struct Tensor {
    int64_t rows = 0, cols = 0;
    std::vector<float> v;  // [rows, cols]
  };
  struct State {
    int pos = 0, capacity = 0;
    std::vector<std::vector<float>> k, v;  // per layer: [pos, kv_heads * head_dim]
    std::vector<std::vector<float>> conv;  // per layer: [conv_dim, kernel - 1]
    std::vector<std::vector<float>> ssm;   // per layer: [heads, head_dim, state] float32
  };

  explicit CpuOps(int threads = 0) : threads_(threads) {}
  std::string name() const { return "cpu"; }
  bool supports(Op) const { return true; }
  void prepare(const ModelWeights& w);
  void begin_forward() {}
  // Scratch scopes (the CUDA backend's arena); a CPU tensor owns its storage.
  int arena_mark() const { return 0; }
  void arena_rewind(int) const {}
  State new_state(const ModelConfig& c, int max_tokens) const;
  int state_pos(const State& s) const { return s.pos; }
  int state_capacity(const State& s) const { return s.capacity; }
  void advance(State& s, int t) const { s.pos += t; }

  Tensor alloc(int64_t rows, int64_t cols) const {
    return {rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  }
  Tensor alloc_residual(int64_t rows, int64_t cols) const { return alloc(rows, cols); }
  Tensor rows(const Tensor& x, int64_t from, int64_t n) const;  // a copy
  void write_rows(Tensor& dst, int64_t from, const Tensor& src) const {
    std::copy(src.v.begin(), src.v.end(), dst.v.begin() + from * dst.cols);
  }
  void logits_async(const Tensor& h, const LinearWeight& head) {
    Tensor l = alloc(h.rows, head.n);
    linear(h, head, l);
    logits_ = std::move(l.v);
    logits_cols_ = head.n;
    if (tp_group_ && vocab_parallel_) {
      std::vector<float> all;
      tp_group_->all_gather(tp_rank_, logits_, all);
      logits_.assign(static_cast<size_t>(h.rows * vocab_), 0.0f);
      cpu::gather_vocab_shards(all, h.rows, head.n, vocab_, logits_);
      logits_cols_ = vocab_;
    }
  }
  std::vector<float> fetch_logits() { return std::move(logits_); }
  void argmax_async(const Tensor& h, const LinearWeight& head) { logits_async(h, head); }
  std::vector<int> fetch_argmax() {
    const int64_t n = static_cast<int64_t>(logits_.size()) / std::max<int64_t>(1, logits_cols_);
    std::vector<int> ids;
    for (int64_t r = 0; r < n; ++r) {
      const auto row = std::span<const float>(logits_).subspan(static_cast<size_t>(r * logits_cols_),
                                                               static_cast<size_t>(logits_cols_));
      ids.push_back(pick_temperature_ > 0.0f
                        ? cpu::sample_gumbel(row, pick_temperature_, pick_seeds_.at(static_cast<size_t>(r)))
                        : cpu::argmax(row));
    }
    return ids;
  }
  void top_logits_async(const Tensor& h, const LinearWeight& head) { logits_async(h, head); }
  std::vector<std::vector<cpu::TopLogit>> fetch_top_logits() {
    const int64_t n = static_cast<int64_t>(logits_.size()) / std::max<int64_t>(1, logits_cols_);
    std::vector<std::vector<cpu::TopLogit>> out;
    for (int64_t r = 0; r < n; ++r)
      out.push_back(
          cpu::top_logits(std::span<const float>(logits_).subspan(static_cast<size_t>(r * logits_cols_),
                                                                  static_cast<size_t>(logits_cols_)),
                          cpu::kTopLogits));
    return out;
  }
  void set_pick(float temperature, std::span<const uint64_t> seeds) {
    pick_temperature_ = temperature;
    pick_seeds_.assign(seeds.begin(), seeds.end());
  }
  bool graphs_enabled() const { return false; }
  template <class F>
  std::vector<float> run_decode_graph(State&, int, F&&) {
    throw Error("internal: the CPU backend has no graphs");
  }
  template <class F>
  std::vector<int> run_decode_graph_argmax(State&, int, F&&) {
    throw Error("internal: the CPU backend has no graphs");
  }
  template <class F>
  std::vector<std::vector<cpu::TopLogit>> run_decode_graph_top(State&, int, F&&) {
    throw Error("internal: the CPU backend has no graphs");
  }
  // table: rows for ids [first_id, first_id + rows); other ids get zeros (vocab-parallel shards).
  void embed(std::span<const int> tokens, const std::vector<float>& table, int64_t first_id, Tensor& x) const;
  void linear(const Tensor& x, const LinearWeight& w, Tensor& y) const;
  // Several layers on the same input (q | k | v, gate | up): one after the other here.
  void linear_group(const Tensor& x, std::span<const LinearWeight* const> w,
                    std::span<Tensor* const> y) const {
    for (size_t i = 0; i < w.size(); ++i) linear(x, *w[i], *y[i]);
  }
  // Activation calibration: while set, every linear records what its inputs were.
  struct Calibration {
    std::map<const LinearWeight*, float> amax;                   // max |input| (ModelOpt's max calibrator)
    bool hessians = false;                                       // also collect `hessian` (GPTQ's)
    std::set<const LinearWeight*> hessian_only;                  // non-empty: Hessians of these layers only
    std::map<const LinearWeight*, std::vector<double>> hessian;  // [k, k]: the sum of x x^T over the inputs
    // GPTQ toward the float model's outputs: a recording pass appends the inputs of the hessian_only layers
    // to `inputs` ([rows, k] each); a later pass with `reference` set pairs each input row x with the
    // recorded row r at the same position and adds r x^T to `cross` ([k, k]).
    bool record = false;
    std::map<const LinearWeight*, std::vector<float>> inputs;
    const std::map<const LinearWeight*, std::vector<float>>* reference = nullptr;
    std::map<const LinearWeight*, size_t> cursor;
    std::map<const LinearWeight*, std::vector<double>> cross;
    // GPTQ on W4A4 inputs: while quantize_inputs is set, the layers in act_scale take their input quantized
    // to NVFP4 under that tensor scale (as W4A4 emulation does), and the hooks above see it so.
    bool quantize_inputs = false;
    std::map<const LinearWeight*, float> act_scale;
  };
  void set_calibration(Calibration* c) { calib_ = c; }
  // W4A4 emulation (Blackwell's NVFP4 path, the CPU spec of it): each NVFP4 layer's input quantized to NVFP4
  // under the layer's input_scale (16-blocks along k, E4M3 block scales by amax / 6) before the exact
  // product with its dequantized weights. A layer without an input_scale is an error.
  void set_w4a4(bool on) { w4a4_ = on; }
  void rmsnorm(const Tensor& x, const std::vector<float>& w, float eps, Tensor& y) const {
    cpu::rmsnorm(x.v, w, eps, y.v);
  }
  void add_rmsnorm(Tensor& x, const Tensor& o, const std::vector<float>& w, float eps, Tensor& y) const {
    add(x, o);
    rmsnorm(x, w, eps, y);
  }
  void rmsnorm_heads(Tensor& x, int heads, const std::vector<float>& w, float eps) const {
    cpu::rmsnorm(x.v, w, eps, x.v);
  }
  // RoPE on q and k when rope is set (q rotated in place), k and v appended to the cache, then attention of
  // the new rows over the cache: the CPU twin of the CUDA backend's fused rope + append + attention.
  void attention(Tensor& q, const Tensor& k, const Tensor& v, State& s, size_t layer, int nh, int nkv, int hd,
                 const RopeConfig* rope, Tensor& out);
  void add(Tensor& x, const Tensor& y) const;
  void silu_mul(const Tensor& g, const Tensor& u, Tensor& o) const { cpu::silu_mul(g.v, u.v, o.v); }
  void relu2(Tensor& x) const { cpu::relu2(x.v); }
  // The CUDA backend joins NVFP4 gate and up at load and applies SwiGLU in its decode GEMV; here the steps.
  void linear_swiglu(const Tensor& x, const LinearWeight& gate, const LinearWeight& up, Tensor& out) const {
    Tensor u = alloc(x.rows, up.n);
    linear(x, gate, out);
    linear(x, up, u);
    silu_mul(out, u, out);
  }
  // The CUDA backend fuses the activation into its decode GEMV; here the two steps.
  void linear_relu2(const Tensor& x, const LinearWeight& w, Tensor& y) const {
    linear(x, w, y);
    relu2(y);
  }
  void columns(const Tensor& src, int64_t col0, Tensor& dst) const;
  void softplus_dt(const Tensor& proj, int64_t col0, const std::vector<float>& bias, float lo, float hi,
                   Tensor& dt) const;
  void causal_conv1d_silu(Tensor& xbc, State& s, size_t layer, int kernel, const std::vector<float>& w,
                          const std::vector<float>& b) const;
  void ssm_scan(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                const std::vector<float>& a_log, const std::vector<float>& d, State& s, size_t layer,
                cpu::SsmShape shape, int chunk, Tensor& y) const;
  // z: columns [z_col, z_col + y.cols) of z_src.
  void gated_rmsnorm(Tensor& y, const Tensor& z_src, int64_t z_col, const std::vector<float>& w, int groups,
                     float eps) const {
    if (z_col == 0 && z_src.cols == y.cols) {
      cpu::gated_rmsnorm(y.v, z_src.v, w, groups, eps);
      return;
    }
    Tensor z = alloc(y.rows, y.cols);
    columns(z_src, z_col, z);
    cpu::gated_rmsnorm(y.v, z.v, w, groups, eps);
  }
  // Tensor parallelism: this backend is rank `rank` of `group`; all_reduce sums a row-parallel layer's
  // partial output across the ranks (a no-op without a group).
  void set_tensor_parallel(CpuTpGroup* group, int rank) {
    tp_group_ = group;
    tp_rank_ = rank;
  }
  void all_reduce(Tensor& t) const {
    if (tp_group_) tp_group_->all_reduce(tp_rank_, t.v);
  }

 private:
  void rope(Tensor& x, int heads, int head_dim, const State& s, const RopeConfig& r);
  CpuTpGroup* tp_group_ = nullptr;
  int tp_rank_ = 0;
  bool vocab_parallel_ = false;
  int64_t vocab_ = 0;
  int threads_;
  RopeConfig rope_cfg_;
  int rope_dim_ = 0;
  std::vector<float> inv_freq_;
  std::vector<float> logits_;
  int64_t logits_cols_ = 1;
  float pick_temperature_ = 0.0f;     // set_pick: 0 argmax, > 0 Gumbel-max sample per row
  std::vector<uint64_t> pick_seeds_;  // [rows]
  Calibration* calib_ = nullptr;
  bool w4a4_ = false;
};

}  // namespace fp4lab
