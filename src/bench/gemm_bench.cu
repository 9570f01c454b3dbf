#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <unistd.h>

#include "bench/gemm_bench.h"
#include "common/json_util.h"
#include "cuda/baseline_gemm.h"
#include "cuda/fp8_linear.h"
#include "cuda/bf16_gemv.h"
#include "cuda/check.h"
#include "cuda/nvfp4_gemm.h"
#include "cuda/random_fill.h"
#include "cuda/gemm_heuristics.h"

namespace fp4lab {

namespace {

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Median per-call time in microseconds over `reps` batches; fn(i) launches call i (rotating buffers).
double time_us(const std::function<void(int)>& fn, const GemmBenchOptions& o, cudaStream_t s) {
  Timer t;
  int i = 0;
  for (int w = 0; w < o.warmup; ++w) fn(i++);
  int calls = o.calls_per_rep;
  if (calls <= 0) {
    CUDA_CHECK(cudaEventRecord(t.a, s));
    for (int c = 0; c < 3; ++c) fn(i++);
    CUDA_CHECK(cudaEventRecord(t.b, s));
    CUDA_CHECK(cudaEventSynchronize(t.b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, t.a, t.b));
    calls = std::clamp(static_cast<int>(0.3 / std::max(ms / 3, 1e-4f)), 3, 200);
  }
  std::vector<double> per;
  for (int r = 0; r < o.reps; ++r) {
    CUDA_CHECK(cudaEventRecord(t.a, s));
    for (int c = 0; c < calls; ++c) fn(i++);
    CUDA_CHECK(cudaEventRecord(t.b, s));
    CUDA_CHECK(cudaEventSynchronize(t.b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, t.a, t.b));
    per.push_back(1000.0 * ms / calls);
  }
  return median(per);
}

double copy_bandwidth_gbs(cudaStream_t s) {
  const size_t bytes = 1ull << 30;
  DeviceBuffer a(bytes), b(bytes);
  CUDA_CHECK(cudaMemsetAsync(a.ptr, 1, bytes, s));
  Timer t;
  std::vector<double> v;
  for (int r = 0; r < 12; ++r) {
    CUDA_CHECK(cudaEventRecord(t.a, s));
    CUDA_CHECK(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaEventRecord(t.b, s));
    CUDA_CHECK(cudaEventSynchronize(t.b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, t.a, t.b));
    if (r >= 2) v.push_back(2.0 * bytes / (ms * 1e-3) / 1e9);  // bytes read + written
  }
  return median(v);
}

W4A16Variant parse_variant(const std::string& s) {
  for (auto v : {W4A16Variant::Decode8, W4A16Variant::Decode16, W4A16Variant::Decode32,
                 W4A16Variant::Decode64, W4A16Variant::Xs32, W4A16Variant::Mma32, W4A16Variant::Mma64,
                 W4A16Variant::Mma128, W4A16Variant::Wgmma32, W4A16Variant::Wgmma64, W4A16Variant::Wgmma128,
                 W4A16Variant::Wgmma256, W4A16Variant::DequantBlas})
    if (s == w4a16_variant_name(v)) return v;
  throw Error(
      "bench gemm: unknown variant '" + s +
      "' (decode8, decode16, decode32, decode64, xs32, mma32, mma64, mma128, wgmma32, wgmma64, wgmma128, "
      "wgmma256, dequant+cublas)");
}

}  // namespace

double measure_copy_bandwidth_gbs() {
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));
  const double bw = copy_bandwidth_gbs(s);
  CUDA_CHECK(cudaStreamDestroy(s));
  return bw;
}

