// The Jinja lexer. It applies the whitespace rules of the environment transformers renders chat templates in
// (jinja2's trim_blocks and lstrip_blocks, plus the `-`/`+` markers), because they decide every newline of
// the prompt.
#include <cstring>

#include "common/error.h"
#include "common/utf8.h"
#include "tokenizer/jinja_ast.h"

namespace fp4lab::jinja {

namespace {

bool is_py_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

class Lexer {
 public:
  // jinja2 reads the source as lines: \r\n and \r become \n, and one final newline is dropped
  // (keep_trailing_newline is off in transformers' environment).
  Lexer(std::string_view src, const std::string& what) : what_(what) {
    src_.reserve(src.size());
    for (size_t i = 0; i < src.size(); ++i) {
      if (src[i] == '\r') {
        src_ += '\n';
        if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
      } else {
        src_ += src[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    s_ = src_;
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < s_.size()) {
      size_t p = pos;
      while (true) {
        p = s_.find('{', p);
        if (p == std::string_view::npos || p + 1 >= s_.size()) {
          p = std::string_view::npos;
          break;
        }
        const char k = s_[p + 1];
        if (k == '{' || k == '%' || k == '#') break;
        ++p;
      }
      std::string text(s_.substr(pos, p == std::string_view::npos ? std::string_view::npos : p - pos));
      if (p == std::string_view::npos) {
        emit_text(text, pos);
        break;
      }
      const char kind = s_[p + 1];
      const char sign = p + 2 < s_.size() && (s_[p + 2] == '-' || s_[p + 2] == '+') ? s_[p + 2] : 0;
      if (sign == '-') {
        size_t e = text.size();
        while (e > 0 && is_py_space(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks: blocks and comments, not expressions
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if (l_pos > 0 || line_starting) {
          bool blank = l_pos < text.size();
          for (size_t i = l_pos; i < text.size(); ++i) blank = blank && is_py_space(text[i]);
          if (blank) text.resize(l_pos);
        }
      }
      emit_text(text, pos);
      line_ += count_lines(pos, p);
      size_t q = p + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        const size_t end = s_.find("#}", q);
        if (end == std::string_view::npos) fail("unterminated comment");
        line_ += count_lines(q, end);
        pos = end + 2;
        if (end > q && s_[end - 1] == '-') {
          pos = skip_space(pos);
        } else if (!(end > q && s_[end - 1] == '+') && pos < s_.size() && s_[pos] == '\n') {
          ++pos;
        }
      } else {
        toks_.push_back({kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", line_});
        if (kind == '%') check_raw(q);
        pos = lex_tag(q, kind == '{');
      }
      line_starting = pos > 0 && s_[pos - 1] == '\n';
    }
    toks_.push_back({Tok::Eof, "", line_});
    return std::move(toks_);
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(what_ + ": line " + std::to_string(line_) + ": " + msg);
  }
  int count_lines(size_t a, size_t b) const {
    int n = 0;
    for (size_t i = a; i < b && i < s_.size(); ++i) n += s_[i] == '\n';
    return n;
  }
  size_t skip_space(size_t pos) {
    while (pos < s_.size() && is_py_space(s_[pos])) line_ += s_[pos++] == '\n';
    return pos;
  }
  void emit_text(const std::string& text, size_t) {
    if (!text.empty()) toks_.push_back({Tok::Text, text, line_});
  }
  void check_raw(size_t q) {
    size_t i = q;
    while (i < s_.size() && is_py_space(s_[i])) ++i;
    if (s_.substr(i, 3) == "raw" &&
        (i + 3 >= s_.size() || !std::isalnum(static_cast<unsigned char>(s_[i + 3]))))
      fail("{% raw %} blocks are not supported");
  }

  // Tokens of one {{ }} or {% %} tag from q; returns the position after its end (and the whitespace it eats).
  size_t lex_tag(size_t q, bool var) {
    int depth = 0;
    size_t i = q;
    while (true) {
      while (i < s_.size() && is_py_space(s_[i])) line_ += s_[i++] == '\n';
      if (i >= s_.size()) fail(var ? "unterminated {{ expression" : "unterminated {% block");
      const char c = s_[i];
      if (depth == 0) {
        const std::string_view end = var ? "}}" : "%}";
        if (s_.substr(i, 2) == end || ((c == '-' || c == '+') && s_.substr(i + 1, 2) == end)) {
          const char sign = s_[i] == end[0] ? 0 : c;
          size_t pos = i + (sign ? 3 : 2);
          toks_.push_back({var ? Tok::VarEnd : Tok::BlockEnd, "", line_});
          if (sign == '-') return skip_space(pos);
          if (!var && sign != '+' && pos < s_.size() && s_[pos] == '\n') {
            ++line_;
            return pos + 1;  // trim_blocks
          }
          return pos;
        }
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t j = i;
        while (j < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[j])) || s_[j] == '_')) ++j;
        toks_.push_back({Tok::Name, std::string(s_.substr(i, j - i)), line_});
        i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t j = i;
        bool is_float = false;
        while (j < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[j])) || s_[j] == '_')) ++j;
        if (j + 1 < s_.size() && s_[j] == '.' && std::isdigit(static_cast<unsigned char>(s_[j + 1]))) {
          is_float = true;
          ++j;
          while (j < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[j])) || s_[j] == '_')) ++j;
        }
        if (j < s_.size() && (s_[j] == 'e' || s_[j] == 'E')) {
          size_t e = j + 1;
          if (e < s_.size() && (s_[e] == '+' || s_[e] == '-')) ++e;
          if (e < s_.size() && std::isdigit(static_cast<unsigned char>(s_[e]))) {
            is_float = true;
            j = e;
            while (j < s_.size() && std::isdigit(static_cast<unsigned char>(s_[j]))) ++j;
          }
        }
        std::string lit;
        for (size_t k = i; k < j; ++k)
          if (s_[k] != '_') lit += s_[k];
        toks_.push_back({is_float ? Tok::Float : Tok::Int, lit, line_});
        i = j;
      } else if (c == '\'' || c == '"') {
        i = lex_string(i);
      } else {
        static const char* const two[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (const char* t : two)
          if (s_.substr(i, 2) == t) op = t;
        if (op.size() == 1 && !std::strchr("+-*/%~<>=()[]{},.:|", c))
          fail(std::string("unexpected character '") + c + "' in a tag");
        if (c == '(' || c == '[' || c == '{') ++depth;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        toks_.push_back({Tok::Op, op, line_});
        i += op.size();
      }
    }
  }

  size_t lex_string(size_t i) {
    const char quote = s_[i++];
    std::string out;
    while (true) {
      if (i >= s_.size()) fail("unterminated string literal");
      const char c = s_[i];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\') {
        out += c;
        ++i;
        continue;
      }
      if (i + 1 >= s_.size()) fail("unterminated string literal");
      const char e = s_[i + 1];
      i += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case '\n':
          break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          const size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + len > s_.size()) fail("bad \\" + std::string(1, e) + " escape in a string literal");
          uint32_t cp = 0;
          for (size_t k = 0; k < len; ++k) {
            const char h = s_[i + k];
            if (!std::isxdigit(static_cast<unsigned char>(h)))
              fail("bad \\" + std::string(1, e) + " escape in a string literal");
            cp = cp * 16 + static_cast<uint32_t>(
                               std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          if (cp > 0x10FFFF) fail("escape past U+10FFFF in a string literal");
          out += utf8_encode(cp);
          i += len;
          break;
        }
        default:  // Python keeps unknown escapes as written
          out += '\\';
          out += e;
      }
    }
    toks_.push_back({Tok::String, out, line_});
    return i + 1;
  }

  std::string src_;
  std::string_view s_;
  const std::string& what_;
  std::vector<Token> toks_;
  int line_ = 1;
};

}  // namespace

std::vector<Token> lex_template(std::string_view source, const std::string& what) {
  Lexer lx(source, what);
  return lx.run();
}

}  // namespace fp4lab::jinja
