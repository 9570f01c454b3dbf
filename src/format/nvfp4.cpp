#include "format/nvfp4.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/parallel.h"

namespace fp4lab {

namespace {
void check_shape(std::span<const float> x, int64_t rows, int64_t cols, int block, const char* what) {
  if (rows < 0 || cols < 0 || cols % block != 0)
    throw Error(std::string(what) + ": K=" + std::to_string(cols) + " is not a multiple of " +
                std::to_string(block));
  if (static_cast<int64_t>(x.size()) != rows * cols)
    throw Error(std::string(what) + ": input has " + std::to_string(x.size()) + " values, shape needs " +
                std::to_string(rows * cols));
}
}  // namespace

float amax_ref(std::span<const float> x) {
  float m = 0.0f;
  for (float v : x) m = std::max(m, std::fabs(v));
  return m;
}

Nvfp4Tensor nvfp4_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols,
                               std::optional<float> tensor_scale) {
  return nvfp4_quantize_ref(x, rows, cols, tensor_scale ? *tensor_scale : nvfp4_tensor_scale(amax_ref(x)),
                            Nvfp4ScaleRule::Amax);
}

const char* nvfp4_scale_rule_name(Nvfp4ScaleRule r) {
  return r == Nvfp4ScaleRule::Search ? "scale-search" : "rtn";
}

Nvfp4ScaleRule parse_nvfp4_scale_rule(const std::string& s) {
  if (s == "rtn") return Nvfp4ScaleRule::Amax;
  if (s == "scale-search") return Nvfp4ScaleRule::Search;
  throw Error("unknown NVFP4 quantization method '" + s + "' (rtn, scale-search)");
}

// ModelOpt's scale unless a candidate of the search has a strictly smaller error (Nvfp4ScaleRule::Search).
uint8_t nvfp4_choose_block_scale(const float* x, float tensor_scale, Nvfp4ScaleRule rule) {
  return nvfp4_pick_block_scale(x, tensor_scale, rule == Nvfp4ScaleRule::Search, nullptr);
}

Nvfp4Tensor nvfp4_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols, float tensor_scale,
                               Nvfp4ScaleRule rule) {
  check_shape(x, rows, cols, kNvfp4Block, "nvfp4_quantize");
  Nvfp4Tensor t;
  t.rows = rows;
  t.cols = cols;
  t.tensor_scale = tensor_scale;
  t.packed.resize(static_cast<size_t>(rows * cols / 2));
  t.block_scales.resize(static_cast<size_t>(rows * cols / kNvfp4Block));
  const int64_t nb = rows * cols / kNvfp4Block;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x.data() + b * kNvfp4Block;
    uint8_t* pb = t.packed.data() + b * 8;
    uint8_t* sb = t.block_scales.data() + b;
    *sb = nvfp4_choose_block_scale(xb, tensor_scale, rule);
    nvfp4_encode_block(xb, *sb, tensor_scale, pb);
  }
  return t;
}

void nvfp4_dequantize_ref(const Nvfp4Tensor& t, std::span<float> out) {
  if (static_cast<int64_t>(out.size()) != t.rows * t.cols)
    throw Error("nvfp4_dequantize: output size mismatch");
  for (int64_t i = 0; i < t.rows * t.cols; ++i) {
    const uint8_t byte = t.packed[static_cast<size_t>(i / 2)];
    const uint8_t code = (i & 1) ? e2m1_hi(byte) : e2m1_lo(byte);
    out[static_cast<size_t>(i)] =
        nvfp4_decode_elem(code, t.block_scales[static_cast<size_t>(i / kNvfp4Block)], t.tensor_scale);
  }
}

void nvfp4_fake_quant_ref(std::span<const float> x, int64_t rows, int64_t cols,
                          std::optional<float> tensor_scale, std::span<float> out) {
  nvfp4_dequantize_ref(nvfp4_quantize_ref(x, rows, cols, tensor_scale), out);
}

float nvfp4_shared_tensor_scale(std::span<const float> shard_amaxes) {
  float m = 0.0f;
  for (float a : shard_amaxes) m = std::max(m, a);
  return nvfp4_tensor_scale(m);
}

