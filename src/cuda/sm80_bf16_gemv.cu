// BF16 GEMV for decode (see bf16_gemv.h). A block owns 8 rows: four groups of two rows, each group walked
// by S warps that split K (interleaved 512-byte runs, so every load instruction of a warp is one contiguous
// 512 bytes), each lane a 16-byte chunk (8 weights) per row and step, kUnroll steps of loads issued before
// their math; the S partial sums of a row are added in shared memory in a fixed order. S grows for the
// narrow layers (few rows, long K) so that the GPU has enough warps streaming; blocks stay small so that the
// block scheduler balances the SMs as blocks finish.
#include <cuda_bf16.h>

#include <algorithm>
#include <type_traits>

#include "common/error.h"
#include "cuda/bf16_gemv.h"
#include "cuda/check.h"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"

namespace fp4lab {
namespace {

constexpr int kGroups = 4, kRows = 2, kUnroll = 4;

// The 8 products of one 16-byte chunk of w and x, added to acc (BF16 -> FP32 by shifts).
__device__ __forceinline__ float dot8(const uint4& w, const uint4& x, float acc) {
  const uint32_t wa[4] = {w.x, w.y, w.z, w.w}, xa[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(__uint_as_float(wa[i] << 16), __uint_as_float(xa[i] << 16), acc);
    acc = fmaf(__uint_as_float(wa[i] & 0xffff0000u), __uint_as_float(xa[i] & 0xffff0000u), acc);
  }
  return acc;
}

template <int M, int S, class OutT>
__global__ void __launch_bounds__(kGroups* S * 32)
    bf16_gemv_kernel(const bf16_raw* __restrict__ x, int64_t ldx, const bf16_raw* __restrict__ w, int n,
                     int k, OutT* __restrict__ y, int64_t ldy) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = warp / S, part = warp % S;
  const int row0 = (blockIdx.x * kGroups + group) * kRows;
  const int chunks = k / 8;
  // Rows past n read row n - 1 (no predicates in the loop); they are never stored.
  const uint4* wr[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    wr[r] = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(min(row0 + r, n - 1)) * k);
  constexpr int kStep = kUnroll * S * 32;  // chunks per loop step of the S warps together
  uint4 wv[kUnroll][kRows];
  const auto load_w = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + (u * S + part) * 32 + lane;
#pragma unroll
      for (int r = 0; r < kRows; ++r) wv[u][r] = c < chunks ? ptx::ldg_stream_v4(wr[r] + c) : uint4{};
    }
  };
  // No kernel writes the weights: their first loads overlap the previous kernel's tail.
  load_w(0);
  ptx::griddep_enter();
  float acc[kRows * M] = {};  // row r, token m at r * M + m
  for (int c0 = 0; c0 < chunks; c0 += kStep) {
    if (c0 != 0) load_w(c0);
    uint4 xv[kUnroll][M];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + (u * S + part) * 32 + lane;
#pragma unroll
      for (int m = 0; m < M; ++m) xv[u][m] = c < chunks ? ptx::ldg_v4(x + m * ldx + c * 8) : uint4{};
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r * M + m] = dot8(wv[u][r], xv[u][m], acc[r * M + m]);
  }
  __shared__ float sm_part[kGroups][kRows * M][S];
#pragma unroll
  for (int i = 0; i < kRows * M; ++i) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
    if (S > 1 && lane == 0) sm_part[group][i][part] = acc[i];
  }
  if constexpr (S > 1) __syncthreads();
  if (part != 0 || lane != 0) return;
#pragma unroll
  for (int i = 0; i < kRows * M; ++i) {
    const int r = i / M, m = i % M;
    float v = acc[i];
#pragma unroll
    for (int p = 1; p < S; ++p) v += sm_part[group][i][p];
    if (row0 + r < n) {
      if constexpr (std::is_same_v<OutT, float>) {
        y[m * ldy + row0 + r] = v;
      } else {
        const __nv_bfloat16 b = __float2bfloat16_rn(v);
        y[m * ldy + row0 + r] = *reinterpret_cast<const bf16_raw*>(&b);
      }
    }
  }
}

