#include <gtest/gtest.h>

#include "cuda/gemm_heuristics.h"

using namespace fp4lab;

TEST(GemmHeuristics, VariantByBatch) {
  EXPECT_EQ(choose_w4a16_plan(1, 22656, 4480, 132).variant, W4A16Variant::Decode8);
  EXPECT_EQ(choose_w4a16_plan(8, 22656, 4480, 132).variant, W4A16Variant::Decode8);
  EXPECT_EQ(choose_w4a16_plan(9, 22656, 4480, 132).variant, W4A16Variant::Decode16);
  EXPECT_EQ(choose_w4a16_plan(16, 4480, 4480, 132).variant, W4A16Variant::Decode16);
  EXPECT_EQ(choose_w4a16_plan(17, 4480, 4480, 132).variant, W4A16Variant::Decode32);
  EXPECT_EQ(choose_w4a16_plan(32, 6144, 4480, 132).variant, W4A16Variant::Decode32);
  // 17..32 rows on the wide layers: X shared through shared memory by 8 row tiles per block.
  EXPECT_EQ(choose_w4a16_plan(32, 22656, 4480, 132).variant, W4A16Variant::Xs32);
  EXPECT_EQ(choose_w4a16_plan(17, 28672, 4096, 132).variant, W4A16Variant::Xs32);
  EXPECT_EQ(choose_w4a16_plan(32, 15680, 4480, 132).rows_per_block, 128);
  EXPECT_EQ(choose_w4a16_plan(16, 28672, 4096, 132).variant, W4A16Variant::Decode16);
  EXPECT_EQ(choose_w4a16_plan(33, 4480, 4480, 132).variant, W4A16Variant::Decode64);
  EXPECT_EQ(choose_w4a16_plan(33, 22656, 4480, 132).variant, W4A16Variant::Mma64);
  EXPECT_EQ(choose_w4a16_plan(64, 4480, 4480, 132).variant, W4A16Variant::Decode64);
  EXPECT_EQ(choose_w4a16_plan(65, 4480, 4480, 132).variant, W4A16Variant::Decode64);  // 64 rows per launch
  EXPECT_EQ(choose_w4a16_plan(255, 4480, 4480, 132).variant, W4A16Variant::Decode64);
  EXPECT_EQ(choose_w4a16_plan(65, 8193, 4480, 132).variant, W4A16Variant::Mma64);
  // The plan of a prompt-sized M's last, shorter launch is the decode plan of its size, knobs included.
  EXPECT_EQ(choose_decode_plan(12, 4480, 4480, 132).rows_per_block, 32);
  EXPECT_EQ(choose_decode_plan(2, 4096, 14336, 132).decode_warps, 16);
  EXPECT_EQ(choose_decode_plan(40, 4480, 4480, 132).variant, W4A16Variant::Decode64);
  EXPECT_EQ(choose_w4a16_plan(64, 22656, 4480, 132).variant, W4A16Variant::Mma64);
  EXPECT_EQ(choose_w4a16_plan(128, 4480, 10240, 132).variant, W4A16Variant::Decode64);
  EXPECT_EQ(choose_w4a16_plan(128, 15680, 4480, 132).variant, W4A16Variant::Mma64);
  EXPECT_EQ(choose_w4a16_plan(255, 22656, 4480, 132).variant, W4A16Variant::Mma64);
  EXPECT_EQ(choose_w4a16_plan(256, 4480, 4480, 132).variant, W4A16Variant::DequantBlas);
  EXPECT_EQ(choose_w4a16_plan(4096, 4480, 4480, 132).variant, W4A16Variant::DequantBlas);
  EXPECT_EQ(choose_w4a16_plan(512, 4480, 4480, 132).variant, W4A16Variant::DequantBlas);
  EXPECT_EQ(choose_w4a16_plan(1, 22656, 4480, 132).rows_per_block, 16);
  EXPECT_EQ(choose_w4a16_plan(12, 22656, 4480, 132).rows_per_block, 32);
  EXPECT_EQ(choose_w4a16_plan(24, 4480, 4480, 132).rows_per_block, 16);
  // 16 warps per block only for narrow layers with a long K, at decode8 sizes.
  EXPECT_EQ(choose_w4a16_plan(1, 4096, 14336, 132).decode_warps, 16);
  EXPECT_EQ(choose_w4a16_plan(8, 4096, 10240, 132).decode_warps, 16);
  // Past two tiles per SM (280 on 132), 10 warps: three blocks per SM hold every tile in one wave.
  EXPECT_EQ(choose_w4a16_plan(8, 4480, 10240, 132).decode_warps, 10);
  EXPECT_EQ(choose_w4a16_plan(1, 4480, 15680, 132).decode_warps, 10);
  EXPECT_EQ(w4a16_plan_suffix(choose_w4a16_plan(1, 4480, 15680, 132)), "/w10");
  EXPECT_EQ(choose_w4a16_plan(1, 6400, 15680, 132).decode_warps, 8);  // 400 tiles: past three per SM
  EXPECT_EQ(choose_w4a16_plan(1, 4096, 4096, 132).decode_warps, 8);
  // Four row tiles per SM or more at K < 8192: 4 warps (eight blocks per SM); fewer tiles keep 8.
  EXPECT_EQ(choose_w4a16_plan(1, 28672, 4096, 132).decode_warps, 4);
  EXPECT_EQ(choose_w4a16_plan(8, 15680, 4480, 132).decode_warps, 4);
  EXPECT_EQ(w4a16_plan_suffix(choose_w4a16_plan(1, 22656, 4480, 132)), "/w4");
  EXPECT_EQ(choose_w4a16_plan(1, 7168, 4480, 132).decode_warps, 8);   // 448 tiles: 3.4 per SM
  EXPECT_EQ(choose_w4a16_plan(9, 28672, 4096, 132).decode_warps, 8);  // decode16
  EXPECT_EQ(choose_w4a16_plan(1, 22656, 15680, 132).decode_warps, 8);
  EXPECT_EQ(choose_w4a16_plan(9, 4096, 14336, 132).decode_warps, 8);
}

