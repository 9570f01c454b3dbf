// NVFP4 / MXFP4 / FP8 tensor codecs (CPU reference). These `_ref` functions define the formats: every
// kernel is tested against them.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "format/nvfp4_block.h"

namespace fp4lab {

// A 2-D NVFP4 tensor in the ModelOpt checkpoint layout.
struct Nvfp4Tensor {
  int64_t rows = 0;                   // N (output features)
  int64_t cols = 0;                   // K (input features), a multiple of 16
  std::vector<uint8_t> packed;        // U8 [rows, cols/2], element 2i in the low nibble
  std::vector<uint8_t> block_scales;  // F8_E4M3 [rows, cols/16], row-major (not swizzled)
  float tensor_scale = 0.0f;          // F32 weight_scale_2 = amax / 2688 (ModelOpt direction)
};

struct Mxfp4Tensor {
  int64_t rows = 0, cols = 0;         // cols a multiple of 32
  std::vector<uint8_t> packed;        // U8 [rows, cols/2]
  std::vector<uint8_t> block_scales;  // UE8M0 [rows, cols/32]
};

float amax_ref(std::span<const float> x);

// ModelOpt-direction quantization. tensor_scale defaults to amax(x)/2688; pass one to share a scale across
// fused shards or to use a calibrated activation scale.
Nvfp4Tensor nvfp4_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols,
                               std::optional<float> tensor_scale = std::nullopt);
void nvfp4_dequantize_ref(const Nvfp4Tensor& t, std::span<float> out);

// How a 16-block's E4M3 scale is chosen. Amax: ModelOpt's recipe, block amax / 6 rounded to E4M3 (what every
// NVFP4 checkpoint published so far uses). Search: the least squared error over the E4M3 scales from two
// codes below that one up to one code above amax / 4 (where the block's largest value lands on E2M1's 4
// instead of its 6, as in "Four Over Six", arXiv 2512.02010), each element rounded to nearest under the
// candidate; ModelOpt's scale wins ties. The layout and the decoding are the same: only the chosen values
// differ.
enum class Nvfp4ScaleRule { Amax, Search };
const char* nvfp4_scale_rule_name(Nvfp4ScaleRule r);
Nvfp4ScaleRule parse_nvfp4_scale_rule(const std::string& s);  // "rtn" | "scale-search"
Nvfp4Tensor nvfp4_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols, float tensor_scale,
                               Nvfp4ScaleRule rule);
// The E4M3 scale code the rule picks for the 16 values at x.
uint8_t nvfp4_choose_block_scale(const float* x, float tensor_scale, Nvfp4ScaleRule rule);
// quantize then dequantize ("fake quant") for emulating W4A4 on hardware without FP4 tensor cores.
void nvfp4_fake_quant_ref(std::span<const float> x, int64_t rows, int64_t cols,
                          std::optional<float> tensor_scale, std::span<float> out);

// Fused projections (q/k/v, gate/up) share one tensor scale: the max over the shards' amax.
float nvfp4_shared_tensor_scale(std::span<const float> shard_amaxes);

// The tensor scale (weight_scale_2) chosen by the error criterion, for a group of weights that share it
// (each a [rows, cols] row-major matrix): among ModelOpt's amax / 2688 times f, f = 56/64 .. 72/64 in steps
// of 1/64, the one whose 16-block scales (picked by `rule`) leave the least squared weight error over the
// group. Moving the tensor scale moves every block's E4M3 grid (3 mantissa bits: values 1/8 apart in an
// octave), so f spans one such step each way; below 1 the group's largest block saturates at E4M3's 448.
// Measured on at most `sample_rows` evenly spaced rows of each matrix (the error sums over independent
// rows), so an 8B model's search costs a fraction of one quantization. ModelOpt's scale wins ties.
struct Nvfp4Matrix {
  std::span<const float> x;
  int64_t rows, cols;
};
constexpr int64_t kNvfp4SearchSampleRows = 512;
float nvfp4_search_tensor_scale(std::span<const Nvfp4Matrix> group, Nvfp4ScaleRule rule,
                                int64_t sample_rows = kNvfp4SearchSampleRows);
// The search's parts, which the CUDA backend's twin (cuda/nvfp4_gptq.h) shares: the group's amax over all its
// values; the candidates, ModelOpt's amax / 2688 first (alone where amax is 0 or not finite); the step
// between measured rows; the candidate with the least error, the earliest on ties.
float nvfp4_group_amax(std::span<const Nvfp4Matrix> group);
std::vector<float> nvfp4_tensor_scale_candidates(float amax);
int64_t nvfp4_search_row_step(int64_t rows, int64_t sample_rows);
float nvfp4_pick_tensor_scale(std::span<const float> candidates, std::span<const double> errors);

// compressed-tensors (llm-compressor) store the inverse: global_scale = 2688 / amax, and compute
// block_scale = e4m3(global_scale * block_amax / 6), x_q = e2m1(x / (block_scale / global_scale)).
float nvfp4_global_scale_from_amax(float amax);
Nvfp4Tensor nvfp4_quantize_inverse_form_ref(std::span<const float> x, int64_t rows, int64_t cols,
                                            float global_scale);
// Converts a compressed-tensors global scale to the ModelOpt direction used everywhere inside fp4lab.
inline float nvfp4_tensor_scale_from_global(float global_scale) {
  return 1.0f / global_scale;
}

Mxfp4Tensor mxfp4_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols);
void mxfp4_dequantize_ref(const Mxfp4Tensor& t, std::span<float> out);

// FP8 E4M3 with one per-tensor scale (amax / 448: ModelOpt's FP8 recipe), or as a checkpoint may store it,
// one scale per row (compressed-tensors' per-channel FP8).
struct Fp8Tensor {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> data;      // E4M3 [rows, cols]
  float scale = 0.0f;             // dequant multiplier (per tensor)
  std::vector<float> row_scales;  // [rows] per-row multipliers in place of `scale`; empty: per tensor
  float row_scale(int64_t r) const { return row_scales.empty() ? scale : row_scales[static_cast<size_t>(r)]; }
};
// amax < 0: the tensor's own max |x|; otherwise the given one (a scale shared with other tensors).
Fp8Tensor fp8_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols, float amax = -1.0f);
// Each code's E4M3 value times its scale: the exact values an FP8 layer computes with.
void fp8_dequantize_ref(const Fp8Tensor& t, std::span<float> out);

// Blackwell / cuBLASLt 128x4 block-scale swizzle. Rows pad to 128, scale columns (K/16) pad to 4.
struct SwizzleShape {
  int64_t rows = 0, kblocks = 0;  // logical scale matrix [rows, kblocks]
  int64_t rows_padded() const { return (rows + 127) / 128 * 128; }
  int64_t kblocks_padded() const { return (kblocks + 3) / 4 * 4; }
  int64_t bytes() const { return rows_padded() * kblocks_padded(); }
};
// Byte offset of scale (m, k): ((m/128)*(Ks/4) + k/4)*512 + (m%32)*16 + ((m/32)%4)*4 + k%4.
FP4LAB_HD int64_t swizzle128x4_offset(int64_t m, int64_t k, int64_t kblocks_padded) {
  return ((m / 128) * (kblocks_padded / 4) + k / 4) * 512 + (m % 32) * 16 + ((m / 32) % 4) * 4 + k % 4;
}
std::vector<uint8_t> swizzle128x4(std::span<const uint8_t> rowmajor, SwizzleShape s);
std::vector<uint8_t> unswizzle128x4(std::span<const uint8_t> swizzled, SwizzleShape s);

}  // namespace fp4lab
