#include <cuda_bf16.h>

#include "cuda/baseline_gemm.h"
#include "cuda/check.h"
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

LtGemm::LtGemm() : workspace_(64ull << 20) {
  cublasLtHandle_t h;
  CUBLAS_CHECK(cublasLtCreate(&h));
  handle_ = h;
}
LtGemm::~LtGemm() {
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

void LtGemm::run(Kind kind, const void* w, const void* w_scale, const void* x, const void* x_scale, int64_t m,
                 int64_t n, int64_t k, float alpha, bf16_raw* y, cudaStream_t stream) {
  auto h = static_cast<cublasLtHandle_t>(handle_);
  const cudaDataType_t in_type = kind == Kind::Fp8E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_4F_E2M1;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  struct Cleanup {
    cublasLtMatmulDesc_t& op;
    cublasLtMatrixLayout_t &la, &lb, &lc;
    cublasLtMatmulPreference_t& pref;
    ~Cleanup() {
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
      if (lc) cublasLtMatrixLayoutDestroy(lc);
      if (lb) cublasLtMatrixLayoutDestroy(lb);
      if (la) cublasLtMatrixLayoutDestroy(la);
      if (op) cublasLtMatmulDescDestroy(op);
    }
  } cleanup{op, la, lb, lc, pref};
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (kind == Kind::Nvfp4) {
    const cublasLtMatmulMatrixScale_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
  }
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof w_scale));
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof x_scale));
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&la, in_type, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&lb, in_type, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t wsb = workspace_.bytes;
  CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, pref, 1, &res, &found));
  if (found == 0)
    throw Error(std::string("cuBLASLt has no ") + (kind == Kind::Fp8E4M3 ? "FP8" : "NVFP4") +
                " kernel for this GPU and shape (" + std::to_string(m) + "x" + std::to_string(n) + "x" +
                std::to_string(k) + ")");
  const float beta = 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(h, op, &alpha, w, la, x, lb, &beta, y, lc, y, lc, &res.algo, workspace_.ptr,
                              wsb, stream));
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

void fp8_quantize_bf16(const bf16_raw* x, int64_t n, uint8_t* out, float* scale, cudaStream_t stream) {
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x);
  const unsigned grid = grid_1d(n, 256, 4096);
  amax_bf16(x, n, scale, stream);
  fp8_quant_kernel<<<grid, 256, 0, stream>>>(xb, n, out, scale);
  CUDA_CHECK_LAUNCH();
  fp8_finish_kernel<<<1, 1, 0, stream>>>(scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp4lab
