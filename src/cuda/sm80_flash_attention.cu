// Flash-attention prefill on tensor cores (sm_80+). A block owns 64 query rows of one head (4 warps x 16
// rows) and walks the visible keys in tiles of 64: S = Q K^T and O += P V are mma.sync m16n8k16 (BF16 in,
// FP32 accumulate), the softmax is online in registers (the S accumulator fragment is, re-packed to BF16, the
// A fragment of P V), and the next K/V tile is fetched with cp.async while the current one is used.
#include "cuda/flash_attention.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"

namespace fp4lab {

namespace {

using bf16 = __nv_bfloat16;
constexpr int kFaWarps = 4;
constexpr int kFaRows = 16 * kFaWarps;  // query rows per block
constexpr int kFaKeys = 64;             // keys per tile

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Shared-memory rows are padded by 16 bytes so that the 8 row addresses of an ldmatrix fall in 8 different
// bank groups.
template <int HD>
constexpr int kLd = HD + 8;

// rows [row0, row0 + n) of a [*, stride] BF16 matrix (columns col0..col0+HD) into a padded tile; rows at or
// past `valid` are zero-filled (cp.async with a zero source size reads nothing).
template <int HD, int N>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t stride, int row0, int valid) {
  constexpr int kChunks = HD / 8;  // 16-byte pieces per row
  for (int c = threadIdx.x; c < N * kChunks; c += kFaWarps * 32) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = row0 + r < valid;
    const bf16* g = ok ? src + static_cast<int64_t>(row0 + r) * stride + col : src;
    ptx::cp_async_16(ptx::smem_addr(dst + r * kLd<HD> + col), g, ok ? 16 : 0);
  }
}

