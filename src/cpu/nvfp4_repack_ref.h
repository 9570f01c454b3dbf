// CPU twin of the GPU weight repack: ModelOpt layout -> tile layout (format/nvfp4_tile_layout.h).
#pragma once
#include <vector>

#include "format/nvfp4.h"
#include "format/nvfp4_tile_layout.h"

namespace fp4lab {

struct Nvfp4TiledHost {
  Nvfp4TileGeom geom;
  std::vector<uint8_t> weights;  // geom.weight_bytes()
  std::vector<uint8_t> scales;   // geom.scale_bytes()
  float tensor_scale = 0.0f;
};

Nvfp4TiledHost nvfp4_repack_ref(const Nvfp4Tensor& t);
// Inverse, for tests: tile layout -> ModelOpt layout.
Nvfp4Tensor nvfp4_unpack_tiled_ref(const Nvfp4TiledHost& t);

}  // namespace fp4lab
