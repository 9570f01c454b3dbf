// Megatron-style tensor parallelism over the model definition: rank r of tp holds the q/k/v heads, gate/up
// rows and o/down input columns of its shard (column-parallel in, row-parallel out, one all-reduce after each
// row-parallel layer), and runs the same Runner on a config with heads and MLP width divided by tp.
// Nemotron-H's Mamba-2 mixers split by heads (and their groups): in_proj and conv channels column-parallel,
// out_proj row-parallel; its MLP and attention layers as above. NVFP4 block scales travel with their weights:
// rows stay whole, K is cut on 16-element block boundaries, the tensor scale is kept. Embeddings and lm_head
// are vocab-parallel (ModelWeights::vocab_begin, vocab_shard_rows); norms are replicated.
#pragma once
#include "model/weights.h"

namespace fp4lab {

// Throws fp4lab::Error when the model cannot be split this way (architecture, head counts, K not a multiple
// of 16 per shard, biases on row-parallel layers).
ModelWeights shard_for_tensor_parallel(const ModelWeights& full, int rank, int tp);

// Rows [r0, r1) of a linear layer (output features), or input columns [c0, c1).
LinearWeight slice_rows(const LinearWeight& w, int64_t r0, int64_t r1);
LinearWeight slice_cols(const LinearWeight& w, int64_t c0, int64_t c1);
// The layer with zero rows appended up to n output features.
LinearWeight pad_rows(LinearWeight w, int64_t n);
// Row blocks of one layer stacked (same K, same kind, same NVFP4 tensor scale).
LinearWeight concat_rows(const std::vector<LinearWeight>& parts);

}  // namespace fp4lab
