#define PCRE2_CODE_UNIT_WIDTH 8
#include "common/regex.h"

#include <pcre2.h>

#include "common/error.h"
#include "common/utf8.h"

namespace fp4lab {

struct Regex::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_context* mctx = nullptr;
  bool utf = true;
  bool jit = false;
  std::string what;
  ~Impl() {
    if (mctx) pcre2_match_context_free(mctx);
    if (code) pcre2_code_free(code);
  }
};

namespace {
std::string pcre2_message(int err) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(err, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}
}  // namespace

Regex::Regex(const std::string& pattern, const Options& o, const std::string& what)
    : impl_(std::make_unique<Impl>()) {
  impl_->utf = o.utf;
  impl_->what = what;
  uint32_t flags = 0;
  if (o.utf) flags |= PCRE2_UTF | PCRE2_UCP;
  if (o.anchored_full) flags |= PCRE2_ANCHORED | PCRE2_ENDANCHORED;
  if (o.dotall) flags |= PCRE2_DOTALL;
  if (o.caseless) flags |= PCRE2_CASELESS;
  int err = 0;
  PCRE2_SIZE off = 0;
  impl_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags, &err, &off, nullptr);
  if (!impl_->code)
    throw Error(what + ": bad regex: " + pcre2_message(err) + " at offset " + std::to_string(off));
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
  impl_->mctx = pcre2_match_context_create(nullptr);
  // Bounded backtracking: a hostile pattern must fail, not hang the process.
  pcre2_set_match_limit(impl_->mctx, 10'000'000);
  pcre2_set_depth_limit(impl_->mctx, 10'000);
  uint32_t n = 0;
  pcre2_pattern_info(impl_->code, PCRE2_INFO_CAPTURECOUNT, &n);
  captures_ = static_cast<int>(n);
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

namespace {
struct MatchData {
  pcre2_match_data* md;
  explicit MatchData(const pcre2_code* c) : md(pcre2_match_data_create_from_pattern(c, nullptr)) {
    if (!md) throw Error("regex: out of memory");
  }
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};
}  // namespace

std::optional<Regex::Match> Regex::find_with(void* mdp, std::string_view s, size_t start) const {
  auto* md = static_cast<pcre2_match_data*>(mdp);
  if (start > s.size()) return std::nullopt;
  const uint32_t mflags = impl_->utf ? PCRE2_NO_UTF_CHECK : 0;
  const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, mflags, md,
                             impl_->mctx);
  if (rc == PCRE2_ERROR_NOMATCH) return std::nullopt;
  if (rc < 0) throw Error(impl_->what + ": regex match failed: " + pcre2_message(rc));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  Match m;
  m.begin = ov[0];
  m.end = ov[1];
  for (int g = 1; g <= captures_; ++g) {
    if (g < rc && ov[2 * g] != PCRE2_UNSET)
      m.groups.emplace_back(ov[2 * g], ov[2 * g + 1]);
    else
      m.groups.emplace_back(std::string_view::npos, std::string_view::npos);
  }
  return m;
}

void Regex::check_subject(std::string_view s) const {
  // PCRE2 is told not to re-check UTF-8 on every call, so the subject is validated here once.
  if (impl_->utf && utf8_invalid_offset(s) != std::string_view::npos)
    throw Error(impl_->what + ": input is not valid UTF-8");
}

std::optional<Regex::Match> Regex::find(std::string_view s, size_t start) const {
  check_subject(s);
  MatchData md(impl_->code);
  return find_with(md.md, s, start);
}

bool Regex::full_match(std::string_view s) const {
  auto m = find(s, 0);
  return m && m->begin == 0 && m->end == s.size();
}

std::vector<Regex::Match> Regex::find_all(std::string_view s) const {
  check_subject(s);
  MatchData md(impl_->code);
  std::vector<Match> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    auto m = find_with(md.md, s, pos);
    if (!m) break;
    size_t next = m->end;
    if (m->end == m->begin) {
      // Step over one whole character so an empty match never splits a UTF-8 sequence.
      next = m->end + 1;
      if (impl_->utf)
        while (next < s.size() && (static_cast<unsigned char>(s[next]) & 0xC0) == 0x80) ++next;
    }
    out.push_back(std::move(*m));
    pos = next;
  }
  return out;
}

}  // namespace fp4lab
