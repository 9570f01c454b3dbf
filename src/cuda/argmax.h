// Row argmax of FP32 logits on the device (greedy decoding): the CUDA twin of cpu::argmax.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cpu/reference.h"

namespace fp4lab {

constexpr int kArgmaxThreads = 256, kArgmaxPerBlock = 4096, kArgmaxMaxParts = 256;

// Blocks per row: one per kArgmaxPerBlock logits, at most kArgmaxMaxParts.
int argmax_parts(int64_t cols);

// What the kernel picks, read on the device at run time: temperature 0 the argmax (greedy), > 0 a sample of
// softmax(logits / temperature) per row by the Gumbel-max trick with that row's seed (cpu::sample_gumbel).
// Laid out as this header, then the seeds [rows] (argmax_pick_bytes(rows) in all).
struct alignas(8) ArgmaxPick {
  float temperature;
  uint32_t unused;
};
inline size_t argmax_pick_bytes(int64_t rows) {
  return sizeof(ArgmaxPick) + static_cast<size_t>(rows) * sizeof(uint64_t);
}

// logits [rows, cols] (device) -> out[rows]; pick (device) may be null (argmax). Workspace (device): part_v /
// part_i [rows * argmax_parts(cols)], done[rows] zeroed before the first launch (each launch leaves it at
// zero).
void launch_argmax_rows(const float* logits, int64_t rows, int64_t cols, const ArgmaxPick* pick,
                        float* part_v, int64_t* part_i, int* done, int* out, cudaStream_t stream);

// Sampling with top-k: the kTopLogits (cpu/reference.h) largest logits of each part of argmax_parts(cols)
// parts of a row, as sortable words (orderable key bits << 32 | ~id; 0: none), in descending order within a
// part; the host merges a row's parts (top_logits_merge). Parts of up to kArgmaxPerBlock logits: rows of up
// to kArgmaxPerBlock * kArgmaxMaxParts.
bool top_logits_supported(int64_t cols);
void launch_top_logits_rows(const float* logits, int64_t rows, int64_t cols, uint64_t* out,
                            cudaStream_t stream);
// One row's parts (n words, host memory) merged: its cpu::kTopLogits largest logits in cpu::TopLogit order.
std::vector<cpu::TopLogit> top_logits_merge(const uint64_t* words, size_t n);

}  // namespace fp4lab
