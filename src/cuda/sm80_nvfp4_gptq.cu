// GPTQ on the GPU (cuda/nvfp4_gptq.h): Hessian accumulation, the inverse factor, the column loop.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/check.h"
#include "cuda/nvfp4_gptq.h"
#include "format/nvfp4_block.h"

namespace fp4lab {

namespace {

// Columns per step of the column loop: the block's U [B, B] and the CTA's rows [R, B + 1] in shared memory
// (33 KB, under every GPU's default 48 KB), and the trailing update one GEMM of depth B.
constexpr int kBlockCols = 64;
constexpr int kRowsPerCta = 64;
// Diagonal blocks of the blocked Cholesky, factored on the host (FP64, gptq_cholesky_lower).
constexpr int64_t kCholBlock = 256;

__global__ void absmax_kernel(const __nv_bfloat16* __restrict__ x, int64_t m, int64_t k, int64_t ldx,
                              unsigned* __restrict__ out_bits) {
  float a = 0.0f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * k;
       i += int64_t{gridDim.x} * blockDim.x)
    a = fmaxf(a, fabsf(__bfloat162float(x[(i / k) * ldx + i % k])));
  for (int o = 16; o > 0; o /= 2) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  if (threadIdx.x % 32 == 0) atomicMax(out_bits, __float_as_uint(a));
}

// hp = J (H with dead columns set apart, damped) J, FP64 (J reverses the index order: the reversed matrix's
// lower Cholesky factor gives H^-1's upper one without an inverse of H, see upper_factor).
__global__ void reversed_damped_kernel(const float* __restrict__ h, const uint8_t* __restrict__ dead,
                                       int64_t k, double add, double* __restrict__ hp) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < k * k;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k - 1 - p % k, j = k - 1 - p / k;
    double v = (dead[i] || dead[j]) ? (i == j ? 1.0 : 0.0) : double(h[i * k + j]);
    if (i == j) v += add;
    hp[p] = v;
  }
}

__global__ void identity_kernel(double* __restrict__ a, int64_t k) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < k * k;
       p += int64_t{gridDim.x} * blockDim.x)
    a[p] = p % k == p / k ? 1.0 : 0.0;
}

// U = J L'^-1 J, from L'^-1 column-major, written row-major with zeros below the diagonal.
__global__ void upper_from_inverse_kernel(const double* __restrict__ linv, int64_t k, float* __restrict__ u) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < k * k;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = p / k, j = p % k;
    u[p] = j >= i ? static_cast<float>(linv[(k - 1 - i) + (k - 1 - j) * k]) : 0.0f;
  }
}

// One block of columns [c0, c0 + bc) of every row: each thread owns a row, quantizes its columns in order
// (a 16-block's scale chosen when its first column is reached, from the values the earlier errors left),
// and pushes each column's scaled error onto the block's later columns. The errors go to e [rows, kBlockCols]
// for the GEMM that updates the columns after the block.
__global__ void __launch_bounds__(kRowsPerCta)
    gptq_block_kernel(float* __restrict__ w, const float* __restrict__ u, const uint8_t* __restrict__ dead,
                      int64_t rows, int64_t k, int64_t c0, int bc, float ts, bool search,
                      float* __restrict__ e, uint8_t* __restrict__ packed, uint8_t* __restrict__ scales,
                      __nv_bfloat16* __restrict__ dequant) {
  __shared__ float us[kBlockCols][kBlockCols];
  __shared__ float xs[kRowsPerCta][kBlockCols + 1];  // + 1: the rows' columns in different banks
  const int64_t row0 = int64_t{blockIdx.x} * kRowsPerCta;
  for (int p = threadIdx.x; p < bc * bc; p += blockDim.x)
    us[p / bc][p % bc] = u[(c0 + p / bc) * k + c0 + p % bc];
  for (int p = threadIdx.x; p < kRowsPerCta * bc; p += blockDim.x) {
    const int r = p / bc, c = p % bc;
    xs[r][c] = row0 + r < rows && !dead[c0 + c] ? w[(row0 + r) * k + c0 + c] : 0.0f;
  }
  __syncthreads();
  const int64_t row = row0 + threadIdx.x;
  if (row >= rows) return;
  float* x = xs[threadIdx.x];
  uint8_t s = 0, even = 0;
  for (int j = 0; j < bc; ++j) {
    if (j % kNvfp4Block == 0) {
      s = nvfp4_pick_block_scale(x + j, ts, search, nullptr);
      scales[row * (k / kNvfp4Block) + (c0 + j) / kNvfp4Block] = s;
    }
    const uint8_t code = nvfp4_encode_elem(x[j], s, ts);
    const float q = nvfp4_decode_elem(code, s, ts);
    if (j % 2)
      packed[row * (k / 2) + (c0 + j) / 2] = e2m1_pack(even, code);
    else
      even = code;
    if (dequant) dequant[row * k + c0 + j] = __float2bfloat16(q);
    const float err = (x[j] - q) / us[j][j];
    e[row * kBlockCols + j] = err;
    for (int c = j + 1; c < bc; ++c) x[c] -= err * us[j][c];
  }
}

