#include "tokenizer/tokenizer_parts.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstring>

namespace fp4lab::tokenizer_parts {

// ---------------------------------------------------------------------------------------------------------
// Normalizers

struct UnicodeNormalizer : Normalizer {
  int options;
  explicit UnicodeNormalizer(int o) : options(o) {}
  std::string apply(std::string s) const override {
    // ASCII is invariant under every normalization form (NFKC included), and most text is ASCII.
    if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
      return s;
    utf8proc_uint8_t* dst = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                static_cast<utf8proc_ssize_t>(s.size()), &dst,
                                static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
    if (n < 0) throw Error(std::string("tokenizer: Unicode normalization failed: ") + utf8proc_errmsg(n));
    std::string out(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
    std::free(dst);
    return out;
  }
};

struct LowercaseNormalizer : Normalizer {
  std::string apply(std::string s) const override {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();)
      out += utf8_encode(
          static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(utf8_next(s, i)))));
    return out;
  }
};

struct PrependNormalizer : Normalizer {
  std::string prefix;
  std::string apply(std::string s) const override { return s.empty() ? s : prefix + s; }
};

struct ReplaceNormalizer : Normalizer {
  Pattern pattern;
  std::string content;
  std::string apply(std::string s) const override { return pattern.replace_all(s, content); }
};

struct StripNormalizer : Normalizer {
  bool left = true, right = true;
  std::string apply(std::string s) const override {
    size_t b = 0, e = s.size();
    if (left)
      while (b < e &&
             utf8proc_category(static_cast<utf8proc_int32_t>(utf8_peek(s, b))) == UTF8PROC_CATEGORY_ZS)
        b += utf8_len(s, b);
    if (right)
      while (e > b) {
        size_t p = e - 1;
        while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
        if (!utf8_is_space(utf8_peek(s, p))) break;
        e = p;
      }
    if (left)
      while (b < e && utf8_is_space(utf8_peek(s, b))) b += utf8_len(s, b);
    return s.substr(b, e - b);
  }
};

struct SequenceNormalizer : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> steps;
  std::string apply(std::string s) const override {
    for (const auto& n : steps) s = n->apply(std::move(s));
    return s;
  }
};

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& what) {
  if (j.is_null()) return nullptr;
  if (!j.is_object()) throw Error(what + ": normalizer must be an object");
  const std::string type = str_field(j, "type", what);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UTF8PROC_DECOMPOSE);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prefix = str_field(j, "prepend", what);
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->pattern = Pattern::from(j.value("pattern", json()), what + ": Replace");
    n->content = str_field(j, "content", what);
    return n;
  }
  if (type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = bool_field(j, "strip_left", true);
    n->right = bool_field(j, "strip_right", true);
    return n;
  }
  if (type == "Sequence") {
    auto n = std::make_unique<SequenceNormalizer>();
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      throw Error(what + ": Sequence normalizer without 'normalizers'");
    for (const auto& s : j["normalizers"])
      if (auto step = make_normalizer(s, what)) n->steps.push_back(std::move(step));
    return n;
  }
  throw Error(what + ": normalizer type '" + type + "' is not supported");
}

// ---------------------------------------------------------------------------------------------------------
// Pre-tokenizers: each turns a list of pieces into a finer list. A piece remembers whether it starts the
// input, which Metaspace's prepend_scheme "first" depends on.

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

SplitBehavior parse_behavior(const std::string& b, const std::string& what) {
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  throw Error(what + ": split behavior '" + b + "' is not supported");
}

// The delimiter semantics of the Rust library's NormalizedString::split.
void split_piece(const Piece& p, const std::vector<std::pair<size_t, size_t>>& found, bool invert,
                 SplitBehavior behavior, std::vector<Piece>& out) {
  struct Span {
    size_t b, e;
    bool match;
  };
  std::vector<Span> spans;
  size_t last = 0;
  for (auto [b, e] : found) {
    if (b > last) spans.push_back({last, b, invert});
    spans.push_back({b, e, !invert});
    last = e;
  }
  if (last < p.text.size()) spans.push_back({last, p.text.size(), invert});
  std::vector<std::pair<size_t, size_t>> pieces;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const auto& s : spans)
        if (!s.match) pieces.emplace_back(s.b, s.e);
      break;
    case SplitBehavior::Isolated:
      for (const auto& s : spans) pieces.emplace_back(s.b, s.e);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (const auto& s : spans) {
        if (s.match && !pieces.empty() && !prev_match)
          pieces.back().second = s.e;
        else
          pieces.emplace_back(s.b, s.e);
        prev_match = s.match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev_match = false;
      for (const auto& s : spans) {
        if (prev_match && !s.match && !pieces.empty())
          pieces.back().second = s.e;
        else
          pieces.emplace_back(s.b, s.e);
        prev_match = s.match;
      }
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      for (const auto& s : spans) {
        if (s.match && prev_match && !pieces.empty())
          pieces.back().second = s.e;
        else
          pieces.emplace_back(s.b, s.e);
        prev_match = s.match;
      }
      break;
    }
  }
  for (auto [b, e] : pieces)
    if (e > b) out.push_back({p.text.substr(b, e - b), p.at_start && b == 0});
}

