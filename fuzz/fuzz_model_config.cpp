// Any byte string as config.json: a clean fp4lab::Error or a config whose layer list matches its layer count,
// and whose linear-layer plan can be built without crashing.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/error.h"
#include "io/model_config.h"
#include "model/layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto j = fp4lab::parse_json_config({reinterpret_cast<const char*>(data), size}, "config.json");
    const auto c = fp4lab::parse_model_config(j, "config.json");
    if (static_cast<int>(c.layers.size()) != c.num_layers) std::abort();
    if (c.num_layers <= 4096) (void)fp4lab::linear_layers(c);
  } catch (const fp4lab::Error&) {
  }
  return 0;
}
