// The parts of a Hugging Face tokenizer pipeline (tokenizer.json): normalizers, pre-tokenizers and decoders,
// as the Rust library defines them, built from their JSON. Internal to src/tokenizer: the Tokenizer
// (tokenizer.h) is the interface.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/json_util.h"
#include "common/regex.h"
#include "common/utf8.h"

namespace fp4lab::tokenizer_parts {

// ---------------------------------------------------------------------------------------------------------
// GPT-2's reversible byte <-> printable-character map: printable Latin-1 bytes map to themselves, the other
// 68 bytes to U+0100.. in byte order, so every byte string becomes a string of visible characters.
struct ByteMap {
  std::string enc[256];
  std::unordered_map<uint32_t, uint8_t> dec;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      enc[b] = utf8_encode(cp);
      dec[cp] = static_cast<uint8_t>(b);
    }
  }
};
inline const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

inline std::string str_field(const json& j, const char* key, const std::string& what,
                             const std::string& dflt = {}) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_string()) throw Error(what + ": '" + key + "' must be a string");
  return j[key].get<std::string>();
}
inline bool bool_field(const json& j, const char* key, bool dflt) {
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : dflt;
}

// A pattern object {"String": s} or {"Regex": r}: literal strings are matched as written.
struct Pattern {
  std::string literal;
  std::optional<Regex> regex;
  static Pattern from(const json& j, const std::string& what) {
    Pattern p;
    if (j.is_object() && j.contains("Regex") && j["Regex"].is_string())
      p.regex.emplace(j["Regex"].get<std::string>(), what);
    else if (j.is_object() && j.contains("String") && j["String"].is_string())
      p.literal = j["String"].get<std::string>();
    else if (j.is_string())
      p.literal = j.get<std::string>();
    else
      throw Error(what + ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
    if (!p.regex && p.literal.empty()) throw Error(what + ": empty pattern");
    return p;
  }
  // Byte ranges of the matches, left to right, non-overlapping.
  std::vector<std::pair<size_t, size_t>> matches(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    if (regex) {
      for (const auto& m : regex->find_all(s))
        if (m.end > m.begin) out.emplace_back(m.begin, m.end);
    } else {
      for (size_t pos = s.find(literal); pos != std::string_view::npos;
           pos = s.find(literal, pos + literal.size()))
        out.emplace_back(pos, pos + literal.size());
    }
    return out;
  }
  std::string replace_all(std::string_view s, std::string_view with) const {
    std::string out;
    size_t last = 0;
    for (auto [b, e] : matches(s)) {
      out.append(s.substr(last, b - last));
      out.append(with);
      last = e;
    }
    out.append(s.substr(last));
    return out;
  }
};

// ---------------------------------------------------------------------------------------------------------
// Normalizers: text -> text before the split.
struct Normalizer {
  virtual ~Normalizer() = default;
  virtual std::string apply(std::string s) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& what);

// ---------------------------------------------------------------------------------------------------------
// Pre-tokenizers: each turns a list of pieces into a finer list. A piece remembers whether it starts the
// input, which Metaspace's prepend_scheme "first" depends on.
struct Piece {
  std::string text;
  bool at_start = false;
};
struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};

struct ByteLevelPre : PreTokenizer {
  bool add_prefix_space = false;
  // When this is the last pre-tokenizer, the BPE model maps bytes to their characters itself (one table
  // lookup per byte instead of a string per piece), so pieces stay raw bytes here.
  bool leave_raw = false;
  std::optional<Regex> regex;  // GPT-2's word split when use_regex
  void apply(std::vector<Piece>& pieces) const override;
};

// The last step of a pre-tokenizer (the last of a Sequence's), or nullptr.
PreTokenizer* last_pre_step(PreTokenizer* p);
std::unique_ptr<PreTokenizer> make_pre(const json& j, const std::string& what);

// ---------------------------------------------------------------------------------------------------------
// Decoders work on the list of token strings, as in the Rust library (decode_chain).
struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& toks) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& what);

}  // namespace fp4lab::tokenizer_parts