struct SplitPre : PreTokenizer {
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (const auto& p : pieces) split_piece(p, pattern.matches(p.text), invert, behavior, out);
    pieces = std::move(out);
  }
};

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void ByteLevelPre::apply(std::vector<Piece>& pieces) const {
  const auto& bm = byte_map();
  std::vector<Piece> split;
  split.reserve(pieces.size() * 4);
  for (auto& p : pieces) {
    if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, 1, ' ');
    if (regex) {
      std::vector<std::pair<size_t, size_t>> found;
      for (const auto& m : regex->find_all(p.text))
        if (m.end > m.begin) found.emplace_back(m.begin, m.end);
      split_piece(p, found, false, SplitBehavior::Isolated, split);
    } else {
      split.push_back(std::move(p));
    }
  }
  if (leave_raw) {
    pieces = std::move(split);
    return;
  }
  for (auto& p : split) {
    std::string mapped;
    mapped.reserve(p.text.size() * 2);
    for (unsigned char c : p.text) mapped += bm.enc[c];
    p.text = std::move(mapped);
  }
  pieces = std::move(split);
}

enum class PrependScheme { Always, First, Never };

struct MetaspacePre : PreTokenizer {
  std::string replacement = "\u2581";
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (auto& p : pieces) {
      std::string t;
      t.reserve(p.text.size() + 3);
      for (char c : p.text) {
        if (c == ' ')
          t += replacement;
        else
          t += c;
      }
      const bool starts = t.compare(0, replacement.size(), replacement) == 0;
      if (!starts && (scheme == PrependScheme::Always || (scheme == PrependScheme::First && p.at_start)))
        t.insert(0, replacement);
      Piece q{std::move(t), p.at_start};
      if (split) {
        std::vector<std::pair<size_t, size_t>> found;
        for (size_t pos = q.text.find(replacement); pos != std::string::npos;
             pos = q.text.find(replacement, pos + replacement.size()))
          found.emplace_back(pos, pos + replacement.size());
        split_piece(q, found, false, SplitBehavior::MergedWithNext, out);
      } else {
        out.push_back(std::move(q));
      }
    }
    pieces = std::move(out);
  }
};

struct SequencePre : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  void apply(std::vector<Piece>& pieces) const override {
    for (const auto& s : steps) s->apply(pieces);
  }
};

PreTokenizer* last_pre_step(PreTokenizer* p) {
  while (auto* seq = dynamic_cast<SequencePre*>(p)) {
    if (seq->steps.empty()) return nullptr;
    p = seq->steps.back().get();
  }
  return p;
}

PrependScheme parse_scheme(const json& j, const std::string& what) {
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    const auto s = j["prepend_scheme"].get<std::string>();
    if (s == "always") return PrependScheme::Always;
    if (s == "first") return PrependScheme::First;
    if (s == "never") return PrependScheme::Never;
    throw Error(what + ": prepend_scheme '" + s + "' is not supported");
  }
  // Files written before prepend_scheme existed say add_prefix_space.
  return bool_field(j, "add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
}

std::string replacement_field(const json& j, const std::string& what) {
  const std::string r = str_field(j, "replacement", what, "\u2581");
  if (r.empty()) throw Error(what + ": empty Metaspace replacement");
  return r;
}

std::unique_ptr<PreTokenizer> make_pre(const json& j, const std::string& what) {
  if (j.is_null()) return nullptr;
  if (!j.is_object()) throw Error(what + ": pre_tokenizer must be an object");
  const std::string type = str_field(j, "type", what);
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPre>();
    p->add_prefix_space = bool_field(j, "add_prefix_space", false);
    if (bool_field(j, "use_regex", true)) p->regex.emplace(kGpt2Pattern, what + ": ByteLevel");
    return p;
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPre>();
    p->pattern = Pattern::from(j.value("pattern", json()), what + ": Split");
    p->behavior = parse_behavior(str_field(j, "behavior", what, "Isolated"), what);
    p->invert = bool_field(j, "invert", false);
    return p;
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePre>();
    p->replacement = replacement_field(j, what);
    p->scheme = parse_scheme(j, what);
    p->split = bool_field(j, "split", true);
    return p;
  }
  if (type == "Digits") {
    auto p = std::make_unique<SplitPre>();
    const bool individual = bool_field(j, "individual_digits", false);
    p->pattern.regex.emplace(individual ? R"(\p{N})" : R"(\p{N}+)", what + ": Digits");
    p->behavior = individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous;
    return p;
  }
  if (type == "WhitespaceSplit") {
    auto p = std::make_unique<SplitPre>();
    p->pattern.regex.emplace(R"(\s+)", what + ": WhitespaceSplit");
    p->behavior = SplitBehavior::Removed;
    return p;
  }
  if (type == "Whitespace") {
    auto p = std::make_unique<SplitPre>();
    p->pattern.regex.emplace(R"(\w+|[^\w\s]+)", what + ": Whitespace");
    p->behavior = SplitBehavior::Removed;
    p->invert = true;
    return p;
  }
  if (type == "Sequence") {
    auto p = std::make_unique<SequencePre>();
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      throw Error(what + ": Sequence pre_tokenizer without 'pretokenizers'");
    for (const auto& s : j["pretokenizers"])
      if (auto step = make_pre(s, what)) p->steps.push_back(std::move(step));
    return p;
  }
  throw Error(what + ": pre_tokenizer type '" + type + "' is not supported");
}

