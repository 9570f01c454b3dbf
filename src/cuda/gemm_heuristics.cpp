#include "cuda/gemm_heuristics.h"

#include <algorithm>

namespace fp4lab {

const char* w4a16_variant_name(W4A16Variant v) {
  switch (v) {
    case W4A16Variant::Decode8:
      return "decode8";
    case W4A16Variant::Decode16:
      return "decode16";
    case W4A16Variant::Decode32:
      return "decode32";
    case W4A16Variant::Decode64:
      return "decode64";
    case W4A16Variant::Xs32:
      return "xs32";
    case W4A16Variant::Mma32:
      return "mma32";
    case W4A16Variant::Mma64:
      return "mma64";
    case W4A16Variant::Mma128:
      return "mma128";
    case W4A16Variant::Wgmma32:
      return "wgmma32";
    case W4A16Variant::Wgmma64:
      return "wgmma64";
    case W4A16Variant::Wgmma128:
      return "wgmma128";
    case W4A16Variant::Wgmma256:
      return "wgmma256";
    case W4A16Variant::DequantBlas:
      return "dequant+cublas";
  }
  return "?";
}

bool is_decode_variant(W4A16Variant v) {
  return v == W4A16Variant::Decode8 || v == W4A16Variant::Decode16 || v == W4A16Variant::Decode32 ||
         v == W4A16Variant::Decode64;
}

bool is_wgmma_variant(W4A16Variant v) {
  return v == W4A16Variant::Wgmma32 || v == W4A16Variant::Wgmma64 || v == W4A16Variant::Wgmma128 ||
         v == W4A16Variant::Wgmma256;
}

std::string w4a16_plan_suffix(const W4A16Plan& p) {
  std::string s;
  if (p.splits > 1) s += "/s" + std::to_string(p.splits);
  if (is_decode_variant(p.variant)) {
    if (p.rows_per_block == 32) s += "/r32";
    if (p.decode_warps == 4) s += "/w4";
    if (p.decode_warps == 10) s += "/w10";
    if (p.decode_warps == 16) s += "/w16";
  }
  if (p.variant == W4A16Variant::Xs32) s += "/r" + std::to_string(p.rows_per_block);
  if (is_wgmma_variant(p.variant) && p.rows_per_block == 128) s += "/r128";
  return s;
}

GemmTile w4a16_tile(W4A16Variant v) {
  switch (v) {
    case W4A16Variant::Decode8:
      return {16, 8};
    case W4A16Variant::Decode16:
      return {16, 16};
    case W4A16Variant::Decode32:
      return {16, 32};
    case W4A16Variant::Decode64:
      return {16, 64};
    case W4A16Variant::Xs32:
      return {128, 32};
    case W4A16Variant::Mma32:
      return {128, 32};
    case W4A16Variant::Mma64:
      return {128, 64};
    case W4A16Variant::Mma128:
      return {128, 128};
    case W4A16Variant::Wgmma32:
      return {64, 32};
    case W4A16Variant::Wgmma64:
      return {64, 64};
    case W4A16Variant::Wgmma128:
      return {64, 128};
    case W4A16Variant::Wgmma256:
      return {64, 256};
    case W4A16Variant::DequantBlas:
      return {0, 0};
  }
  return {0, 0};
}

W4A16Plan choose_decode_plan(int64_t m, int64_t n, int64_t k, int sm_count) {
  W4A16Plan p;
  p.variant = m <= 8    ? W4A16Variant::Decode8
              : m <= 16 ? W4A16Variant::Decode16
              : m <= 32 ? W4A16Variant::Decode32
                        : W4A16Variant::Decode64;
  // Two row tiles per block halve the activation traffic per weight byte: measured faster on H100 for
  // 9 <= M <= 16 on every model shape, slower at M = 1 (docs/perf/gemm-h100.md). 17 <= M <= 32: the decode
  // kernel with four token tiles, one row tile per block (the two-tile form holds too many registers), is
  // 1.2-3.7x faster than the 32-token mma.sync tile on the Nemotron and Llama shapes (H200,
  // kernel-notes #25).
  if (m > 8 && m <= 16) p.rows_per_block = 32;
  // 17 <= M <= 32 on the wide layers: the shared-X kernel, 128 rows per block, reads X from shared memory
  // once per 8 row tiles instead of from L1/L2 once per tile (H200, M = 32: Llama gate_up 52.9 -> 40.2 us,
  // Nemotron mamba.in 48.6 -> 44.1, mlp.up 33.9 -> 30.0). It loses on N <= 6144 (Nemotron attn.qkv 17.5 ->
  // 28.4): a block per 8 tiles leaves too few warps (kernel-notes #46).
  if (m > 16 && m <= 32 && n >= 12288) {
    p.variant = W4A16Variant::Xs32;
    p.rows_per_block = 128;
    return p;
  }
  // Few row tiles and a long K (Llama mlp.down 4096 x 14336): 256 blocks of 8 warps leave the SMs with too
  // few loads in flight; 16 warps per block (each taking half the k-chunks; two blocks per SM) measured 24%
  // faster at M = 1 and 4 (H200, kernel-notes #30). Past two tiles per SM (Nemotron mamba.out and mlp.down:
  // 280 tiles on 132 SMs), 16-warp blocks leave 16 blocks for a second wave on a few SMs; 10 warps (three
  // resident blocks per SM) take them all in one: 13.2 -> 11.1 us and 17.3 -> 15.8 us (kernel-notes #69).
  // Wider layers and short K lose with either (fewer resident blocks, two iterations or less per warp).
  const int64_t row_tiles = (n + 15) / 16;
  if (m <= 8 && k >= 8192 && row_tiles <= 3 * int64_t{sm_count})
    p.decode_warps = row_tiles <= 2 * int64_t{sm_count} ? 16 : 10;
  // The wide layers (four row tiles per SM or more; measured at K = 4096-4480): 4-warp blocks, eight resident
  // per SM, each warp with twice the chunks of an 8-warp block's warps, the last wave in smaller pieces.
  // H200, M = 1, us, 4 against 8 warps: Llama gate_up 28672 x 4096 20.1 / 22.1, Nemotron mamba.in 22656 x
  // 4480 19.4 / 20.4, mlp.up 15680 x 4480 13.2 / 14.4; at 2.9-3.4 tiles per SM 8 stays (Nemotron 7168 x
  // 4480: 8.2 / 7.9; Llama 6144 x 4096: 6.8 / 7.1, inside the spread), at 1.9 too (4096 x 4096: 6.1 / 5.0)
  // (kernel-notes #70).
  else if (m <= 8 && k < 8192 && row_tiles >= 4 * int64_t{sm_count})
    p.decode_warps = 4;
  return p;
}

int choose_splits(W4A16Variant v, int64_t m, int64_t n, int64_t k, int sm_count, int rows_per_block) {
  constexpr int kMaxSplits = 16;  // caps the split-K workspace
  GemmTile t = w4a16_tile(v);
  if (is_wgmma_variant(v) && rows_per_block == 128) t.bn = 128;
  if (!t.bn || is_decode_variant(v) || v == W4A16Variant::Xs32) return 1;
  const int64_t blocks = ((n + t.bn - 1) / t.bn) * ((m + t.bm - 1) / t.bm);
  const int64_t kchunks = (k + 63) / 64;
  // mma.sync tiles: about two waves of blocks, at least 4 k-chunks per split. wgmma tiles (one warpgroup, two
  // to three resident per SM): about two waves too, at least 8 k-chunks per split so the 6-stage pipeline
  // fills.
  const int64_t target = 2 * int64_t{sm_count};
  const int64_t min_chunks = is_wgmma_variant(v) ? 8 : 4;
  if (blocks >= target) return 1;
  const int64_t s = std::min<int64_t>({(target + blocks - 1) / blocks, kchunks / min_chunks, kMaxSplits});
  return static_cast<int>(std::max<int64_t>(1, s));
}

W4A16Plan choose_wgmma_plan(int64_t m, int64_t n, int64_t k, int sm_count) {
  W4A16Plan p;
  p.variant = m >= 1024 ? W4A16Variant::Wgmma256 : m >= 256 ? W4A16Variant::Wgmma128 : W4A16Variant::Wgmma64;
  p.rows_per_block = m >= 1024 ? 128 : 64;
  p.splits = choose_splits(p.variant, m, n, k, sm_count, p.rows_per_block);
  return p;
}

int64_t wgmma_b_image_bytes(const W4A16Plan& p, int64_t m, int64_t k) {
  if (!is_wgmma_variant(p.variant)) return 0;
  const int64_t bm = w4a16_tile(p.variant).bm;
  return (m + bm - 1) / bm * bm * ((k + 63) / 64 * 64) * 2;
}

W4A16Plan choose_w4a16_plan(int64_t m, int64_t n, int64_t k, int sm_count, bool wgmma) {
  // M <= 32: the decode kernels on every shape. 33 <= M <= 64 on the narrower layers: the decode kernel with
  // eight token tiles beats the mma.sync tiles (H200, M = 64: Llama attn.o 23.9 vs 49.4 us, mlp.down 68.3 vs
  // 88.8; Nemotron attn.o 40.1 vs 51.4, mamba.out level, mlp.down 4% slower); on the wide ones (N > 8192) it
  // loses to mma64 (kernel-notes #28). Past 64 tokens, one decode launch per 64 rows (the rest with the
  // decode plan of its size) still beats the mma tiles on these layers since the loop rework (#41, #44; H200,
  // M = 128: Llama attn.qkv 2 x 23.2 vs 77.7 us, mlp.down 2 x 44.1 vs 147.8; Nemotron mlp.down 2 x 67.4 vs
  // 173.5, mamba.out 2 x 46.4 vs 120.8).
  if (m <= 32 || (m < 256 && n <= 8192)) return choose_decode_plan(m, n, k, sm_count);
  // The wgmma kernels beat dequantize + cuBLAS only at 256-511 rows on the wide layers (H100, 2026-12-07, one
  // bench gemm run: Llama mlp.gate_up at M = 256 163 vs 220 us, Nemotron mamba.in 135 vs 186, mlp.up 107 vs
  // 133); at 512 rows they lose 8-20% there, and everywhere on the narrow layers (attn.o at M = 1024: 213 vs
  // 67 us): their one-chunk-at-a-time MMA (kernel-notes #80) leaves the tensor cores idle while the next
  // chunk dequantizes (kernel-notes #85). In the engine: 256-token prefills 12-13% faster on both presets.
  if (wgmma && m >= 256 && m < 512 && n >= 14336) return choose_wgmma_plan(m, n, k, sm_count);
  W4A16Plan p;
  if (m >= 256) {
    // cuBLAS's wgmma kernels outrun this mma.sync kernel by more than the dequantization pass costs (measured
    // on H100: at M = 256, 338 us for the mma kernel against about 280 us for dequantize + cuBLAS on 22656 x
    // 4480).
    p.variant = W4A16Variant::DequantBlas;
    return p;
  }
  // Left here: 33 <= M < 256 on the wide layers (N > 8192), where the 64-row tile with split-K won on the
  // Nemotron shapes (H100, docs/perf/kernel-notes.md #12; the 32-row tile won only for N <= 8192, which now
  // goes to the decode kernel, and the 128-row tile never won below M = 256: its few blocks leave most SMs
  // idle).
  p.variant = W4A16Variant::Mma64;
  p.splits = choose_splits(p.variant, m, n, k, sm_count);
  return p;
}

}  // namespace fp4lab
