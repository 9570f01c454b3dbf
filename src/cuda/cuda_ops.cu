// CUDA backend kernels for the engine's element-wise, normalization, attention and Mamba-2 ops. Each has its CPU
// twin in src/cpu/ops.cpp; tests/test_engine_gpu.cpp compares whole models against the CPU backend.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "cpu/ops.h"
#include "cuda/baseline_gemm.h"
#include "cuda/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/random_fill.h"

namespace fp4lab {

namespace {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float silu(float v) { return v / (1.0f + __expf(-v)); }

unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535 * 4)));
}

// Block-wide sum for blockDim.x <= 1024 (multiple of 32).
__device__ float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  __syncthreads();
  if (l == 0) part[w] = v;
  __syncthreads();
  float s = 0.0f;
  for (int i = 0; i < static_cast<int>((blockDim.x + 31) / 32); ++i) s += part[i];
  return s;
}

__global__ void embed_kernel(const int* tokens, int t, const bf16* table, int64_t h, bf16* x) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < t * h; i += int64_t{gridDim.x} * blockDim.x)
    x[i] = table[static_cast<int64_t>(tokens[i / h]) * h + i % h];
}

// One block per row: y = w * x / sqrt(mean(x^2) + eps).
__global__ void rmsnorm_kernel(const bf16* x, const float* w, int64_t width, float eps, bf16* y) {
  const bf16* xr = x + blockIdx.x * width;
  bf16* yr = y + blockIdx.x * width;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = ld(xr + i);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(width) + eps);
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) yr[i] = __float2bfloat16_rn(w[i] * (ld(xr + i) * inv));
}

__global__ void rope_kernel(bf16* x, int t, int heads, int hd, int pos0, const float* inv_freq) {
  const int half = hd / 2;
  const int64_t n = static_cast<int64_t>(t) * heads * half;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int f = static_cast<int>(i % half);
    const int64_t th = i / half;
    const int tt = static_cast<int>(th / heads);
    float s, c;
    sincosf(static_cast<float>(pos0 + tt) * inv_freq[f], &s, &c);
    bf16* v = x + th * hd;
    const float a = ld(v + f), b = ld(v + f + half);
    v[f] = __float2bfloat16_rn(a * c - b * s);
    v[f + half] = __float2bfloat16_rn(b * c + a * s);
  }
}

// One block per (query token, head); scores for all visible keys in shared memory (FP32 softmax).
__global__ void attention_kernel(const bf16* q, const bf16* kc, const bf16* vc, int nh, int nkv, int hd, int pos0,
                                 bf16* out) {
  extern __shared__ float sm[];
  const int tt = blockIdx.x / nh, h = blockIdx.x % nh, kh = h / (nh / nkv);
  const int len = pos0 + tt + 1;
  float* qs = sm;        // [hd]
  float* p = sm + hd;    // [len]
  const bf16* qv = q + (static_cast<int64_t>(tt) * nh + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = ld(qv + d);
  __syncthreads();
  const float scale = rsqrtf(static_cast<float>(hd));
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < len; j += blockDim.x) {
    const bf16* kv = kc + (static_cast<int64_t>(j) * nkv + kh) * hd;
    float s = 0.0f;
    for (int d = 0; d < hd; ++d) s += qs[d] * ld(kv + d);
    s *= scale;
    p[j] = s;
    mx = fmaxf(mx, s);
  }
  __shared__ float red[32];
  for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = mx;
  __syncthreads();
  mx = -INFINITY;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) mx = fmaxf(mx, red[i]);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < len; j += blockDim.x) {
    const float e = __expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  sum = block_sum(sum);  // also a barrier: p[] is complete
  const float inv = 1.0f / sum;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < len; ++j) acc += p[j] * ld(vc + (static_cast<int64_t>(j) * nkv + kh) * hd + d);
    out[(static_cast<int64_t>(tt) * nh + h) * hd + d] = __float2bfloat16_rn(acc * inv);
  }
}

__global__ void add_kernel(bf16* x, const bf16* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    x[i] = __float2bfloat16_rn(ld(x + i) + ld(y + i));
}

__global__ void silu_mul_kernel(const bf16* g, const bf16* u, bf16* o, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    o[i] = __float2bfloat16_rn(silu(ld(g + i)) * ld(u + i));
}

__global__ void relu2_kernel(bf16* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = fmaxf(ld(x + i), 0.0f);
    x[i] = __float2bfloat16_rn(v * v);
  }
}

