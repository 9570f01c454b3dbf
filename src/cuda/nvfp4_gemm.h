// NVFP4 linear layers on the GPU: weight repack, the W4A16 GEMM (every GPU from sm_80), activation
// quantization, W4A4 emulation. Pointers are device pointers; BF16 tensors are passed as raw 16-bit words so
// that this header is usable from plain C++.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <span>
#include <memory>

#include "cuda/device_memory.h"
#include "cuda/gemm_heuristics.h"
#include "format/nvfp4_tile_layout.h"

namespace fp4lab {

using bf16_raw = uint16_t;

// An NVFP4 weight in the kernels' tile layout, resident on the GPU.
struct Nvfp4DeviceWeight {
  Nvfp4TileGeom geom;    // geom.n is N rounded up to 16: the padding rows are zero
  int64_t n_valid = 0;   // the logical N (outputs beyond it are not written)
  DeviceBuffer weights;  // geom.weight_bytes()
  DeviceBuffer scales;   // geom.scale_bytes()
  float tensor_scale = 0.0f;
  size_t bytes() const { return weights.bytes + scales.bytes; }
};

// Repacks a ModelOpt-layout weight already on the GPU (U8 [N, K/2], E4M3 [N, K/16]) into the tile layout. K
// must be a multiple of 16 (the format's block); any N works (padded to 16 rows inside).
Nvfp4DeviceWeight nvfp4_repack_device(const uint8_t* packed, const uint8_t* scales, int64_t n, int64_t k,
                                      float tensor_scale, cudaStream_t stream);

// A Llama-style MLP's gate and up projections (same N, a multiple of 8, and K; ModelOpt layout on the GPU) as
// one tiled weight of 2N rows: each 16-row tile holds 8 gate rows, then the same 8 rows of up, so one lane
// of the decode kernel's epilogue has both halves of an output (nvfp4_w4a16_gemm_swiglu). Tensor scale 1: the
// two tensor scales are applied by the SwiGLU GEMM.
Nvfp4DeviceWeight nvfp4_repack_swiglu_pair_device(const uint8_t* gate_packed, const uint8_t* gate_scales,
                                                  const uint8_t* up_packed, const uint8_t* up_scales,
                                                  int64_t n, int64_t k, cudaStream_t stream);

// Scratch for split-K partial sums and tile semaphores, grown on demand (not thread-safe).
class GemmWorkspace {
 public:
  float* partials(size_t floats, cudaStream_t s);
  int* counters(size_t n, cudaStream_t s);  // zero-initialised, kernels leave them at zero
  bf16_raw* dequant_scratch(size_t elems);  // for the DequantBlas variant
  bf16_raw* swiglu_scratch(size_t elems);   // the interleaved gate|up output where SwiGLU is not fused
  void* b_image_scratch(size_t bytes);      // X in the wgmma kernels' B-image order
  void* cublas_handle();                    // lazily created cublasHandle_t
  int sm_count();                           // of the current device, queried once
  // Whether the heuristic may pick the Wgmma variants: allowed (set_wgmma) and the GPU and the build can run
  // them (wgmma_supported). Off by default: the fix of their fault (kernel-notes #80) has not yet run on a
  // GPU.
  bool wgmma();
  void set_wgmma(bool allowed) { wgmma_allowed_ = allowed; }
  // Moves on whenever a buffer above is reallocated: captured graphs that used the old one are stale.
  uint64_t generation() const { return generation_; }

  ~GemmWorkspace();

