// The model definitions, once per architecture, written against a backend (engine/backend.h names its
// interface; CpuOps in src/cpu, CudaOps in src/cuda). The runner owns no math.
#pragma once
#include <algorithm>
#include <array>
#include <initializer_list>
#include <span>
#include <tuple>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/reference.h"
#include "engine/backend.h"
#include "model/op.h"
#include "model/weights.h"

namespace fp4lab {

template <Backend Ops>
class Runner {
 public:
  using Tensor = typename Ops::Tensor;
  using State = typename Ops::State;

  Runner(ModelWeights w, Ops& ops) : w_(std::move(w)), ops_(ops) {
    const ModelConfig& c = w_.config;
    std::vector<Op> need{Op::Linear, Op::RmsNorm, Op::Attention};
    if (c.arch == Arch::NemotronH)
      for (Op o : {Op::Relu2, Op::CausalConv1d, Op::SsmScan, Op::GatedRmsNorm}) need.push_back(o);
    else
      for (Op o : {Op::Rope, Op::SiluMul}) need.push_back(o);
    for (Op o : need)
      if (!ops_.supports(o))
        throw Error("backend '" + ops_.name() + "' does not support op '" + op_name(o) + "' needed by " +
                    arch_name(c.arch));
    for (auto k : c.layers)
      if (k == LayerKind::Moe) throw Error("mixture-of-experts layers (E) are not supported yet");
    ops_.prepare(w_);
  }

  const ModelConfig& config() const { return w_.config; }
  const ModelWeights& weights() const { return w_; }
  // For a backend that reads the host weights at every call (the CPU reference): changes made here are what
  // the next forward computes with (sequential GPTQ swaps in each quantized block). A backend that copied
  // them at construction would not see them.
  ModelWeights& host_weights_for_update() { return w_; }
  Ops& ops() { return ops_; }
  State new_sequence(int max_tokens) { return ops_.new_state(w_.config, max_tokens); }

  // Runs `tokens` after what the sequence holds. Returns logits [rows, vocab] as host floats: every new
  // position when all_logits, else the last.
  std::vector<float> forward(State& s, std::span<const int> tokens, bool all_logits) {
    const ModelConfig& c = w_.config;
    const int t = static_cast<int>(tokens.size());
    if (t == 0) return {};
    for (int id : tokens)
      if (id < 0 || id >= c.vocab_size)
        throw Error("token id " + std::to_string(id) + " is outside the vocabulary (" +
                    std::to_string(c.vocab_size) + ")");
    if (ops_.state_pos(s) + t > ops_.state_capacity(s))
      throw Error("sequence of " + std::to_string(ops_.state_pos(s) + t) +
                  " tokens exceeds the planned context of " + std::to_string(ops_.state_capacity(s)));
    const std::vector<Segment> one{{&s, 0, t}};
    if (t == 1 && !all_logits && ops_.graphs_enabled())
      return ops_.run_decode_graph(s, tokens[0], [&] { body(one, tokens, false); });
    body(one, tokens, all_logits);
    return ops_.fetch_logits();
  }

  // One decode step of several sequences at once: tokens[i] goes after what *states[i] holds (sequences of
  // any lengths). The linear layers see all rows as one batch (the weights are read once per step);
  // attention, convolution and scan run per sequence against its own caches. Returns logits [B, vocab].
  std::vector<float> decode_batch(std::span<State* const> states, std::span<const int> tokens) {
    const auto segs = batch_segments(states, tokens);
    if (segs.size() == 1 && ops_.graphs_enabled())
      return ops_.run_decode_graph(*states[0], tokens[0], [&] { body(segs, tokens, false); });
    body(segs, tokens, false);
    return ops_.fetch_logits();
  }

