// Element-wise, normalization, embedding and logits kernels of the CUDA engine backend. CPU twins:
// src/cpu/reference.cpp and CpuOps.
#include "cuda/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "common/random.h"
#include "cpu/reference.h"
#include "cuda/argmax.h"
#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"

namespace fp4lab {

using namespace dev;

// table holds ids [first, first + rows) (a vocab-parallel shard, or all of them); other ids read as zeros.
__global__ void embed_kernel(const int* tokens, int t, const bf16* table, int64_t first, int64_t rows,
                             int64_t h, float* x) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < t * h;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = tokens[i / h] - first;
    x[i] = r >= 0 && r < rows ? ld(table + r * h + i % h) : 0.0f;
  }
}

// The CUDA twin of cpu::gather_vocab_shards: [ranks][rows][shard] gathered logits -> [rows][vocab].
__global__ void gather_vocab_kernel(const float* gathered, int64_t rows, int64_t shard, int64_t vocab,
                                    float* out) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * vocab;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / vocab, v = i % vocab;
    out[i] = gathered[((v / shard) * rows + r) * shard + v % shard];
  }
}

// One block per row: y = w * x / sqrt(mean(x^2) + eps). With `add` (the residual stream, FP32 x), first
// x += add, written back: the residual add of the previous layer fused into this norm (one launch and one
// pass over x fewer, the same FP32 arithmetic as add then norm). Each thread keeps its (up to 8) values in
// registers between the two passes; wider rows take a plain second loop. Every load (x, add, w) is issued
// before the first store: x and y may be the same buffer (per-head norms run in place), so a load after a
// store could not be moved above it and each element would cost a memory round trip (a 4096-wide decode row
// took ~10 µs that way).
__global__ void __launch_bounds__(1024)
    rmsnorm_kernel(void* x, bool x_f32, const bf16* add, const float* w, int64_t width, float eps, bf16* y) {
  // The launch gives each thread about 8 values (up to 1024 threads): three arrays of 8 stay within the 64
  // registers a 1024-thread block allows (16 each did not: a 70B row, 8192 wide, failed to launch).
  constexpr int kMax = 8;
  const int64_t base = blockIdx.x * width;
  bf16* yr = y + base;
  float* xf = static_cast<float*>(x);
  float v[kMax], a[kMax], wv[kMax];
  // The weights (constants) before the wait: under programmatic launch their load overlaps the previous
  // kernel (kernel-notes #31 measured this only under ncu, which serializes the kernels, so the overlap could
  // not show; #43 measures it in real decode steps).
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    wv[e] = i < width ? w[i] : 0.0f;
  }
  ptx::griddep_enter();
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    const bool in = i < width;
    v[e] = in ? ldx(x, base + i, x_f32) : 0.0f;
    a[e] = in && add ? __bfloat162float(add[base + i]) : 0.0f;
  }
  float ss = 0.0f;
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    v[e] += a[e];
    ss += v[e] * v[e];
  }
  // Rows wider than kMax x blockDim (over 8192 at 1024 threads) take the rest in plain loops.
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kMax) * blockDim.x; i < width; i += blockDim.x) {
    const float t = ldx(x, base + i, x_f32) + (add ? __bfloat162float(add[base + i]) : 0.0f);
    ss += t * t;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(width) + eps);
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kMax) * blockDim.x; i < width; i += blockDim.x) {
    const float t = ldx(x, base + i, x_f32) + (add ? __bfloat162float(add[base + i]) : 0.0f);
    yr[i] = __float2bfloat16_rn(w[i] * (t * inv));
    if (add) xf[base + i] = t;
  }
#pragma unroll
  for (int e = 0; e < kMax; ++e) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
    if (i < width) {
      if (add) xf[base + i] = v[e];
      yr[i] = __float2bfloat16_rn(wv[e] * (v[e] * inv));
    }
  }
}

