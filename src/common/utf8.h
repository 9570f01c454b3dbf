// UTF-8 helpers shared by the regex wrapper and the tokenizers. Inputs are validated once at the boundary
// (utf8_invalid_offset), so the stepping helpers may assume well-formed text.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fp4lab {

// Offset of the first byte that does not start a well-formed UTF-8 sequence, or npos.
size_t utf8_invalid_offset(std::string_view s);

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

std::string utf8_encode(uint32_t cp);

// Length in bytes of the sequence starting at s[i] (1 for a stray byte, so loops always advance).
inline size_t utf8_len(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 1;
  return i + n <= s.size() ? n : 1;
}

inline uint32_t utf8_peek(std::string_view s, size_t i) {
  const size_t n = utf8_len(s, i);
  auto c = static_cast<unsigned char>(s[i]);
  if (n == 1) return c;
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

inline uint32_t utf8_next(std::string_view s, size_t& i) {
  const uint32_t cp = utf8_peek(s, i);
  i += utf8_len(s, i);
  return cp;
}

// Unicode White_Space.
inline bool utf8_is_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

}  // namespace fp4lab
