#include "tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "common/error.h"
#include "common/regex.h"
#include "common/json_util.h"
#include "common/utf8.h"
#include "tokenizer/tokenizer_parts.h"

namespace fp4lab {

namespace {

using namespace tokenizer_parts;

// ---------------------------------------------------------------------------------------------------------
// Open-addressing map from a (left id, right id) pair to (rank, merged id): the innermost lookup of BPE, a
// few times faster than std::unordered_map's node chasing.
class MergeTable {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{kEmpty, 0, 0});
    mask_ = cap - 1;
  }
  void insert(uint64_t key, int rank, int merged) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty) {
        slots_[i] = {key, rank, merged};
        ++size_;
        return;
      }
      if (slots_[i].key == key) return;  // the first (lowest-rank) entry for a pair wins
    }
  }
  const std::pair<int, int>* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return reinterpret_cast<const std::pair<int, int>*>(&slots_[i].rank);
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key;
    int rank, merged;
  };
  static constexpr uint64_t kEmpty = ~0ull;
  static size_t hash(uint64_t k) { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20); }
  void grow() {
    auto old = std::move(slots_);
    size_ = 0;
    reserve(std::max<size_t>(16, old.size()));
    for (const auto& sl : old)
      if (sl.key != kEmpty) insert(sl.key, sl.rank, sl.merged);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

// ---------------------------------------------------------------------------------------------------------
// BPE: merges by rank over symbol ids, leftmost first among equal ranks, as the Rust library's merge_word.
struct Bpe {
  std::unordered_map<std::string, int> vocab;
  MergeTable merges;  // (left id << 32 | right id) -> (rank, merged id)
  // When no vocabulary token has this marker after another character (true of SentencePiece-style
  // vocabularies and their "▁"), no merge can cross the start of a marker run, so a long word splits there
  // into pieces that are merged (and cached) independently with the same result.
  std::string split_before;
  std::optional<int> unk;
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  int byte_ids[256];
  bool have_byte_ids = false;
  // Words arrive as raw bytes (see ByteLevelPre::leave_raw); byte_level_ids[b] is the token of b's character.
  bool raw_bytes_input = false;
  int byte_level_ids[256];
  // Ids of single-character tokens by code point (BMP), so the first pass over a word needs no string
  // hashing.
  std::vector<int> bmp_char_ids = std::vector<int>(0x10000, -1);

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int>> cache;
  static constexpr size_t kCacheMaxEntries = 1 << 18;
  static constexpr size_t kCacheMaxWordBytes = 128;

  static uint64_t key(int a, int b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void encode_word(const std::string& w, std::vector<int>& out) const {
    if (w.empty()) return;
    if (!split_before.empty() && w.size() > split_before.size()) {
      const size_t r = split_before.size();
      size_t start = 0;
      for (size_t p = w.find(split_before, 1); p != std::string::npos; p = w.find(split_before, p + r)) {
        if (p >= r && w.compare(p - r, r, split_before) == 0) continue;  // inside a marker run
        if (p > start) {
          encode_piece(w.substr(start, p - start), out);
          start = p;
        }
      }
      if (start > 0) {
        encode_piece(w.substr(start), out);
        return;
      }
    }
    encode_piece(w, out);
  }

  void encode_piece(const std::string& w, std::vector<int>& out) const {
    if (ignore_merges) {
      std::string mapped;
      if (raw_bytes_input)
        for (unsigned char c : w) mapped += byte_map().enc[c];
      auto it = vocab.find(raw_bytes_input ? mapped : w);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = w.size() <= kCacheMaxWordBytes;
    if (cacheable) {
      std::lock_guard lock(cache_mu);
      auto it = cache.find(w);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int> ids = merge_word(w);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
      std::lock_guard lock(cache_mu);
      if (cache.size() < kCacheMaxEntries) cache.emplace(w, std::move(ids));
    }
  }

  // Initial symbols of a word: one per character, its bytes' <0xXX> tokens when byte_fallback covers an
  // unknown character, else unk (consecutive unks fused when fuse_unk).
  template <class Push>
  void push_chars(const std::string& w, Push&& push) const {
    bool last_unk = false;
    for (size_t i = 0; i < w.size();) {
      const size_t len = utf8_len(w, i);
      const uint32_t cp = utf8_peek(w, i);
      if (cp < 0x10000 && bmp_char_ids[cp] >= 0) {
        push(bmp_char_ids[cp]);
        last_unk = false;
        i += len;
        continue;
      }
      const std::string ch = w.substr(i, len);
      i += len;
      auto it = vocab.find(ch);
      if (it != vocab.end()) {
        push(it->second);
        last_unk = false;
        continue;
      }
      if (byte_fallback && have_byte_ids) {
        for (unsigned char c : ch) push(byte_ids[c]);
        last_unk = false;
        continue;
      }
      if (!unk)
        throw Error("tokenizer: '" + ch + "' is not in the vocabulary and the model has no unk_token");
      if (!(fuse_unk && last_unk)) push(*unk);
      last_unk = true;
    }
  }

  std::vector<int> merge_word(const std::string& w) const {
    struct Sym {
      int id, prev, next;
      bool alive;
    };
    std::vector<Sym> syms;
    syms.reserve(w.size());
    auto push = [&](int id) {
      const int n = static_cast<int>(syms.size());
      syms.push_back({id, n - 1, -1, true});
      if (n > 0) syms[n - 1].next = n;
    };
    if (raw_bytes_input) {
      for (unsigned char c : w) push(byte_level_ids[c]);
    } else {
      push_chars(w, push);
    }
    struct Cand {
      int rank, left, left_id, right_id, merged;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> pq;
    auto consider = [&](int l) {
      if (l < 0) return;
      const int r = syms[l].next;
      if (r < 0) return;
      if (const auto* m = merges.find(key(syms[l].id, syms[r].id)))
        pq.push({m->first, l, syms[l].id, syms[r].id, m->second});
    };
    for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) consider(i);
    while (!pq.empty()) {
      const Cand c = pq.top();
      pq.pop();
      Sym& L = syms[c.left];
      if (!L.alive || L.id != c.left_id || L.next < 0) continue;
      Sym& R = syms[L.next];
      if (R.id != c.right_id) continue;
      L.id = c.merged;
      R.alive = false;
      L.next = R.next;
      if (R.next >= 0) syms[R.next].prev = c.left;
      consider(L.prev);
      consider(c.left);
    }
    std::vector<int> ids;
    for (int i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) ids.push_back(syms[i].id);
    return ids;
  }
};

struct AddedToken {
  int id;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false;
};

bool is_word_byte_at(std::string_view s, size_t pos) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(utf8_peek(s, pos))) <= UTF8PROC_CATEGORY_NO ||
         s[pos] == '_';
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
struct Tokenizer::Impl {
  std::string source;
  Bpe bpe;
  std::vector<std::string> id_to_token;
  std::vector<AddedToken> added;
  std::vector<std::vector<size_t>> added_by_first_byte = std::vector<std::vector<size_t>>(256);
  std::vector<bool> special;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre;
  std::unique_ptr<Decoder> decoder;
  std::string pre_name, norm_name, dec_name;

  void set_token(int id, const std::string& t) {
    if (id < 0 || id > (1 << 24)) throw Error(source + ": token id " + std::to_string(id) + " out of range");
    if (static_cast<size_t>(id) >= id_to_token.size()) {
      id_to_token.resize(static_cast<size_t>(id) + 1);
      special.resize(static_cast<size_t>(id) + 1, false);
    }
    id_to_token[static_cast<size_t>(id)] = t;
  }

  void add_merge(const std::string& a, const std::string& b, int rank) {
    auto ia = bpe.vocab.find(a), ib = bpe.vocab.find(b), im = bpe.vocab.find(a + b);
    if (ia == bpe.vocab.end() || ib == bpe.vocab.end() || im == bpe.vocab.end())
      throw Error(source + ": merge '" + a + " " + b + "' (rank " + std::to_string(rank) +
                  ") uses a token that is not in the vocabulary");
    bpe.merges.insert(Bpe::key(ia->second, ib->second), rank, im->second);
  }

  void finish() {
    if (auto* bl = dynamic_cast<ByteLevelPre*>(last_pre_step(pre.get()))) {
      bool all = true;
      for (int b = 0; b < 256; ++b) {
        auto it = bpe.vocab.find(byte_map().enc[b]);
        bpe.byte_level_ids[b] = it == bpe.vocab.end() ? -1 : it->second;
        all = all && it != bpe.vocab.end();
      }
      // A vocabulary missing some byte characters keeps the general path, which reports them clearly.
      bl->leave_raw = bpe.raw_bytes_input = all;
    }
    const std::string marker = "\u2581";
    bool has_marker = false, marker_inside = false;
    for (const auto& [tok, id] : bpe.vocab) {
      const size_t first = tok.find(marker);
      if (first == std::string::npos) continue;
      has_marker = true;
      size_t lead = 0;
      while (tok.compare(lead, marker.size(), marker) == 0) lead += marker.size();
      if (tok.find(marker, lead) != std::string::npos || first != 0) marker_inside = true;
    }
    if (has_marker && !marker_inside) bpe.split_before = marker;
    for (const auto& [tok, id] : bpe.vocab) {
      if (tok.empty() || utf8_len(tok, 0) != tok.size()) continue;
      const uint32_t cp = utf8_peek(tok, 0);
      if (cp < 0x10000) bpe.bmp_char_ids[cp] = id;
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      auto it = bpe.vocab.find(name);
      bpe.byte_ids[b] = it == bpe.vocab.end() ? -1 : it->second;
    }
    bpe.have_byte_ids =
        std::all_of(std::begin(bpe.byte_ids), std::end(bpe.byte_ids), [](int i) { return i >= 0; });
    // Longest first, so "<|im_start|>" wins over a shorter token sharing its prefix.
    std::vector<size_t> order(added.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return added[a].content.size() > added[b].content.size(); });
    for (size_t i : order)
      if (!added[i].content.empty())
        added_by_first_byte[static_cast<unsigned char>(added[i].content[0])].push_back(i);
  }

  // Leftmost-longest occurrence of an added token at or after `from`: (token index, begin, end) where
  // [begin, end) includes whitespace absorbed by lstrip/rstrip.
  std::optional<std::tuple<size_t, size_t, size_t>> next_added(std::string_view s, size_t from) const {
    for (size_t i = from; i < s.size(); ++i) {
      for (size_t k : added_by_first_byte[static_cast<unsigned char>(s[i])]) {
        const auto& t = added[k];
        if (s.compare(i, t.content.size(), t.content) != 0) continue;
        size_t b = i, e = i + t.content.size();
        if (t.single_word) {
          if (b > 0) {
            size_t p = b - 1;
            while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
            if (is_word_byte_at(s, p)) continue;
          }
          if (e < s.size() && is_word_byte_at(s, e)) continue;
        }
        if (t.lstrip)
          while (b > from && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
        if (t.rstrip)
          while (e < s.size() && std::isspace(static_cast<unsigned char>(s[e]))) ++e;
        return std::make_tuple(k, b, e);
      }
    }
    return std::nullopt;
  }

  void encode_segment(std::string_view seg, bool at_start, std::vector<int>& out) const {
    if (seg.empty()) return;
    std::string text(seg);
    if (normalizer) text = normalizer->apply(std::move(text));
    std::vector<Piece> pieces{{std::move(text), at_start}};
    if (pre) pre->apply(pieces);
    for (const auto& p : pieces) bpe.encode_word(p.text, out);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_text(std::string_view text, const std::string& what) {
  const json j = parse_json_untrusted(text, what);
  if (!j.is_object()) throw Error(what + ": not a JSON object");
  auto impl = std::make_unique<Impl>();
  impl->source = what;
  if (!j.contains("model") || !j["model"].is_object()) throw Error(what + ": no 'model' object");
  const json& m = j["model"];
  const std::string type = str_field(m, "type", what, "BPE");
  if (type != "BPE") throw Error(what + ": model type '" + type + "' is not supported (only BPE)");
  if (!str_field(m, "continuing_subword_prefix", what).empty() ||
      !str_field(m, "end_of_word_suffix", what).empty())
    throw Error(what + ": BPE with continuing_subword_prefix/end_of_word_suffix is not supported");
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0)
    throw Error(what + ": BPE dropout is not supported (encoding must be deterministic)");
  if (!m.contains("vocab") || !m["vocab"].is_object()) throw Error(what + ": model has no 'vocab' object");
  for (const auto& [tok, id] : m["vocab"].items()) {
    if (!id.is_number_integer()) throw Error(what + ": vocab id of '" + tok + "' is not an integer");
    const int i = id.get<int>();
    impl->set_token(i, tok);
    impl->bpe.vocab[tok] = i;
  }
  if (m.contains("merges") && m["merges"].is_array()) {
    impl->bpe.merges.reserve(m["merges"].size());
    int rank = 0;
    for (const auto& mg : m["merges"]) {
      if (mg.is_string()) {
        const auto s = mg.get<std::string>();
        const auto sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw Error(what + ": merge '" + s + "' is not two tokens separated by one space");
        impl->add_merge(s.substr(0, sp), s.substr(sp + 1), rank++);
      } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
        impl->add_merge(mg[0].get<std::string>(), mg[1].get<std::string>(), rank++);
      } else {
        throw Error(what + ": merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
  }
  const std::string unk = str_field(m, "unk_token", what);
  if (!unk.empty()) {
    auto it = impl->bpe.vocab.find(unk);
    if (it == impl->bpe.vocab.end()) throw Error(what + ": unk_token '" + unk + "' is not in the vocabulary");
    impl->bpe.unk = it->second;
  }
  impl->bpe.byte_fallback = bool_field(m, "byte_fallback", false);
  impl->bpe.fuse_unk = bool_field(m, "fuse_unk", false);
  impl->bpe.ignore_merges = bool_field(m, "ignore_merges", false);
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        throw Error(what + ": added_tokens entry without integer 'id' and string 'content'");
      AddedToken t{a["id"].get<int>(),
                   a["content"].get<std::string>(),
                   bool_field(a, "special", false),
                   bool_field(a, "lstrip", false),
                   bool_field(a, "rstrip", false),
                   bool_field(a, "single_word", false)};
      impl->set_token(t.id, t.content);
      impl->special[static_cast<size_t>(t.id)] = t.special;
      impl->added.push_back(std::move(t));
    }
  }
  auto type_of = [](const json& x) {
    return x.is_object() ? x.value("type", std::string("?")) : std::string("none");
  };
  impl->normalizer = make_normalizer(j.value("normalizer", json()), what);
  impl->pre = make_pre(j.value("pre_tokenizer", json()), what);
  impl->decoder = make_decoder(j.value("decoder", json()), what);
  impl->norm_name = type_of(j.value("normalizer", json()));
  impl->pre_name = type_of(j.value("pre_tokenizer", json()));
  impl->dec_name = type_of(j.value("decoder", json()));
  impl->finish();
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_vocab_merges(std::string_view vocab_json, std::string_view merges_txt,
                                       const std::string& what) {
  // The GPT-2 release format: byte-level BPE with the GPT-2 split pattern, no normalizer.
  json j;
  j["model"] = {{"type", "BPE"}, {"vocab", parse_json_untrusted(vocab_json, what + "/vocab.json")}};
  json merges = json::array();
  std::istringstream in{std::string(merges_txt)};
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(line);
  }
  j["model"]["merges"] = std::move(merges);
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  return from_json_text(j.dump(), what);
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  if (!fs::is_directory(d)) {
    if (fs::is_regular_file(d)) return from_json_text(read_text_file(d.string()), dir);
    throw Error(dir + ": no such tokenizer directory");
  }
  if (fs::exists(d / "tokenizer.json"))
    return from_json_text(read_text_file((d / "tokenizer.json").string()), (d / "tokenizer.json").string());
  if (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"))
    return from_vocab_merges(read_text_file((d / "vocab.json").string()),
                             read_text_file((d / "merges.txt").string()), dir);
  if (fs::exists(d / "tokenizer.model"))
    throw Error(
        dir +
        ": only tokenizer.model (SentencePiece protobuf) found; fp4lab reads tokenizer.json (convert with "
        "transformers' AutoTokenizer.save_pretrained)");
  throw Error(dir + ": no tokenizer.json (or vocab.json + merges.txt)");
}

std::vector<int> Tokenizer::encode(std::string_view text) const {
  const size_t bad = utf8_invalid_offset(text);
  if (bad != std::string_view::npos)
    throw Error("tokenizer: input is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<int> out;
  out.reserve(text.size() / 3 + 4);
  size_t pos = 0;
  while (pos <= text.size()) {
    auto hit = impl_->next_added(text, pos);
    const size_t seg_end = hit ? std::get<1>(*hit) : text.size();
    impl_->encode_segment(text.substr(pos, seg_end - pos), pos == 0, out);
    if (!hit) break;
    out.push_back(impl_->added[std::get<0>(*hit)].id);
    pos = std::get<2>(*hit);
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int> ids, bool skip_special) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int id : ids) {
    // As the Rust library: ids without a token (padding rows of a larger model vocabulary) decode to nothing.
    if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) continue;
    if (skip_special && impl_->special[static_cast<size_t>(id)]) continue;
    toks.push_back(impl_->id_to_token[static_cast<size_t>(id)]);
  }
  if (!impl_->decoder) {
    std::string s;
    for (size_t i = 0; i < toks.size(); ++i) s += (i ? " " : "") + toks[i];
    return s;
  }
  impl_->decoder->apply(toks);
  std::string s;
  for (const auto& t : toks) s += t;
  return s;
}

int Tokenizer::vocab_size() const {
  return static_cast<int>(impl_->id_to_token.size());
}

std::optional<int> Tokenizer::token_id(std::string_view token) const {
  for (const auto& a : impl_->added)
    if (a.content == token) return a.id;
  auto it = impl_->bpe.vocab.find(std::string(token));
  if (it == impl_->bpe.vocab.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Tokenizer::id_token(int id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) return std::nullopt;
  return impl_->id_to_token[static_cast<size_t>(id)];
}

bool Tokenizer::is_special(int id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() &&
         impl_->special[static_cast<size_t>(id)];
}

std::string Tokenizer::describe() const {
  return "BPE, " + std::to_string(vocab_size()) + " tokens, " + std::to_string(impl_->bpe.merges.size()) +
         " merges, normalizer " + impl_->norm_name + ", pre-tokenizer " + impl_->pre_name + ", decoder " +
         impl_->dec_name + (impl_->bpe.byte_fallback ? ", byte fallback" : "");
}

}  // namespace fp4lab