double measure_bf16_tflops() {
  // A square cuBLAS BF16 GEMM big enough to run at the tensor cores' sustained rate (random data: power, and
  // so clocks, depend on the bit patterns).
  const int64_t n = 8192;
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));
  GemmWorkspace ws;
  DeviceBuffer a(static_cast<size_t>(n * n) * 2), b(static_cast<size_t>(n * n) * 2),
      c(static_cast<size_t>(n * n) * 2);
  fill_random_bf16(a.as<uint16_t>(), n * n, 1, 1.0f, 0, s);
  fill_random_bf16(b.as<uint16_t>(), n * n, 2, 1.0f, 0, s);
  Timer t;
  std::vector<double> v;
  for (int r = 0; r < 8; ++r) {
    CUDA_CHECK(cudaEventRecord(t.a, s));
    cublas_bf16_gemm(ws.cublas_handle(), a.as<bf16_raw>(), n, b.as<bf16_raw>(), n, n, c.as<bf16_raw>(), s);
    CUDA_CHECK(cudaEventRecord(t.b, s));
    CUDA_CHECK(cudaEventSynchronize(t.b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, t.a, t.b));
    if (r >= 2) v.push_back(2.0 * n * n * n / (ms * 1e-3) / 1e12);
  }
  CUDA_CHECK(cudaStreamDestroy(s));
  return median(v);
}