std::vector<float> nvfp4_tensor_scale_candidates(float amax) {
  const float ts0 = nvfp4_tensor_scale(amax);
  std::vector<float> cand{ts0};
  if (!(amax > 0.0f) || !std::isfinite(amax)) return cand;
  for (int i = 56; i <= 72; ++i)
    if (i != 64) cand.push_back(ts0 * (static_cast<float>(i) / 64.0f));
  return cand;
}

int64_t nvfp4_search_row_step(int64_t rows, int64_t sample_rows) {
  return std::max<int64_t>(1, rows / std::max<int64_t>(1, sample_rows));
}

float nvfp4_pick_tensor_scale(std::span<const float> candidates, std::span<const double> errors) {
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i)
    if (errors[i] < errors[best]) best = i;
  return candidates[best];
}

float nvfp4_group_amax(std::span<const Nvfp4Matrix> group) {
  for (const auto& m : group) check_shape(m.x, m.rows, m.cols, kNvfp4Block, "nvfp4_search_tensor_scale");
  std::vector<float> part(group.size());
  parallel_parts(static_cast<int64_t>(group.size()), 0, [&](int64_t i) { part[i] = amax_ref(group[i].x); });
  float amax = 0.0f;
  for (float a : part) amax = std::max(amax, a);
  return amax;
}

float nvfp4_search_tensor_scale(std::span<const Nvfp4Matrix> group, Nvfp4ScaleRule rule,
                                int64_t sample_rows) {
  const std::vector<float> cand = nvfp4_tensor_scale_candidates(nvfp4_group_amax(group));
  if (cand.size() == 1) return cand[0];
  auto error_at = [&](float ts) {
    double err = 0.0;
    for (const auto& m : group) {
      const int64_t step = nvfp4_search_row_step(m.rows, sample_rows);
      for (int64_t r = 0; r < m.rows; r += step)
        for (int64_t b = 0; b < m.cols / kNvfp4Block; ++b) {
          float e = 0.0f;
          nvfp4_pick_block_scale(m.x.data() + r * m.cols + b * kNvfp4Block, ts,
                                 rule == Nvfp4ScaleRule::Search, &e);
          err += e;
        }
    }
    return err;
  };
  // The candidates' errors are independent, so they are measured in parallel (an 8B model has 224 groups of
  // up to 512 x 14336 sampled weights; the CUDA backend has its own twin of this loop).
  std::vector<double> err(cand.size());
  parallel_parts(static_cast<int64_t>(cand.size()), 0, [&](int64_t i) { err[i] = error_at(cand[i]); });
  return nvfp4_pick_tensor_scale(cand, err);
}

float nvfp4_global_scale_from_amax(float amax) {
  return kNvfp4ScaleDenom / amax;
}

Nvfp4Tensor nvfp4_quantize_inverse_form_ref(std::span<const float> x, int64_t rows, int64_t cols,
                                            float global_scale) {
  check_shape(x, rows, cols, kNvfp4Block, "nvfp4_quantize_inverse_form");
  Nvfp4Tensor t;
  t.rows = rows;
  t.cols = cols;
  t.tensor_scale = nvfp4_tensor_scale_from_global(global_scale);
  t.packed.resize(static_cast<size_t>(rows * cols / 2));
  t.block_scales.resize(static_cast<size_t>(rows * cols / kNvfp4Block));
  for (int64_t b = 0; b < rows * cols / kNvfp4Block; ++b) {
    const float* blk = x.data() + b * kNvfp4Block;
    float amax = 0.0f;
    for (int i = 0; i < kNvfp4Block; ++i) amax = std::max(amax, std::fabs(blk[i]));
    float s = global_scale * (amax / kE2M1Max);
    if (!(s > 0.0f)) s = 1.0f;
    s = std::clamp(s, kNvfp4MinBlockScale, kE4M3Max);
    const uint8_t sc = e4m3_encode(s);
    t.block_scales[static_cast<size_t>(b)] = sc;
    const float denom = e4m3_decode(sc) / global_scale;
    for (int i = 0; i < 8; ++i) {
      const uint8_t lo = denom > 0 ? e2m1_encode(blk[2 * i] / denom) : 0;
      const uint8_t hi = denom > 0 ? e2m1_encode(blk[2 * i + 1] / denom) : 0;
      t.packed[static_cast<size_t>(b * 8 + i)] = e2m1_pack(lo, hi);
    }
  }
  return t;
}

