// Arbitrary bytes through the real tokenizers of tests/data/tokenizers: invalid UTF-8 is a clean
// fp4lab::Error; valid text must encode to in-vocabulary ids that decode back to the same text (byte-level
// tokenizers are lossless; the SentencePiece-style one may only differ by the leading space its decoder
// strips).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace {
struct Loaded {
  std::unique_ptr<fp4lab::Tokenizer> gpt2, qwen2, mistral;
  Loaded() {
    // A missing tokenizer throws here and stops the fuzzer: no silent run against nothing.
    const std::string dir = FP4LAB_TEST_DATA_DIR "/tokenizers/";
    gpt2 = std::make_unique<fp4lab::Tokenizer>(fp4lab::Tokenizer::from_dir(dir + "gpt2"));
    qwen2 = std::make_unique<fp4lab::Tokenizer>(fp4lab::Tokenizer::from_dir(dir + "qwen2"));
    mistral = std::make_unique<fp4lab::Tokenizer>(fp4lab::Tokenizer::from_dir(dir + "mistral-v1"));
  }
};
}  // namespace

// Loading three real tokenizers under ASan takes seconds: done once before fuzzing starts, so that it does
// not count against the first input's time limit.
namespace {
Loaded* tokenizers = nullptr;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static Loaded loaded;
  tokenizers = &loaded;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Loaded& t = *tokenizers;
  if (!t.gpt2) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto a = t.gpt2->encode(text);
    if (t.gpt2->decode(a) != text) std::abort();
    (void)t.qwen2->encode(text);  // NFC may legitimately change the text, so only in-range ids are required
    for (int id : t.qwen2->encode(text))
      if (id < 0 || id >= t.qwen2->vocab_size()) std::abort();
    const auto m = t.mistral->encode(text);
    const auto back = t.mistral->decode(m);
    // U+2581 in the input decodes as a space, so such texts cannot round-trip by design.
    const bool has_marker = text.find("\u2581") != std::string_view::npos;
    if (!has_marker && back != text && !(text.size() && text[0] == ' ' && back == text.substr(1)))
      std::abort();
  } catch (const fp4lab::Error&) {
  }
  return 0;
}
