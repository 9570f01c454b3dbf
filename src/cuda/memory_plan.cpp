#include "cuda/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "common/error.h"
#include "cuda/run_options.h"
#include "cuda/gemm_heuristics.h"
#include "format/nvfp4_tile_layout.h"
#include "model/inspect.h"

namespace fp4lab {

namespace {

uint64_t u(int64_t v) {
  return static_cast<uint64_t>(std::max<int64_t>(0, v));
}

// The tile layout the CUDA backend repacks NVFP4 weights into: N padded to 16 rows, K to 64 columns.
uint64_t nvfp4_tile_bytes(int64_t n, int64_t k) {
  Nvfp4TileGeom g;
  g.n = (n + 15) / 16 * 16;
  g.k = k;
  return u(g.weight_bytes() + g.scale_bytes());
}

// The ModelOpt layout as a checkpoint stores it (and the GPU stages it before the repack).
uint64_t nvfp4_stored_bytes(int64_t n, int64_t k) {
  return static_cast<uint64_t>(nvfp4_weight_bytes(n, k));
}

// Per token, the bytes a layer of each kind allocates in the arena beyond the residual stream (BF16,
// each allocation the runner or the backend makes inside a layer, summed: they are live together at most).
uint64_t layer_scratch_per_token(const ModelConfig& c, LayerKind k) {
  const int64_t h = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads, inter = c.intermediate_size;
  // q, k, v, the attention output, and the fused q|k|v GEMM output the backend splits.
  const int64_t attn = 2 * nh * h + 2 * nkv * h + (nh + 2 * nkv) * h;
  // The gate/up output, the up half, and the fused gate|up GEMM output.
  const int64_t swiglu = 4 * inter;
  const int64_t gn = int64_t{c.n_groups} * c.ssm_state_size;
  const int64_t mamba = int64_t{c.mamba_in_proj_dim()} + 2 * c.mamba_d_inner() + c.mamba_num_heads +
                        2 * int64_t{c.mamba_conv_dim()} + 2 * gn;
  switch (k) {
    case LayerKind::Decoder:
      return u(2 * (attn + swiglu));  // attention then the MLP, one scope
    case LayerKind::Attention:
      return u(2 * attn);
    case LayerKind::Mamba:
      return u(2 * mamba);
    case LayerKind::Mlp:
    case LayerKind::Moe:
      return u(2 * 2 * inter);
  }
  return 0;
}

uint64_t round_up(uint64_t v, uint64_t to) {
  return (v + to - 1) / to * to;
}

}  // namespace

const char* embedding_place_name(EmbeddingPlace p) {
  switch (p) {
    case EmbeddingPlace::Auto:
      return "auto";
    case EmbeddingPlace::Gpu:
      return "gpu";
    case EmbeddingPlace::Host:
      return "host";
  }
  return "?";
}

EmbeddingPlace parse_embedding_place(const std::string& s) {
  if (s == "auto") return EmbeddingPlace::Auto;
  if (s == "gpu") return EmbeddingPlace::Gpu;
  if (s == "host") return EmbeddingPlace::Host;
  throw Error("--embedding must be auto, gpu or host, got '" + s + "'");
}

uint64_t MemoryPlan::buffers_peak() const {
  uint64_t r = 0;
  for (const auto& i : run)
    if (!i.on_host) r += i.bytes;
  return weights_on_gpu() + std::max(r, load_transient);
}

uint64_t MemoryPlan::device_peak() const {
  return buffers_peak() + context_bytes + kLibrariesBytes;
}

uint64_t MemoryPlan::weights_on_gpu() const {
  uint64_t w = 0;
  for (const auto& i : weights)
    if (!i.on_host) w += i.bytes;
  return w;
}

uint64_t MemoryPlan::host_pinned() const {
  uint64_t b = 0;
  for (const auto& v : {weights, run})
    for (const auto& i : v)
      if (i.on_host) b += i.bytes;
  return b;
}

MemoryPlan plan_memory(const MemoryPlanInput& in) {
  const ModelConfig& c = in.config;
  if (c.hidden_size <= 0 || c.layers.empty()) throw Error("memory plan: the model has no layers");
  MemoryPlan p;
  p.context_bytes = in.context_bytes;
  const int64_t hid = c.hidden_size, vocab_rows = in.vocab_rows > 0 ? in.vocab_rows : c.vocab_size;
  const int batch = std::max(1, in.batch);
  const int64_t fwd = std::max<int64_t>({1, in.forward_tokens, batch});
  const int64_t logit_rows = std::max<int64_t>(in.logits_rows > 0 ? in.logits_rows : batch, 1);

  // Weights by kind.
  uint64_t fp4 = 0, fp8 = 0, bf16 = 0, head = 0, transient = 0, largest_bf16_group = 0;
  bool head_fp4 = false;
  std::map<std::string, uint64_t> bf16_groups, fp8_groups;  // q|k|v and gate|up are concatenated at load
  for (const auto& lp : in.plans) {
    const auto& s = lp.spec;
    const uint64_t b = lp.nvfp4 ? nvfp4_tile_bytes(s.n, s.k)
                       : lp.fp8 ? u(s.n * s.k + 4 * s.n)
                                : u(2 * s.n * s.k);
    if (s.role == "lm_head") {  // a tied one is a copy of the embedding, [vocab_rows, hidden] as well
      head = lp.nvfp4 ? nvfp4_tile_bytes(vocab_rows, s.k) : u(2 * vocab_rows * s.k);
      head_fp4 = lp.nvfp4;
    } else if (lp.nvfp4) {
      fp4 += b;
    } else if (lp.fp8) {
      fp8 += b;
      if (fused_scale_group(s) != s.name) fp8_groups[fused_scale_group(s)] += b;
      // Quantized at load: the layer's BF16 source beside its codes.
      if (lp.storage != WeightStorage::FP8) transient = std::max(transient, u(2 * s.n * s.k));
    } else {
      bf16 += b;
      if (fused_scale_group(s) != s.name) bf16_groups[fused_scale_group(s)] += b;
    }
    // Staging while a stored NVFP4 tensor is placed: the ModelOpt layout before the repack (a gate/up pair:
    // both). F16/F32 checkpoints also stage a tensor's source beside its BF16 copy, which the plan does not
    // count (the cap on the buffers still holds the run to the limit).
    if (lp.nvfp4) transient = std::max(transient, 2 * nvfp4_stored_bytes(s.n, s.k));
  }
  for (const auto& [g, b] : bf16_groups) largest_bf16_group = std::max(largest_bf16_group, b);
  for (const auto& [g, b] : fp8_groups) largest_bf16_group = std::max(largest_bf16_group, b);
  // A fusion group quantized at load holds every member's BF16 source until the group's scale is known, and
  // one member's ModelOpt-layout codes beside them while they are repacked. (A checkpoint that stores NVFP4
  // has no such group; presets and BF16 checkpoints do, the lm_head under --lm-head nvfp4 among them.)
  // A layer alone in its group and larger than kQuantizeChunkBytes is quantized in chunks of that size.
  struct Group {
    uint64_t src = 0, codes = 0;  // BF16 sources, the largest member's codes
    int members = 0;
  };
  std::map<std::string, Group> fp4_groups;
  for (const auto& lp : in.plans)
    if (lp.nvfp4 && !is_nvfp4_storage(lp.storage)) {
      Group& g = fp4_groups[fused_scale_group(lp.spec)];
      g.src += u(2 * lp.spec.n * lp.spec.k);
      g.codes = std::max(g.codes, nvfp4_stored_bytes(lp.spec.n, lp.spec.k));
      ++g.members;
    }
  for (const auto& [name, g] : fp4_groups)
    transient =
        std::max(transient, (g.members == 1 ? std::min(g.src, kQuantizeChunkBytes) : g.src) + g.codes);
  p.load_transient = std::max(transient, largest_bf16_group);

  uint64_t small = u(4 * hid);  // final norm
  for (size_t li = 0; li < c.layers.size(); ++li) {
    small += u(4 * (2 * hid + 2 * c.head_dim));  // norms, q/k norms
    if (c.layers[li] == LayerKind::Mamba)
      small += u(4 * (int64_t{c.mamba_conv_dim()} * (c.conv_kernel + 1) + 3 * c.mamba_num_heads +
                      c.mamba_d_inner()));
  }
  small += u(4 * int64_t{c.head_dim});  // RoPE inverse frequencies
  if (fp4) p.weights.push_back({"linear weights, NVFP4", fp4, false});
  if (fp8) p.weights.push_back({"linear weights, FP8", fp8, false});
  if (bf16) p.weights.push_back({"linear weights, BF16", bf16, false});
  p.weights.push_back({head_fp4 ? "lm_head, NVFP4" : "lm_head, BF16", head, false});
  p.weights.push_back({in.embedding_on_host ? "embedding, BF16 (pinned host memory)" : "embedding, BF16",
                       u(2 * vocab_rows * hid), in.embedding_on_host});
  p.weights.push_back({"norms, conv, SSM parameters (FP32)", small, false});

  // Per sequence: KV cache of every attention layer at full capacity, conv and SSM state of every Mamba
  // layer.
  const uint64_t st = sequence_state_bytes(c, std::max(0, in.tokens_per_sequence));
  p.state_per_sequence = st;
  p.run.push_back({"KV cache and SSM state, " + std::to_string(batch) + " x " + format_bytes(st),
                   st * static_cast<uint64_t>(batch), false});

  // The arena: the residual stream (FP32) and two BF16 [T, hidden] tensors live through the forward, one
  // layer's scratch at a time (the runner rewinds it per layer), then the scored rows.
  uint64_t per_layer = 0;
  for (const auto k : c.layers) per_layer = std::max(per_layer, layer_scratch_per_token(c, k));
  const uint64_t tail =
      u(logit_rows * (4 * hid + 2 * hid + 2 * hid)) + (head_fp4 ? u(logit_rows * 2 * vocab_rows) : 0);
  const uint64_t arena = round_up(u(fwd) * (u(8 * hid) + per_layer) + tail + (64u << 10), 1u << 20);
  p.arena_bytes = std::max<uint64_t>(arena, 32ull << 20);
  p.run.push_back({"activations (" + std::to_string(fwd) + "-token forward)", p.arena_bytes, false});

  // FP32 logits of the scored rows and the device sampling buffers (per-part maxima and top-k candidates).
  const uint64_t parts = std::min<uint64_t>(256, (u(c.vocab_size) + 4095) / 4096);
  p.run.push_back({"logits (" + std::to_string(logit_rows) + " rows) and sampling buffers",
                   u(logit_rows) * (u(std::max<int64_t>(vocab_rows, c.vocab_size)) * 4 + parts * 524 + 64),
                   false});

  // Workspaces: cuBLAS, token ids, the W4A16 GEMMs' (split-K partials, dequantized weight for the large-M
  // variant, gate|up scratch), split decode attention, the chunked SSD scan.
  uint64_t gemm = 0, dequant = 0, partials = 0, swiglu = 0, b_images = 0;
  // The rows each layer sees: every decode batch size and the largest forward; the lm_head only the scored
  // rows.
  const auto rows_seen = [](int64_t most, int64_t also) {
    std::vector<int64_t> ms;
    for (int64_t m = 1; m <= most; m = m < 8 ? m + 1 : m * 2) ms.push_back(m);
    ms.push_back(most);
    ms.push_back(also);
    // Where the heuristic changes kernels (gemm_heuristics.cpp) a smaller forward than the largest can need a
    // workspace the largest does not (the wgmma B images exist only at 256-511 rows): each band's edges too.
    for (int64_t t : {32, 33, 64, 65, 255, 256, 511, 512})
      if (t <= also) ms.push_back(t);
    return ms;
  };
  const std::vector<int64_t> layer_ms = rows_seen(batch, fwd), head_ms = rows_seen(logit_rows, logit_rows);
  for (const auto& lp : in.plans) {
    if (!lp.nvfp4) continue;
    const int64_t n16 = (lp.spec.n + 15) / 16 * 16;
    for (const int64_t m : lp.spec.role == "lm_head" ? head_ms : layer_ms) {
      const W4A16Plan gp = choose_w4a16_plan(m, n16, lp.spec.k, in.sm_count, in.wgmma);
      b_images = std::max(b_images, u(wgmma_b_image_bytes(gp, m, lp.spec.k)));
      if (gp.variant == W4A16Variant::DequantBlas) dequant = std::max(dequant, u(2 * n16 * lp.spec.k));
      if (gp.splits > 1)
        partials = std::max(partials, u(4 * gp.splits * m * n16) + u(4 * n16 * (m + 63) / 64));
      if (lp.spec.role == "mlp.gate" && !is_decode_variant(gp.variant))
        swiglu = std::max(swiglu, u(2 * m * 2 * lp.spec.n));
    }
  }
  // FP8 layers past the GEMV's rows: the quantized activations (W8A8) or a BF16 copy of the weight.
  // A joined q/k/v or gate/up is dequantized whole (decode batches past the GEMV's rows).
  uint64_t fp8_act = 0;
  std::map<std::string, uint64_t> fp8_joined;  // BF16 bytes of each group's joined weight
  if (fwd > in.fp8_gemv_rows)
    for (const auto& lp : in.plans) {
      if (!lp.fp8) continue;
      if (in.fp8_w8a8)  // the activations' codes and scales, and cuBLASLt's workspace
        fp8_act = std::max(fp8_act, u(fwd * lp.spec.k) + u(4 * fwd) + 256 + kLtGemmWorkspaceBytes);
      else
        dequant = std::max(dequant, fp8_joined[fused_scale_group(lp.spec)] += u(2 * lp.spec.n * lp.spec.k));
    }
  gemm = dequant + partials + swiglu + b_images + fp8_act;
  uint64_t attn = 0;
  if (c.num_heads > 0)
    attn = u(batch) * u(c.num_heads) * 32 * u(c.head_dim + 2) * 4 + u(batch) * u(c.num_kv_heads) * 4;
  uint64_t ssd = 0;
  if (c.arch == Arch::NemotronH && c.chunk_size > 0) {
    const int64_t chunk = c.chunk_size, group = std::clamp<int64_t>(2048 / chunk, 1, 64);
    const int64_t chunks = std::min<int64_t>(group, (fwd + chunk - 1) / chunk + batch);
    const int64_t heads = c.mamba_num_heads;
    ssd = u(4 * ((heads * chunks * chunk + 3) / 4 * 4 + heads * chunks * c.mamba_head_dim * c.ssm_state_size +
                 int64_t{c.n_groups} * chunks * chunk * chunk));
  }
  p.run.push_back({"workspaces (cuBLAS, GEMM, attention, scan)",
                   (32ull << 20) + std::max<uint64_t>(1u << 20, u(4 * fwd)) + gemm + attn + ssd, false});
  return p;
}

uint64_t plan_headroom(uint64_t limit) {
  return std::max<uint64_t>(128ull << 20, limit / 50);
}

MemoryFit fit_memory(MemoryPlanInput in, uint64_t limit, EmbeddingPlace embedding,
                     bool may_quantize_lm_head) {
  const uint64_t room = limit > plan_headroom(limit) ? limit - plan_headroom(limit) : 0;
  MemoryFit f;
  in.embedding_on_host = embedding == EmbeddingPlace::Host;
  f.plan = plan_memory(in);
  f.embedding_on_host = in.embedding_on_host;
  f.forward_tokens = in.forward_tokens;
  if (f.embedding_on_host) f.choices.push_back("embedding in pinned host memory (--embedding host)");
  if (!limit || f.plan.device_peak() <= room) return f;
  if (embedding == EmbeddingPlace::Auto) {
    in.embedding_on_host = f.embedding_on_host = true;
    f.plan = plan_memory(in);
    f.choices.push_back(
        "embedding in pinned host memory: " + format_bytes(f.plan.host_pinned()) +
        " off the GPU, one row per token over PCIe (--embedding auto; --embedding gpu forbids it)");
    if (f.plan.device_peak() <= room) return f;
  }
  if (in.forward_tokens > std::max(1, in.longest_prompt)) {
    const int from = in.forward_tokens;
    while (in.forward_tokens > std::max(1, in.longest_prompt) && f.plan.device_peak() > room) {
      in.forward_tokens = std::max(std::max(1, in.longest_prompt), in.forward_tokens / 2);
      f.plan = plan_memory(in);
    }
    f.forward_tokens = in.forward_tokens;
    f.prefill_lowered = true;
    f.choices.push_back("prefill passes of at most " + std::to_string(in.forward_tokens) +
                        " tokens instead of " + std::to_string(from) +
                        " (smaller activations and GEMM workspaces; --prefill-tokens)");
    if (f.plan.device_peak() <= room) return f;
  }
  if (may_quantize_lm_head)
    for (auto& lp : in.plans)
      if (lp.spec.role == "lm_head" && !lp.nvfp4 && lp.spec.k % 16 == 0) {
        const uint64_t before = f.plan.weights_on_gpu();
        lp.nvfp4 = true;
        lp.reason = "--lm-head auto: quantized at load to fit the GPU memory limit";
        f.plan = plan_memory(in);
        f.lm_head_nvfp4 = true;
        f.choices.push_back(
            "lm_head quantized to NVFP4 at load: " + format_bytes(before - f.plan.weights_on_gpu()) +
            " less, at an accuracy cost (--lm-head auto; --lm-head bf16 forbids it)");
        if (f.plan.device_peak() <= room) return f;
      }
  // Does not fit: say by how much, what is largest, and what would help.
  std::string what = "the plan needs " + format_bytes(f.plan.device_peak()) +
                     " of GPU memory, over the limit of " + format_bytes(limit) + " less " +
                     format_bytes(limit - room) + " of headroom by " +
                     format_bytes(f.plan.device_peak() - room) + " (";
  bool first = true;
  for (const auto& v : {f.plan.weights, f.plan.run})
    for (const auto& i : v)
      if (!i.on_host) {
        what += (first ? "" : ", ") + i.name + " " + format_bytes(i.bytes);
        first = false;
      }
  what += ", CUDA context " + format_bytes(f.plan.context_bytes) + ", modules and libraries " +
          format_bytes(kLibrariesBytes) + ")";
  std::vector<std::string> help;
  if (!f.embedding_on_host) help.push_back("--embedding host");
  if (std::none_of(in.plans.begin(), in.plans.end(),
                   [](const LinearPlan& lp) { return lp.spec.role == "lm_head" && lp.nvfp4; }))
    help.push_back("--lm-head nvfp4");
  if (in.batch > 1) help.push_back("a smaller --batch");
  if (in.forward_tokens > std::max(1, in.longest_prompt)) help.push_back("a smaller --prefill-tokens");
  help.push_back("a 4-bit checkpoint or --quant nvfp4");
  help.push_back("a larger --gpu-memory-limit");
  what += "; options: ";
  for (size_t i = 0; i < help.size(); ++i) what += (i ? ", " : "") + help[i];
  throw Error(what);
}

uint64_t parse_byte_size(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (const std::exception&) {
    throw Error("'" + s + "' is not a size (e.g. 7.5GiB, 8000MB, 8e9)");
  }
  std::string unit = s.substr(pos);
  for (auto& ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const std::map<std::string, double> units = {{"", 1},
                                                      {"b", 1},
                                                      {"kib", 1024.0},
                                                      {"mib", 1048576.0},
                                                      {"gib", 1073741824.0},
                                                      {"kb", 1e3},
                                                      {"mb", 1e6},
                                                      {"gb", 1e9},
                                                      {"k", 1024.0},
                                                      {"m", 1048576.0},
                                                      {"g", 1073741824.0},
                                                      {"tib", 1099511627776.0},
                                                      {"tb", 1e12}};
  const auto it = units.find(unit);
  if (it == units.end())
    throw Error("'" + s + "': unknown size unit '" + unit + "' (GiB, MiB, KiB, GB, MB, KB)");
  const double b = v * it->second;
  if (!std::isfinite(b) || b < 1 || b > 1e15) throw Error("'" + s + "' is not a usable size");
  return static_cast<uint64_t>(b);
}

std::string format_bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ull << 30));
  else if (b >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.0f MiB", static_cast<double>(b) / (1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%.0f KiB", static_cast<double>(b) / 1024.0);
  return buf;
}

