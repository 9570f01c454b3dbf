// Any byte string as tokenizer.json: a clean fp4lab::Error, or a tokenizer that encodes and decodes a fixed
// text without crashing and whose ids stay inside its vocabulary.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tok =
        fp4lab::Tokenizer::from_json_text({reinterpret_cast<const char*>(data), size}, "tokenizer.json");
    for (std::string_view text : {"Hello world 12345!", "  é\t\n<s>x", ""}) {
      try {
        const auto ids = tok.encode(text);
        for (int id : ids)
          if (id < 0 || id >= tok.vocab_size()) std::abort();
        (void)tok.decode(ids);
      } catch (const fp4lab::Error&) {
      }
    }
  } catch (const fp4lab::Error&) {
  }
  return 0;
}