 private:
  // Reallocates b when it holds fewer than `bytes` (moving the generation on); true when it did.
  bool grow(DeviceBuffer& b, size_t bytes);
  DeviceBuffer partials_, counters_, scratch_, swiglu_, b_image_;
  void* cublas_ = nullptr;
  int sm_count_ = 0;
  bool wgmma_allowed_ = false;
  uint64_t generation_ = 0;
};

// Y[M, N] (row stride ldy) = alpha * X[M, K] (row stride ldx) . W^T, alpha multiplying the weight's tensor
// scale. plan == nullptr picks one with choose_w4a16_plan.
void nvfp4_w4a16_gemm(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& w, bf16_raw* y,
                      int64_t ldy, float alpha, GemmWorkspace& ws, cudaStream_t stream,
                      const W4A16Plan* plan = nullptr);

// y = relu(X . W^T)^2 with the activation applied in the decode kernel's epilogue (one launch and one pass
// over y fewer than the GEMM then the activation kernel). Returns false, having done nothing, where the
// heuristic does not pick a decode kernel for this shape; the caller then runs the two steps.
bool nvfp4_w4a16_gemm_relu2(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& w,
                            bf16_raw* y, int64_t ldy, GemmWorkspace& ws, cudaStream_t stream);

// y[M, N] = silu(X . Wg^T * gate_scale) * (X . Wu^T * up_scale) with gu from nvfp4_repack_swiglu_pair_device
// (N = gu.n_valid / 2). Where the heuristic picks a decode kernel the activation is applied in its epilogue
// (one launch, no 2N-wide intermediate); otherwise the GEMM writes the interleaved 2N columns to a scratch
// buffer and one kernel applies the scales and the activation.
void nvfp4_w4a16_gemm_swiglu(const bf16_raw* x, int64_t m, int64_t ldx, const Nvfp4DeviceWeight& gu,
                             float gate_scale, float up_scale, bf16_raw* y, int64_t ldy, GemmWorkspace& ws,
                             cudaStream_t stream);

// Decode-sized M (<= 32): several weights of the same K applied to the same X in one launch (q | k | v,
// gate | up), y[i] = X . w[i]^T with each weight's tensor scale. Returns false, having done nothing, when the
// group does not qualify (M, shapes, or the heuristic does not pick the decode kernel for it); the caller
// then runs the weights one by one.
bool nvfp4_w4a16_gemm_group(const bf16_raw* x, int64_t m, int64_t ldx,
                            std::span<const Nvfp4DeviceWeight* const> w, std::span<bf16_raw* const> y,
                            std::span<const int64_t> ldy, GemmWorkspace& ws, cudaStream_t stream);

// Hopper (sm_90) with a build that carries the sm_90a target: the Wgmma variants can run. Queried once per
// device and thread.
bool wgmma_supported();

// Runs one wgmma on known operands with the operand layouts the Wgmma kernels assume (register A in the
// mma.sync fragment layout, K-major B without swizzle, LBO 128 along K, SBO 1 KB along N) and returns how
// many of the 64 x 32 outputs differ from the product (0: the conventions hold on this GPU). Throws where
// wgmma_supported() is false.
int wgmma_convention_mismatches();

// The Wgmma variants of nvfp4_w4a16_gemm (sm90_nvfp4_w4a16_wgmma.cu); alpha already holds the tensor scale
// and the dequantization bias.
void nvfp4_w4a16_wgmma(const W4A16Plan& p, const bf16_raw* x, int64_t m, int64_t ldx,
                       const Nvfp4DeviceWeight& w, bf16_raw* y, int64_t ldy, float alpha, GemmWorkspace& ws,
                       cudaStream_t stream);

// Dequantizes a tiled weight to BF16 [N, K] (row-major, N padded to 16 rows), the first half of the
// DequantBlas variant. The values are the weights times 2^-7 without the tensor scale (exact in BF16).
void nvfp4_dequant_tiled_to_bf16(const Nvfp4DeviceWeight& w, bf16_raw* out, cudaStream_t stream);

// BF16 activations -> NVFP4 (ModelOpt layout: packed [M, K/2], E4M3 [M, K/16]), bit-identical to
// nvfp4_quantize_ref. tensor_scale: a device pointer; when dynamic, it is computed as amax(x)/2688 first.
void nvfp4_quantize_act(const bf16_raw* x, int64_t m, int64_t k, uint8_t* packed, uint8_t* scales,
                        float* tensor_scale, bool dynamic, cudaStream_t stream);

// max |x| over a BF16 tensor into *amax (device).
void amax_bf16(const bf16_raw* x, int64_t n, float* amax, cudaStream_t stream);

// W4A4 emulation input: each activation replaced by its exact E2M1 x E4M3 value in BF16 (no tensor scale: the
// caller folds it into alpha, as a native W4A4 epilogue does).
void nvfp4_act_fake_quant_unscaled(const uint8_t* packed, const uint8_t* scales, int64_t m, int64_t k,
                                   bf16_raw* out, cudaStream_t stream);

}  // namespace fp4lab