// Query block qb (rows qb * 64 ..) of head blockIdx.y of one sequence: q and out point at its first row.
template <int HD>
__device__ __forceinline__ void flash_prefill_block(const bf16* __restrict__ q, const bf16* __restrict__ kc,
                                                    const bf16* __restrict__ vc,
                                                    const int* __restrict__ pos0p, int t, int nh, int nkv,
                                                    bf16* __restrict__ out, int qb) {
  extern __shared__ __align__(16) unsigned char fa_smem[];
  constexpr int LD = kLd<HD>;
  bf16* sq = reinterpret_cast<bf16*>(fa_smem);
  bf16* sk = sq + kFaRows * LD;      // [2][kFaKeys][LD]: double-buffered K
  bf16* sv = sk + 2 * kFaKeys * LD;  // [2][kFaKeys][LD]: double-buffered V
  const int h = blockIdx.y, kh = h / (nh / nkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pos0 = *pos0p;
  const int64_t qstride = static_cast<int64_t>(nh) * HD, kstride = static_cast<int64_t>(nkv) * HD;
  const bf16* kbase = kc + static_cast<int64_t>(kh) * HD;
  const bf16* vbase = vc + static_cast<int64_t>(kh) * HD;
  // Keys visible to the block's last valid row; padding rows past t see what row t - 1 sees (never empty).
  const int last_row = min(t, (qb + 1) * kFaRows) - 1;
  const int kend = pos0 + last_row + 1;
  const int tiles = (kend + kFaKeys - 1) / kFaKeys;

  load_tile<HD, kFaRows>(sq, q + static_cast<int64_t>(h) * HD, qstride, qb * kFaRows, t);
  load_tile<HD, kFaKeys>(sk, kbase, kstride, 0, kend);
  load_tile<HD, kFaKeys>(sv, vbase, kstride, 0, kend);
  ptx::cp_async_commit();

  const int r_lo = qb * kFaRows + warp * 16 + lane / 4;  // this thread's rows: r_lo and r_lo + 8
  const int lim[2] = {pos0 + min(r_lo, t - 1), pos0 + min(r_lo + 8, t - 1)};
  const float scale = rsqrtf(static_cast<float>(HD)) * 1.4426950408889634f;  // exp2 domain
  uint32_t qf[HD / 16][4];
  float o[HD / 8][4];
#pragma unroll
  for (int i = 0; i < HD / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int kb = 0; kb < tiles; ++kb) {
    const int buf = kb & 1;
    if (kb + 1 < tiles) {  // prefetch the next tile into the other buffer
      load_tile<HD, kFaKeys>(sk + (buf ^ 1) * kFaKeys * LD, kbase, kstride, (kb + 1) * kFaKeys, kend);
      load_tile<HD, kFaKeys>(sv + (buf ^ 1) * kFaKeys * LD, vbase, kstride, (kb + 1) * kFaKeys, kend);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();
    if (kb == 0) {
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks)
        ptx::ldmatrix_x4(qf[ks],
                         ptx::smem_addr(sq + (warp * 16 + lane % 16) * LD + ks * 16 + (lane / 16) * 8));
    }
    const bf16* k_t = sk + buf * kFaKeys * LD;
    const bf16* v_t = sv + buf * kFaKeys * LD;
    // S = Q K^T for this warp's 16 rows and the tile's 64 keys: 8 n-tiles of 8 keys.
    float s[kFaKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kFaKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks)
#pragma unroll
      for (int np = 0; np < kFaKeys / 16; ++np) {
        uint32_t b[4];
        const int mi = lane / 8;
        ptx::ldmatrix_x4(
            b, ptx::smem_addr(k_t + (np * 16 + (mi / 2) * 8 + lane % 8) * LD + ks * 16 + (mi % 2) * 8));
        ptx::mma_bf16_16816(s[2 * np], qf[ks], b[0], b[1]);
        ptx::mma_bf16_16816(s[2 * np + 1], qf[ks], b[2], b[3]);
      }
    // Scale into the exp2 domain and mask keys past each row's causal limit (and past the cache's end).
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < kFaKeys / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = kb * kFaKeys + n * 8 + (lane % 4) * 2 + (e & 1);
        s[n][e] = j <= lim[e / 2] ? s[n][e] * scale : -INFINITY;
        mx[e / 2] = fmaxf(mx[e / 2], s[n][e]);
      }
    float corr[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      corr[i] = exp2f(m[i] - mx[i]);  // 0 on the first tile (m = -inf); every row sees key 0 there
      m[i] = mx[i];
      l[i] *= corr[i];
    }
#pragma unroll
    for (int n = 0; n < kFaKeys / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - m[e / 2]);
        l[e / 2] += s[n][e];
      }
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) {
      o[d][0] *= corr[0];
      o[d][1] *= corr[0];
      o[d][2] *= corr[1];
      o[d][3] *= corr[1];
    }
    // O += P V: the S fragments of n-tiles 2kk and 2kk+1 are the A fragment of key step kk.
