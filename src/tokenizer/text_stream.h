// Incremental detokenization for text streamed as it is generated: each piece is whole UTF-8. A token can
// end inside a character (byte-level BPE splits multi-byte characters), so the text of the ids so far is
// held back from the first incomplete sequence (or the U+FFFD a lossy decoder puts in its place) until a
// later token completes it.
#pragma once
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace fp4lab {

class TextStream {
 public:
  explicit TextStream(const Tokenizer& t, bool skip_special = true) : tok_(t), skip_special_(skip_special) {}
  // The text this id completes (often empty for a partial character).
  std::string push(int id);
  // What is still held back (an unfinished character at the end of generation, as the decoder renders it).
  std::string finish();
  const std::vector<int>& ids() const { return ids_; }

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int> ids_;
  size_t emitted_ = 0;  // bytes of the decoded text already returned
};

// Bytes at the end of s that do not yet form a whole UTF-8 character (0 when s ends on a boundary).
size_t utf8_incomplete_tail(const std::string& s);

}  // namespace fp4lab