template <int M, int S, class OutT>
void launch(const bf16_raw* x, int64_t ldx, const bf16_raw* w, int64_t n, int64_t k, OutT* y, int64_t ldy,
            cudaStream_t stream) {
  const int64_t blocks = (n + kGroups * kRows - 1) / (kGroups * kRows);
  launch_kernel(bf16_gemv_kernel<M, S, OutT>, dim3(static_cast<unsigned>(blocks)), kGroups * S * 32, 0,
                stream, x, ldx, w, static_cast<int>(n), static_cast<int>(k), y, ldy);
}

template <int M, class OutT>
void launch_split(int split, const bf16_raw* x, int64_t ldx, const bf16_raw* w, int64_t n, int64_t k, OutT* y,
                  int64_t ldy, cudaStream_t stream) {
  switch (split) {
    case 1:
      return launch<M, 1, OutT>(x, ldx, w, n, k, y, ldy, stream);
    case 2:
      return launch<M, 2, OutT>(x, ldx, w, n, k, y, ldy, stream);
    default:
      return launch<M, 4, OutT>(x, ldx, w, n, k, y, ldy, stream);
  }
}

}  // namespace

bool bf16_gemv_supported(int64_t m, int64_t k, int64_t ldx, const void* x, const void* w) {
  return m >= 1 && m <= kBf16GemvMaxRows && k % 8 == 0 && ldx % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

int gemv_split_rule(int64_t n, int64_t chunks, int unroll, int sm_count) {
  // A warp's time is about one memory round trip per loop step, and warps past the 64 an SM holds (64
  // registers each) wait for a second round: the split with the fewest steps x rounds, the smallest on ties.
  // On the H200 this picked the fastest split, or one within 3% of it, for every Llama-8B and Nemotron-H
  // shape at M = 1 (kernel-notes #71); a fixed "fill the SMs" rule lost 12% on 7168 x 4480, whose 560
  // chunks per row leave a four-warp split's second step nearly empty.
  const int64_t pairs = (n + kRows - 1) / kRows;
  int best = 1;
  double best_cost = 0;
  for (int split = 1; split <= 4; split *= 2) {
    const int64_t steps = (chunks + unroll * 32 * split - 1) / (unroll * 32 * split);
    const double rounds = std::max(1.0, static_cast<double>(pairs * split) / (64.0 * sm_count));
    const double cost = static_cast<double>(steps) * rounds;
    if (split == 1 || cost < best_cost) best = split, best_cost = cost;
  }
  return best;
}

int bf16_gemv_split(int64_t n, int64_t k, int sm_count) {
  return gemv_split_rule(n, k / 8, kUnroll, sm_count);
}

namespace {
template <class OutT>
void gemv(const bf16_raw* x, int64_t m, int64_t ldx, const bf16_raw* w, int64_t n, int64_t k, OutT* y,
          int64_t ldy, int split, cudaStream_t stream) {
  if (!bf16_gemv_supported(m, k, ldx, x, w) || n < 1 || n > INT32_MAX || k > INT32_MAX ||
      (split != 1 && split != 2 && split != 4))
    throw Error("internal: bf16_gemv called with an unsupported shape (m " + std::to_string(m) + ", n " +
                std::to_string(n) + ", k " + std::to_string(k) + ", split " + std::to_string(split) + ")");
  switch (m) {
    case 1:
      return launch_split<1, OutT>(split, x, ldx, w, n, k, y, ldy, stream);
    case 2:
      return launch_split<2, OutT>(split, x, ldx, w, n, k, y, ldy, stream);
    case 3:
      return launch_split<3, OutT>(split, x, ldx, w, n, k, y, ldy, stream);
    default:
      return launch_split<4, OutT>(split, x, ldx, w, n, k, y, ldy, stream);
  }
}

}  // namespace

void bf16_gemv(const bf16_raw* x, int64_t m, int64_t ldx, const bf16_raw* w, int64_t n, int64_t k,
               bf16_raw* y, int64_t ldy, int split, cudaStream_t stream) {
  gemv(x, m, ldx, w, n, k, y, ldy, split, stream);
}
void bf16_gemv(const bf16_raw* x, int64_t m, int64_t ldx, const bf16_raw* w, int64_t n, int64_t k, float* y,
               int64_t ldy, int split, cudaStream_t stream) {
  gemv(x, m, ldx, w, n, k, y, ldy, split, stream);
}

}  // namespace fp4lab