std::string memory_plan_table(const MemoryPlan& p, uint64_t limit) {
  std::string out;
  char line[256];
  auto row = [&](const std::string& name, uint64_t b, const char* where) {
    std::snprintf(line, sizeof line, "  %-52s %12s  %s\n", name.c_str(), format_bytes(b).c_str(), where);
    out += line;
  };
  for (const auto& i : p.weights) row(i.name, i.bytes, i.on_host ? "host" : "GPU");
  for (const auto& i : p.run) row(i.name, i.bytes, i.on_host ? "host" : "GPU");
  row("load staging (largest tensor, freed after the load)", p.load_transient, "GPU, transient");
  row("CUDA context", p.context_bytes, "GPU");
  row("CUDA modules and libraries loaded during the run", kLibrariesBytes, "GPU");
  std::snprintf(line, sizeof line, "  peak on the GPU %s%s%s; pinned host memory %s\n",
                format_bytes(p.device_peak()).c_str(), limit ? ", limit " : "",
                limit ? format_bytes(limit).c_str() : "", format_bytes(p.host_pinned()).c_str());
  out += line;
  return out;
}

MemoryShape memory_shape_for(const std::vector<int>& prompt_lengths, int max_new_tokens, int batch,
                             int prefill_tokens) {
  MemoryShape m;
  m.batch = std::max(1, std::min<int>(batch, static_cast<int>(std::max<size_t>(1, prompt_lengths.size()))));
  std::vector<int> sorted = prompt_lengths;
  std::sort(sorted.rbegin(), sorted.rend());
  const int64_t longest = sorted.empty() ? 1 : std::max(1, sorted[0]);
  int64_t sum = 0;  // the longest `batch` prompts: the most one admission can prefill together
  for (size_t i = 0; i < sorted.size() && i < static_cast<size_t>(m.batch); ++i) sum += sorted[i];
  m.tokens_per_sequence = static_cast<int>(longest + std::max(0, max_new_tokens));
  // Prompts admitted together share a pass while their tokens fit the budget.
  m.forward_tokens =
      static_cast<int>(std::max<int64_t>(longest, std::min<int64_t>(std::max(0, prefill_tokens), sum)));
  m.longest_prompt = static_cast<int>(longest);
  return m;
}

