// The repacked NVFP4 weight layout the W4A16 tensor-core kernels read (the "tile layout"). Defined once here,
// used by the GPU repack kernel and by its CPU twin (src/cpu/nvfp4_repack_ref.cpp).
//
// The kernels compute Y^T = W . X^T with mma.sync.m16n8k16: W supplies the A operand (16 weight rows x 16 k),
// dequantized in registers. Weights are cut into tiles of 16 rows x 64 k; each tile is 512 bytes, one 16-byte
// load per lane of a warp. Lane l owns rows r0 = l/4 and r0+8 and k pairs 2(l%4), 2(l%4)+1 (+8) of each of the 4
// k16 steps; word j of its 16 bytes holds step j's eight nibbles, ordered so that shifting the word left by 4
// brings the next A register's pair into bits 12-15 / 28-31 (see dequant in sm80_nvfp4_w4a16_gemm.cu):
//   nibble 3,7: (r0,   k 2c, 2c+1)     nibble 2,6: (r0+8, k 2c, 2c+1)
//   nibble 1,5: (r0,   k 2c+8, 2c+9)   nibble 0,4: (r0+8, k 2c+8, 2c+9)
// Block scales (E4M3, one per row per k16) are cut the same way: 64 bytes per tile, lane group r0 = l/4 reads 8
// bytes: rows r0 (steps 0..3) then r0+8 (steps 0..3). K is padded to a multiple of 64 with zero weights and zero
// scales; N must be a multiple of 16.
#pragma once
#include "common/hd.h"

namespace fp4lab {

struct Nvfp4TileGeom {
  int64_t n = 0, k = 0;  // logical shape (N rows, K columns)
  FP4LAB_HD int64_t kchunks() const { return (k + 63) / 64; }
  FP4LAB_HD int64_t row_tiles() const { return n / 16; }
  FP4LAB_HD int64_t weight_bytes() const { return row_tiles() * kchunks() * 512; }
  FP4LAB_HD int64_t scale_bytes() const { return row_tiles() * kchunks() * 64; }
};

// Byte offset and nibble (0 = low, 1 = high) of weight (row, k) in the tile layout.
FP4LAB_HD void nvfp4_tile_weight_pos(const Nvfp4TileGeom& g, int64_t row, int64_t k, int64_t* byte, int* high) {
  const int64_t t = row / 16, c = k / 64;
  const int r = static_cast<int>(row % 16), kk = static_cast<int>(k % 64);
  const int j = kk / 16, kin = kk % 16;
  const int r0 = r % 8, hi_row = r / 8, c4 = (kin % 8) / 2, hi_k = kin / 8, e = kin % 2;
  const int lane = r0 * 4 + c4;
  const int nib = (3 - (hi_row + 2 * hi_k)) + 4 * e;
  *byte = (t * g.kchunks() + c) * 512 + lane * 16 + j * 4 + nib / 2;
  *high = nib % 2;
}

// Byte offset of the block scale of (row, k16-block kb) in the tile layout.
FP4LAB_HD int64_t nvfp4_tile_scale_pos(const Nvfp4TileGeom& g, int64_t row, int64_t kb) {
  const int64_t t = row / 16, c = kb / 4;
  const int r = static_cast<int>(row % 16), j = static_cast<int>(kb % 4);
  return (t * g.kchunks() + c) * 64 + (r % 8) * 8 + (r / 8) * 4 + j;
}

}  // namespace fp4lab
