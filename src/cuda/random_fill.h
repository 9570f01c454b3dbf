// Deterministic random tensors generated on the GPU (counter-based hash, so any element is reproducible from
// (seed, index) and the host can regenerate the same values for a reference).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/random.h"

namespace fp4lab {

// Fills a BF16 buffer (raw 16-bit words) on the device with elements [first, first + n) of the sequence.
void fill_random_bf16(uint16_t* dst, int64_t n, uint64_t seed, float sigma, uint64_t outlier_every,
                      cudaStream_t s, uint64_t first = 0);

}  // namespace fp4lab