std::string MemoryReport::summary() const {
  std::string s = "GPU memory: plan " + format_bytes(fit.plan.device_peak()) + " (" +
                  format_bytes(fit.plan.buffers_peak()) + " buffers + " +
                  format_bytes(fit.plan.context_bytes) +
                  (context_measured ? " context, measured" : " context, estimated") + "), limit " +
                  format_bytes(limit) + (limit_from_flag ? " (--gpu-memory-limit)" : " (free memory)") +
                  "; buffers peaked at " + format_bytes(buffers_peak);
  if (process_peak) s += ", the process at " + format_bytes(process_peak) + " (NVML)";
  for (const auto& c : fit.choices) s += "; " + c;
  if (arena_growths)
    s += "; the activation arena grew " + std::to_string(arena_growths) + " time(s) past its plan";
  return s;
}

void echo_cuda_run_options(nlohmann::json& options, const CudaRunOptions& o) {
  options["tp"] = o.tp;
  options["no_graphs"] = !o.graphs;
  options["attn_splits"] = o.attn_splits;
  options["pdl"] = o.pdl;
  options["fused_mamba"] = o.fused_mamba;
  options["fused_rope"] = o.fused_rope;
  options["bf16_gemv_rows"] = o.bf16_gemv_rows;
  options["wgmma"] = o.wgmma;
  options["fp8_gemv_rows"] = o.fp8_gemv_rows;
  options["fp8_w8a8"] = o.fp8_w8a8;
  options["gpu_memory_limit"] =
      o.gpu_memory_limit ? nlohmann::json(o.gpu_memory_limit) : nlohmann::json(nullptr);
  options["embedding"] = embedding_place_name(o.embedding);
  options["lm_head"] = lm_head_mode_name(o.lm_head);
}

}  // namespace fp4lab