// Round-to-nearest under the same rule, for the comparison figure: one thread per 16-block.
__global__ void rtn_kernel(const float* __restrict__ w, int64_t blocks, float ts, bool search,
                           uint8_t* __restrict__ packed, uint8_t* __restrict__ scales) {
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < blocks;
       b += int64_t{gridDim.x} * blockDim.x) {
    float x[kNvfp4Block];
    for (int i = 0; i < kNvfp4Block; ++i) x[i] = w[b * kNvfp4Block + i];
    const uint8_t s = nvfp4_pick_block_scale(x, ts, search, nullptr);
    scales[b] = s;
    nvfp4_encode_block(x, s, ts, packed + b * (kNvfp4Block / 2));
  }
}

// d = w0 - dequantized(packed, scales) for n values.
__global__ void residual_kernel(const float* __restrict__ w0, const uint8_t* __restrict__ packed,
                                const uint8_t* __restrict__ scales, float ts, int64_t n,
                                float* __restrict__ d) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint8_t byte = packed[i / 2];
    d[i] = w0[i] - nvfp4_decode_elem(i % 2 ? e2m1_hi(byte) : e2m1_lo(byte), scales[i / kNvfp4Block], ts);
  }
}

// *out += sum a[i] b[i] in FP64.
__global__ void dot_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n,
                           double* __restrict__ out) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    acc += double(a[i]) * double(b[i]);
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x % 32 == 0) atomicAdd(out, acc);
}

// The tensor-scale search's errors: blockIdx.y picks the candidate, each thread sums its 16-blocks' squared
// errors under it, and each CTA writes its sum to partial [candidates, gridDim.x].
__global__ void __launch_bounds__(256)
    tensor_scale_error_kernel(const float* __restrict__ x, int64_t blocks, const float* __restrict__ cand,
                              bool search, double* __restrict__ partial) {
  const float ts = cand[blockIdx.y];
  double acc = 0.0;
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < blocks;
       b += int64_t{gridDim.x} * blockDim.x) {
    float v[kNvfp4Block];
    for (int i = 0; i < kNvfp4Block; ++i) v[i] = x[b * kNvfp4Block + i];
    float e = 0.0f;
    nvfp4_pick_block_scale(v, ts, search, &e);
    acc += e;
  }
  __shared__ double warp_sum[256 / 32];
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x % 32 == 0) warp_sum[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int w = 0; w < 256 / 32; ++w) t += warp_sum[w];
    partial[blockIdx.y * int64_t{gridDim.x} + blockIdx.x] = t;
  }
}

cublasHandle_t blas(void* h) {
  return static_cast<cublasHandle_t>(h);
}

}  // namespace

