// Load-time weight preparation (ModelOpt layout -> tile layout, once per weight, on the GPU), the tiled ->
// BF16 dequantization used by the large-M path, and the device buffers these need.
#include <cuda_bf16.h>

#include "cuda/check.h"
#include "cuda/nvfp4_gemm.h"
#include "format/nvfp4_block.h"

namespace fp4lab {

bool GemmWorkspace::grow(DeviceBuffer& b, size_t bytes) {
  if (b.bytes >= bytes) return false;
  b = DeviceBuffer(bytes);
  ++generation_;
  return true;
}
float* GemmWorkspace::partials(size_t floats, cudaStream_t) {
  grow(partials_, floats * sizeof(float));
  return partials_.as<float>();
}
int* GemmWorkspace::counters(size_t n, cudaStream_t s) {
  if (grow(counters_, n * sizeof(int))) CUDA_CHECK(cudaMemsetAsync(counters_.ptr, 0, counters_.bytes, s));
  return counters_.as<int>();
}
bf16_raw* GemmWorkspace::swiglu_scratch(size_t elems) {
  grow(swiglu_, elems * 2);
  return swiglu_.as<bf16_raw>();
}
void* GemmWorkspace::b_image_scratch(size_t bytes) {
  grow(b_image_, bytes);
  return b_image_.ptr;
}
bf16_raw* GemmWorkspace::dequant_scratch(size_t elems) {
  grow(scratch_, elems * 2);
  return scratch_.as<bf16_raw>();
}
void* GemmWorkspace::cublas_handle() {
  if (!cublas_) {
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));
    cublas_ = h;
  }
  return cublas_;
}
int GemmWorkspace::sm_count() {
  if (!sm_count_) {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, dev));
  }
  return sm_count_;
}
bool GemmWorkspace::wgmma() { return wgmma_allowed_ && wgmma_supported(); }
GemmWorkspace::~GemmWorkspace() {
  if (cublas_) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
}

namespace {

// One thread per 32-bit word of the tile layout: gathers its eight codes (4 A registers x 2 halves) from the
// ModelOpt layout and scatters their bits as nvfp4_tile_code_bit says. tests/test_repack_ref checks it
// against the CPU twin, which goes through nvfp4_tile_weight_slot.
__global__ void repack_weights_kernel(const uint8_t* __restrict__ packed, int64_t n_valid, int64_t k,
                                      int64_t kchunks, uint32_t* __restrict__ out, int64_t total_words) {
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < total_words;
       o += int64_t{gridDim.x} * blockDim.x) {
    const int64_t tc = o / 128;
    const int within = static_cast<int>(o % 128);
    const int64_t t = tc / kchunks, c = tc % kchunks;
    const int lane = within / 4, j = within % 4;
    uint32_t word = 0;
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int64_t row, kk;
        nvfp4_tile_slot_weight(t, c, lane, j, a, h, &row, &kk);
        if (kk < k && row < n_valid) {
          const uint8_t b = packed[(row * k + kk) / 2];
          word = nvfp4_tile_put_code(word, a, h, (kk & 1) ? (b >> 4) : (b & 0xf));
        }
      }
    out[o] = word;
  }
}

__global__ void repack_scales_kernel(const uint8_t* __restrict__ scales, int64_t n_valid, int64_t k,
                                     int64_t kchunks, uint8_t* __restrict__ out, int64_t total) {
  const int64_t kb_total = k / 16;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < total;
       o += int64_t{gridDim.x} * blockDim.x) {
    const int64_t tc = o / 64;
    const int within = static_cast<int>(o % 64);
    const int64_t t = tc / kchunks, c = tc % kchunks;
    int64_t row, kb;
    nvfp4_tile_scale_owner(t, c, within, &row, &kb);
    out[o] = kb < kb_total && row < n_valid ? scales[row * kb_total + kb] : 0;
  }
}

}  // namespace

Nvfp4DeviceWeight nvfp4_repack_device(const uint8_t* packed, const uint8_t* scales, int64_t n, int64_t k,
                                      float tensor_scale, cudaStream_t stream) {
  if (n <= 0 || k <= 0 || k % 16)
    throw Error("nvfp4 repack: K must be a positive multiple of 16 and N positive (got " + std::to_string(n) +
                " x " + std::to_string(k) + ")");
  Nvfp4DeviceWeight w;
  w.geom = {(n + 15) / 16 * 16, k};
  w.n_valid = n;
  w.tensor_scale = tensor_scale;
  w.weights = DeviceBuffer(static_cast<size_t>(w.geom.weight_bytes()));
  w.scales = DeviceBuffer(static_cast<size_t>(w.geom.scale_bytes()));
  repack_weights_kernel<<<grid_1d(w.geom.weight_bytes() / 4, 256), 256, 0, stream>>>(
      packed, n, k, w.geom.kchunks(), w.weights.as<uint32_t>(), w.geom.weight_bytes() / 4);
  CUDA_CHECK_LAUNCH();
  repack_scales_kernel<<<grid_1d(w.geom.scale_bytes(), 256), 256, 0, stream>>>(
      scales, n, k, w.geom.kchunks(), w.scales.as<uint8_t>(), w.geom.scale_bytes());
  CUDA_CHECK_LAUNCH();
  return w;
}

Nvfp4DeviceWeight nvfp4_repack_swiglu_pair_device(const uint8_t* gate_packed, const uint8_t* gate_scales,
                                                  const uint8_t* up_packed, const uint8_t* up_scales,
                                                  int64_t n, int64_t k, cudaStream_t stream) {
  if (n <= 0 || n % 8 || k <= 0 || k % 16)
    throw Error("nvfp4 repack: a gate/up pair needs N a positive multiple of 8 and K of 16 (got " +
                std::to_string(n) + " x " + std::to_string(k) + ")");
  // Groups of 8 rows, gate then up: [2N, K/2] codes and [2N, K/16] scales, then the usual repack.
  DeviceBuffer pk(static_cast<size_t>(2 * n * k / 2)), sc(static_cast<size_t>(2 * n * k / 16));
  for (int half = 0; half < 2; ++half) {
    const uint8_t* p = half ? up_packed : gate_packed;
    const uint8_t* s = half ? up_scales : gate_scales;
    const size_t prow = static_cast<size_t>(k / 2), srow = static_cast<size_t>(k / 16);
    CUDA_CHECK(cudaMemcpy2DAsync(pk.as<uint8_t>() + half * 8 * prow, 16 * prow, p, 8 * prow, 8 * prow,
                                 static_cast<size_t>(n / 8), cudaMemcpyDeviceToDevice, stream));
    CUDA_CHECK(cudaMemcpy2DAsync(sc.as<uint8_t>() + half * 8 * srow, 16 * srow, s, 8 * srow, 8 * srow,
                                 static_cast<size_t>(n / 8), cudaMemcpyDeviceToDevice, stream));
  }
  Nvfp4DeviceWeight w = nvfp4_repack_device(pk.as<uint8_t>(), sc.as<uint8_t>(), 2 * n, k, 1.0f, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));  // pk and sc are freed on return
  return w;
}

}  // namespace fp4lab