// rmsnorm_kernel for rows of width / 8 <= blockDim.x 16-byte units (width a multiple of 8): each thread's 8
// values are consecutive, so x, add, w and y move in 16-byte accesses (the strided form made 2-byte ones and
// ran at about half the copy rate on prompt-sized rows). Same arithmetic; the sum is taken in another order.
__global__ void __launch_bounds__(1024)
    rmsnorm8_kernel(void* x, bool x_f32, const bf16* add, const float* w, int64_t width, float eps, bf16* y) {
  const int64_t base = blockIdx.x * width, i = threadIdx.x * int64_t{8};
  const bool in = i < width;
  float v[8] = {}, a[8] = {}, wv[8] = {};
  if (in) load8(w + i, wv);  // constants before the programmatic-launch wait (kernel-notes #43)
  ptx::griddep_enter();
  if (in) {
    if (x_f32)
      load8(static_cast<const float*>(x) + base + i, v);
    else
      load8(static_cast<const bf16*>(x) + base + i, v);
    if (add) load8(add + base + i, a);
  }
  float ss = 0.0f;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    v[e] += a[e];
    ss += v[e] * v[e];
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(width) + eps);
  if (!in) return;
  if (add) store8(static_cast<float*>(x) + base + i, v);
  float o[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) o[e] = wv[e] * (v[e] * inv);
  store8(y + base + i, o);
}

__global__ void add_f32_kernel(float* x, const bf16* y, int64_t n) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    x[i] += ld(y + i);
}

__global__ void add_kernel(bf16* x, const bf16* y, int64_t n) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    x[i] = __float2bfloat16_rn(ld(x + i) + ld(y + i));
}

// n8 units of 8 consecutive elements, 16-byte accesses.
__global__ void silu_mul8_kernel(const bf16* g, const bf16* u, bf16* o, int64_t n8) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n8;
       i += int64_t{gridDim.x} * blockDim.x) {
    float gv[8], uv[8];
    load8(g + 8 * i, gv);
    load8(u + 8 * i, uv);
#pragma unroll
    for (int e = 0; e < 8; ++e) gv[e] = silu(gv[e]) * uv[e];
    store8(o + 8 * i, gv);
  }
}

__global__ void relu2_8_kernel(bf16* x, int64_t n8) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n8;
       i += int64_t{gridDim.x} * blockDim.x) {
    float v[8];
    load8(x + 8 * i, v);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = fmaxf(v[e], 0.0f);
      v[e] *= v[e];
    }
    store8(x + 8 * i, v);
  }
}

__global__ void silu_mul_kernel(const bf16* g, const bf16* u, bf16* o, int64_t n) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    o[i] = __float2bfloat16_rn(silu(ld(g + i)) * ld(u + i));
}

__global__ void relu2_kernel(bf16* x, int64_t n) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = fmaxf(ld(x + i), 0.0f);
    x[i] = __float2bfloat16_rn(v * v);
  }
}

template <class T>
__device__ __forceinline__ void copy_columns(const T* src, int64_t rows, int64_t scols, int64_t col0, T* dst,
                                             int64_t dcols) {
  ptx::griddep_enter();
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < dcols;
         j += int64_t{gridDim.x} * blockDim.x)
      dst[r * dcols + j] = src[r * scols + col0 + j];
}
__global__ void columns_kernel(const bf16* src, int64_t rows, int64_t scols, int64_t col0, bf16* dst,
                               int64_t dcols) {
  copy_columns(src, rows, scols, col0, dst, dcols);
}
__global__ void columns16_kernel(const uint4* src, int64_t rows, int64_t scols, int64_t col0, uint4* dst,
                                 int64_t dcols) {
  copy_columns(src, rows, scols, col0, dst, dcols);
}

__global__ void bias_kernel(bf16* y, const float* bias, int64_t rows, int64_t n) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = __float2bfloat16_rn(ld(y + i) + bias[i % n]);
}

// (value, index) of the running maximum: the larger value wins, the smaller index among equals (the start,
// (-inf, cols), loses to any -inf); NaN never compares greater or equal, so NaNs are skipped (cpu::argmax).
__device__ __forceinline__ void argmax_take(float& best, int64_t& bi, float v, int64_t i) {
  if (v > best || (v == best && i < bi)) best = v, bi = i;
}