// ---------------------------------------------------------------------------------------------------------
// Decoders work on the list of token strings, as in the Rust library (decode_chain).

struct ByteLevelDec : Decoder {
  void apply(std::vector<std::string>& toks) const override {
    const auto& bm = byte_map();
    std::string bytes;
    for (const auto& t : toks) {
      std::string b;
      bool all = true;
      for (size_t i = 0; i < t.size();) {
        auto it = bm.dec.find(utf8_next(t, i));
        if (it == bm.dec.end()) {
          all = false;
          break;
        }
        b += static_cast<char>(it->second);
      }
      bytes += all ? b : t;
    }
    toks.assign(1, utf8_lossy(bytes));
  }
};

struct ReplaceDec : Decoder {
  Pattern pattern;
  std::string content;
  void apply(std::vector<std::string>& toks) const override {
    for (auto& t : toks) t = pattern.replace_all(t, content);
  }
};

// <0xAB> tokens become bytes; a run of them that is not valid UTF-8 becomes one U+FFFD per byte.
struct ByteFallbackDec : Decoder {
  void apply(std::vector<std::string>& toks) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_len = 0;
    auto flush = [&] {
      if (run_len == 0) return;
      if (utf8_invalid_offset(run) == std::string::npos) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run_len; ++i) out.push_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_len = 0;
    };
    for (auto& t : toks) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        run += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
        ++run_len;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    toks = std::move(out);
  }
};

struct FuseDec : Decoder {
  void apply(std::vector<std::string>& toks) const override {
    std::string all;
    for (const auto& t : toks) all += t;
    toks.assign(1, std::move(all));
  }
};

struct StripDec : Decoder {
  std::string content = " ";
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& toks) const override {
    for (auto& t : toks) {
      size_t b = 0, e = t.size();
      for (size_t k = 0; k < start && t.compare(b, content.size(), content) == 0 && b < e; ++k)
        b += content.size();
      for (size_t k = 0;
           k < stop && e >= b + content.size() && t.compare(e - content.size(), content.size(), content) == 0;
           ++k)
        e -= content.size();
      t = t.substr(b, e - b);
    }
  }
};

struct MetaspaceDec : Decoder {
  std::string replacement = "\u2581";
  PrependScheme scheme = PrependScheme::Always;
  void apply(std::vector<std::string>& toks) const override {
    for (size_t i = 0; i < toks.size(); ++i) {
      std::string t;
      for (size_t p = 0; p < toks[i].size();) {
        if (toks[i].compare(p, replacement.size(), replacement) == 0) {
          t += ' ';
          p += replacement.size();
        } else {
          t += toks[i][p++];
        }
      }
      if (i == 0 && scheme != PrependScheme::Never && !t.empty() && t[0] == ' ') t.erase(0, 1);
      toks[i] = std::move(t);
    }
  }
};

struct SequenceDec : Decoder {
  std::vector<std::unique_ptr<Decoder>> steps;
  void apply(std::vector<std::string>& toks) const override {
    for (const auto& s : steps) s->apply(toks);
  }
};

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& what) {
  if (j.is_null()) return nullptr;
  if (!j.is_object()) throw Error(what + ": decoder must be an object");
  const std::string type = str_field(j, "type", what);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDec>();
    d->pattern = Pattern::from(j.value("pattern", json()), what + ": Replace decoder");
    d->content = str_field(j, "content", what);
    return d;
  }
  if (type == "Strip") {
    auto d = std::make_unique<StripDec>();
    d->content = str_field(j, "content", what, " ");
    if (d->content.empty()) throw Error(what + ": Strip decoder with empty content");
    for (auto [key, field] : {std::pair{"start", &d->start}, std::pair{"stop", &d->stop}}) {
      if (!j.contains(key)) continue;
      const auto v = json_int_field(j, key, 0, UINT32_MAX);
      if (!v) throw Error(what + ": Strip decoder '" + key + "' must be a non-negative integer");
      *field = static_cast<size_t>(*v);
    }
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDec>();
    d->replacement = replacement_field(j, what);
    d->scheme = parse_scheme(j, what);
    return d;
  }
  if (type == "Sequence") {
    auto d = std::make_unique<SequenceDec>();
    if (!j.contains("decoders") || !j["decoders"].is_array())
      throw Error(what + ": Sequence decoder without 'decoders'");
    for (const auto& s : j["decoders"])
      if (auto step = make_decoder(s, what)) d->steps.push_back(std::move(step));
    return d;
  }
  throw Error(what + ": decoder type '" + type + "' is not supported");
}

}  // namespace fp4lab::tokenizer_parts
