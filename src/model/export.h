// `fp4lab export`: a preset written as a Hugging Face checkpoint (sharded safetensors with an index), in BF16
// or directly in the ModelOpt NVFP4 layout, tensor by tensor, so that full-size checkpoints (a 70B-shaped
// NVFP4 one is ~40 GB) can be made on any machine without holding the model in memory. The values are the
// ones the GPU backend runs the preset with, so loading the export reproduces the preset's tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "model/layout.h"

namespace fp4lab {

struct ExportOptions {
  QuantMode quant = QuantMode::BF16;  // BF16, or NVFP4 (the preset's NVFP4 plan, ModelOpt layout)
  uint64_t seed = 0;                  // as --seed of the commands that run presets
  uint64_t shard_bytes = 5000000000;  // a shard closes before it would pass this (HF's default, 5 GB)
  int threads = 0;                    // generation and quantization threads (0: all cores)
  // Called after each tensor with the bytes written so far and the total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct ExportReport {
  int shards = 0, tensors = 0, nvfp4_layers = 0, bf16_layers = 0;
  uint64_t bytes = 0;
};

ExportReport export_preset(const std::string& preset, const std::string& out_dir, const ExportOptions& o);

}  // namespace fp4lab