void gptq_accumulate_hessian(void* cublas, const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, float* h,
                             cudaStream_t s) {
  if (m <= 0) return;
  const float one = 1.0f;
  CUBLAS_CHECK(cublasSetStream(blas(cublas), s));
  // Row-major X [m, k] is column-major X^T [k, m]: H = X^T (X^T)^T.
  CUBLAS_CHECK(cublasGemmEx(blas(cublas), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(k), static_cast<int>(k),
                            static_cast<int>(m), &one, x, CUDA_R_16BF, static_cast<int>(ldx), x, CUDA_R_16BF,
                            static_cast<int>(ldx), &one, h, CUDA_R_32F, static_cast<int>(k),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void bf16_absmax_accumulate(const bf16_raw* x, int64_t m, int64_t k, int64_t ldx, unsigned* amax_bits,
                            cudaStream_t s) {
  if (m <= 0 || k <= 0) return;
  absmax_kernel<<<grid_1d(m * k, 256, 1024), 256, 0, s>>>(reinterpret_cast<const __nv_bfloat16*>(x), m, k,
                                                          ldx, amax_bits);
  CUDA_CHECK_LAUNCH();
}

float nvfp4_search_tensor_scale_device(std::span<const Nvfp4Matrix> group, Nvfp4ScaleRule rule,
                                       cudaStream_t s, int64_t sample_rows) {
  const std::vector<float> cand = nvfp4_tensor_scale_candidates(nvfp4_group_amax(group));
  if (cand.size() == 1) return cand[0];
  // The measured rows of every matrix, one after another: the error sums over independent 16-blocks.
  std::vector<float> rows;
  for (const auto& m : group) {
    const int64_t step = nvfp4_search_row_step(m.rows, sample_rows);
    for (int64_t r = 0; r < m.rows; r += step)
      rows.insert(rows.end(), m.x.begin() + r * m.cols, m.x.begin() + (r + 1) * m.cols);
  }
  DeviceBuffer dx(rows.size() * sizeof(float)), dc(cand.size() * sizeof(float));
  CUDA_CHECK(cudaMemcpyAsync(dx.ptr, rows.data(), dx.bytes, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(dc.ptr, cand.data(), dc.bytes, cudaMemcpyHostToDevice, s));
  const int64_t blocks = static_cast<int64_t>(rows.size()) / kNvfp4Block;
  const int ctas = static_cast<int>(std::clamp<int64_t>((blocks + 255) / 256, 1, 512));
  DeviceBuffer dp(static_cast<size_t>(ctas) * cand.size() * sizeof(double));
  tensor_scale_error_kernel<<<dim3(ctas, static_cast<unsigned>(cand.size())), 256, 0, s>>>(
      dx.as<float>(), blocks, dc.as<float>(), rule == Nvfp4ScaleRule::Search, dp.as<double>());
  CUDA_CHECK_LAUNCH();
  std::vector<double> part(static_cast<size_t>(ctas) * cand.size());
  CUDA_CHECK(cudaMemcpyAsync(part.data(), dp.ptr, dp.bytes, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> err(cand.size(), 0.0);
  for (size_t c = 0; c < cand.size(); ++c)
    for (int i = 0; i < ctas; ++i) err[c] += part[c * ctas + i];
  return nvfp4_pick_tensor_scale(cand, err);
}

GptqDevice::GptqDevice(cudaStream_t s) : s_(s) {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  blas_ = h;
  CUBLAS_CHECK(cublasSetStream(h, s_));
}

GptqDevice::~GptqDevice() {
  if (blas_) cublasDestroy(blas(blas_));
}

bool GptqDevice::cholesky_lower(double* a, int64_t n) {
  std::vector<double> blk, rm;
  const double one = 1.0, minus_one = -1.0;
  for (int64_t j = 0; j < n; j += kCholBlock) {
    const int64_t jb = std::min(kCholBlock, n - j);
    double* a11 = a + j + j * n;
    blk.resize(static_cast<size_t>(jb * jb));
    rm.assign(static_cast<size_t>(jb * jb), 0.0);
    CUDA_CHECK(cudaMemcpy2DAsync(blk.data(), jb * sizeof(double), a11, n * sizeof(double),
                                 jb * sizeof(double), jb, cudaMemcpyDeviceToHost, s_));
    CUDA_CHECK(cudaStreamSynchronize(s_));
    // Column-major lower triangle -> row-major lower triangle, factored there, and back with zeros above.
    for (int64_t c = 0; c < jb; ++c)
      for (int64_t r = c; r < jb; ++r) rm[r * jb + c] = blk[r + c * jb];
    if (!gptq_cholesky_lower(rm, jb)) return false;
    for (int64_t c = 0; c < jb; ++c)
      for (int64_t r = 0; r < jb; ++r) blk[r + c * jb] = r >= c ? rm[r * jb + c] : 0.0;
    CUDA_CHECK(cudaMemcpy2DAsync(a11, n * sizeof(double), blk.data(), jb * sizeof(double),
                                 jb * sizeof(double), jb, cudaMemcpyHostToDevice, s_));
    const int64_t rest = n - j - jb;
    if (rest == 0) break;
    double* a21 = a + (j + jb) + j * n;
    // A21 <- A21 L11^-T, then A22 <- A22 - A21 A21^T (lower triangle).
    CUBLAS_CHECK(cublasDtrsm(blas(blas_), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T,
                             CUBLAS_DIAG_NON_UNIT, static_cast<int>(rest), static_cast<int>(jb), &one, a11,
                             static_cast<int>(n), a21, static_cast<int>(n)));
    CUBLAS_CHECK(cublasDsyrk(blas(blas_), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(rest),
                             static_cast<int>(jb), &minus_one, a21, static_cast<int>(n), &one,
                             a + (j + jb) + (j + jb) * n, static_cast<int>(n)));
  }
  // The host copy above must not outlive its buffer: the last upload is waited for.
  CUDA_CHECK(cudaStreamSynchronize(s_));
  return true;
}

DeviceBuffer GptqDevice::upper_factor(const float* h, int64_t k, double damp, std::vector<uint8_t>& dead) {
  // gptq_upper_factor's steps: dead columns set apart, the damping from the mean diagonal, raised tenfold
  // while the factorization breaks down.
  std::vector<float> diag(static_cast<size_t>(k));
  CUDA_CHECK(cudaMemcpy2DAsync(diag.data(), sizeof(float), h, (k + 1) * sizeof(float), sizeof(float), k,
                               cudaMemcpyDeviceToHost, s_));
  CUDA_CHECK(cudaStreamSynchronize(s_));
  dead.assign(static_cast<size_t>(k), 0);
  double mean_diag = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    if (!std::isfinite(diag[i])) throw Error("gptq: the Hessian is not finite");
    dead[i] = !(diag[i] > 0.0f);
    mean_diag += dead[i] ? 1.0 : double(diag[i]);
  }
  mean_diag /= double(k);
  DeviceBuffer dead_dev(static_cast<size_t>(k));
  CUDA_CHECK(cudaMemcpyAsync(dead_dev.ptr, dead.data(), dead.size(), cudaMemcpyHostToDevice, s_));
  const size_t kk = static_cast<size_t>(k * k);
  DeviceBuffer l(kk * sizeof(double));
  const unsigned grid = grid_1d(static_cast<int64_t>(kk), 256, 8192);
  for (int attempt = 0;; ++attempt) {
    reversed_damped_kernel<<<grid, 256, 0, s_>>>(h, dead_dev.as<uint8_t>(), k, damp * mean_diag,
                                                 l.as<double>());
    CUDA_CHECK_LAUNCH();
    if (cholesky_lower(l.as<double>(), k)) break;
    if (attempt == kGptqDampAttempts - 1) throw Error("gptq: the damped Hessian is not positive definite");
    damp *= 10.0;
  }
  // L'^-1 by a triangular solve against the identity; then U = J L'^-1 J.
  DeviceBuffer inv(kk * sizeof(double));
  identity_kernel<<<grid, 256, 0, s_>>>(inv.as<double>(), k);
  CUDA_CHECK_LAUNCH();
  const double one = 1.0;
  CUBLAS_CHECK(cublasDtrsm(blas(blas_), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                           CUBLAS_DIAG_NON_UNIT, static_cast<int>(k), static_cast<int>(k), &one,
                           l.as<double>(), static_cast<int>(k), inv.as<double>(), static_cast<int>(k)));
  DeviceBuffer u(kk * sizeof(float));
  upper_from_inverse_kernel<<<grid, 256, 0, s_>>>(inv.as<double>(), k, u.as<float>());
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaStreamSynchronize(s_));
  return u;
}

double GptqDevice::output_error(const float* w0, const uint8_t* packed, const uint8_t* scales, float ts,
                                int64_t rows, int64_t cols, const float* h) {
  // D H in row chunks of at most ~256 MB: T^T = H D^T column-major.
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t{1} << 26) / cols));
  DeviceBuffer d(static_cast<size_t>(chunk * cols) * sizeof(float)), t(d.bytes), acc(sizeof(double));
  CUDA_CHECK(cudaMemsetAsync(acc.ptr, 0, sizeof(double), s_));
  const float one = 1.0f, zero = 0.0f;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    const int64_t n = nr * cols;
    residual_kernel<<<grid_1d(n, 256, 8192), 256, 0, s_>>>(
        w0 + r0 * cols, packed + r0 * cols / 2, scales + r0 * cols / kNvfp4Block, ts, n, d.as<float>());
    CUDA_CHECK_LAUNCH();
    CUBLAS_CHECK(cublasSgemm(blas(blas_), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols),
                             static_cast<int>(nr), static_cast<int>(cols), &one, h, static_cast<int>(cols),
                             d.as<float>(), static_cast<int>(cols), &zero, t.as<float>(),
                             static_cast<int>(cols)));
    dot_kernel<<<grid_1d(n, 256, 2048), 256, 0, s_>>>(d.as<float>(), t.as<float>(), n, acc.as<double>());
    CUDA_CHECK_LAUNCH();
  }
  double out = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&out, acc.ptr, sizeof(double), cudaMemcpyDeviceToHost, s_));
  CUDA_CHECK(cudaStreamSynchronize(s_));
  return out;
}

