// Row argmax of FP32 logits on the device (greedy decoding): the CUDA twin of cpu::argmax.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fp4lab {

constexpr int kArgmaxThreads = 256, kArgmaxPerBlock = 4096, kArgmaxMaxParts = 256;

// Blocks per row: one per kArgmaxPerBlock logits, at most kArgmaxMaxParts.
int argmax_parts(int64_t cols);

// logits [rows, cols] (device) -> out[rows]. Workspace (device): part_v / part_i [rows * argmax_parts(cols)],
// done[rows] zeroed before the first launch (each launch leaves it at zero again).
void launch_argmax_rows(const float* logits, int64_t rows, int64_t cols, float* part_v, int64_t* part_i,
                        int* done, int* out, cudaStream_t stream);

}  // namespace fp4lab
