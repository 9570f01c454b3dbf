// Incremental detokenization for text streamed as it is generated: each piece is whole UTF-8. A token can
// end inside a character (byte-level BPE splits multi-byte characters), so the text of the ids so far is
// held back from the first incomplete sequence (or the U+FFFD a lossy decoder puts in its place) until a
// later token completes it.
//
// Each push decodes a short window, not all ids so far (which made a 256-token reply cost O(n^2) decoder work
// on the engine thread): the tokens of the last whole piece, kept as context for decoders whose text depends
// on the token before (a SentencePiece "strip the leading space" at the start of a decode; a run of byte-
// fallback tokens, turned into text as a whole), and those after them. The new text is the window's text past
// the context's. Where that cannot be trusted (the context decodes to nothing, e.g. only skipped special
// tokens, or is not a prefix of the window's text) the push decodes everything, as the pieces must always add
// up to decode(ids).
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
  bool byte_token(int id) const;  // a byte-fallback token, <0xXX>

  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int> ids_;
  size_t emitted_ = 0;  // bytes of the decoded text already returned
  // The window: ids_[prefix_, read_) is the context (already returned), ids_[read_, end) is new. extra_ bytes
  // of the window's text past the context's were returned too (a piece released before the window moved).
  size_t prefix_ = 0, read_ = 0, extra_ = 0;
  bool whole_ = false;  // a whole decode released part of its text: decode whole until the rest is out
};

// Bytes at the end of s that do not yet form a whole UTF-8 character (0 when s ends on a boundary).
size_t utf8_incomplete_tail(const std::string& s);

}  // namespace fp4lab