// The block's (value, index) maximum, valid in thread 0.
__device__ __forceinline__ void argmax_block(float& best, int64_t& bi) {
  for (int o = 16; o > 0; o /= 2)
    argmax_take(best, bi, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, bi, o));
  __shared__ float sv[kArgmaxThreads / 32];
  __shared__ int64_t si[kArgmaxThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = best, si[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < kArgmaxThreads / 32; ++w) argmax_take(best, bi, sv[w], si[w]);
}

// The logits [lo, hi) of part p of a row of cols split into parts: contiguous runs of whole 4-element units
// (a part of argmax_rows_kernel and top_logits_rows_kernel alike).
__device__ __forceinline__ void row_part(int64_t cols, int p, int parts, int64_t& lo, int64_t& hi) {
  const int64_t per = (cols + 4LL * parts - 1) / (4LL * parts) * 4;
  lo = p * per;
  hi = min(cols, lo + per);
}

// Greedy decoding on the device, so that only the ids cross PCIe, not the rows of FP32 logits.
// Row argmax in two levels, in one launch: block (p, r) reduces part p of row r (a contiguous run of whole
// 4-element units) to a (value, index) pair; the last part of a row to finish (done[r] counts, left at zero
// for the next launch) reduces the row's pairs in part order. One block per row (the first form) streamed a
// 128K-entry vocabulary through one SM: several microseconds per decode step.
// pick (device, may be null): a temperature > 0 turns the argmax into a sample of softmax(row / temperature)
// by the Gumbel-max trick, row r's noise drawn from its seed (cpu::sample_gumbel); 0 keeps the argmax.
// Read on the device, so a captured decode step samples with each replay's own seed.
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_rows_kernel(const float* logits, int64_t cols, const ArgmaxPick* pick, float* part_v,
                       int64_t* part_i, int* done, int* out) {
  ptx::griddep_enter();
  const int p = blockIdx.x, parts = gridDim.x, r = blockIdx.y;
  const float* row = logits + r * cols;
  int64_t lo, hi;
  row_part(cols, p, parts, lo, hi);
  const float temp = pick ? pick->temperature : 0.0f;
  const uint64_t seed = temp > 0.0f ? reinterpret_cast<const uint64_t*>(pick + 1)[r] : 0;
  // The score of entry i: the logit, or logit / T + noise (NaN stays NaN and is skipped).
  const auto score = [&](float l, int64_t i) { return temp > 0.0f ? l / temp + gumbel_noise(seed, i) : l; };
  float best = -INFINITY;
  int64_t bi = cols;
  // 16-byte loads where the row allows (cols % 4 == 0 keeps every row 16-byte aligned), four in flight.
  if (cols % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    for (int64_t u = lo / 4 + threadIdx.x; u < hi / 4; u += kArgmaxThreads) {
      const float4 v = __ldcg(r4 + u);
      argmax_take(best, bi, score(v.x, 4 * u), 4 * u);
      argmax_take(best, bi, score(v.y, 4 * u + 1), 4 * u + 1);
      argmax_take(best, bi, score(v.z, 4 * u + 2), 4 * u + 2);
      argmax_take(best, bi, score(v.w, 4 * u + 3), 4 * u + 3);
    }
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += kArgmaxThreads)
      argmax_take(best, bi, score(__ldcg(row + i), i), i);
  }
  argmax_block(best, bi);
  __shared__ bool last;
  if (threadIdx.x == 0) {
    part_v[r * parts + p] = best;
    part_i[r * parts + p] = bi;
    __threadfence();
    last = atomicAdd(&done[r], 1) == parts - 1;
    if (last) done[r] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  best = -INFINITY;
  bi = cols;
  for (int q = threadIdx.x; q < parts; q += kArgmaxThreads)
    argmax_take(best, bi, __ldcg(part_v + r * parts + q), __ldcg(part_i + r * parts + q));
  argmax_block(best, bi);
  // An all-NaN row has no id (cpu::kNoId, as cpu::argmax).
  if (threadIdx.x == 0) out[r] = bi < cols ? static_cast<int>(bi) : cpu::kNoId;
}

