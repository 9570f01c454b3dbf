// The engine kernels of the CUDA backend by op family, declared once for the launches in cuda_ops.cu:
// elementwise_kernels.cu (embedding, norms, element-wise, logits), attention_decode.cu (RoPE, decode
// attention, KV cache), mamba_decode.cu (Mamba-2 decode and short prompts). The tensor-core and chunked
// prefill kernels have their own headers (flash_attention.h, mamba_prefill.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/argmax.h"
#include "cuda/attention_decode.h"
#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "cuda/ptx.cuh"

namespace fp4lab {

using dev::bf16;

constexpr int kAttnWarps = 8;
constexpr int kAttnMaxDimsPerLane = 8;  // head_dim <= 256
constexpr int kAttnUnroll = 4;          // keys per warp iteration: their loads are in flight together
constexpr int kAttnMaxSplits = 32;
// Warps of the GQA decode attention block. Its per-warp work is a chain of dependent instructions: 4 warps
// (one per scheduler) took ~12 µs per Llama-8B layer at short contexts, 8 take ~9.5 µs; 16 (for up to 4 query
// heads per KV head) measured no faster at batch 1 and 9% slower at batch 32 (kernel-notes #36). Shared
// memory holds one accumulator per warp and query head: 32 KB at 8 heads of 128.
constexpr int kGqaWarps = 8;
constexpr int kScanWarps = 8;
constexpr int kScanMaxPerLane = 8;
constexpr int kSsmStepWarps = 8;
// The two-kernel Mamba decode step (mamba_decode_step.h): 16 state rows per block of 8 warps, state <= 128.
constexpr int kMambaStepRows = 16;
constexpr int kMambaStepWarps = 8;
constexpr int kMambaStepMaxPerLane = 4;
constexpr int kMaxConvKernel = 8;

// elementwise_kernels.cu
__global__ void embed_kernel(const int* tokens, int t, const bf16* table, int64_t first, int64_t rows,
                             int64_t h, float* x);
__global__ void gather_vocab_kernel(const float* gathered, int64_t rows, int64_t shard, int64_t vocab,
                                    float* out);
__global__ void __launch_bounds__(1024)
    rmsnorm_kernel(void* x, bool x_f32, const bf16* add, const float* w, int64_t width, float eps, bf16* y);
__global__ void add_f32_kernel(float* x, const bf16* y, int64_t n);
__global__ void add_kernel(bf16* x, const bf16* y, int64_t n);
__global__ void __launch_bounds__(1024)
    rmsnorm8_kernel(void* x, bool x_f32, const bf16* add, const float* w, int64_t width, float eps, bf16* y);
__global__ void silu_mul_kernel(const bf16* g, const bf16* u, bf16* o, int64_t n);
__global__ void relu2_kernel(bf16* x, int64_t n);
// The same on n8 units of 8 consecutive elements (16-byte aligned).
__global__ void silu_mul8_kernel(const bf16* g, const bf16* u, bf16* o, int64_t n8);
__global__ void relu2_8_kernel(bf16* x, int64_t n8);
// Columns [col0, col0 + dcols) of every row, in BF16 elements or (columns16_kernel) in 16-byte units of 8
// where the offsets and widths allow: blockIdx.y walks the rows, so no per-element division.
__global__ void columns_kernel(const bf16* src, int64_t rows, int64_t scols, int64_t col0, bf16* dst,
                               int64_t dcols);
__global__ void columns16_kernel(const uint4* src, int64_t rows, int64_t scols, int64_t col0, uint4* dst,
                                 int64_t dcols);
__global__ void bias_kernel(bf16* y, const float* bias, int64_t rows, int64_t n);
__global__ void bf16_to_f32_kernel(const bf16* src, int64_t n, float* dst);
__global__ void f32_to_bf16_kernel(const float* src, int64_t n, bf16* dst);
__global__ void f16_to_bf16_kernel(const __half* src, int64_t n, bf16* dst);
// Adds the count of Inf/NaN values among x[0, n) (BF16 bit patterns) to *count; cpu twin: a host scan with
// std::isfinite (weights.cpp finite_or_throw).
__global__ void count_nonfinite_bf16_kernel(const uint16_t* x, int64_t n, unsigned int* count);
// The same for E4M3 bytes (NVFP4 block scales), whose only non-finite pattern is NaN (S.1111.111).
__global__ void count_nan_e4m3_kernel(const uint8_t* x, int64_t n, unsigned int* count);
// attention_decode.cu
__global__ void rope_kv_append_kernel(bf16* q, const bf16* k, const bf16* v, int t, int nh, int nkv, int hd,
                                      const float* inv_freq, const int* pos_one, const int* const* pos_tab,
                                      bf16* kc_one, bf16* vc_one, bf16* const* kc_tab, bf16* const* vc_tab);
__global__ void attention_combine_kernel(const float* part, int splits, int hd, bf16* out);
__global__ void pos_add_kernel(int* pos, int t);
__global__ void pos_add_batch_kernel(int* const* pos_tab, int n);
// mamba_decode.cu
__global__ void softplus_dt_kernel(const bf16* proj, int64_t rows, int64_t pcols, int64_t col0,
                                   const float* bias, float lo, float hi, bf16* dt, int64_t nh);
__global__ void conv1d_silu_kernel(const bf16* in, int64_t in_ld, bf16* out, int64_t out_ld, int t, int ch,
                                   int kernel, const float* w, const float* b, float* state_one,
                                   float* const* state_tab);
__global__ void __launch_bounds__(kScanWarps * 32)
    ssm_scan_kernel(const bf16* x, const bf16* b, const bf16* c, const bf16* dt, const float* a_log,
                    const float* d, int t, int heads, int hp, int ns, int groups, float* state, bf16* y);
__global__ void __launch_bounds__(kSsmStepWarps * 32)
    ssm_step_batch_kernel(const bf16* x, const bf16* b, const bf16* c, int64_t xbc_ld, const bf16* dt,
                          const float* a_log, const float* d, int heads, int hp, int ns, int groups,
                          float* const* state_tab, bf16* y);
__global__ void gated_rmsnorm_kernel(bf16* y, const bf16* z, int64_t z_ld, const float* w, int64_t width,
                                     int groups, float eps);
__global__ void __launch_bounds__(1024)
    gated_rmsnorm8_kernel(bf16* y, const bf16* z, int64_t z_ld, const float* w, int64_t width, int groups,
                          float eps);
// Host side: whether gated_rmsnorm8_kernel (and the decode step's norm) takes rows of `width` in `groups`,
// y [rows, width] and z (rows z_ld apart), and the block size it runs with.
bool gated_rmsnorm8_fits(int64_t width, int groups, int64_t z_ld, const void* y, const void* z);
int gated_rmsnorm8_threads(int64_t width, int groups);

}  // namespace fp4lab