GptqDevice::Result GptqDevice::quantize(std::span<const float> w, int64_t rows, int64_t cols, float ts,
                                        const float* h, const GptqOptions& o, bf16_raw* dequant) {
  if (rows <= 0 || cols <= 0 || cols % kNvfp4Block || static_cast<int64_t>(w.size()) != rows * cols)
    throw Error("gptq: weight shape " + std::to_string(rows) + "x" + std::to_string(cols) +
                " (columns a multiple of 16) does not match its " + std::to_string(w.size()) + " values");
  std::vector<uint8_t> dead;
  const DeviceBuffer u = upper_factor(h, cols, o.damp, dead);
  DeviceBuffer dead_dev(dead.size());
  CUDA_CHECK(cudaMemcpyAsync(dead_dev.ptr, dead.data(), dead.size(), cudaMemcpyHostToDevice, s_));
  const size_t n = static_cast<size_t>(rows * cols);
  DeviceBuffer w0(n * sizeof(float)), x(n * sizeof(float));
  CUDA_CHECK(cudaMemcpyAsync(w0.ptr, w.data(), n * sizeof(float), cudaMemcpyHostToDevice, s_));
  CUDA_CHECK(cudaMemcpyAsync(x.ptr, w0.ptr, n * sizeof(float), cudaMemcpyDeviceToDevice, s_));
  DeviceBuffer e(static_cast<size_t>(rows) * kBlockCols * sizeof(float));
  DeviceBuffer packed(n / 2), scales(n / kNvfp4Block);
  const bool search = o.scale_rule == Nvfp4ScaleRule::Search;
  const unsigned ctas = static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta);
  const float minus_one = -1.0f, one = 1.0f;
  for (int64_t c0 = 0; c0 < cols; c0 += kBlockCols) {
    const int bc = static_cast<int>(std::min<int64_t>(kBlockCols, cols - c0));
    gptq_block_kernel<<<ctas, kRowsPerCta, 0, s_>>>(
        x.as<float>(), u.as<float>(), dead_dev.as<uint8_t>(), rows, cols, c0, bc, ts, search, e.as<float>(),
        packed.as<uint8_t>(), scales.as<uint8_t>(), reinterpret_cast<__nv_bfloat16*>(dequant));
    CUDA_CHECK_LAUNCH();
    const int64_t rest = cols - c0 - bc;
    if (rest == 0) break;
    // X[:, c0 + bc:] -= E U[c0:c0 + bc, c0 + bc:], column-major: X^T[rest, rows] -= U_sub^T E^T.
    CUBLAS_CHECK(cublasSgemm(blas(blas_), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(rest),
                             static_cast<int>(rows), bc, &minus_one, u.as<float>() + (c0 + bc) + c0 * cols,
                             static_cast<int>(cols), e.as<float>(), kBlockCols, &one, x.as<float>() + c0 + bc,
                             static_cast<int>(cols)));
  }
  Result r;
  r.q.rows = rows;
  r.q.cols = cols;
  r.q.tensor_scale = ts;
  r.q.packed.resize(n / 2);
  r.q.block_scales.resize(n / kNvfp4Block);
  CUDA_CHECK(cudaMemcpyAsync(r.q.packed.data(), packed.ptr, n / 2, cudaMemcpyDeviceToHost, s_));
  CUDA_CHECK(
      cudaMemcpyAsync(r.q.block_scales.data(), scales.ptr, n / kNvfp4Block, cudaMemcpyDeviceToHost, s_));
  r.error = output_error(w0.as<float>(), packed.as<uint8_t>(), scales.as<uint8_t>(), ts, rows, cols, h);
  rtn_kernel<<<grid_1d(static_cast<int64_t>(n / kNvfp4Block), 256, 8192), 256, 0, s_>>>(
      w0.as<float>(), static_cast<int64_t>(n / kNvfp4Block), ts, search, packed.as<uint8_t>(),
      scales.as<uint8_t>());
  CUDA_CHECK_LAUNCH();
  r.rtn_error = output_error(w0.as<float>(), packed.as<uint8_t>(), scales.as<uint8_t>(), ts, rows, cols, h);
  return r;
}

}  // namespace fp4lab