  // Prefills several new prompts in one forward: prompts[i] goes after what *states[i] holds. The linear
  // layers see the prompts' rows as one batch (one weight read, one large GEMM instead of one per prompt);
  // attention, convolution and scan run per prompt against its own caches. Returns the logits of each
  // prompt's last position, [B, vocab].
  std::vector<float> prefill_batch(std::span<State* const> states,
                                   std::span<const std::vector<int>> prompts) {
    const ModelConfig& c = w_.config;
    if (states.size() != prompts.size() || states.empty())
      throw Error("prefill_batch: one prompt per sequence is needed");
    std::vector<Segment> segs;
    std::vector<int> tokens;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto& p = prompts[i];
      if (p.empty()) throw Error("prefill_batch: prompt " + std::to_string(i) + " is empty");
      for (int id : p)
        if (id < 0 || id >= c.vocab_size)
          throw Error("token id " + std::to_string(id) + " is outside the vocabulary (" +
                      std::to_string(c.vocab_size) + ")");
      if (ops_.state_pos(*states[i]) + static_cast<int>(p.size()) > ops_.state_capacity(*states[i]))
        throw Error("prompt " + std::to_string(i) + " exceeds its planned context of " +
                    std::to_string(ops_.state_capacity(*states[i])) + " tokens");
      segs.push_back({states[i], static_cast<int>(tokens.size()), static_cast<int>(p.size())});
      tokens.insert(tokens.end(), p.begin(), p.end());
    }
    if (segs.size() == 1) return forward(*states[0], prompts[0], false);
    body(segs, tokens, false);
    return ops_.fetch_logits();
  }

  // The same step for greedy decoding: the argmax per sequence is taken where the logits are (on the GPU), so
  // only the ids come back.
  std::vector<int> decode_batch_greedy(std::span<State* const> states, std::span<const int> tokens) {
    return decode_ids(states, tokens, 0.0f, {});
  }
  // The same step sampling softmax(logits / temperature) where the logits are (no top-k / top-p: the
  // Gumbel-max trick needs no sort), with seeds[i] for sequence i (cpu::sample_gumbel).
  std::vector<int> decode_batch_sampled(std::span<State* const> states, std::span<const int> tokens,
                                        float temperature, std::span<const uint64_t> seeds) {
    if (!(temperature > 0.0f) || seeds.size() != states.size())
      throw Error("decode_batch_sampled: a positive temperature and one seed per sequence are needed");
    return decode_ids(states, tokens, temperature, seeds);
  }
  // The same step for sampling with top-k (up to cpu::kTopLogits): each sequence's cpu::kTopLogits largest
  // logits in cpu::TopLogit order, found where the logits are (sample_top draws from them).
  std::vector<std::vector<cpu::TopLogit>> decode_batch_top(std::span<State* const> states,
                                                           std::span<const int> tokens) {
    const auto segs = batch_segments(states, tokens);
    if (segs.size() == 1 && ops_.graphs_enabled())
      return ops_.run_decode_graph_top(*states[0], tokens[0],
                                       [&] { body(segs, tokens, false, StepOut::Top); });
    body(segs, tokens, false, StepOut::Top);
    return ops_.fetch_top_logits();
  }

 private:
  // Rows [row0, row0 + rows) of the activations belong to one sequence and its state.
  struct Segment {
    State* state;
    int row0, rows;
  };

  std::vector<int> decode_ids(std::span<State* const> states, std::span<const int> tokens, float temperature,
                              std::span<const uint64_t> seeds) {
    const auto segs = batch_segments(states, tokens);
    ops_.set_pick(temperature, seeds);
    if (segs.size() == 1 && ops_.graphs_enabled())
      return ops_.run_decode_graph_argmax(*states[0], tokens[0],
                                          [&] { body(segs, tokens, false, StepOut::Ids); });
    body(segs, tokens, false, StepOut::Ids);
    return ops_.fetch_argmax();
  }

  std::vector<Segment> batch_segments(std::span<State* const> states, std::span<const int> tokens) {
    const ModelConfig& c = w_.config;
    if (states.size() != tokens.size() || states.empty())
      throw Error("decode_batch: one token per sequence is needed");
    std::vector<Segment> segs;
    for (size_t i = 0; i < states.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
        throw Error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary (" +
                    std::to_string(c.vocab_size) + ")");
      if (ops_.state_pos(*states[i]) + 1 > ops_.state_capacity(*states[i]))
        throw Error("sequence " + std::to_string(i) + " exceeds its planned context of " +
                    std::to_string(ops_.state_capacity(*states[i])) + " tokens");
      segs.push_back({states[i], static_cast<int>(i), 1});
    }
    return segs;
  }

  // Tensor parallelism: the row-parallel layers (o, down, Mamba out_proj) produce partial sums that the ranks
  // add up.
  void reduce_partial(Tensor& t) {
    if constexpr (TensorParallelBackend<Ops>) ops_.all_reduce(t);
  }

