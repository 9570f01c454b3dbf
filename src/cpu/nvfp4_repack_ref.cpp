#include "cpu/nvfp4_repack_ref.h"

#include <cstring>

#include "common/error.h"

namespace fp4lab {

Nvfp4TiledHost nvfp4_repack_ref(const Nvfp4Tensor& t) {
  if (t.rows % 16 != 0 || t.cols % 16 != 0)
    throw Error("nvfp4 repack: N and K must be multiples of 16 (got " + std::to_string(t.rows) + " x " +
                std::to_string(t.cols) + ")");
  Nvfp4TiledHost o;
  o.geom = {t.rows, t.cols};
  o.tensor_scale = t.tensor_scale;
  o.weights.assign(static_cast<size_t>(o.geom.weight_bytes()), 0);
  o.scales.assign(static_cast<size_t>(o.geom.scale_bytes()), 0);
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t k = 0; k < t.cols; ++k) {
      const uint8_t b = t.packed[static_cast<size_t>((r * t.cols + k) / 2)];
      const uint8_t code = (k & 1) ? e2m1_hi(b) : e2m1_lo(b);
      int64_t off;
      int a, h;
      nvfp4_tile_weight_slot(o.geom, r, k, &off, &a, &h);
      uint32_t word;
      std::memcpy(&word, o.weights.data() + off, 4);
      word = nvfp4_tile_put_code(word, a, h, code);
      std::memcpy(o.weights.data() + off, &word, 4);
    }
    for (int64_t kb = 0; kb < t.cols / 16; ++kb)
      o.scales[static_cast<size_t>(nvfp4_tile_scale_pos(o.geom, r, kb))] =
          t.block_scales[static_cast<size_t>(r * (t.cols / 16) + kb)];
  }
  return o;
}

Nvfp4Tensor nvfp4_unpack_tiled_ref(const Nvfp4TiledHost& h) {
  Nvfp4Tensor t;
  t.rows = h.geom.n;
  t.cols = h.geom.k;
  t.tensor_scale = h.tensor_scale;
  t.packed.assign(static_cast<size_t>(t.rows * t.cols / 2), 0);
  t.block_scales.assign(static_cast<size_t>(t.rows * t.cols / 16), 0);
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t k = 0; k < t.cols; ++k) {
      int64_t off;
      int a, hh;
      nvfp4_tile_weight_slot(h.geom, r, k, &off, &a, &hh);
      uint32_t word;
      std::memcpy(&word, h.weights.data() + off, 4);
      const uint8_t code = nvfp4_tile_get_code(word, a, hh);
      t.packed[static_cast<size_t>((r * t.cols + k) / 2)] |= static_cast<uint8_t>((k & 1) ? code << 4 : code);
    }
    for (int64_t kb = 0; kb < t.cols / 16; ++kb)
      t.block_scales[static_cast<size_t>(r * (t.cols / 16) + kb)] =
          h.scales[static_cast<size_t>(nvfp4_tile_scale_pos(h.geom, r, kb))];
  }
  return t;
}

}  // namespace fp4lab