__global__ void columns_kernel(const bf16* src, int64_t rows, int64_t scols, int64_t col0, bf16* dst, int64_t dcols) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * dcols; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = src[(i / dcols) * scols + col0 + i % dcols];
}

__global__ void softplus_dt_kernel(const bf16* proj, int64_t rows, int64_t pcols, int64_t col0, const float* bias,
                                   float lo, float hi, bf16* dt, int64_t nh) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * nh; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = ld(proj + (i / nh) * pcols + col0 + i % nh) + bias[i % nh];
    const float sp = v > 20.0f ? v : log1pf(__expf(v));
    dt[i] = __float2bfloat16_rn(fminf(fmaxf(sp, lo), hi));
  }
}

// One thread per channel, tokens in order, rolling FP32 state of the last kernel-1 inputs.
__global__ void conv1d_silu_kernel(bf16* xbc, int t, int ch, int kernel, const float* w, const float* b, float* state) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= ch) return;
  const int hist = kernel - 1;
  float win[8];
  for (int j = 0; j < hist; ++j) win[j] = state[c * hist + j];
  for (int i = 0; i < t; ++i) {
    bf16* v = xbc + static_cast<int64_t>(i) * ch + c;
    win[hist] = ld(v);
    float acc = b ? b[c] : 0.0f;
    for (int j = 0; j < kernel; ++j) acc += w[c * kernel + j] * win[j];
    for (int j = 0; j < hist; ++j) win[j] = win[j + 1];
    *v = __float2bfloat16_rn(silu(acc));
  }
  for (int j = 0; j < hist; ++j) state[c * hist + j] = win[j];
}

// Selective scan, one block per (head, channel p), one thread per state entry n (state kept in a register across
// tokens). y[t, h, p] = sum_n S[p, n] C[t, g, n] + D x.
__global__ void ssm_scan_kernel(const bf16* x, const bf16* b, const bf16* c, const bf16* dt, const float* a_log,
                                const float* d, int t, int heads, int hp, int ns, int groups, float* state, bf16* y) {
  const int h = blockIdx.x / hp, p = blockIdx.x % hp, n = threadIdx.x;
  const int g = h / (heads / groups);
  const bool on = n < ns;
  float* sp = state + (static_cast<int64_t>(h) * hp + p) * ns + n;
  float S = on ? *sp : 0.0f;
  const float a = -__expf(a_log[h]);
  const int64_t xw = static_cast<int64_t>(heads) * hp, bw = static_cast<int64_t>(groups) * ns;
  for (int i = 0; i < t; ++i) {
    const float dth = ld(dt + static_cast<int64_t>(i) * heads + h);
    const float xv = ld(x + i * xw + static_cast<int64_t>(h) * hp + p);
    float contrib = 0.0f;
    if (on) {
      S = S * __expf(dth * a) + dth * xv * ld(b + i * bw + static_cast<int64_t>(g) * ns + n);
      contrib = S * ld(c + i * bw + static_cast<int64_t>(g) * ns + n);
    }
    const float sum = block_sum(contrib);
    if (threadIdx.x == 0) y[i * xw + static_cast<int64_t>(h) * hp + p] = __float2bfloat16_rn(sum + d[h] * xv);
  }
  if (on) *sp = S;
}

// One block per (row, group): y = rmsnorm(y * silu(z)) * w over the group's channels.
__global__ void gated_rmsnorm_kernel(bf16* y, const bf16* z, const float* w, int64_t width, int groups, float eps) {
  const int64_t row = blockIdx.x / groups, g = blockIdx.x % groups, gs = width / groups;
  bf16* yr = y + row * width + g * gs;
  const bf16* zr = z + row * width + g * gs;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < gs; i += blockDim.x) {
    const float v = ld(yr + i) * silu(ld(zr + i));
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(gs) + eps);
  for (int64_t i = threadIdx.x; i < gs; i += blockDim.x) {
    const float v = ld(yr + i) * silu(ld(zr + i));
    yr[i] = __float2bfloat16_rn(w[g * gs + i] * (v * inv));
  }
}

__global__ void bias_kernel(bf16* y, const float* bias, int64_t rows, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * n; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = __float2bfloat16_rn(ld(y + i) + bias[i % n]);
}

__global__ void f32_to_bf16_kernel(const float* src, int64_t n, bf16* dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

}  // namespace

CudaOps::CudaOps(int device) : device_(device) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreate(&stream_));
}