  // The optional parts of the backend interface (engine/backend.h).
  static constexpr bool kBatchedOps = BatchedBackend<Ops>;
  static constexpr bool kSegmentOps = SegmentBackend<Ops>;
  static constexpr bool kMambaStep = FusedMambaStepBackend<Ops>;
  // The segments' states and row counts, as the *_segments ops take them.
  struct SegmentTables {
    std::vector<State*> states;
    std::vector<int> rows;
  };
  static SegmentTables segment_tables(const std::vector<Segment>& segs) {
    SegmentTables tb;
    for (const auto& sg : segs) tb.states.push_back(sg.state), tb.rows.push_back(sg.rows);
    return tb;
  }
  // Only decode steps (one row per sequence) qualify: a batched prefill runs the per-sequence ops per prompt.
  bool batched(const std::vector<Segment>& segs) const {
    if constexpr (kBatchedOps)
      return segs.size() > 1 &&
             std::all_of(segs.begin(), segs.end(), [](const Segment& sg) { return sg.rows == 1; });
    return false;
  }

  // Calls f(state, views...) once per segment with that segment's rows of each tensor, then copies the rows
  // of the tensors named in `outs` back (a no-op on the GPU, where rows() is a view). A single segment gets
  // the whole tensors, no copies.
  template <class F, class... T>
  void per_sequence(const std::vector<Segment>& segs, std::initializer_list<Tensor*> outs, F&& f, T&... ts) {
    if (segs.size() == 1) {
      f(*segs[0].state, ts...);
      return;
    }
    for (const auto& sg : segs) {
      std::array<Tensor*, sizeof...(T)> fulls{&ts...};
      std::array<Tensor, sizeof...(T)> parts{ops_.rows(ts, sg.row0, sg.rows)...};
      std::apply([&](auto&... p) { f(*sg.state, p...); }, parts);
      for (size_t i = 0; i < fulls.size(); ++i)
        if (std::find(outs.begin(), outs.end(), fulls[i]) != outs.end())
          ops_.write_rows(*fulls[i], sg.row0, parts[i]);
    }
  }

  // Enqueues the whole forward; the logits are fetched afterwards (fetch_logits), so a backend can capture
  // it. With several segments (batched decode) every row's logits are kept, one per sequence.
  void body(const std::vector<Segment>& segs, std::span<const int> tokens, bool all_logits,
            StepOut out = StepOut::Logits) {
    const ModelConfig& c = w_.config;
    const int t = static_cast<int>(tokens.size());
    ops_.begin_forward();
    std::vector<State*> states;
    for (const auto& sg : segs) states.push_back(sg.state);
    if constexpr (kBatchedOps)
      if (batched(segs)) ops_.begin_batch(states);
    Tensor x = ops_.alloc_residual(t, c.hidden_size);  // the residual stream (FP32 on every backend)
    ops_.embed(tokens, w_.embed, w_.vocab_begin, x);
    if (w_.vocab_parallel()) reduce_partial(x);  // each rank looked up the ids of its vocab shard only
    Tensor h = ops_.alloc(t, c.hidden_size), o = ops_.alloc(t, c.hidden_size);
    // Each sublayer's output o is added to the residual by the norm that follows it (one fused op).
    bool pending = false;
    auto norm = [&](const std::vector<float>& w) {
      if (pending)
        ops_.add_rmsnorm(x, o, w, c.norm_eps, h);
      else
        ops_.rmsnorm(x, w, c.norm_eps, h);
      pending = false;
    };
    for (size_t li = 0; li < w_.layers.size(); ++li) {
      const LayerWeights& L = w_.layers[li];
      const auto scratch = ops_.arena_mark();  // x, h and o outlive the layer; its other tensors do not
      norm(L.norm);
      if (c.arch != Arch::NemotronH) {
        attention(L, li, segs, h, t, true, o);
        pending = true;
        norm(L.post_norm);
        Tensor g = ops_.alloc(t, c.intermediate_size);
        ops_.linear_swiglu(h, L.gate, L.up, g);  // one launch where the backend can
        ops_.linear(g, L.down, o);
        reduce_partial(o);
      } else if (L.kind == LayerKind::Attention) {
        attention(L, li, segs, h, t, false, o);
      } else if (L.kind == LayerKind::Mamba) {
        mamba(L, li, segs, h, t, o);
      } else {
        Tensor u = ops_.alloc(t, c.intermediate_size);
        ops_.linear_relu2(h, L.up, u);
        ops_.linear(u, L.down, o);
        reduce_partial(o);
      }
      pending = true;
      ops_.arena_rewind(scratch);
    }
    bool advanced = false;
    if constexpr (kBatchedOps)
      if (batched(segs)) {
        ops_.advance_batch(states);
        advanced = true;
      }
    if (!advanced)
      for (const auto& sg : segs) ops_.advance(*sg.state, sg.rows);
    // Scored rows: all of them, one per sequence (its last), or the last. Only they need the last layer's
    // output added; a batched prefill's last rows are gathered first (one row copy per prompt).
    const bool gather = !all_logits && segs.size() > 1 && static_cast<int>(segs.size()) != t;
    const int rows = all_logits ? t : static_cast<int>(segs.size());
    Tensor last, olast;
    if (gather) {
      last = ops_.alloc_residual(rows, c.hidden_size);
      olast = ops_.alloc(rows, c.hidden_size);
      for (int i = 0; i < rows; ++i) {
        const int r = segs[static_cast<size_t>(i)].row0 + segs[static_cast<size_t>(i)].rows - 1;
        ops_.write_rows(last, i, ops_.rows(x, r, 1));
        if (pending) ops_.write_rows(olast, i, ops_.rows(o, r, 1));
      }
    } else {
      last = ops_.rows(x, t - rows, rows);
      if (pending) olast = ops_.rows(o, t - rows, rows);
    }
    Tensor hn = ops_.alloc(rows, c.hidden_size);
    if (pending)
      ops_.add_rmsnorm(last, olast, w_.final_norm, c.norm_eps, hn);
    else
      ops_.rmsnorm(last, w_.final_norm, c.norm_eps, hn);
    // FP32 logits: BF16 would round near-ties away. Under vocab parallelism the backend gathers every rank's
    // share, so each rank sees the whole row.
    if (out == StepOut::Ids)
      ops_.argmax_async(hn, w_.lm_head);
    else if (out == StepOut::Top)
      ops_.top_logits_async(hn, w_.lm_head);
    else
      ops_.logits_async(hn, w_.lm_head);
  }