#pragma unroll
    for (int kk = 0; kk < kFaKeys / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        uint32_t b[4];
        const int mi = lane / 8;
        ptx::ldmatrix_x4_trans(
            b, ptx::smem_addr(v_t + (kk * 16 + (mi % 2) * 8 + lane % 8) * LD + dp * 16 + (mi / 2) * 8));
        ptx::mma_bf16_16816(o[2 * dp], a, b[0], b[1]);
        ptx::mma_bf16_16816(o[2 * dp + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    l[i] = 1.0f / l[i];
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = r_lo + half * 8;
    if (r >= t) continue;
    bf16* op = out + static_cast<int64_t>(r) * qstride + static_cast<int64_t>(h) * HD + (lane % 4) * 2;
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
      *reinterpret_cast<uint32_t*>(op + d * 8) =
          pack_bf16(o[d][half * 2] * l[half], o[d][half * 2 + 1] * l[half]);
  }
}

template <int HD>
__global__ void __launch_bounds__(kFaWarps * 32)
    flash_prefill_kernel(const bf16* __restrict__ q, const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                         const int* __restrict__ pos0p, int t, int nh, int nkv, bf16* __restrict__ out) {
  flash_prefill_block<HD>(q, kc, vc, pos0p, t, nh, nkv, out, blockIdx.x);
}

// Several sequences in one launch (batched prefill): blockIdx.z picks the sequence from the table, which
// rides in the kernel parameters; blocks past a shorter sequence's last query block return at once.
struct FaGroup {
  FlashSeq seq[kFlashMaxSeqs];
};
template <int HD>
__global__ void __launch_bounds__(kFaWarps * 32)
    flash_prefill_batch_kernel(const bf16* __restrict__ q, const __grid_constant__ FaGroup g, int nh, int nkv,
                               bf16* __restrict__ out) {
  const FlashSeq& sq = g.seq[blockIdx.z];
  if (static_cast<int>(blockIdx.x) * kFaRows >= sq.rows) return;
  const int64_t off = sq.row0 * nh * HD;
  flash_prefill_block<HD>(q + off, reinterpret_cast<const bf16*>(sq.kc), reinterpret_cast<const bf16*>(sq.vc),
                          sq.pos0, sq.rows, nh, nkv, out + off, blockIdx.x);
}

template <int HD>
constexpr size_t kFaSmem = static_cast<size_t>(kFaRows + 4 * kFaKeys) * kLd<HD> * sizeof(bf16);

template <int HD>
void launch(const bf16_raw* q, const bf16_raw* kc, const bf16_raw* vc, const int* pos0, int t, int nh,
            int nkv, bf16_raw* out, cudaStream_t stream) {
  allow_dynamic_smem(flash_prefill_kernel<HD>, kFaSmem<HD>);
  const dim3 grid(static_cast<unsigned>((t + kFaRows - 1) / kFaRows), static_cast<unsigned>(nh));
  flash_prefill_kernel<HD><<<grid, kFaWarps * 32, kFaSmem<HD>, stream>>>(
      reinterpret_cast<const bf16*>(q), reinterpret_cast<const bf16*>(kc), reinterpret_cast<const bf16*>(vc),
      pos0, t, nh, nkv, reinterpret_cast<bf16*>(out));
  CUDA_CHECK_LAUNCH();
}

template <int HD>
void launch_batch(const bf16_raw* q, std::span<const FlashSeq> seqs, int nh, int nkv, bf16_raw* out,
                  cudaStream_t stream) {
  allow_dynamic_smem(flash_prefill_batch_kernel<HD>, kFaSmem<HD>);
  for (size_t s0 = 0; s0 < seqs.size(); s0 += kFlashMaxSeqs) {
    FaGroup g{};
    const size_t n = std::min<size_t>(kFlashMaxSeqs, seqs.size() - s0);
    int most = 1;
    for (size_t i = 0; i < n; ++i) {
      g.seq[i] = seqs[s0 + i];
      most = std::max(most, g.seq[i].rows);
    }
    const dim3 grid(static_cast<unsigned>((most + kFaRows - 1) / kFaRows), static_cast<unsigned>(nh),
                    static_cast<unsigned>(n));
    flash_prefill_batch_kernel<HD><<<grid, kFaWarps * 32, kFaSmem<HD>, stream>>>(
        reinterpret_cast<const bf16*>(q), g, nh, nkv, reinterpret_cast<bf16*>(out));
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

bool flash_attention_supported(int head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 128;
}

void flash_attention_prefill(const bf16_raw* q, const bf16_raw* kcache, const bf16_raw* vcache,
                             const int* pos0, int t, int nh, int nkv, int hd, bf16_raw* out,
                             cudaStream_t stream) {
  switch (hd) {
    case 32:
      return launch<32>(q, kcache, vcache, pos0, t, nh, nkv, out, stream);
    case 64:
      return launch<64>(q, kcache, vcache, pos0, t, nh, nkv, out, stream);
    case 128:
      return launch<128>(q, kcache, vcache, pos0, t, nh, nkv, out, stream);
    default:
      throw Error("flash attention: head_dim " + std::to_string(hd) + " is not supported");
  }
}

void flash_attention_prefill_batch(const bf16_raw* q, std::span<const FlashSeq> seqs, int nh, int nkv, int hd,
                                   bf16_raw* out, cudaStream_t stream) {
  switch (hd) {
    case 32:
      return launch_batch<32>(q, seqs, nh, nkv, out, stream);
    case 64:
      return launch_batch<64>(q, seqs, nh, nkv, out, stream);
    case 128:
      return launch_batch<128>(q, seqs, nh, nkv, out, stream);
    default:
      throw Error("flash attention: head_dim " + std::to_string(hd) + " is not supported");
  }
}

}  // namespace fp4lab