CudaOps::~CudaOps() {
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaOps::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

const float* CudaOps::dev_f32(const std::vector<float>& host) {
  auto it = f32_.find(host.data());
  if (it != f32_.end()) return it->second.as<float>();
  if (host.empty()) throw Error("internal: an empty weight vector reached the CUDA backend");
  DeviceBuffer b(host.size() * 4);
  CUDA_CHECK(cudaMemcpyAsync(b.ptr, host.data(), host.size() * 4, cudaMemcpyHostToDevice, stream_));
  weight_bytes_ += b.bytes;
  return (f32_[host.data()] = std::move(b)).as<float>();
}

void CudaOps::upload_linear(const LinearWeight& lw, const LinearPlan& plan, uint64_t gen_seed, bool synthetic) {
  DevLinear d;
  d.n = lw.n;
  d.k = lw.k;
  d.nvfp4 = plan.nvfp4;
  // Source in BF16 on the device: the host tensor, or generated from the seed (presets).
  DeviceBuffer src(static_cast<size_t>(lw.n * lw.k * 2));
  if (synthetic) {
    fill_random_bf16(src.as<uint16_t>(), lw.n * lw.k, gen_seed, 0.02f, 0, stream_);
  } else {
    DeviceBuffer f(static_cast<size_t>(lw.n * lw.k * 4));
    CUDA_CHECK(cudaMemcpyAsync(f.ptr, lw.w.data(), f.bytes, cudaMemcpyHostToDevice, stream_));
    f32_to_bf16_kernel<<<blocks_for(lw.n * lw.k, 256), 256, 0, stream_>>>(f.as<float>(), lw.n * lw.k, src.as<bf16>());
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  if (d.nvfp4) {
    if (lw.nvfp4) {
      // Exactly the host's NVFP4 codes and scales (checkpoint or quantized at load).
      auto pk = DeviceBuffer(lw.nvfp4->packed.size()), sc = DeviceBuffer(lw.nvfp4->block_scales.size());
      CUDA_CHECK(cudaMemcpyAsync(pk.ptr, lw.nvfp4->packed.data(), pk.bytes, cudaMemcpyHostToDevice, stream_));
      CUDA_CHECK(cudaMemcpyAsync(sc.ptr, lw.nvfp4->block_scales.data(), sc.bytes, cudaMemcpyHostToDevice, stream_));
      d.fp4 = nvfp4_repack_device(pk.as<uint8_t>(), sc.as<uint8_t>(), lw.n, lw.k, lw.nvfp4->tensor_scale, stream_);
      CUDA_CHECK(cudaStreamSynchronize(stream_));
    } else {
      // Quantized on the device (presets): same codec as the host, per-tensor amax scale.
      DeviceBuffer pk(static_cast<size_t>(lw.n * lw.k / 2)), sc(static_cast<size_t>(lw.n * lw.k / 16)), ts(4);
      nvfp4_quantize_act(src.as<bf16_raw>(), lw.n, lw.k, pk.as<uint8_t>(), sc.as<uint8_t>(), ts.as<float>(), true, stream_);
      float h = 0;
      CUDA_CHECK(cudaMemcpyAsync(&h, ts.ptr, 4, cudaMemcpyDeviceToHost, stream_));
      CUDA_CHECK(cudaStreamSynchronize(stream_));
      d.fp4 = nvfp4_repack_device(pk.as<uint8_t>(), sc.as<uint8_t>(), lw.n, lw.k, h, stream_);
      CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    weight_bytes_ += d.fp4.bytes();
  } else {
    d.bf16 = std::move(src);
    weight_bytes_ += d.bf16.bytes;
  }
  if (!lw.bias.empty()) {
    d.bias = DeviceBuffer(lw.bias.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(d.bias.ptr, lw.bias.data(), d.bias.bytes, cudaMemcpyHostToDevice, stream_));
  }
  linears_[&lw] = std::move(d);
}

void CudaOps::prepare(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  hidden_ = c.hidden_size;
  const bool synth = w.synthetic && !w.materialized;
  // Plan: weights as they will sit on the GPU, against the free memory, before allocating.
  double need = 2.0 * c.vocab_size * c.hidden_size;
  for (const auto& p : w.plans) {
    if (p.spec.role == "lm_head" && c.tie_embeddings) continue;
    need += p.nvfp4 ? p.spec.n * p.spec.k * 0.5625 : 2.0 * p.spec.n * p.spec.k;
  }
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (need + (1ull << 30) > static_cast<double>(free_b))
    throw Error("model needs " + std::to_string(need / 1e9).substr(0, 5) + " GB of weights on the GPU (plus ~1 GB of "
                "workspace) but only " + std::to_string(free_b / 1e9).substr(0, 5) + " GB are free");
  embed_ = DeviceBuffer(static_cast<size_t>(c.vocab_size) * c.hidden_size * 2);
  if (synth) {
    fill_random_bf16(embed_.as<uint16_t>(), int64_t{c.vocab_size} * c.hidden_size, w.seed * 7 + 1, 0.02f, 0, stream_);
  } else {
    DeviceBuffer f(w.embed.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(f.ptr, w.embed.data(), f.bytes, cudaMemcpyHostToDevice, stream_));
    f32_to_bf16_kernel<<<blocks_for(static_cast<int64_t>(w.embed.size()), 256), 256, 0, stream_>>>(
        f.as<float>(), static_cast<int64_t>(w.embed.size()), embed_.as<bf16>());
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  weight_bytes_ += embed_.bytes;
  uint64_t gen = w.seed * 1000003ull + 17;
  for (const auto& p : w.plans) {
    const LinearWeight* lw = nullptr;
    if (p.spec.role == "lm_head") lw = &w.lm_head;
    else {
      const LayerWeights& L = w.layers[static_cast<size_t>(p.spec.layer)];
      const std::string& r = p.spec.role;
      lw = r == "attn.q" ? &L.q : r == "attn.k" ? &L.k : r == "attn.v" ? &L.v : r == "attn.o" ? &L.o
         : r == "mlp.gate" ? &L.gate : r == "mlp.up" ? &L.up : r == "mlp.down" ? &L.down
         : r == "mamba.in" ? &L.in_proj : &L.out_proj;
    }
    if (p.spec.role == "lm_head" && c.tie_embeddings) {
      DevLinear d;
      d.n = c.vocab_size;
      d.k = c.hidden_size;
      d.bf16 = DeviceBuffer(embed_.bytes);
      CUDA_CHECK(cudaMemcpyAsync(d.bf16.ptr, embed_.ptr, embed_.bytes, cudaMemcpyDeviceToDevice, stream_));
      linears_[lw] = std::move(d);
      continue;
    }
    upload_linear(*lw, p, ++gen, synth);
  }
  for (const auto& L : w.layers) {
    for (const auto* v : {&L.norm, &L.post_norm, &L.q_norm, &L.k_norm, &L.conv_w, &L.conv_b, &L.a_log, &L.d,
                          &L.dt_bias, &L.gated_norm})
      if (!v->empty()) dev_f32(*v);
  }
  dev_f32(w.final_norm);
  tokens_ = DeviceBuffer(1 << 20);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

size_t CudaOps::state_bytes(const ModelConfig& c, int max_tokens) const {
  size_t b = 0;
  for (auto k : c.layers) {
    if (k == LayerKind::Attention || k == LayerKind::Decoder) b += 2ull * max_tokens * c.num_kv_heads * c.head_dim * 2;
    if (k == LayerKind::Mamba)
      b += 4ull * (static_cast<size_t>(c.mamba_conv_dim()) * (c.conv_kernel - 1) +
                   static_cast<size_t>(c.mamba_num_heads) * c.mamba_head_dim * c.ssm_state_size);
  }
  return b;
}

CudaOps::State CudaOps::new_state(const ModelConfig& c, int max_tokens) {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const size_t need = state_bytes(c, max_tokens);
  if (need + (256ull << 20) > free_b)
    throw Error("a sequence of " + std::to_string(max_tokens) + " tokens needs " + std::to_string(need >> 20) +
                " MiB of KV/SSM cache but only " + std::to_string(free_b >> 20) + " MiB of GPU memory are free");
  State s;
  s.capacity = max_tokens;
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
      s.ssm[i] = DeviceBuffer(static_cast<size_t>(c.mamba_num_heads) * c.mamba_head_dim * c.ssm_state_size * 4);
      CUDA_CHECK(cudaMemsetAsync(s.conv[i].ptr, 0, s.conv[i].bytes, stream_));
      CUDA_CHECK(cudaMemsetAsync(s.ssm[i].ptr, 0, s.ssm[i].bytes, stream_));
    }
  }
  return s;
}

void CudaOps::begin_forward() {
  // Several arena blocks were needed last time: replace them by one block of the total size.
  if (arena_.size() > 1) {
    size_t total = 0;
    for (const auto& b : arena_) total += b.bytes;
    synchronize();
    arena_.clear();
    arena_.emplace_back(total);
  }
  arena_block_ = 0;
  arena_used_ = 0;
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
    }
    arena_used_ = 0;
  }
  Tensor t{rows, cols, reinterpret_cast<bf16_raw*>(static_cast<uint8_t*>(arena_[arena_block_].ptr) + arena_used_)};
  arena_used_ += bytes;
  return t;
}

std::vector<float> CudaOps::to_host(const Tensor& x) {
  std::vector<uint16_t> h(static_cast<size_t>(x.rows * x.cols));
  CUDA_CHECK(cudaMemcpyAsync(h.data(), x.data, h.size() * 2, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = bf16_to_f32(h[i]);
  return f;
}

void CudaOps::embed(std::span<const int> tokens, const std::vector<float>&, Tensor& x) {
  if (tokens.size() * 4 > tokens_.bytes) tokens_ = DeviceBuffer(tokens.size() * 4);
  CUDA_CHECK(cudaMemcpyAsync(tokens_.ptr, tokens.data(), tokens.size() * 4, cudaMemcpyHostToDevice, stream_));
  embed_kernel<<<blocks_for(x.rows * x.cols, 256), 256, 0, stream_>>>(tokens_.as<int>(), static_cast<int>(x.rows),
                                                                      embed_.as<bf16>(), hidden_, reinterpret_cast<bf16*>(x.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::linear(const Tensor& x, const LinearWeight& w, Tensor& y) {
  auto it = linears_.find(&w);
  if (it == linears_.end()) throw Error("internal: linear layer was not uploaded");
  const DevLinear& d = it->second;
  if (d.nvfp4) nvfp4_w4a16_gemm(x.data, x.rows, x.cols, d.fp4, y.data, y.cols, 1.0f, ws_, stream_);
  else cublas_bf16_gemm(ws_.cublas_handle(), x.data, x.rows, d.bf16.as<bf16_raw>(), d.n, d.k, y.data, stream_);
  if (d.bias.ptr) {
    bias_kernel<<<blocks_for(y.rows * y.cols, 256), 256, 0, stream_>>>(reinterpret_cast<bf16*>(y.data), d.bias.as<float>(), y.rows, y.cols);
    CUDA_CHECK_LAUNCH();
  }
}

void CudaOps::rmsnorm(const Tensor& x, const std::vector<float>& w, float eps, Tensor& y) {
  rmsnorm_kernel<<<static_cast<unsigned>(x.rows), 256, 0, stream_>>>(reinterpret_cast<const bf16*>(x.data), dev_f32(w),
                                                                     x.cols, eps, reinterpret_cast<bf16*>(y.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::rmsnorm_heads(Tensor& x, int heads, const std::vector<float>& w, float eps) {
  const int64_t hd = x.cols / heads;
  rmsnorm_kernel<<<static_cast<unsigned>(x.rows * heads), 64, 0, stream_>>>(reinterpret_cast<const bf16*>(x.data),
                                                                            dev_f32(w), hd, eps, reinterpret_cast<bf16*>(x.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::rope(Tensor& x, int heads, int hd, int pos0, const RopeConfig& r) {
  if (rope_dim_ != hd || rope_cfg_.theta != r.theta || rope_cfg_.type != r.type || rope_cfg_.factor != r.factor) {
    const auto f = cpu::rope_inv_freq(r, hd);
    inv_freq_ = DeviceBuffer(f.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(inv_freq_.ptr, f.data(), f.size() * 4, cudaMemcpyHostToDevice, stream_));
    rope_cfg_ = r;
    rope_dim_ = hd;
  }
  rope_kernel<<<blocks_for(x.rows * heads * hd / 2, 256), 256, 0, stream_>>>(
      reinterpret_cast<bf16*>(x.data), static_cast<int>(x.rows), heads, hd, pos0, inv_freq_.as<float>());
  CUDA_CHECK_LAUNCH();
}

void CudaOps::attention(const Tensor& q, const Tensor& k, const Tensor& v, State& s, size_t layer, int nh, int nkv,
                        int hd, Tensor& out) {
  const int64_t row = static_cast<int64_t>(nkv) * hd;
  bf16* kc = s.k[layer].as<bf16>();
  bf16* vc = s.v[layer].as<bf16>();
  CUDA_CHECK(cudaMemcpyAsync(kc + s.pos * row, k.data, k.rows * row * 2, cudaMemcpyDeviceToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(vc + s.pos * row, v.data, v.rows * row * 2, cudaMemcpyDeviceToDevice, stream_));
  const int t = static_cast<int>(q.rows);
  const size_t smem = (static_cast<size_t>(hd) + s.pos + t) * 4;
  if (smem > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  attention_kernel<<<static_cast<unsigned>(t * nh), 128, smem, stream_>>>(
      reinterpret_cast<const bf16*>(q.data), kc, vc, nh, nkv, hd, s.pos, reinterpret_cast<bf16*>(out.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::add(Tensor& x, const Tensor& y) {
  add_kernel<<<blocks_for(x.rows * x.cols, 256), 256, 0, stream_>>>(reinterpret_cast<bf16*>(x.data),
                                                                    reinterpret_cast<const bf16*>(y.data), x.rows * x.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::silu_mul(const Tensor& g, const Tensor& u, Tensor& o) {
  silu_mul_kernel<<<blocks_for(g.rows * g.cols, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(g.data), reinterpret_cast<const bf16*>(u.data), reinterpret_cast<bf16*>(o.data), g.rows * g.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::relu2(Tensor& x) {
  relu2_kernel<<<blocks_for(x.rows * x.cols, 256), 256, 0, stream_>>>(reinterpret_cast<bf16*>(x.data), x.rows * x.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::columns(const Tensor& src, int64_t col0, Tensor& dst) {
  columns_kernel<<<blocks_for(dst.rows * dst.cols, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(src.data), src.rows, src.cols, col0, reinterpret_cast<bf16*>(dst.data), dst.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::softplus_dt(const Tensor& proj, int64_t col0, const std::vector<float>& bias, float lo, float hi, Tensor& dt) {
  softplus_dt_kernel<<<blocks_for(dt.rows * dt.cols, 256), 256, 0, stream_>>>(
      reinterpret_cast<const bf16*>(proj.data), proj.rows, proj.cols, col0, dev_f32(bias), lo, hi,
      reinterpret_cast<bf16*>(dt.data), dt.cols);
  CUDA_CHECK_LAUNCH();
}

void CudaOps::causal_conv1d_silu(Tensor& xbc, State& s, size_t layer, int kernel, const std::vector<float>& w,
                                 const std::vector<float>& b) {
  if (kernel > 8) throw Error("conv kernel " + std::to_string(kernel) + " > 8 is not supported by the CUDA backend");
  const int ch = static_cast<int>(xbc.cols);
  conv1d_silu_kernel<<<static_cast<unsigned>((ch + 127) / 128), 128, 0, stream_>>>(
      reinterpret_cast<bf16*>(xbc.data), static_cast<int>(xbc.rows), ch, kernel, dev_f32(w), b.empty() ? nullptr : dev_f32(b),
      s.conv[layer].as<float>());
  CUDA_CHECK_LAUNCH();
}

void CudaOps::ssm_scan(const Tensor& x, const Tensor& b, const Tensor& c, const Tensor& dt,
                       const std::vector<float>& a_log, const std::vector<float>& d, State& s, size_t layer,
                       cpu::SsmShape sh, int, Tensor& y) {
  if (sh.state > 1024) throw Error("SSM state size > 1024 is not supported by the CUDA backend");
  const int threads = std::max(32, (sh.state + 31) / 32 * 32);
  ssm_scan_kernel<<<static_cast<unsigned>(sh.heads * sh.head_dim), threads, 0, stream_>>>(
      reinterpret_cast<const bf16*>(x.data), reinterpret_cast<const bf16*>(b.data), reinterpret_cast<const bf16*>(c.data),
      reinterpret_cast<const bf16*>(dt.data), dev_f32(a_log), dev_f32(d), static_cast<int>(x.rows), sh.heads, sh.head_dim,
      sh.state, sh.groups, s.ssm[layer].as<float>(), reinterpret_cast<bf16*>(y.data));
  CUDA_CHECK_LAUNCH();
}

void CudaOps::gated_rmsnorm(Tensor& y, const Tensor& z, const std::vector<float>& w, int groups, float eps) {
  gated_rmsnorm_kernel<<<static_cast<unsigned>(y.rows * groups), 256, 0, stream_>>>(
      reinterpret_cast<bf16*>(y.data), reinterpret_cast<const bf16*>(z.data), dev_f32(w), y.cols, groups, eps);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp4lab
