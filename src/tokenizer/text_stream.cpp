#include "tokenizer/text_stream.h"

namespace fp4lab {

size_t utf8_incomplete_tail(const std::string& s) {
  // Walk back over continuation bytes (at most 3) to the lead byte and compare with the length it announces.
  size_t i = s.size(), cont = 0;
  while (i > 0 && cont < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++cont;
  if (i == 0) return cont;  // continuation bytes with no lead byte: not a whole character yet
  const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  const size_t need = lead < 0x80           ? 1
                      : (lead >> 5) == 0x6  ? 2
                      : (lead >> 4) == 0xE  ? 3
                      : (lead >> 3) == 0x1E ? 4
                                            : 1;
  return cont + 1 < need ? cont + 1 : 0;
}

namespace {
// Bytes of s that can be released: up to the first unfinished character at the end, or before a trailing
// U+FFFD (what a lossy decoder makes of an unfinished character).
size_t releasable(const std::string& s) {
  size_t safe = s.size() - utf8_incomplete_tail(s);
  static const std::string kReplacement = "\xEF\xBF\xBD";
  if (safe >= 3 && s.compare(safe - 3, 3, kReplacement) == 0) safe -= 3;
  return safe;
}

// The first character boundary at or after `from`: where a decode rewrote text already released (a byte-
// fallback run made invalid by a later byte turns into U+FFFD), the released count can fall inside a
// character, and the next piece starts at the next whole one, as released text stays out.
size_t next_boundary(const std::string& s, size_t from, size_t end) {
  while (from < end && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) ++from;
  return from;
}
}  // namespace

bool TextStream::byte_token(int id) const {
  const auto t = tok_.id_token(id);
  return t && t->size() == 6 && t->compare(0, 3, "<0x") == 0 && (*t)[5] == '>';
}

std::string TextStream::push(int id) {
  ids_.push_back(id);
  const std::span<const int> all(ids_);
  std::string s;
  size_t base = 0;  // bytes at the start of s already returned
  bool windowed = read_ > prefix_ && !whole_;
  if (windowed) {
    const std::string head = tok_.decode(all.subspan(prefix_, read_ - prefix_), skip_special_);
    s = tok_.decode(all.subspan(prefix_), skip_special_);
    windowed = !head.empty() && s.size() >= head.size() + extra_ && s.compare(0, head.size(), head) == 0;
    base = head.size() + extra_;
  }
  if (!windowed) {
    s = tok_.decode(all, skip_special_);
    base = emitted_;
  }
  const size_t safe = releasable(s);
  base = next_boundary(s, base, safe);
  std::string out = safe > base ? s.substr(base, safe - base) : std::string();
  emitted_ += out.size();
  if (safe == s.size()) {
    // Everything decoded so far is out: the new tokens become the next window's context. A byte-fallback
    // decoder turns a run of <0xXX> tokens into text as a whole (one U+FFFD per byte when the run is not
    // valid UTF-8), so the context starts where the run that crosses its start begins.
    prefix_ = read_;
    read_ = ids_.size();
    while (prefix_ > 0 && prefix_ < read_ && byte_token(ids_[prefix_ - 1]) && byte_token(ids_[prefix_]))
      --prefix_;
    extra_ = 0;
    whole_ = false;
  } else if (windowed) {
    extra_ += out.size();
  } else {
    whole_ = true;  // part of a whole decode went out: decode everything until it is all out
  }
  return out;
}

std::string TextStream::finish() {
  const std::string s = tok_.decode(ids_, skip_special_);
  const size_t base = next_boundary(s, emitted_, s.size());
  std::string out = s.size() > base ? s.substr(base) : std::string();
  emitted_ = s.size();
  return out;
}

}  // namespace fp4lab