TEST(GemmHeuristics, SplitKFillsTheGpuAndKeepsDepth) {
  // 10240 rows at M=96 (128 x 64 tiles): 80 x 2 = 160 blocks; split K so about two waves of blocks run.
  const auto p = choose_w4a16_plan(96, 10240, 4480, 132);
  EXPECT_EQ(p.variant, W4A16Variant::Mma64);
  EXPECT_GE(p.splits * 160, 2 * 132);
  EXPECT_LE(p.splits, 16);
  // Plenty of blocks already: no split.
  EXPECT_EQ(choose_w4a16_plan(200, 22656, 4480, 132).splits, 1);
  // Short K: at least 4 k-chunks per split.
  EXPECT_LE(choose_w4a16_plan(64, 256, 512, 132).splits, 2);
}

TEST(GemmHeuristics, SplitsFillTheGpu) {
  // The mma.sync tiles: about two waves of blocks, at least 4 k-chunks per split (the rule choose_w4a16_plan
  // always applied to Mma64).
  EXPECT_EQ(choose_splits(W4A16Variant::Mma64, 64, 15680, 4480, 132), 3);  // 123 blocks
  EXPECT_EQ(choose_splits(W4A16Variant::Mma64, 64, 22656, 4480, 132), 2);  // 177 blocks
  EXPECT_EQ(choose_splits(W4A16Variant::Mma64, 64, 4096, 256, 132), 1);    // 4 k-chunks: no room to split
  // wgmma tiles: at least 8 k-chunks per split; 128 rows per block (two warpgroups) halves the blocks.
  EXPECT_EQ(choose_splits(W4A16Variant::Wgmma64, 64, 4096, 4096, 132), 5);           // 64 blocks
  EXPECT_EQ(choose_splits(W4A16Variant::Wgmma64, 64, 4096, 4096, 132, 128), 8);      // 32 blocks, 64 chunks
  EXPECT_EQ(choose_splits(W4A16Variant::Wgmma256, 4096, 22656, 4480, 132, 128), 1);  // 2832 blocks
  // Kernels that do not split K.
  EXPECT_EQ(choose_splits(W4A16Variant::Decode8, 1, 4096, 4096, 132), 1);
  EXPECT_EQ(choose_splits(W4A16Variant::DequantBlas, 4096, 4096, 4096, 132), 1);
  // Not allowed (--no-wgmma, a GPU without sm_90a, the argument's default): never a wgmma variant.
  for (int64_t m : {33, 64, 128, 256, 1024, 4096})
    EXPECT_FALSE(is_wgmma_variant(choose_w4a16_plan(m, 4096, 4096, 132).variant)) << m;
  EXPECT_EQ(w4a16_plan_suffix({W4A16Variant::Wgmma128, 2, 128}), "/s2/r128");
}

TEST(GemmHeuristics, WgmmaOnlyWhereAllowed) {
  // Not allowed: the mma.sync and dequant + cuBLAS choices stay.
  EXPECT_EQ(choose_w4a16_plan(2048, 22656, 4480, 132).variant, W4A16Variant::DequantBlas);
  // Allowed: where the H100 sweep measured them faster, 256-511 rows on the wide layers (N >= 14336); dequant
  // + cuBLAS from 512 rows and on the narrow layers; the decode kernels keep M <= 32 and narrow layers below
  // 256.
  EXPECT_EQ(choose_w4a16_plan(300, 22656, 4480, 132, true).variant, W4A16Variant::Wgmma128);
  EXPECT_EQ(choose_w4a16_plan(256, 28672, 4096, 132, true).variant, W4A16Variant::Wgmma128);
  EXPECT_EQ(choose_w4a16_plan(512, 28672, 4096, 132, true).variant, W4A16Variant::DequantBlas);
  EXPECT_EQ(choose_w4a16_plan(2048, 22656, 4480, 132, true).variant, W4A16Variant::DequantBlas);
  EXPECT_EQ(choose_w4a16_plan(300, 4480, 4480, 132, true).variant, W4A16Variant::DequantBlas);
  EXPECT_EQ(choose_w4a16_plan(16, 22656, 4480, 132, true).variant, W4A16Variant::Decode16);
  EXPECT_EQ(choose_w4a16_plan(128, 4480, 4480, 132, true).variant, W4A16Variant::Decode64);
  // The B images: M rounded up to the token block, K to the 64-wide chunk, BF16.
  const W4A16Plan p = choose_wgmma_plan(300, 4480, 4480, 132);
  EXPECT_EQ(wgmma_b_image_bytes(p, 300, 4480), int64_t{384} * 4480 * 2);
  EXPECT_EQ(wgmma_b_image_bytes(choose_decode_plan(8, 4480, 4480, 132), 8, 4480), 0);
}