Mxfp4Tensor mxfp4_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols) {
  check_shape(x, rows, cols, kMxfp4Block, "mxfp4_quantize");
  Mxfp4Tensor t;
  t.rows = rows;
  t.cols = cols;
  t.packed.resize(static_cast<size_t>(rows * cols / 2));
  t.block_scales.resize(static_cast<size_t>(rows * cols / kMxfp4Block));
  for (int64_t b = 0; b < rows * cols / kMxfp4Block; ++b) {
    const float* blk = x.data() + b * kMxfp4Block;
    float amax = 0.0f;
    for (int i = 0; i < kMxfp4Block; ++i) amax = std::max(amax, std::fabs(blk[i]));
    const uint8_t sc = mxfp4_block_scale(amax);
    t.block_scales[static_cast<size_t>(b)] = sc;
    const float scale = ue8m0_decode(sc);
    for (int i = 0; i < kMxfp4Block / 2; ++i)
      t.packed[static_cast<size_t>(b * 16 + i)] =
          e2m1_pack(e2m1_encode(blk[2 * i] / scale), e2m1_encode(blk[2 * i + 1] / scale));
  }
  return t;
}

void mxfp4_dequantize_ref(const Mxfp4Tensor& t, std::span<float> out) {
  if (static_cast<int64_t>(out.size()) != t.rows * t.cols)
    throw Error("mxfp4_dequantize: output size mismatch");
  for (int64_t i = 0; i < t.rows * t.cols; ++i) {
    const uint8_t byte = t.packed[static_cast<size_t>(i / 2)];
    const uint8_t code = (i & 1) ? e2m1_hi(byte) : e2m1_lo(byte);
    out[static_cast<size_t>(i)] =
        e2m1_decode(code) * ue8m0_decode(t.block_scales[static_cast<size_t>(i / kMxfp4Block)]);
  }
}

Fp8Tensor fp8_quantize_ref(std::span<const float> x, int64_t rows, int64_t cols, float amax) {
  if (static_cast<int64_t>(x.size()) != rows * cols) throw Error("fp8_quantize: input size mismatch");
  Fp8Tensor t;
  t.rows = rows;
  t.cols = cols;
  if (amax < 0) amax = amax_ref(x);
  t.scale = amax > 0 ? amax / kE4M3Max : 1.0f;
  t.data.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) t.data[i] = e4m3_encode(x[i] / t.scale);
  return t;
}

void fp8_dequantize_ref(const Fp8Tensor& t, std::span<float> out) {
  if (static_cast<int64_t>(out.size()) != t.rows * t.cols || t.data.size() != out.size() ||
      (!t.row_scales.empty() && static_cast<int64_t>(t.row_scales.size()) != t.rows))
    throw Error("fp8_dequantize: size mismatch");
  for (int64_t r = 0; r < t.rows; ++r) {
    const float s = t.row_scale(r);
    for (int64_t c = 0; c < t.cols; ++c) {
      const size_t i = static_cast<size_t>(r * t.cols + c);
      out[i] = e4m3_decode(t.data[i]) * s;
    }
  }
}

std::vector<uint8_t> swizzle128x4(std::span<const uint8_t> rowmajor, SwizzleShape s) {
  if (static_cast<int64_t>(rowmajor.size()) != s.rows * s.kblocks) throw Error("swizzle128x4: size mismatch");
  std::vector<uint8_t> out(static_cast<size_t>(s.bytes()), 0);
  const int64_t kp = s.kblocks_padded();
  for (int64_t m = 0; m < s.rows; ++m)
    for (int64_t k = 0; k < s.kblocks; ++k)
      out[static_cast<size_t>(swizzle128x4_offset(m, k, kp))] =
          rowmajor[static_cast<size_t>(m * s.kblocks + k)];
  return out;
}

std::vector<uint8_t> unswizzle128x4(std::span<const uint8_t> swizzled, SwizzleShape s) {
  if (static_cast<int64_t>(swizzled.size()) != s.bytes()) throw Error("unswizzle128x4: size mismatch");
  std::vector<uint8_t> out(static_cast<size_t>(s.rows * s.kblocks));
  const int64_t kp = s.kblocks_padded();
  for (int64_t m = 0; m < s.rows; ++m)
    for (int64_t k = 0; k < s.kblocks; ++k)
      out[static_cast<size_t>(m * s.kblocks + k)] =
          swizzled[static_cast<size_t>(swizzle128x4_offset(m, k, kp))];
  return out;
}

}  // namespace fp4lab
