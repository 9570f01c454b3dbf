#include "report/roofline.h"

#include "common/error.h"

#include <algorithm>
#include <cctype>

#include "model/inspect.h"

namespace fp4lab {

DecodeBytes decode_bytes(const ModelConfig& c, const std::vector<LinearPlan>& plans, double context) {
  DecodeBytes b;
  for (const auto& p : plans) {
    b.weights += linear_weight_bytes(p);
    b.flops_per_token += 2.0 * p.spec.n * p.spec.k;
  }
  b.embedding = 2.0 * c.hidden_size;
  for (auto k : c.layers) {
    if (k == LayerKind::Decoder || k == LayerKind::Attention)
      b.kv_cache += 2.0 * context * c.num_kv_heads * c.head_dim * 2.0;
    if (k == LayerKind::Mamba)
      b.ssm_state += 2.0 * 4.0 *
                     (double(c.mamba_num_heads) * c.mamba_head_dim * c.ssm_state_size +
                      double(c.mamba_conv_dim()) * (c.conv_kernel - 1));
  }
  return b;
}

DecodeBytes decode_bytes_tp(const ModelConfig& c, const std::vector<LinearPlan>& plans, double context,
                            int tp) {
  if (tp < 1) throw Error("tensor parallelism over " + std::to_string(tp) + " GPUs");
  DecodeBytes b = decode_bytes(c, plans, context);
  if (tp == 1) return b;
  b.weights /= tp;
  b.kv_cache /= tp;
  b.ssm_state /= tp;  // Mamba heads are split
  b.flops_per_token /= tp;
  b.tp = tp;
  // One all-reduce per row-parallel output: o and down of a decoder layer, the single output of a Nemotron-H
  // attention, MLP or Mamba layer; and one after the embedding lookup (each rank holds a vocab shard; that
  // one sums the FP32 residual, counted here at the BF16 size since a row is latency-bound).
  for (auto k : c.layers) b.allreduces += k == LayerKind::Decoder ? 2 : 1;
  b.allreduces += 1;
  b.allreduce_bytes = 2.0 * c.hidden_size;
  b.allgather_bytes = 4.0 * c.vocab_size;
  return b;
}

const CommSpec& comm_spec(const std::string& link) {
  // NVLink: ~370 GB/s effective bus bandwidth on H100 NVLink (450 GB/s line rate less ~20% protocol), and a
  // fixed cost per small all-reduce measured by fp4lab itself: on 2 x H200 (NV18, NCCL, NVLS off, decode
  // steps in CUDA graphs) the Llama-3.3-70B preset's TP=2 step exceeds half the TP=1 step by 3.5 ms over 162
  // collectives, ~20 us each (an upper bound: it also holds the smaller GEMVs' lower efficiency;
  // docs/perf/tp-h200x2.md). PCIe Gen5 x16: 64 GB/s raw, ~50 GB/s assumed effective, and a higher fixed cost
  // through the host bridge.
  static const CommSpec nvlink{
      "nvlink", 20.0, 370.0,
      "NVIDIA/nccl-tests#212 (busBw ~370 GB/s on H100 NVLink); latency measured by fp4lab on 2 x H200 "
      "(docs/perf/tp-h200x2.md)"};
  static const CommSpec pcie{"pcie", 20.0, 50.0,
                             "PCIe Gen5 x16 line rate 64 GB/s; effective bandwidth and latency assumed"};
  if (link == "nvlink") return nvlink;
  if (link == "pcie") return pcie;
  throw Error("unknown GPU link '" + link + "' (nvlink or pcie)");
}

const std::vector<GpuSpec>& datasheet_gpus() {
  // Bandwidth is the headline datasheet figure; BF16 is dense tensor-core throughput (no sparsity). Consumer
  // figures are the vendor's published FP16/BF16-with-FP32-accumulate numbers and are approximate.
  static const std::vector<GpuSpec> g = {
      {"A100 40GB SXM", 1555, 312, 8, 0, 40, "NVIDIA A100 Tensor Core GPU datasheet"},
      {"A100 80GB SXM", 2039, 312, 8, 0, 80, "NVIDIA A100 Tensor Core GPU datasheet"},
      {"H100 SXM", 3350, 989, 9, 0, 80, "NVIDIA H100 Tensor Core GPU datasheet"},
      {"H100 PCIe", 2000, 756, 9, 0, 80, "NVIDIA H100 Tensor Core GPU datasheet"},
      {"H200", 4800, 989, 9, 0, 141, "NVIDIA H200 Tensor Core GPU datasheet"},
      {"B200", 8000, 2250, 10, 0, 180, "NVIDIA DGX B200 / HGX B200 datasheet (per GPU)"},
      {"RTX 4060 Laptop", 256, 45, 8, 9, 8,
       "NVIDIA GeForce RTX 4060 Laptop GPU specifications (approximate tensor rate)"},
      {"RTX 3060 12GB", 360, 25, 8, 6, 12,
       "NVIDIA GeForce RTX 3060 specifications (bandwidth); tensor rate approximate: the GA102 whitepaper's "
       "FP16/FP32-accumulate rate per SM and clock x 28 SMs x 1.78 GHz"},
      {"RTX 4080", 717, 97, 8, 9, 16, "NVIDIA Ada Lovelace architecture whitepaper (RTX 4080 16GB)"},
      {"RTX 4090", 1008, 165, 8, 9, 24, "NVIDIA Ada Lovelace architecture whitepaper (RTX 4090)"},
      {"RTX 5090", 1792, 210, 12, 0, 32,
       "NVIDIA RTX Blackwell GPU architecture whitepaper (RTX 5090, approximate)"},
      {"RTX Pro 6000 Ada", 960, 182, 8, 9, 48,
       "NVIDIA RTX 6000 Ada Generation datasheet (approximate tensor rate)"},
      {"RTX Pro 6000 Blackwell", 1792, 250, 12, 0, 96,
       "NVIDIA RTX PRO 6000 Blackwell datasheet (approximate tensor rate)"},
  };
  return g;
}

const GpuSpec* find_gpu_spec(const std::string& name) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return s;
  };
  const std::string n = lower(name);
  for (const auto& g : datasheet_gpus())
    if (lower(g.name) == n) return &g;
  for (const auto& g : datasheet_gpus())
    if (lower(g.name).find(n) != std::string::npos) return &g;
  return nullptr;
}

}  // namespace fp4lab
