#include <cuda_bf16.h>

#include "cuda/baseline_gemm.h"
#include "cuda/check.h"
#include "cuda/memory_plan.h"
#include "cuda/ptx.cuh"
#include "format/e4m3.h"

namespace fp4lab {

void cublas_bf16_gemm(void* handle, const bf16_raw* x, int64_t m, const bf16_raw* w, int64_t n, int64_t k,
                      bf16_raw* y, cudaStream_t stream) {
  auto h = static_cast<cublasHandle_t>(handle);
  CUBLAS_CHECK(cublasSetStream(h, stream));
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: Y^T[N, M] = W[K, N]^T . X^T[K, M].
  CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                            static_cast<int>(k), &alpha, w, CUDA_R_16BF, static_cast<int>(k), x, CUDA_R_16BF,
                            static_cast<int>(k), &beta, y, CUDA_R_16BF, static_cast<int>(n),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// One shape's descriptors and the heuristic's algorithm, made on first use: creating them and asking the
// heuristic on every call cost tens of microseconds of host time per product, more than a decode-sized FP8
// GEMM takes on the GPU.
struct LtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

LtGemm::LtGemm() : workspace_(kLtGemmWorkspaceBytes) {
  cublasLtHandle_t h;
  CUBLAS_CHECK(cublasLtCreate(&h));
  handle_ = h;
}
LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

LtGemm::Plan& LtGemm::plan(Kind kind, int64_t m, int64_t n, int64_t k) {
  const auto key = std::make_tuple(static_cast<int>(kind), m, n, k);
  if (const auto it = plans_.find(key); it != plans_.end()) return *it->second;
  auto h = static_cast<cublasLtHandle_t>(handle_);
  const cudaDataType_t in_type = kind == Kind::Nvfp4 ? CUDA_R_4F_E2M1 : CUDA_R_8F_E4M3;
  auto p = std::make_unique<Plan>();
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  // Scalar scales are cuBLASLt's default; NVFP4 takes a block scale per 16, Fp8RowWise a vector per row.
  if (kind != Kind::Fp8E4M3) {
    const cublasLtMatmulMatrixScale_t mode = kind == Kind::Nvfp4 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3
                                                                 : CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
  }
  // The heuristic needs scale pointers set; run() sets each call's own.
  const void* none = workspace_.ptr;
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &none, sizeof none));
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &none, sizeof none));
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p->la, in_type, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p->lb, in_type, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_16BF, static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t wsb = workspace_.bytes;
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
  const cublasStatus_t hs =
      st == CUBLAS_STATUS_SUCCESS
          ? cublasLtMatmulAlgoGetHeuristic(h, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &found)
          : st;
  cublasLtMatmulPreferenceDestroy(pref);
  CUBLAS_CHECK(hs);
  if (found == 0)
    throw Error(std::string("cuBLASLt has no ") +
                (kind == Kind::Nvfp4     ? "NVFP4"
                 : kind == Kind::Fp8E4M3 ? "FP8"
                                         : "row-wise FP8") +
                " kernel for this GPU and shape (" + std::to_string(m) + "x" + std::to_string(n) + "x" +
                std::to_string(k) + ")");
  p->algo = res.algo;
  return *(plans_[key] = std::move(p));
}

void LtGemm::run(Kind kind, const void* w, const void* w_scale, const void* x, const void* x_scale, int64_t m,
                 int64_t n, int64_t k, float alpha, bf16_raw* y, cudaStream_t stream) {
  Plan& p = plan(kind, m, n, k);
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof w_scale));
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof x_scale));
  const float beta = 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.op, &alpha, w, p.la, x, p.lb, &beta,
                              y, p.lc, y, p.lc, &p.algo, workspace_.ptr, workspace_.bytes, stream));
}

namespace {
__global__ void fp8_quant_kernel(const __nv_bfloat16* x, int64_t n, uint8_t* out, float* scale_io) {
  const float amax = *scale_io;
  const float s = amax > 0.0f ? amax / kE4M3Max : 1.0f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = e4m3_encode(__bfloat162float(x[i]) / s);
}
__global__ void fp8_finish_kernel(float* scale_io) {
  const float amax = *scale_io;
  *scale_io = amax > 0.0f ? amax / kE4M3Max : 1.0f;
}
}  // namespace

void fp8_quantize_bf16(const bf16_raw* x, int64_t n, uint8_t* out, float* scale, cudaStream_t stream,
                       bool given_amax) {
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x);
  const unsigned grid = grid_1d(n, 256, 4096);
  if (!given_amax) amax_bf16(x, n, scale, stream);
  fp8_quant_kernel<<<grid, 256, 0, stream>>>(xb, n, out, scale);
  CUDA_CHECK_LAUNCH();
  fp8_finish_kernel<<<1, 1, 0, stream>>>(scale);
  CUDA_CHECK_LAUNCH();
}

namespace {
// Reads [a | b] as one index space of 16-byte words, four loads in flight per thread; the XOR of everything
// reaches memory only in the impossible case below, so the loads cannot be dropped.
__global__ void __launch_bounds__(256)
    stream_read_kernel(const uint4* __restrict__ a, size_t na, const uint4* __restrict__ b, size_t nb,
                       uint32_t* __restrict__ sink) {
  const size_t n = na + nb, stride = size_t{gridDim.x} * blockDim.x;
  auto at = [&](size_t i) { return ptx::ldg_stream_v4(i < na ? a + i : b + (i - na)); };
  uint32_t acc = 0;
  size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 v0 = at(i), v1 = at(i + stride), v2 = at(i + 2 * stride), v3 = at(i + 3 * stride);
    acc ^= v0.x ^ v0.y ^ v0.z ^ v0.w ^ v1.x ^ v1.y ^ v1.z ^ v1.w ^ v2.x ^ v2.y ^ v2.z ^ v2.w ^ v3.x ^ v3.y ^
           v3.z ^ v3.w;
  }
  for (; i < n; i += stride) {
    const uint4 v = at(i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u && threadIdx.x == 0) sink[blockIdx.x] = acc;
}
}  // namespace

void stream_read_reference(const void* a, size_t a_bytes, const void* b, size_t b_bytes, uint32_t* sink,
                           int sm_count, cudaStream_t stream) {
  if (a_bytes % 16 || b_bytes % 16) throw Error("stream_read_reference: sizes must be multiples of 16 bytes");
  stream_read_kernel<<<static_cast<unsigned>(sm_count * kStreamReadBlocksPerSm), 256, 0, stream>>>(
      static_cast<const uint4*>(a), a_bytes / 16, static_cast<const uint4*>(b), b_bytes / 16, sink);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp4lab
