// Any byte string as a safetensors file: either a clean fp4lab::Error or a header whose every tensor lies
// inside the file.
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto h = fp4lab::parse_safetensors_header({data, size}, "fuzz.safetensors");
    const uint64_t data_size = size - 8 - h.header_len;
    for (const auto& t : h.tensors)
      if (t.begin > t.end || t.end > data_size) std::abort();
  } catch (const fp4lab::Error&) {
  }
  return 0;
}
