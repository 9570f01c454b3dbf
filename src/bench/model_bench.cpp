#include "bench/model_bench.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <numeric>
#include <unistd.h>

#include "common/json_util.h"
#include "engine/load_stats.h"
#include "common/error.h"
#include "common/interrupt.h"
#include "engine/generate.h"
#include "cuda/gpu_info.h"
#include "cuda/gpu_telemetry.h"
#include "engine/nvfp4_path.h"
#include "model/inspect.h"
#include "model/presets.h"
#include "report/results_db.h"
#include "report/roofline.h"
#include "common/units.h"
#include "engine/memory_report.h"
#include "engine/run_environment.h"
#include "engine/session.h"
#if FP4LAB_HAVE_CUDA
#include "bench/gemm_bench.h"
#include "cuda/tensor_parallel.h"
#endif

namespace fp4lab {

namespace {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

struct Stats {
  double mean = 0, stdev = 0;
};
Stats stats(const std::vector<double>& v) {
  Stats s;
  if (v.empty()) return s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.stdev = v.size() > 1 ? std::sqrt(ss / (v.size() - 1)) : 0.0;
  return s;
}

struct QuantResult {
  std::string quant;
  std::vector<double> total_s, tok_s, prefill_tok_s, decode_tok_s;
  std::vector<double> ttft, tpot;
  double weight_bytes = 0, bytes_per_token = 0;
  double roofline_decode_tok_s = 0;  // memory roofline at the measured copy bandwidth (GPU runs)
  GpuTelemetry before, after;        // clocks / temperature / throttling around the timed repetitions
  DecodeBytes bytes;                 // per decode step, by kind (weights, embedding, KV, SSM state) and FLOPs
  std::map<std::string, double> op_ms;  // --profile: GPU time per op class in one extra, untimed run
  int nvfp4_layers = 0, linear_layers = 0;
  LoadStats load;                      // loading the model onto the backend, before the repetitions
  std::optional<MemoryReport> memory;  // one-GPU CUDA runs: the plan against the peaks
};

template <class M>
void run_reps(M& model, const ModelBenchOptions& o, QuantResult& qr, const std::function<void()>& sync) {
  const ModelConfig& c = model.config();
  std::vector<std::vector<int>> prompts(static_cast<size_t>(o.batch));
  for (int b = 0; b < o.batch; ++b)
    for (int i = 0; i < o.input_len; ++i)
      prompts[static_cast<size_t>(b)].push_back(
          static_cast<int>((int64_t{i} * 7919 + int64_t{b} * 104729 + 13) % c.vocab_size));
  GenerateOptions g;
  g.max_new_tokens = o.output_len;  // no stop ids: every run produces exactly output_len tokens
  g.max_batch = o.batch;            // all prompts decode together, one batched forward per step
  g.prefill_tokens = o.prefill_tokens;
  g.beyond_context = o.beyond_context;
  for (int w = 0; w < o.warmup; ++w) {
    GenerateOptions gw = g;
    gw.max_new_tokens = std::min(8, o.output_len);
    generate(model, prompts, gw, sync);
  }
  for (int r = 0; r < o.reps && !interrupted(); ++r) {
    if (isatty(STDERR_FILENO))
      std::fprintf(stderr, "\r  %s: repetition %d/%d ", qr.quant.c_str(), r + 1, o.reps);
    const auto t0 = std::chrono::steady_clock::now();
    const GenerateResult res = generate(model, prompts, g, sync);
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    qr.total_s.push_back(total);
    qr.tok_s.push_back(res.generated_tokens / total);
    qr.prefill_tok_s.push_back(res.prefill_tok_s());
    qr.decode_tok_s.push_back(res.decode_tok_s());
    qr.ttft.insert(qr.ttft.end(), res.ttft_s.begin(), res.ttft_s.end());
    qr.tpot.insert(qr.tpot.end(), res.tpot_s.begin(), res.tpot_s.end());
  }
  if (isatty(STDERR_FILENO)) std::fprintf(stderr, "\r%60s\r", "");
}

}  // namespace

json run_model_bench(const ModelBenchOptions& o) {
  if (!o.no_db) ResultsDb(o.db).check_writable();  // before the run, not after it
  const GpuQuery q = query_gpus();
  std::string backend = o.backend;
  if (backend == "auto") backend = q.ok ? "cuda" : "cpu";
  if (backend == "cuda" && !q.ok) throw Error("--backend cuda: " + q.error);
  std::string model = o.model;
  if (model.empty()) {
    if (backend == "cpu") {
      model = "preset:tiny-nemotron-h";
      std::fprintf(stderr,
                   "no GPU: running the CPU reference backend on %s (small preset); the GPU default is "
                   "preset:nemotron-nano-9b-v2\n",
                   model.c_str());
    } else {
      // The flagship (Nemotron-Nano-9B-v2 shapes) when its BF16 weights fit in 85% of this GPU's memory, else
      // the largest built-in preset that does.
      model = "preset:tiny";
      double best = 0;
      const auto flagship = find_preset("nemotron-nano-9b-v2");
      const auto fs = summarize_config(flagship->name, flagship->config);
      if (fs.bytes_per_token_bf16 + 2.0 * flagship->config.vocab_size * flagship->config.hidden_size <
          0.85 * q.gpus[0].total_mem)
        best = 1e300, model = "preset:nemotron-nano-9b-v2";
      for (const auto& p : presets()) {
        const auto s = summarize_config(p.name, p.config);
        const double bf16 = s.bytes_per_token_bf16 + 2.0 * p.config.vocab_size * p.config.hidden_size;
        if (bf16 < 0.85 * q.gpus[0].total_mem && bf16 > best && p.name.rfind("llama-3.3", 0) != 0) {
          best = bf16;
          model = "preset:" + p.name;
        }
      }
    }
  }
  // The default comparison: BF16, then FP8 where the GPU has FP8 tensor cores (Ada, Hopper, Blackwell), then
  // NVFP4.
  std::vector<std::string> quants = o.quants;
  if (quants.empty()) {
    const bool fp8_cores =
        backend == "cuda" && q.ok && !q.gpus.empty() && q.gpus[0].cc_major * 10 + q.gpus[0].cc_minor >= 89;
    quants = fp8_cores ? std::vector<std::string>{"bf16", "fp8", "nvfp4"}
                       : std::vector<std::string>{"bf16", "nvfp4"};
  }
  const SessionOptions session{backend, 0, o.cuda};
  check_session_options(session);
  const std::string model_path = resolve_model_arg(model, o.hub);  // results keep the id the user gave
  json out;
  out["schema"] = "fp4lab.bench/1";
  run_environment(out, backend == "cuda");
#if FP4LAB_HAVE_CUDA
  if (backend == "cuda") {
    out["gpu_count"] = o.cuda.tp;
    out["interconnect"] = o.cuda.tp > 1 ? gpu_interconnect() : "single GPU";
  }
#endif
  out["options"] = {{"model", model},
                    {"backend", backend},
                    {"quant", quants},
                    {"input_len", o.input_len},
                    {"output_len", o.output_len},
                    {"batch", o.batch},
                    {"prefill_tokens", o.prefill_tokens},
                    {"beyond_context", o.beyond_context},
                    {"warmup", o.warmup},
                    {"reps", o.reps},
                    {"seed", o.seed},
                    {"sweep_batch", o.sweep},
                    {"profile", o.profile}};
  echo_cuda_run_options(out["options"], o.cuda);
  // How the batch's prompts are prefilled: all in one pass, in passes, or one forward each.
  const int per_pass = std::clamp(o.prefill_tokens / o.input_len, 1, o.batch);
  const std::string prefill = o.batch == 1          ? "prefilled alone"
                              : per_pass == o.batch ? "prefilled in one pass"
                              : per_pass == 1       ? "prefilled one by one"
                                                    : "prefilled " + std::to_string(per_pass) + " per pass";
  std::fprintf(stderr,
               "fp4lab bench: %s on %s, %d-token prompts, %d new tokens, batch %d (%s, decoded together), %d "
               "repetitions\n",
               model.c_str(), backend == "cuda" ? q.gpus[0].name.c_str() : "CPU", o.input_len, o.output_len,
               o.batch, prefill.c_str(), o.reps);
  double copy_gbs = 0, bf16_tflops = 0;
#if FP4LAB_HAVE_CUDA
  if (backend == "cuda") {
    copy_gbs = measure_copy_bandwidth_gbs();
    out["copy_bandwidth_gbs"] = copy_gbs;
    bf16_tflops = measure_bf16_tflops();
    out["bf16_tflops"] = bf16_tflops;
  }
#endif
  // The link the tensor-parallel all-reduces cross, for the roofline: NVLink unless the GPUs only reach each
  // other over PCIe.
  const CommSpec* comm = nullptr;
  if (o.cuda.tp > 1) {
#if FP4LAB_HAVE_CUDA
    comm = &comm_spec(gpu_link_kind());
#endif
    out["roofline_comm"] = {{"link", comm->link},
                            {"allreduce_latency_us", comm->latency_us},
                            {"bus_gbs", comm->bus_gbs},
                            {"source", comm->source}};
  }
  std::vector<QuantResult> results;
  for (const auto& qs : quants) {
    if (interrupted()) break;
    const QuantMode mode = parse_quant_mode(qs);
    QuantResult qr;
    qr.quant = qs;
    auto fill_meta = [&](const ModelWeights& w) {
      for (const auto& p : w.plans) qr.nvfp4_layers += p.nvfp4;
      qr.linear_layers = static_cast<int>(w.plans.size());
      // Tensor parallel: each GPU streams its shard of the linear weights (and of the KV cache) at its own
      // bandwidth, then the step's all-reduces cross the link (comm: the link's assumed latency and
      // bandwidth).
      const DecodeBytes db = decode_bytes_tp(w.config, w.plans, o.input_len + o.output_len / 2.0, o.cuda.tp);
      // A batched step reads the weights once for all sequences, and each sequence's own KV/SSM state.
      qr.bytes_per_token = db.per_step(o.batch) / o.batch;
      qr.bytes = db;
      if (copy_gbs > 0)
        qr.roofline_decode_tok_s = roofline_decode_tok_s(db, o.batch, copy_gbs, bf16_tflops, comm);
    };
    if (backend == "cuda") qr.before = read_gpu_telemetry(0);
    {
      SessionOptions so = session;
      so.cuda.shape = memory_shape_for(std::vector<int>(static_cast<size_t>(o.batch), o.input_len),
                                       o.output_len, o.batch, o.prefill_tokens);
      MemoryReport mem;
      if (o.cuda.tp == 1) so.cuda.report = &mem;
      LoadMeter meter(model_path);
      ModelWeights full = load_model(model_path, mode, o.seed, so.host_weights());
      // Each rank runs the same workload on its shard (the all-reduces keep them in lockstep); rank 0
      // measures.
      run_session(std::move(full), so, [&](auto& m, auto& ops, int rank) {
        QuantResult scratch;
        QuantResult& mine = rank == 0 ? qr : scratch;
        if (rank == 0) {
          qr.load = meter.finish();
          fill_meta(m.weights());
          if constexpr (requires { ops.weight_bytes(); }) {  // what the GPU holds
            qr.weight_bytes = static_cast<double>(ops.weight_bytes()) * o.cuda.tp;
          } else {
            double wb = 0;
            for (const auto& p : m.weights().plans) wb += linear_weight_bytes(p);
            qr.weight_bytes = wb + 2.0 * m.config().vocab_size * m.config().hidden_size;
          }
          if (backend == "cuda") std::fprintf(stderr, "%s: %s\n", qs.c_str(), qr.load.summary().c_str());
        }
        // The prefill budget the memory plan fits with (lowered only under a limit it would not fit).
        ModelBenchOptions fitted = o;
        fitted.prefill_tokens = mem.fit.prefill_tokens(o.prefill_tokens);
        std::function<void()> sync;  // the CPU backend's ops return when their work is done
        if constexpr (requires { ops.synchronize(); }) sync = [&] { ops.synchronize(); };
        run_reps(m, fitted, mine, sync);
        if constexpr (requires { ops.profile_ms(); }) {
          if (o.profile && !interrupted()) {
            // Events around every op (graphs off) distort the timing, so the breakdown comes from its own
            // run.
            ModelBenchOptions po = fitted;
            po.reps = 1;
            po.warmup = 0;
            ops.set_profile(true);
            run_reps(m, po, scratch, sync);
            if (rank == 0) qr.op_ms = ops.profile_ms();
          }
        }
      });
      if (backend == "cuda" && o.cuda.tp == 1) {
        qr.memory = mem;
        std::fprintf(stderr, "%s: %s\n", qs.c_str(), mem.summary().c_str());
      }
    }
    if (backend == "cuda") {
      qr.after = read_gpu_telemetry(0);
      if (qr.after.throttled() || qr.before.throttled())
        std::fprintf(stderr, "warning: %s run looks throttled (clock reasons before: %s, after: %s, %u C)\n",
                     qs.c_str(), qr.before.throttle_text().c_str(), qr.after.throttle_text().c_str(),
                     qr.after.temperature_c);
    }
    if (!qr.total_s.empty()) results.push_back(std::move(qr));
  }
  // The table users of the public study know, then the details.
  const double base = stats(results[0].tok_s).mean;
  std::printf("\n%-34s | %16s | %14s | %7s\n", "Model", "Tokens/sec", "Total Time (s)", "Speedup");
  std::printf("%-34s-|-%16s-|-%14s-|-%7s\n", std::string(34, '-').c_str(), std::string(16, '-').c_str(),
              std::string(14, '-').c_str(), std::string(7, '-').c_str());
  for (const auto& r : results) {
    const Stats t = stats(r.tok_s), tt = stats(r.total_s);
    std::printf("%-34s | %8.2f ± %5.2f | %7.2f ± %4.2f | %6.2fx\n",
                (model.substr(model.find(':') + 1) + " " + r.quant).c_str(), t.mean, t.stdev, tt.mean,
                tt.stdev, t.mean / base);
  }
  if (backend == "cpu")
    std::printf(
        "(CPU reference backend: NVFP4 layers compute with their exact dequantized values in float32, so the "
        "CPU shows accuracy effects, not the GPU's speedup)\n");
  std::printf("\n%-8s %12s %12s %10s %10s %10s %10s %10s %12s\n", "quant", "prefill t/s", "decode t/s",
              "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "NVFP4", "weights");
  if (results.empty()) throw Error("interrupted before any repetition finished: nothing to store");
  if (interrupted()) {
    out["interrupted"] = true;
    std::fprintf(stderr, "interrupted: keeping the %zu quantization(s) whose repetitions finished\n",
                 results.size());
  }
  json meas = json::array();
  for (const auto& r : results) {
    std::printf("%-8s %12.1f %12.1f %8.1fms %8.1fms %8.2fms %8.2fms %5d/%-4d %12s\n", r.quant.c_str(),
                stats(r.prefill_tok_s).mean, stats(r.decode_tok_s).mean, 1e3 * percentile(r.ttft, 0.5),
                1e3 * percentile(r.ttft, 0.99), 1e3 * percentile(r.tpot, 0.5), 1e3 * percentile(r.tpot, 0.99),
                r.nvfp4_layers, r.linear_layers, human_bytes(r.weight_bytes).c_str());
    meas.push_back({{"quant", r.quant},
                    {"tokens_per_s", r.tok_s},
                    {"total_s", r.total_s},
                    {"prefill_tok_s", r.prefill_tok_s},
                    {"decode_tok_s", r.decode_tok_s},
                    {"ttft_s_p50", percentile(r.ttft, 0.5)},
                    {"ttft_s_p99", percentile(r.ttft, 0.99)},
                    {"tpot_s_p50", percentile(r.tpot, 0.5)},
                    {"tpot_s_p99", percentile(r.tpot, 0.99)},
                    {"speedup_vs_first", stats(r.tok_s).mean / base},
                    {"weight_bytes", r.weight_bytes},
                    {"bytes_per_token", r.bytes_per_token},
                    {"roofline_decode_tok_s", r.roofline_decode_tok_s},
                    {"nvfp4_linear_layers", r.nvfp4_layers},
                    {"linear_layers", r.linear_layers},
                    {"gpu_before", r.before.to_json()},
                    {"gpu_after", r.after.to_json()},
                    {"throttled", r.before.throttled() || r.after.throttled()},
                    {"decode_step",
                     {{"weight_bytes", r.bytes.weights},
                      {"embedding_bytes_per_seq", r.bytes.embedding},
                      {"kv_cache_bytes_per_seq", r.bytes.kv_cache},
                      {"ssm_state_bytes_per_seq", r.bytes.ssm_state},
                      {"flops_per_token", r.bytes.flops_per_token},
                      {"tp", r.bytes.tp},
                      {"allreduces", r.bytes.allreduces},
                      {"allreduce_bytes_per_seq", r.bytes.allreduce_bytes},
                      {"allgather_bytes_per_seq", r.bytes.allgather_bytes}}},
                    {"op_ms", r.op_ms},
                    {"load", r.load.to_json()}});
    if (r.memory) meas.back()["memory"] = memory_report_json(*r.memory);
  }
  out["measurements"] = meas;
  // The plain-language verdict: how close decode is to the memory roofline, and why NVFP4 gains what it
  // gains.
  if (copy_gbs > 0) {
    std::printf(
        "\nroofline at batch %d (measured now: copy %.0f GB/s, BF16 matrix %.0f TFLOP/s; a step reads the "
        "weights "
        "once and each sequence's KV/SSM state):\n",
        o.batch, copy_gbs, bf16_tflops);
    if (comm)
      std::printf(
          "  tensor parallel over %d GPUs: per GPU its weight and KV shard; %d all-reduces and a logits "
          "all-gather per step over %s (assumed %.0f us + %.0f GB/s each) = %.2f ms per step\n",
          o.cuda.tp, results.empty() ? 0 : results[0].bytes.allreduces, comm->link.c_str(), comm->latency_us,
          comm->bus_gbs, results.empty() ? 0.0 : 1e3 * step_comm_seconds(results[0].bytes, o.batch, *comm));
    for (const auto& r : results)
      std::printf(
          "  %-6s %6.2f GB/token -> ceiling %7.1f tok/s; measured decode %7.1f tok/s = %4.1f%% of it\n",
          r.quant.c_str(), r.bytes_per_token / 1e9, r.roofline_decode_tok_s, stats(r.decode_tok_s).mean,
          100.0 * stats(r.decode_tok_s).mean / r.roofline_decode_tok_s);
    for (size_t i = 1; i < results.size(); ++i) {
      const auto& a = results[0];
      const auto& b = results[i];
      std::printf(
          "verdict: %s reads %.2fx fewer bytes per token than %s, so the roofline allows %.2fx; decode "
          "gained "
          "%.2fx because %s runs at %.0f%% of its ceiling and %s at %.0f%%.\n",
          b.quant.c_str(), a.bytes_per_token / b.bytes_per_token, a.quant.c_str(),
          b.roofline_decode_tok_s / a.roofline_decode_tok_s,
          stats(b.decode_tok_s).mean / stats(a.decode_tok_s).mean, b.quant.c_str(),
          100.0 * stats(b.decode_tok_s).mean / b.roofline_decode_tok_s, a.quant.c_str(),
          100.0 * stats(a.decode_tok_s).mean / a.roofline_decode_tok_s);
    }
  }
  for (const auto& r : results) {
    if (r.op_ms.empty()) continue;
    double total = 0;
    for (const auto& [k, v] : r.op_ms) total += v;
    std::printf("\n%s: GPU time by op class (one profiled run, events around each op, graphs off):\n",
                r.quant.c_str());
    std::vector<std::pair<double, std::string>> sorted;
    for (const auto& [k, v] : r.op_ms) sorted.emplace_back(v, k);
    std::sort(sorted.rbegin(), sorted.rend());
    for (const auto& [v, k] : sorted)
      std::printf("  %-18s %9.2f ms  %5.1f%%\n", k.c_str(), v, 100.0 * v / total);
  }
  // The JSON first: a database that fails at the end still leaves the run's document.
  if (!o.json_out.empty()) {
    write_text_file(o.json_out, out.dump(2) + "\n");
    std::fprintf(stderr, "results written to %s\n", o.json_out.c_str());
  }
  if (!o.no_db) {
    ResultsDb db(o.db);
    const int64_t id = db.insert_run(out);
    std::fprintf(stderr, "stored as run %lld in %s\n", static_cast<long long>(id), o.db.c_str());
  }
  return out;
}

int run_bench_or_sweep(const ModelBenchOptions& mo) {
  InterruptGuard guard;  // the repetition in flight finishes; what is complete is written and stored
  if (mo.sweep.empty()) {
    run_model_bench(mo);
    return interrupted() ? 130 : 0;
  }
  json sweep = {{"schema", "fp4lab.bench-sweep/1"}, {"runs", json::array()}};
  for (int b : mo.sweep) {
    if (interrupted()) break;
    ModelBenchOptions o = mo;
    o.batch = b;
    o.json_out.clear();
    std::fprintf(stderr, "== batch %d\n", b);
    sweep["runs"].push_back(run_model_bench(o));
  }
  std::printf("\nspeedup vs batch (decode tok/s):\n%6s", "batch");
  const json& first = sweep["runs"][0]["measurements"];
  for (const auto& m : first) std::printf(" %12s", m.value("quant", "").c_str());
  std::printf(" %9s\n", "speedup");
  for (const auto& r : sweep["runs"]) {
    std::printf("%6d", r["options"].value("batch", 0));
    const json& ms = r["measurements"];
    std::vector<double> dec;
    for (const auto& m : ms) {
      dec.push_back(mean_of(m["decode_tok_s"]));
      std::printf(" %12.1f", dec.back());
    }
    std::printf(" %8.2fx\n", dec.size() > 1 && dec[0] > 0 ? dec.back() / dec[0] : 1.0);
  }
  if (!mo.json_out.empty()) {
    write_text_file(mo.json_out, sweep.dump(2) + "\n");
    std::fprintf(stderr, "sweep written to %s\n", mo.json_out.c_str());
  }
  return interrupted() ? 130 : 0;
}

}  // namespace fp4lab