  void attention(const LayerWeights& L, size_t li, const std::vector<Segment>& segs, const Tensor& h, int t,
                 bool rope, Tensor& out) {
    const ModelConfig& c = w_.config;
    Tensor q = ops_.alloc(t, int64_t{c.num_heads} * c.head_dim),
           k = ops_.alloc(t, int64_t{c.num_kv_heads} * c.head_dim),
           v = ops_.alloc(t, int64_t{c.num_kv_heads} * c.head_dim);
    const LinearWeight* qkv[] = {&L.q, &L.k, &L.v};
    Tensor* qkv_out[] = {&q, &k, &v};
    ops_.linear_group(h, qkv, qkv_out);
    if (!L.q_norm.empty()) {  // Qwen3: RMSNorm over each head before RoPE
      ops_.rmsnorm_heads(q, c.num_heads, L.q_norm, c.norm_eps);
      ops_.rmsnorm_heads(k, c.num_kv_heads, L.k_norm, c.norm_eps);
    }
    Tensor a = ops_.alloc(t, int64_t{c.num_heads} * c.head_dim);
    const RopeConfig* rp = rope ? &c.rope : nullptr;  // applied inside the attention op (one fused launch)
    if constexpr (kBatchedOps)
      if (batched(segs)) {
        ops_.attention_batch(q, k, v, li, c.num_heads, c.num_kv_heads, c.head_dim, rp, a);
        ops_.linear(a, L.o, out);
        reduce_partial(out);
        return;
      }
    bool done = false;
    if constexpr (kSegmentOps)
      if (segs.size() > 1) {  // a batched prefill: one attention launch for every prompt
        const SegmentTables tb = segment_tables(segs);
        done = ops_.attention_segments(q, k, v, tb.states, tb.rows, li, c.num_heads, c.num_kv_heads,
                                       c.head_dim, rp, a);
      }
    if (!done)
      per_sequence(
          segs, {&a},
          [&](State& s, Tensor& qs, Tensor& ks, Tensor& vs, Tensor& as) {
            ops_.attention(qs, ks, vs, s, li, c.num_heads, c.num_kv_heads, c.head_dim, rp, as);
          },
          q, k, v, a);
    ops_.linear(a, L.o, out);
    reduce_partial(out);
  }