// A logit as a word whose unsigned order is (key descending, id ascending) when sorted descending: the key's
// bits made orderable (NaN as -inf, -0 as +0: equal keys must tie, so the ids decide) above the id's
// complement. Never 0.
__device__ __forceinline__ uint64_t top_word(float l, int64_t i) {
  const uint32_t b = __float_as_uint(isnan(l) ? -INFINITY : (l == 0.0f ? 0.0f : l));
  const uint32_t ord = (b & 0x80000000u) ? ~b : b | 0x80000000u;
  return (static_cast<uint64_t>(ord) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

// Block (p, r): part p of row r (as argmax_rows_kernel cuts it) bitonic-sorted in shared memory, its first
// kTopLogits words written out. ~80 compare-exchange stages over 4096 words per block; one launch per step.
__global__ void __launch_bounds__(kArgmaxThreads)
    top_logits_rows_kernel(const float* logits, int64_t cols, uint64_t* out) {
  ptx::griddep_enter();
  constexpr int kN = kArgmaxPerBlock;
  __shared__ uint64_t w[kN];
  const int p = blockIdx.x, parts = gridDim.x, r = blockIdx.y;
  const float* row = logits + r * cols;
  int64_t lo, hi;
  row_part(cols, p, parts, lo, hi);
  for (int j = threadIdx.x; j < kN; j += kArgmaxThreads) {
    const int64_t i = lo + j;
    w[j] = i < hi ? top_word(__ldcg(row + i), i) : 0;
  }
  __syncthreads();
  for (int size = 2; size <= kN; size *= 2)
    for (int stride = size / 2; stride > 0; stride /= 2) {
      for (int j = threadIdx.x; j < kN / 2; j += kArgmaxThreads) {
        const int a = 2 * j - (j & (stride - 1)), b = a + stride;  // pair (a, b), a's bit `stride` clear
        const bool desc = (a & size) == 0;
        const uint64_t x = w[a], y = w[b];
        if ((x < y) == desc) w[a] = y, w[b] = x;
      }
      __syncthreads();
    }
  for (int j = threadIdx.x; j < cpu::kTopLogits; j += kArgmaxThreads)
    out[(static_cast<int64_t>(r) * parts + p) * cpu::kTopLogits + j] = w[j];
}

std::vector<cpu::TopLogit> top_logits_merge(const uint64_t* words, size_t n) {
  // Every part holds its own top kTopLogits, so the row's are among them: the largest words of all parts.
  std::vector<uint64_t> w(words, words + n);
  const size_t c = std::min<size_t>(cpu::kTopLogits, w.size());
  std::partial_sort(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(c), w.end(), std::greater<>());
  std::vector<cpu::TopLogit> out;
  for (size_t j = 0; j < c && w[j] != 0; ++j) {
    const uint32_t ord = static_cast<uint32_t>(w[j] >> 32);
    const uint32_t bits = (ord & 0x80000000u) ? ord & 0x7fffffffu : ~ord;
    float key;
    std::memcpy(&key, &bits, 4);
    out.push_back({key, static_cast<int>(0xffffffffu - static_cast<uint32_t>(w[j]))});
  }
  return out;
}

bool top_logits_supported(int64_t cols) {
  return cols > 0 && static_cast<int64_t>(argmax_parts(cols)) * kArgmaxPerBlock >= cols;
}

void launch_top_logits_rows(const float* logits, int64_t rows, int64_t cols, uint64_t* out,
                            cudaStream_t stream) {
  launch_kernel(top_logits_rows_kernel,
                dim3(static_cast<unsigned>(argmax_parts(cols)), static_cast<unsigned>(rows)), kArgmaxThreads,
                0, stream, logits, cols, out);
}

int argmax_parts(int64_t cols) {
  return static_cast<int>(
      std::clamp<int64_t>((cols + kArgmaxPerBlock - 1) / kArgmaxPerBlock, 1, kArgmaxMaxParts));
}

void launch_argmax_rows(const float* logits, int64_t rows, int64_t cols, const ArgmaxPick* pick,
                        float* part_v, int64_t* part_i, int* done, int* out, cudaStream_t stream) {
  launch_kernel(argmax_rows_kernel,
                dim3(static_cast<unsigned>(argmax_parts(cols)), static_cast<unsigned>(rows)), kArgmaxThreads,
                0, stream, logits, cols, pick, part_v, part_i, done, out);
}

__global__ void bf16_to_f32_kernel(const bf16* src, int64_t n, float* dst) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

__global__ void f32_to_bf16_kernel(const float* src, int64_t n, bf16* dst) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void count_nonfinite_bf16_kernel(const uint16_t* x, int64_t n, unsigned int* count) {
  unsigned int c = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    c += (x[i] & 0x7f80u) == 0x7f80u;  // exponent all ones: Inf or NaN
  for (int o = 16; o > 0; o /= 2) c += __shfl_xor_sync(0xffffffffu, c, o);
  if (threadIdx.x % 32 == 0 && c) atomicAdd(count, c);
}

__global__ void count_nan_e4m3_kernel(const uint8_t* x, int64_t n, unsigned int* count) {
  unsigned int c = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    c += (x[i] & 0x7fu) == 0x7fu;
  for (int o = 16; o > 0; o /= 2) c += __shfl_xor_sync(0xffffffffu, c, o);
  if (threadIdx.x % 32 == 0 && c) atomicAdd(count, c);
}

__global__ void f16_to_bf16_kernel(const __half* src, int64_t n, bf16* dst) {
  ptx::griddep_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16_rn(__half2float(src[i]));
}

void launch_embed(const int* tokens, int rows, const bf16_raw* table, int64_t first_id, int64_t table_rows,
                  int64_t hidden, float* x, cudaStream_t stream) {
  launch_kernel(embed_kernel, grid_1d(rows * hidden, 256), 256, 0, stream, tokens, rows,
                reinterpret_cast<const bf16*>(table), first_id, table_rows, hidden, x);
}

void launch_gather_vocab(const float* gathered, int64_t rows, int64_t shard, int64_t vocab, float* out,
                         cudaStream_t stream) {
  launch_kernel(gather_vocab_kernel, grid_1d(rows * vocab, 256), 256, 0, stream, gathered, rows, shard, vocab,
                out);
}

void launch_rmsnorm(const RmsNormArgs& a, cudaStream_t stream) {
  const int threads = static_cast<int>(std::clamp<int64_t>((a.width / 8 + 31) / 32 * 32, 32, 1024));
  // 16-byte accesses where a row is whole 8-value units that one block's threads cover.
  const bool vec = a.width % 8 == 0 && a.width / 8 <= 1024 && aligned16(a.x) && aligned16(a.y) &&
                   (!a.add || aligned16(a.add));
  launch_kernel(vec ? rmsnorm8_kernel : rmsnorm_kernel, static_cast<unsigned>(a.rows), threads, 0, stream,
                a.x, a.x_f32, reinterpret_cast<const bf16*>(a.add), a.w, a.width, a.eps,
                reinterpret_cast<bf16*>(a.y));
}

void launch_rmsnorm_heads(bf16_raw* x, int64_t rows, int heads, int64_t head_dim, const float* w, float eps,
                          cudaStream_t stream) {
  launch_kernel(rmsnorm_kernel, static_cast<unsigned>(rows * heads), 64, 0, stream, static_cast<void*>(x),
                false, nullptr, w, head_dim, eps, reinterpret_cast<bf16*>(x));
}

void launch_add(void* x, bool x_f32, const bf16_raw* y, int64_t n, cudaStream_t stream) {
  if (x_f32)
    launch_kernel(add_f32_kernel, grid_1d(n, 256), 256, 0, stream, static_cast<float*>(x),
                  reinterpret_cast<const bf16*>(y), n);
  else
    launch_kernel(add_kernel, grid_1d(n, 256), 256, 0, stream, static_cast<bf16*>(x),
                  reinterpret_cast<const bf16*>(y), n);
}

void launch_silu_mul(const bf16_raw* g, const bf16_raw* u, bf16_raw* o, int64_t n, cudaStream_t stream) {
  const auto* gb = reinterpret_cast<const bf16*>(g);
  const auto* ub = reinterpret_cast<const bf16*>(u);
  auto* ob = reinterpret_cast<bf16*>(o);
  if (n % 8 == 0 && aligned16(g) && aligned16(u) && aligned16(o))
    launch_kernel(silu_mul8_kernel, grid_1d(n / 8, 256), 256, 0, stream, gb, ub, ob, n / 8);
  else
    launch_kernel(silu_mul_kernel, grid_1d(n, 256), 256, 0, stream, gb, ub, ob, n);
}

void launch_relu2(bf16_raw* x, int64_t n, cudaStream_t stream) {
  auto* xb = reinterpret_cast<bf16*>(x);
  if (n % 8 == 0 && aligned16(x))
    launch_kernel(relu2_8_kernel, grid_1d(n / 8, 256), 256, 0, stream, xb, n / 8);
  else
    launch_kernel(relu2_kernel, grid_1d(n, 256), 256, 0, stream, xb, n);
}

void launch_columns(const bf16_raw* src, int64_t rows, int64_t scols, int64_t col0, bf16_raw* dst,
                    int64_t dcols, cudaStream_t stream) {
  // 16-byte units where every row's range starts and ends on them (the Mamba splits and the joined
  // projections do): one element per thread with a 64-bit division each ran at a fifth of the copy rate.
  const bool vec = scols % 8 == 0 && col0 % 8 == 0 && dcols % 8 == 0 && aligned16(src) && aligned16(dst);
  const int64_t unit = vec ? 8 : 1, width = dcols / unit;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((width + 255) / 256, 64)),
                  static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  if (vec)
    launch_kernel(columns16_kernel, grid, 256, 0, stream, reinterpret_cast<const uint4*>(src), rows,
                  scols / 8, col0 / 8, reinterpret_cast<uint4*>(dst), width);
  else
    launch_kernel(columns_kernel, grid, 256, 0, stream, reinterpret_cast<const bf16*>(src), rows, scols, col0,
                  reinterpret_cast<bf16*>(dst), width);
}

void launch_bias(bf16_raw* y, const float* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  launch_kernel(bias_kernel, grid_1d(rows * n, 256), 256, 0, stream, reinterpret_cast<bf16*>(y), bias, rows,
                n);
}

void launch_bf16_to_f32(const bf16_raw* src, int64_t n, float* dst, cudaStream_t stream) {
  launch_kernel(bf16_to_f32_kernel, grid_1d(n, 256), 256, 0, stream, reinterpret_cast<const bf16*>(src), n,
                dst);
}

void launch_f32_to_bf16(const float* src, int64_t n, bf16_raw* dst, cudaStream_t stream) {
  launch_kernel(f32_to_bf16_kernel, grid_1d(n, 256), 256, 0, stream, src, n, reinterpret_cast<bf16*>(dst));
}

void launch_f16_to_bf16(const void* src_f16, int64_t n, bf16_raw* dst, cudaStream_t stream) {
  launch_kernel(f16_to_bf16_kernel, grid_1d(n, 256), 256, 0, stream, static_cast<const __half*>(src_f16), n,
                reinterpret_cast<bf16*>(dst));
}

void launch_count_nonfinite_bf16(const uint16_t* x, int64_t n, unsigned int* count, cudaStream_t stream) {
  launch_kernel(count_nonfinite_bf16_kernel, grid_1d(n, 256), 256, 0, stream, x, n, count);
}

void launch_count_nan_e4m3(const uint8_t* x, int64_t n, unsigned int* count, cudaStream_t stream) {
  launch_kernel(count_nan_e4m3_kernel, grid_1d(n, 256), 256, 0, stream, x, n, count);
}

}  // namespace fp4lab
