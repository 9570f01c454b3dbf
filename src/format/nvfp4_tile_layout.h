// The repacked NVFP4 weight layout the W4A16 tensor-core kernels read (the "tile layout"). Defined once here,
// used by the GPU repack kernel and by its CPU twin (src/cpu/nvfp4_repack_ref.cpp).
//
// The kernels compute Y^T = W . X^T with mma.sync.m16n8k16: W supplies the A operand (16 weight rows x 16 k),
// dequantized in registers. Weights are cut into tiles of 16 rows x 64 k; each tile is 512 bytes, one 16-byte
// load per lane of a warp. Lane l = 4 r0 + c owns rows r0 and r0+8 and the whole 16-wide scale block c of the
// chunk (k = 16c .. 16c+15). The dot product does not care in which order k is summed, so the four k16 mma
// steps do not take k in natural order: step j's k slots 2c+h and 2c+8+h of lane l stand for k = 16c+4j+h and
// 16c+4j+2+h. Hence a lane needs only its own block's two scales per chunk, and its B fragments for the four
// steps are X[token][16c .. 16c+15]: two 16-byte loads. Word j of the lane's 16 bytes holds step j's eight
// E2M1 codes, one per (A register a, half h):
//   a0: (r0, k 16c+4j+h)   a1: (r0+8, k 16c+4j+h)   a2: (r0, k 16c+4j+2+h)   a3: (r0+8, k 16c+4j+2+h)
// The four code bits (S, E1, E0, M) are not stored as nibbles but scattered so that each BF16x2 register
// S.0000000.E1 E0 M (bits 15, 8, 7, 6 of each half: the code times 2^-126) comes out of the word with few
// instructions: a0 = q & 0x81C081C0, a1 = (q << 3) & 0x81C081C0, a2 = (q << 6) & 0x81C081C0, and a3 from the
// remaining bits (S 14, E1 13, E0 11, M 10) with three shifts. Bit positions are within the 16-bit half h.
// Block scales (E4M3, one per row per k16): 64 bytes per tile chunk, two per lane: (r0, block c) at byte 2l,
// (r0+8, block c) at 2l+1. K is padded to a multiple of 64 with zero weights and zero scales; N must be a
// multiple of 16.
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

// Where weight (row, k) lives: byte offset of its 32-bit word, and which (register a, half h) slot of the
// word.
FP4LAB_HD void nvfp4_tile_weight_slot(const Nvfp4TileGeom& g, int64_t row, int64_t k, int64_t* word_byte,
                                      int* a, int* h) {
  const int64_t t = row / 16, c = k / 64;
  const int r = static_cast<int>(row % 16), kk = static_cast<int>(k % 64);
  const int c4 = kk / 16, kin = kk % 16, j = kin / 4, e = kin % 4;
  const int r0 = r % 8, hi_row = r / 8;
  const int lane = r0 * 4 + c4;
  *word_byte = (t * g.kchunks() + c) * 512 + lane * 16 + j * 4;
  *a = hi_row + 2 * (e / 2);
  *h = e % 2;
}

// Inverse of nvfp4_tile_weight_slot: the (row, k) held by slot (a, h) of word j of `lane` in row tile t,
// k-chunk c. What the GPU repack and dequantization kernels walk (one thread per word).
FP4LAB_HD void nvfp4_tile_slot_weight(int64_t t, int64_t c, int lane, int j, int a, int h, int64_t* row,
                                      int64_t* k) {
  *row = t * 16 + (a % 2) * 8 + lane / 4;
  *k = c * 64 + (lane % 4) * 16 + j * 4 + (a / 2) * 2 + h;
}

// Bit position (0..31) inside the word of code bit `bit` (3 = S, 2 = E1, 1 = E0, 0 = M) for slot (a, h).
FP4LAB_HD int nvfp4_tile_code_bit(int a, int h, int bit) {
  // Per half-word positions of (M, E0, E1, S) for a0..a3.
  constexpr int pos[4][4] = {{6, 7, 8, 15}, {3, 4, 5, 12}, {0, 1, 2, 9}, {10, 11, 13, 14}};
  return pos[a][bit] + 16 * h;
}

FP4LAB_HD uint32_t nvfp4_tile_put_code(uint32_t word, int a, int h, uint8_t code) {
  for (int b = 0; b < 4; ++b)
    if ((code >> b) & 1u) word |= 1u << nvfp4_tile_code_bit(a, h, b);
  return word;
}

FP4LAB_HD uint8_t nvfp4_tile_get_code(uint32_t word, int a, int h) {
  uint8_t code = 0;
  for (int b = 0; b < 4; ++b)
    code |= static_cast<uint8_t>(((word >> nvfp4_tile_code_bit(a, h, b)) & 1u) << b);
  return code;
}

// Byte offset of the block scale of (row, k16-block kb) in the tile layout.
FP4LAB_HD int64_t nvfp4_tile_scale_pos(const Nvfp4TileGeom& g, int64_t row, int64_t kb) {
  const int64_t t = row / 16, c = kb / 4;
  const int r = static_cast<int>(row % 16), c4 = static_cast<int>(kb % 4);
  return (t * g.kchunks() + c) * 64 + ((r % 8) * 4 + c4) * 2 + r / 8;
}

// Inverse of nvfp4_tile_scale_pos: the (row, k16-block) whose scale is byte `byte` (0..63) of row tile t,
// k-chunk c.
FP4LAB_HD void nvfp4_tile_scale_owner(int64_t t, int64_t c, int byte, int64_t* row, int64_t* kb) {
  const int lane = byte / 2;
  *row = t * 16 + (byte % 2) * 8 + lane / 4;
  *kb = c * 4 + lane % 4;
}

}  // namespace fp4lab
