// Hugging Face tokenizers (`tokenizer.json`, or GPT-2 style vocab.json + merges.txt) implemented with the
// same pipeline as the Rust `tokenizers` library: added/special tokens split first, then normalizer,
// pre-tokenizer, BPE model, and on the way back the decoder chain. Encoding never adds special tokens (BOS
// etc.): callers that want them prepend the id, as lm-eval does for models that need it.
#pragma once
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace fp4lab {

class Tokenizer {
 public:
  // `dir` holds tokenizer.json, or vocab.json + merges.txt. Throws fp4lab::Error naming the file and problem.
  static Tokenizer from_dir(const std::string& dir);
  // `what` names the source in error messages.
  static Tokenizer from_json_text(std::string_view text, const std::string& what);
  static Tokenizer from_vocab_merges(std::string_view vocab_json, std::string_view merges_txt,
                                     const std::string& what);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text must be UTF-8 (an Error says where it is not).
  std::vector<int> encode(std::string_view text) const;
  // Ids without a token are skipped (as the Rust library does); special tokens are written unless
  // skip_special.
  std::string decode(std::span<const int> ids, bool skip_special = false) const;

  int vocab_size() const;  // one past the largest id, added tokens included
  std::optional<int> token_id(std::string_view token) const;
  std::optional<std::string> id_token(int id) const;
  bool is_special(int id) const;
  std::string describe() const;  // "BPE, 50257 tokens, ByteLevel pre-tokenizer, ..." for results and logs

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4lab
