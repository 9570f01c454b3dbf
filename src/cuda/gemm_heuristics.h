// The one place that picks a W4A16 GEMM variant for a (M, N, K, GPU). Kept free of CUDA so it is unit-tested
// on machines without a GPU.
#pragma once
#include <cstdint>
#include <string>

namespace fp4lab {

enum class W4A16Variant {
  Decode8,      // M <= 8: warp-per-row-tile GEMV on mma.sync, warps split K inside the block
  Decode16,     // M <= 16: same with two token tiles
  Decode32,     // M <= 32: same with four token tiles
  Decode64,     // M <= 64: same with eight token tiles; longer M runs as one launch per 64 rows
  Xs32,         // M <= 32: a warp per row tile, 4 or 8 tiles per block sharing X staged in shared memory
  Mma32,        // block 128 rows x 32 tokens, X staged in shared memory
  Mma64,        // block 128 rows x 64 tokens
  Mma128,       // block 128 rows x 128 tokens
  Wgmma32,      // sm_90a: warpgroup MMA, block 64 rows x 32 tokens, X staged as B images in shared memory
  Wgmma64,      // block 64 rows x 64 tokens
  Wgmma128,     // block 64 rows x 128 tokens
  Wgmma256,     // block 64 rows x 256 tokens
  DequantBlas,  // dequantize to a BF16 scratch buffer, then cuBLAS (large M, where math dominates)
};
const char* w4a16_variant_name(W4A16Variant v);
// Decode8..Decode64: the warp-per-row-tile kernels (which also apply activations in their epilogue).
bool is_decode_variant(W4A16Variant v);
bool is_wgmma_variant(W4A16Variant v);

struct W4A16Plan {
  W4A16Variant variant = W4A16Variant::Decode8;
  int splits = 1;  // K split across blocks (reduced in the kernel by the last block of each tile)
  // Weight rows per block: 16 or 32 for the decode variants (32 shares X loads), 64 or 128 for xs32 and the
  // wgmma variants (128: two warpgroups share the staged X).
  int rows_per_block = 16;
  int decode_warps = 8;  // decode variants: warps splitting K inside a block (4, 8, 10 or 16; 10: one tile)
};

// The knobs that differ from the variant's defaults, as printed after its name: "/s3", "/r32", "/w4".
std::string w4a16_plan_suffix(const W4A16Plan& p);

struct GemmTile {
  int bn, bm;  // weight rows and tokens per block
};
GemmTile w4a16_tile(W4A16Variant v);

// K splits for a tiled variant (Mma*, Wgmma*) at this shape: enough blocks to fill the GPU while each split
// keeps a deep pipeline; 1 for the others.
// rows_per_block: 128 selects the two-warpgroup wgmma block.
int choose_splits(W4A16Variant v, int64_t m, int64_t n, int64_t k, int sm_count, int rows_per_block = 0);

// sm_count: multiprocessors of the GPU; wgmma: the Wgmma variants can run and may be picked (an sm_90a build
// on Hopper, allowed by GemmWorkspace::wgmma).
W4A16Plan choose_w4a16_plan(int64_t m, int64_t n, int64_t k, int sm_count, bool wgmma = false);
// The Wgmma variant and its knobs for this shape (what choose_w4a16_plan picks where it picks one).
W4A16Plan choose_wgmma_plan(int64_t m, int64_t n, int64_t k, int sm_count);
// Bytes of the B images the Wgmma variants stage X in for M tokens and K (X in the tile layout's k order).
int64_t wgmma_b_image_bytes(const W4A16Plan& p, int64_t m, int64_t k);
// The decode kernel and its knobs for M rows (Decode64 past 32; past 64 it runs 64 rows per launch). What
// choose_w4a16_plan picks where it picks a decode kernel, and the plan of the last, shorter launch of a
// prompt-sized M.
W4A16Plan choose_decode_plan(int64_t m, int64_t n, int64_t k, int sm_count);

}  // namespace fp4lab
