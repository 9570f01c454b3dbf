// The tile layout is a bijection on every (row, k) and survives a round trip (CPU side of the repack).
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "cpu/nvfp4_repack_ref.h"
#include "format/e2m1.h"

using namespace fp4lab;

TEST(TileLayout, EveryWeightAndScaleHasItsOwnSlot) {
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{16, 64}, {32, 80}, {48, 1040}}) {
    Nvfp4TileGeom g{n, k};
    std::set<std::pair<int64_t, int>> seen;  // (word, bit)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        int64_t off;
        int a, h;
        nvfp4_tile_weight_slot(g, r, c, &off, &a, &h);
        ASSERT_LT(off, g.weight_bytes());
        ASSERT_EQ(off % 4, 0);
        for (int b = 0; b < 4; ++b) ASSERT_TRUE(seen.insert({off, nvfp4_tile_code_bit(a, h, b)}).second);
      }
    std::set<int64_t> s;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t kb = 0; kb < k / 16; ++kb) ASSERT_TRUE(s.insert(nvfp4_tile_scale_pos(g, r, kb)).second);
  }
}

// The register extraction the kernels use, applied on the host: each slot yields S.E1E0M at bits 15,8,7,6 of
// its half, i.e. the BF16 pattern of the E2M1 value times 2^-126.
TEST(TileLayout, RegisterExtractionGivesBf16Patterns) {
  for (uint32_t trial = 0; trial < 2000; ++trial) {
    uint8_t codes[4][2];
    uint32_t q = 0;
    for (int a = 0; a < 4; ++a)
      for (int h = 0; h < 2; ++h) {
        codes[a][h] = static_cast<uint8_t>((trial * 7 + a * 5 + h * 11 + (trial >> 3)) & 15);
        q = nvfp4_tile_put_code(q, a, h, codes[a][h]);
      }
    const uint32_t regs[4] = {q & 0x81C081C0u, (q << 3) & 0x81C081C0u, (q << 6) & 0x81C081C0u,
                              ((q << 1) & 0x80008000u) | ((q >> 5) & 0x01000100u) | ((q >> 4) & 0x00C000C0u)};
    for (int a = 0; a < 4; ++a)
      for (int h = 0; h < 2; ++h) {
        const uint16_t bits = static_cast<uint16_t>(regs[a] >> (16 * h));
        const float v = bf16_to_f32(bits) * 0x1p126f;
        ASSERT_EQ(v, e2m1_decode(codes[a][h])) << "a" << a << " h" << h;
      }
  }
}

TEST(TileLayout, SlotsFollowTheMmaFragment) {
  // Lane 5 (r0 = 1, c = 1) owns block 1 (k 16..31) of rows 1 and 9. W[1][22] is k 16+4*1+2: step 1, a2 half
  // 0; W[9][27] is k 16+4*2+3: step 2, a3 half 1. Their scales sit at bytes 2*5 and 2*5+1.
  Nvfp4TileGeom g{16, 64};
  int64_t off;
  int a, h;
  nvfp4_tile_weight_slot(g, 1, 22, &off, &a, &h);
  EXPECT_EQ(off, 5 * 16 + 1 * 4);
  EXPECT_EQ(a, 2);
  EXPECT_EQ(h, 0);
  nvfp4_tile_weight_slot(g, 9, 27, &off, &a, &h);
  EXPECT_EQ(off, 5 * 16 + 2 * 4);
  EXPECT_EQ(a, 3);
  EXPECT_EQ(h, 1);
  EXPECT_EQ(nvfp4_tile_scale_pos(g, 1, 1), 10);
  EXPECT_EQ(nvfp4_tile_scale_pos(g, 9, 1), 11);
}

// The inverses the GPU kernels walk (slot -> weight, scale byte -> owner) undo the forward maps the CPU twin
// uses, over every weight and scale of a padded shape.
TEST(TileLayout, InversesMatchTheForwardMaps) {
  const Nvfp4TileGeom g{32, 80};
  for (int64_t r = 0; r < g.n; ++r)
    for (int64_t k = 0; k < g.k; ++k) {
      int64_t off;
      int a, h;
      nvfp4_tile_weight_slot(g, r, k, &off, &a, &h);
      const int64_t tc = off / 512;
      const int lane = static_cast<int>(off % 512) / 16, j = static_cast<int>(off % 16) / 4;
      int64_t row, kk;
      nvfp4_tile_slot_weight(tc / g.kchunks(), tc % g.kchunks(), lane, j, a, h, &row, &kk);
      ASSERT_EQ(row, r);
      ASSERT_EQ(kk, k);
    }
  for (int64_t r = 0; r < g.n; ++r)
    for (int64_t kb = 0; kb < g.k / 16; ++kb) {
      const int64_t pos = nvfp4_tile_scale_pos(g, r, kb), tc = pos / 64;
      int64_t row, b;
      nvfp4_tile_scale_owner(tc / g.kchunks(), tc % g.kchunks(), static_cast<int>(pos % 64), &row, &b);
      ASSERT_EQ(row, r);
      ASSERT_EQ(b, kb);
    }
}

TEST(TileLayout, RoundTrip) {
  std::mt19937 rng(1);
  Nvfp4Tensor t;
  t.rows = 48;
  t.cols = 1040;
  t.packed.resize(48 * 520);
  t.block_scales.resize(48 * 65);
  for (auto& b : t.packed) b = static_cast<uint8_t>(rng());
  for (auto& b : t.block_scales) b = static_cast<uint8_t>(rng() % 0x7e);
  const auto back = nvfp4_unpack_tiled_ref(nvfp4_repack_ref(t));
  EXPECT_EQ(back.packed, t.packed);
  EXPECT_EQ(back.block_scales, t.block_scales);
}