json run_gemm_bench(const GemmBenchOptions& o) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));

  std::vector<GemmShape> shapes;
  for (const auto& m : o.models)
    if (!m.empty() && m != "none")
      for (const auto& sh : gemm_shapes_for(m)) shapes.push_back(sh);
  for (const auto& e : o.extra_shapes) {
    const auto x = e.find('x');
    if (x == std::string::npos) throw Error("--shape wants NxK, got '" + e + "'");
    GemmShape sh{"custom " + e, std::stoll(e.substr(0, x)), std::stoll(e.substr(x + 1))};
    if (sh.n <= 0 || sh.k <= 0 || sh.k % 16)
      throw Error("--shape " + e + ": N must be positive and K a positive multiple of 16");
    shapes.push_back(sh);
  }
  const int64_t max_m = *std::max_element(o.ms.begin(), o.ms.end());

  const double copy_gbs = copy_bandwidth_gbs(s);
  std::fprintf(stderr, "bench gemm: %s (sm_%d%d, %d SMs, L2 %.0f MB); device-to-device copy %.0f GB/s\n",
               prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1e6, copy_gbs);

  GemmWorkspace ws;
  ws.set_wgmma(o.wgmma);
  LtGemm lt;
  void* blas = ws.cublas_handle();
  const double l2 = prop.l2CacheSize;
  const W4A16Plan* forced = nullptr;
  W4A16Plan forced_plan;
  if (!o.variant.empty()) {
    forced_plan.variant = parse_variant(o.variant);
    if (o.rows_per_block) forced_plan.rows_per_block = o.rows_per_block;
    if (o.decode_warps) forced_plan.decode_warps = o.decode_warps;
    forced = &forced_plan;
  }

  json out;
  out["gpu"] = {{"name", prop.name},
                {"cc", std::to_string(prop.major) + "." + std::to_string(prop.minor)},
                {"sms", prop.multiProcessorCount},
                {"l2_bytes", prop.l2CacheSize}};
  out["copy_bandwidth_gbs"] = copy_gbs;
  out["options"] = {{"warmup", o.warmup},
                    {"reps", o.reps},
                    {"rotate_factor", o.rotate_factor},
                    {"ms", o.ms},
                    {"variant", o.variant.empty() ? "auto" : o.variant},
                    {"wgmma", o.wgmma},
                    {"rows_per_block", o.rows_per_block},
                    {"splits", o.splits},
                    {"decode_warps", o.decode_warps},
                    {"baselines", o.baselines},
                    {"pdl", o.pdl}};
  out["rows"] = json::array();

  // bf16 us: cuBLAS; gemv us: the engine's BF16 GEMV (bf16_gemv.h), at M <= 4.
  // fp8 us: cuBLASLt FP8 with per-tensor scales, activations already quantized; w8a16 / w8a8 us: the engine's
  // FP8 layer (cuda/fp8_linear.h), the GEMV at M <= 8 and per-tensor activation quantization + cuBLASLt;
  // rowwise us: per-token activations + the row-wise product (per-row weight scales).
  std::printf("%-34s %6s %6s %5s %-14s %9s %8s %6s %7s %8s %9s %9s %9s %7s %7s %9s %9s %9s\n", "shape", "N",
              "K", "M", "variant", "nvfp4 us", "GB/s", "%copy", "%read", "TFLOP/s", "bf16 us", "gemv us",
              "fp8 us", "xBF16", "xFP8", "w8a16 us", "w8a8 us", "rowwise us");
  const int sms_total = prop.multiProcessorCount;
  int shape_i = 0;
  const bool progress = isatty(STDERR_FILENO);  // a progress line only where a person watches
  for (const auto& sh : shapes) {
    ++shape_i;
    const int64_t n = sh.n, k = sh.k;
    const double fp4_bytes = n * k * 0.5625, bf16_bytes = 2.0 * n * k, fp8_bytes = 1.0 * n * k;
    auto copies_for = [&](double b) {
      return std::max(2, static_cast<int>(std::ceil(o.rotate_factor * l2 / b)));
    };
    const int c4 = copies_for(fp4_bytes), c16 = copies_for(bf16_bytes), c8 = copies_for(fp8_bytes);

    // One BF16 master weight; every format is derived from it on the GPU.
    DeviceBuffer wmaster(static_cast<size_t>(n * k * 2));
    fill_random_bf16(wmaster.as<uint16_t>(), n * k, 1000 + shape_i, 0.02f, 997, s);
    DeviceBuffer qpacked(static_cast<size_t>(n * k / 2)), qscales(static_cast<size_t>(n * k / 16)),
        qts(sizeof(float));
    nvfp4_quantize_act(wmaster.as<bf16_raw>(), n, k, qpacked.as<uint8_t>(), qscales.as<uint8_t>(),
                       qts.as<float>(), true, s);
    float ts = 0;
    CUDA_CHECK(cudaMemcpyAsync(&ts, qts.ptr, sizeof ts, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<Nvfp4DeviceWeight> w4;
    for (int i = 0; i < c4; ++i)
      w4.push_back(nvfp4_repack_device(qpacked.as<uint8_t>(), qscales.as<uint8_t>(), n, k, ts, s));
    std::vector<DeviceBuffer> w16, w8;
    DeviceBuffer w8scale(sizeof(float));
    if (o.baselines) {
      for (int i = 0; i < c16; ++i) {
        w16.emplace_back(static_cast<size_t>(n * k * 2));
        CUDA_CHECK(cudaMemcpyAsync(w16.back().ptr, wmaster.ptr, n * k * 2, cudaMemcpyDeviceToDevice, s));
      }
      for (int i = 0; i < c8; ++i) {
        w8.emplace_back(static_cast<size_t>(n * k));
        fp8_quantize_bf16(wmaster.as<bf16_raw>(), n * k, w8.back().as<uint8_t>(), w8scale.as<float>(), s);
      }
    }
    wmaster = DeviceBuffer();
    DeviceBuffer x(static_cast<size_t>(max_m * k * 2)), y(static_cast<size_t>(max_m * n * 2));
    DeviceBuffer x8(static_cast<size_t>(max_m * k)), x8scale(sizeof(float)),
        x8rows(static_cast<size_t>(max_m) * sizeof(float)), x8state(3 * sizeof(float));
    CUDA_CHECK(cudaMemsetAsync(x8state.ptr, 0, x8state.bytes, s));
    const DeviceBuffer w8rows =
        o.baselines ? fp8_row_scales(w8scale.as<float>(), false, n, s) : DeviceBuffer();
    // The engine's FP8 weight over copy i (non-owning: the codes of w8[i], the one per-tensor scale).
    const auto fp8_weight = [&](int i) {
      Fp8Weight f;
      f.codes = w8[i % c8].as<uint8_t>();
      f.scales = w8scale.as<float>();
      f.row_scales = w8rows.as<float>();
      f.n = n;
      f.k = k;
      return f;
    };
    fill_random_bf16(x.as<uint16_t>(), max_m * k, 7 + shape_i, 1.0f, 0, s);
    if (o.baselines) fp8_quantize_bf16(x.as<bf16_raw>(), max_m * k, x8.as<uint8_t>(), x8scale.as<float>(), s);
    CUDA_CHECK(cudaStreamSynchronize(s));

    // The read ceiling for this many bytes in one launch, on the same rotating buffers (independent of M).
    DeviceBuffer sink(sizeof(uint32_t) * sms_total * kStreamReadBlocksPerSm);
    const double t_read = time_us(
        [&](int i) {
          const auto& wq = w4[i % c4];
          stream_read_reference(wq.weights.ptr, wq.weights.bytes, wq.scales.ptr, wq.scales.bytes,
                                sink.as<uint32_t>(), sms_total, s);
        },
        o, s);

    for (int64_t m : o.ms) {
      if (progress)
        std::fprintf(stderr, "\r[%d/%zu] %s M=%lld        ", shape_i, shapes.size(), sh.name.c_str(),
                     static_cast<long long>(m));
      int sms = prop.multiProcessorCount;
      W4A16Plan plan = choose_w4a16_plan(m, n, k, sms, ws.wgmma());
      if (forced) {
        plan = *forced;
        plan.splits = o.splits ? o.splits : choose_splits(plan.variant, m, n, k, sms, plan.rows_per_block);
      }
      if ((plan.variant == W4A16Variant::Decode8 && m > 8) ||
          (plan.variant == W4A16Variant::Decode16 && m > 16) ||
          ((plan.variant == W4A16Variant::Decode32 || plan.variant == W4A16Variant::Xs32) && m > 32))
        continue;
      const double t4 = time_us(
          [&](int i) {
            nvfp4_w4a16_gemm(x.as<bf16_raw>(), m, k, w4[i % c4], y.as<bf16_raw>(), n, 1.0f, ws, s, &plan);
          },
          o, s);
      double t16 = NAN, t8 = NAN, tg = NAN;
      json gemv_splits = json::object();  // the GEMV with each K split, the automatic one in the table
      if (o.baselines && bf16_gemv_supported(m, k, k, x.ptr, w16[0].ptr))
        for (int split : {1, 2, 4}) {
          const double t = time_us(
              [&](int i) {
                bf16_gemv(x.as<bf16_raw>(), m, k, w16[i % c16].as<bf16_raw>(), n, k, y.as<bf16_raw>(), n,
                          split, s);
              },
              o, s);
          gemv_splits[std::to_string(split)] = t;
          if (split == bf16_gemv_split(n, k, sms_total)) tg = t;
        }
      if (o.baselines) {
        t16 = time_us(
            [&](int i) {
              cublas_bf16_gemm(blas, x.as<bf16_raw>(), m, w16[i % c16].as<bf16_raw>(), n, k, y.as<bf16_raw>(),
                               s);
            },
            o, s);
        try {
          t8 = time_us(
              [&](int i) {
                lt.run(LtGemm::Kind::Fp8E4M3, w8[i % c8].ptr, w8scale.ptr, x8.ptr, x8scale.ptr, m, n, k, 1.0f,
                       y.as<bf16_raw>(), s);
              },
              o, s);
        } catch (const Error& e) {
          if (o.verbose) std::fprintf(stderr, "\nfp8 baseline unavailable: %s\n", e.what());
        }
      }
      double tw8a16 = NAN, tw8a8 = NAN, trow = NAN;
      if (o.baselines && fp8_gemv_supported(m, k, k, x.ptr, w8[0].ptr))
        tw8a16 = time_us(
            [&](int i) {
              fp8_w8a16_gemv(x.as<bf16_raw>(), m, k, fp8_weight(i), y.as<bf16_raw>(), n,
                             fp8_gemv_split(m, n, k, sms_total), s);
            },
            o, s);
      if (o.baselines) {
        try {
          // The engine's W8A8: the activations quantized with one scale (two launches), then cuBLASLt.
          if (fp8_quantize_tensor_supported(x.as<bf16_raw>(), k, k))
            tw8a8 = time_us(
                [&](int i) {
                  fp8_quantize_tensor(x.as<bf16_raw>(), m, k, k, x8.as<uint8_t>(), x8state.as<float>(), s);
                  lt.run(LtGemm::Kind::Fp8E4M3, w8[i % c8].ptr, w8scale.ptr, x8.ptr, x8state.ptr, m, n, k,
                         1.0f, y.as<bf16_raw>(), s);
                },
                o, s);
          // Per-row weight scales: per-token activations and the row-wise product.
          trow = time_us(
              [&](int i) {
                fp8_quantize_rows(x.as<bf16_raw>(), m, k, k, x8.as<uint8_t>(), x8rows.as<float>(), s);
                lt.run(LtGemm::Kind::Fp8RowWise, w8[i % c8].ptr, w8rows.ptr, x8.ptr, x8rows.ptr, m, n, k,
                       1.0f, y.as<bf16_raw>(), s);
              },
              o, s);
        } catch (const Error& e) {
          if (o.verbose) std::fprintf(stderr, "\nfp8 W8A8 unavailable: %s\n", e.what());
        }
      }
      const double gbs = fp4_bytes / (t4 * 1e-6) / 1e9;
      const double tflops = 2.0 * m * n * k / (t4 * 1e-6) / 1e12;
      if (progress) std::fprintf(stderr, "\r%80s\r", "");
      std::printf(
          "%-34s %6lld %6lld %5lld %-14s %9.2f %8.0f %5.1f%% %6.1f%% %8.1f %9.2f %9.2f %9.2f %6.2fx %6.2fx "
          "%9.2f "
          "%9.2f %9.2f\n",
          sh.name.c_str(), static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(m),
          (std::string(w4a16_variant_name(plan.variant)) + w4a16_plan_suffix(plan)).c_str(), t4, gbs,
          100.0 * gbs / copy_gbs, 100.0 * t_read / t4, tflops, t16, tg, t8, t16 / t4, t8 / t4, tw8a16, tw8a8,
          trow);
      std::fflush(stdout);
      json row = {{"shape", sh.name},
                  {"n", n},
                  {"k", k},
                  {"m", m},
                  {"variant", w4a16_variant_name(plan.variant)},
                  {"splits", plan.splits},
                  {"rows_per_block", plan.rows_per_block},
                  {"plan", std::string(w4a16_variant_name(plan.variant)) + w4a16_plan_suffix(plan)},
                  {"nvfp4_us", t4},
                  {"weight_gbs", gbs},
                  {"pct_copy", 100.0 * gbs / copy_gbs},
                  {"read_ref_us", t_read},
                  {"pct_read_ref", 100.0 * t_read / t4},
                  {"tflops", tflops}};
      if (!std::isnan(t16)) row["cublas_bf16_us"] = t16, row["speedup_vs_bf16"] = t16 / t4;
      if (!std::isnan(tg)) row["bf16_gemv_us"] = tg, row["bf16_gemv_us_by_split"] = gemv_splits;
      if (!std::isnan(t8)) row["cublaslt_fp8_us"] = t8, row["speedup_vs_fp8"] = t8 / t4;
      if (!std::isnan(tw8a16))
        row["fp8_w8a16_gemv_us"] = tw8a16, row["fp8_w8a16_gbs"] = fp8_bytes / (tw8a16 * 1e-6) / 1e9;
      if (!std::isnan(tw8a8)) row["fp8_w8a8_us"] = tw8a8;
      if (!std::isnan(trow)) row["fp8_w8a8_rowwise_us"] = trow;
      out["rows"].push_back(row);
    }
  }
  CUDA_CHECK(cudaStreamDestroy(s));
  if (!o.json_out.empty()) {
    write_text_file(o.json_out, out.dump(2) + "\n");
  }
  return out;
}

}  // namespace fp4lab