  void mamba(const LayerWeights& L, size_t li, const std::vector<Segment>& segs, const Tensor& h, int t,
             Tensor& out) {
    const ModelConfig& c = w_.config;
    // in_proj output columns: z [d_inner] | xBC [conv_dim] | dt [heads]
    Tensor proj = ops_.alloc(t, c.mamba_in_proj_dim());
    ops_.linear(h, L.in_proj, proj);
    Tensor y = ops_.alloc(t, c.mamba_d_inner());
    // One new token per sequence (decode): backends with a fused step run conv, dt, the state update and the
    // gated norm in it where they can (false: the separate ops below).
    bool stepped = false;
    if constexpr (kMambaStep)
      if (segs.size() == 1 ? t == 1 : batched(segs))
        stepped = ops_.mamba_decode_step(proj, segs.size() == 1 ? segs[0].state : nullptr, li, L, c, y);
    if (!stepped) mamba_ops(L, li, segs, proj, t, y);
    ops_.linear(y, L.out_proj, out);
    reduce_partial(out);
  }

  // The Mamba mixer between in_proj (proj: z | xBC | dt) and out_proj as separate ops: softplus(dt), conv1d +
  // SiLU, the scan (chunked for prompts) and the gated norm into y.
  void mamba_ops(const LayerWeights& L, size_t li, const std::vector<Segment>& segs, const Tensor& proj,
                 int t, Tensor& y) {
    const ModelConfig& c = w_.config;
    const int di = c.mamba_d_inner(), cd = c.mamba_conv_dim(), nh = c.mamba_num_heads,
              gn = c.n_groups * c.ssm_state_size;
    const cpu::SsmShape shape{nh, c.mamba_head_dim, c.ssm_state_size, c.n_groups};
    Tensor dt = ops_.alloc(t, nh);
    ops_.softplus_dt(proj, di + cd, L.dt_bias, c.time_step_limit_min, c.time_step_limit_max, dt);
    if constexpr (kBatchedOps)
      if (batched(segs)) {
        // One launch per op for all the sequences, each op reading its columns of proj (or of xbc: x | B | C)
        // in place: copying them out took five launches per layer.
        Tensor xbc = ops_.alloc(t, cd);
        ops_.conv1d_silu_batch(proj, di, li, c.conv_kernel, L.conv_w, L.conv_b, xbc);
        ops_.ssm_step_batch(xbc, dt, L.a_log, L.d, li, shape, y);
      }
    if (!batched(segs)) {
      Tensor xbc = ops_.alloc(t, cd);
      ops_.columns(proj, di, xbc);
      // A batched prefill's segments go through one conv and one scan launch on backends that have them.
      const bool joined = kSegmentOps && segs.size() > 1;
      const SegmentTables tb = joined ? segment_tables(segs) : SegmentTables{};
      if constexpr (kSegmentOps)
        if (joined) ops_.conv1d_silu_segments(xbc, tb.states, tb.rows, li, c.conv_kernel, L.conv_w, L.conv_b);
      if (!joined)
        per_sequence(
            segs, {&xbc},
            [&](State& s, Tensor& xs) {
              ops_.causal_conv1d_silu(xs, s, li, c.conv_kernel, L.conv_w, L.conv_b);
            },
            xbc);
      Tensor x = ops_.alloc(t, di), b = ops_.alloc(t, gn), cc = ops_.alloc(t, gn);
      ops_.columns(xbc, 0, x);
      ops_.columns(xbc, di, b);
      ops_.columns(xbc, di + gn, cc);
      bool scanned = false;
      if constexpr (kSegmentOps)
        if (joined)
          scanned = ops_.ssm_scan_segments(x, b, cc, dt, L.a_log, L.d, tb.states, tb.rows, li, shape,
                                           c.chunk_size, y);
      if (!scanned)
        per_sequence(
            segs, {&y},
            [&](State& s, Tensor& xs, Tensor& bs, Tensor& cs, Tensor& dts, Tensor& ys) {
              ops_.ssm_scan(xs, bs, cs, dts, L.a_log, L.d, s, li, shape, c.chunk_size, ys);
            },
            x, b, cc, dt, y);
    }
    ops_.gated_rmsnorm(y, proj, 0, L.gated_norm, c.n_groups, c.norm_eps);  // z: proj's first d_inner columns
  }

  ModelWeights w_;
  Ops& ops_;
};

}  // namespace fp4lab
