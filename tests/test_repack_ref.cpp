// The tile layout is a bijection on every (row, k) and survives a round trip (CPU side of the repack).
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "cpu/nvfp4_repack_ref.h"

using namespace fp4lab;

TEST(TileLayout, EveryWeightAndScaleHasItsOwnSlot) {
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{16, 64}, {32, 80}, {48, 1040}}) {
    Nvfp4TileGeom g{n, k};
    std::set<std::pair<int64_t, int>> seen;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        int64_t off;
        int hi;
        nvfp4_tile_weight_pos(g, r, c, &off, &hi);
        ASSERT_LT(off, g.weight_bytes());
        ASSERT_TRUE(seen.insert({off, hi}).second);
      }
    std::set<int64_t> s;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t kb = 0; kb < k / 16; ++kb) ASSERT_TRUE(s.insert(nvfp4_tile_scale_pos(g, r, kb)).second);
  }
}

TEST(TileLayout, LaneWordsHoldTheMmaFragments) {
  // Lane 5 (r0 = 1, c = 1), k16 step 2 of chunk 0: nibble 3 is W[1][32 + 2], nibble 4 is W[9][32 + 11].
  Nvfp4TileGeom g{16, 64};
  int64_t off;
  int hi;
  nvfp4_tile_weight_pos(g, 1, 34, &off, &hi);
  EXPECT_EQ(off, 5 * 16 + 2 * 4 + 1);
  EXPECT_EQ(hi, 1);
  nvfp4_tile_weight_pos(g, 9, 43, &off, &hi);
  EXPECT_EQ(off, 5 * 16 + 2 * 4 + 2);
  EXPECT_EQ(hi, 0);
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
