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

std::string TextStream::push(int id) {
  ids_.push_back(id);
  const std::string s = tok_.decode(ids_, skip_special_);
  size_t safe = s.size() - utf8_incomplete_tail(s);
  static const std::string kReplacement = "\xEF\xBF\xBD";
  if (safe >= 3 && s.compare(safe - 3, 3, kReplacement) == 0) safe -= 3;
  if (safe <= emitted_) return {};
  std::string out = s.substr(emitted_, safe - emitted_);
  emitted_ = safe;
  return out;
}

std::string TextStream::finish() {
  const std::string s = tok_.decode(ids_, skip_special_);
  std::string out = s.size() > emitted_ ? s.substr(emitted_) : std::string();
  emitted_ = s.size();
  return out;
}

}  // namespace fp4lab
