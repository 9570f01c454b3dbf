// PCRE2 behind a small value type: the tokenizers' pre-tokenizer patterns, lm-eval's answer filters and
// ModelOpt's "re:" exclude patterns all come from files or tables written for Python/Rust regex engines, and
// PCRE2 is the engine that understands their syntax (Unicode classes, lookahead, inline flags).
#pragma once
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fp4lab {

class Regex {
 public:
  struct Options {
    bool utf = true;             // pattern and subject are UTF-8; \p{L}, \s, \w follow Unicode properties
    bool anchored_full = false;  // the whole subject must match (Python's re.fullmatch)
    bool dotall = false;
    bool caseless = false;
  };
  struct Match {
    size_t begin = 0, end = 0;  // byte offsets of the whole match
    // Byte ranges of the capture groups 1..n; a group that did not take part is {npos, npos}.
    std::vector<std::pair<size_t, size_t>> groups;
  };

  // Throws fp4lab::Error naming `what` and the offending offset when the pattern does not compile.
  Regex(const std::string& pattern, const Options& o, const std::string& what);
  Regex(const std::string& pattern, const std::string& what) : Regex(pattern, Options{}, what) {}
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // First match at or after byte `start`. Patterns come from untrusted files, so matching is bounded: a match
  // that exceeds the limits throws rather than hanging. With utf set, a subject that is not UTF-8 throws.
  std::optional<Match> find(std::string_view subject, size_t start = 0) const;
  bool full_match(std::string_view subject) const;
  // Every non-overlapping match, left to right (empty matches advance by one character, as Python's findall).
  std::vector<Match> find_all(std::string_view subject) const;
  int capture_count() const { return captures_; }

 private:
  std::optional<Match> find_with(void* match_data, std::string_view subject, size_t start) const;
  void check_subject(std::string_view subject) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int captures_ = 0;
};

}  // namespace fp4lab
