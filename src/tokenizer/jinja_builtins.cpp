// The builtin filters and tests of jinja2 and the Python str/dict/list methods that chat templates call, with
// Python's results (Unicode whitespace for strip/split, case-insensitive sort and unique as jinja2 does
// them).
#include <algorithm>
#include <cmath>
#include <utf8proc.h>

#include "common/error.h"
#include "common/utf8.h"
#include "tokenizer/jinja_ast.h"

namespace fp4lab::jinja {

void fail_at(int line, const std::string& msg) {
  throw Error("chat template: line " + std::to_string(line) + ": " + msg);
}

namespace {

// Code points of a UTF-8 string (invalid bytes pass through as themselves).
std::vector<int32_t> decode(std::string_view s) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < s.size();) {
    utf8proc_int32_t cp = 0;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                    static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    if (n <= 0) {
      out.push_back(static_cast<unsigned char>(s[i]));
      ++i;
    } else {
      out.push_back(cp);
      i += static_cast<size_t>(n);
    }
  }
  return out;
}
std::string encode(const std::vector<int32_t>& cps) {
  std::string out;
  for (const int32_t cp : cps) {
    utf8proc_uint8_t buf[4];
    const auto n = utf8proc_encode_char(cp, buf);
    out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
  }
  return out;
}

// str.isspace(): Unicode White_Space and the four information separators Python also counts.
bool py_space(int32_t c) {
  return utf8_is_space(static_cast<uint32_t>(c)) || (c >= 0x1c && c <= 0x1f);
}

std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  const auto cps = decode(s);
  std::vector<int32_t> set;
  if (chars && chars->is_string()) set = decode(chars->str());
  const bool use_set = chars && chars->is_string();
  auto strip_it = [&](int32_t c) {
    return use_set ? std::find(set.begin(), set.end(), c) != set.end() : py_space(c);
  };
  size_t a = 0, b = cps.size();
  if (left)
    while (a < b && strip_it(cps[a])) ++a;
  if (right)
    while (b > a && strip_it(cps[b - 1])) --b;
  return encode({cps.begin() + static_cast<std::ptrdiff_t>(a), cps.begin() + static_cast<std::ptrdiff_t>(b)});
}

// Python's simple case mappings, plus the one full mapping chat text meets (upper('ß') == 'SS').
std::string map_case(const std::string& s, int mode) {  // 0 lower, 1 upper
  std::vector<int32_t> out;
  for (const int32_t c : decode(s)) {
    if (mode && c == 0xDF) {
      out.push_back('S');
      out.push_back('S');
    } else {
      out.push_back(mode ? utf8proc_toupper(c) : utf8proc_tolower(c));
    }
  }
  return encode(out);
}

std::string capitalize(const std::string& s) {
  auto cps = decode(s);
  for (size_t i = 0; i < cps.size(); ++i) cps[i] = i ? utf8proc_tolower(cps[i]) : utf8proc_totitle(cps[i]);
  return encode(cps);
}

std::string title(const std::string& s) {  // str.title(): a letter after a non-letter starts a word
  auto cps = decode(s);
  bool prev_cased = false;
  for (auto& c : cps) {
    const auto cat = utf8proc_category(c);
    const bool cased =
        cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
    if (cased) c = prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c);
    prev_cased = cased;
  }
  return encode(cps);
}

List split(const std::string& s, const Value* sep, int64_t maxsplit, int line) {
  List out;
  if (!sep || sep->is_none()) {
    const auto cps = decode(s);
    size_t i = 0;
    while (true) {
      while (i < cps.size() && py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && py_space(cps[e - 1])) --e;
        out.emplace_back(encode(
            {cps.begin() + static_cast<std::ptrdiff_t>(i), cps.begin() + static_cast<std::ptrdiff_t>(e)}));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !py_space(cps[j])) ++j;
      out.emplace_back(encode(
          {cps.begin() + static_cast<std::ptrdiff_t>(i), cps.begin() + static_cast<std::ptrdiff_t>(j)}));
      i = j;
    }
    return out;
  }
  if (!sep->is_string()) fail_at(line, "split() separator must be a string");
  const std::string& d = sep->str();
  if (d.empty()) fail_at(line, "split(): empty separator");
  size_t pos = 0;
  while (true) {
    const size_t f = s.find(d, pos);
    if (f == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)) {
      out.emplace_back(s.substr(pos));
      return out;
    }
    out.emplace_back(s.substr(pos, f - pos));
    pos = f + d.size();
  }
}

std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) {  // Python inserts `to` between characters and at both ends
    std::string out;
    int64_t n = 0;
    for (const auto& ch : utf8_chars(s)) {
      if (count < 0 || n < count) out += to, ++n;
      out += ch;
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  std::string out;
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t f = s.find(from, pos);
    if (f == std::string::npos) break;
    out += s.substr(pos, f - pos) + to;
    pos = f + from.size();
    ++n;
  }
  return out + s.substr(pos);
}

std::vector<std::string> splitlines(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0, start = 0;
  while (i < s.size()) {
    if (s[i] == '\n' || s[i] == '\r') {
      out.push_back(s.substr(start, i - start));
      i += s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n' ? 2 : 1;
      start = i;
    } else {
      ++i;
    }
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

int64_t as_int(const Value& v, int line, const char* what) {
  if (const int64_t* i = std::get_if<int64_t>(&v.v)) return *i;
  if (const bool* b = std::get_if<bool>(&v.v)) return *b;
  fail_at(line, std::string(what) + " must be an integer, not " + type_name(v));
}

// Widths of indent and center: a template cannot ask for gigabytes of padding.
int64_t bounded(int64_t width, int line) {
  if (width < 0 || width > 4096) fail_at(line, "width " + std::to_string(width) + " is outside 0..4096");
  return width;
}

const Value* arg(const List& args, const Dict& kwargs, size_t pos, const char* name) {
  for (const auto& [k, v] : kwargs)
    if (k == name) return &v;
  return pos < args.size() ? &args[pos] : nullptr;
}

const std::string& need_str(const Value& v, int line, const std::string& what) {
  if (!v.is_string()) fail_at(line, what + " needs a string, not " + type_name(v));
  return v.str();
}

// jinja2's environment.getitem over a dotted path ("function.name"), as selectattr, map and sort use it.
Value attr_path(const Value& v, const std::string& path, int line) {
  Value cur = v;
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (cur.is_undefined()) return cur;
    if (cur.is_list() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit))
      cur = part.size() < 18 ? get_item(cur, Value(static_cast<int64_t>(std::stoll(part))), line) : Value();
    else
      cur = get_attr(cur, part, line);
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

Value sort_key(const Value& v, bool case_sensitive) {
  return !case_sensitive && v.is_string() ? Value(map_case(v.str(), 0)) : v;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string json_ascii(const std::string& s) {  // ensure_ascii=True: \uXXXX, surrogate pairs past the BMP
  std::string out;
  static const char* h = "0123456789abcdef";
  for (const int32_t c : decode(s)) {
    auto u = [&](int32_t x) {
      out += "\\u";
      for (int sh = 12; sh >= 0; sh -= 4) out += h[(x >> sh) & 15];
    };
    if (c < 0x80)
      out += static_cast<char>(c);
    else if (c < 0x10000)
      u(c);
    else
      u(0xD800 + ((c - 0x10000) >> 10)), u(0xDC00 + ((c - 0x10000) & 0x3FF));
  }
  return out;
}

}  // namespace

List iterate(const Value& v, int line) {
  if (v.is_undefined()) return {};
  if (v.is_list()) return v.list();
  if (v.is_dict()) {
    List keys;
    for (const auto& kv : v.dict()) keys.emplace_back(kv.first);
    return keys;
  }
  if (v.is_string()) {
    List chars;
    for (auto& c : utf8_chars(v.str())) chars.emplace_back(std::move(c));
    return chars;
  }
  if (auto* ns = std::get_if<std::shared_ptr<Namespace>>(&v.v)) {
    List keys;
    for (const auto& kv : (*ns)->attrs) keys.emplace_back(kv.first);
    return keys;
  }
  fail_at(line, "'" + type_name(v) + "' object is not iterable");
}

Value get_item(const Value& obj, const Value& key, int line) {
  if (obj.is_undefined())
    fail_at(line, "'" +
                      (std::get<Undefined>(obj.v).name.empty() ? std::string("value")
                                                               : std::get<Undefined>(obj.v).name) +
                      "' is undefined");
  if (obj.is_dict()) {
    if (!key.is_string()) return Value();
    if (const Value* v = obj.find(key.str())) return *v;
    return Value(Undefined{key.str()});
  }
  if (auto* ns = std::get_if<std::shared_ptr<Namespace>>(&obj.v)) {
    if (key.is_string())
      for (const auto& [k, v] : (*ns)->attrs)
        if (k == key.str()) return v;
    return Value();
  }
  if (obj.is_list() || obj.is_string()) {
    if (!std::holds_alternative<int64_t>(key.v)) {
      if (obj.is_string() && key.is_string()) return get_attr(obj, key.str(), line);
      return Value();
    }
    int64_t i = std::get<int64_t>(key.v);
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.list().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return obj.list()[static_cast<size_t>(i)];
    }
    const auto chars = utf8_chars(obj.str());
    const int64_t n = static_cast<int64_t>(chars.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value();
    return Value(chars[static_cast<size_t>(i)]);
  }
  return Value();
}

Value get_attr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined())
    fail_at(line, "'" +
                      (std::get<Undefined>(obj.v).name.empty() ? std::string("value")
                                                               : std::get<Undefined>(obj.v).name) +
                      "' is undefined (reading ." + name + ")");
  if (obj.is_dict() || std::holds_alternative<std::shared_ptr<Namespace>>(obj.v)) {
    Value v = get_item(obj, Value(name), line);
    if (v.is_undefined()) v = Value(Undefined{name});
    return v;
  }
  return Value(Undefined{name});
}

bool has_method(const Value& obj, const std::string& n) {
  static const char* const str_methods[] = {
      "strip",      "lstrip",  "rstrip",  "split",      "rsplit",  "startswith", "endswith", "replace",
      "lower",      "upper",   "title",   "capitalize", "find",    "rfind",      "count",    "join",
      "splitlines", "isdigit", "isalpha", "isalnum",    "isspace", "islower",    "isupper",  "format"};
  static const char* const dict_methods[] = {"items", "keys", "values", "get"};
  static const char* const list_methods[] = {"index", "count"};
  auto in = [&](const auto& arr) { return std::find(std::begin(arr), std::end(arr), n) != std::end(arr); };
  if (obj.is_string()) return in(str_methods);
  if (obj.is_dict()) return in(dict_methods);
  if (obj.is_list()) return in(list_methods) || n == "append" || n == "pop" || n == "extend" || n == "insert";
  return false;
}

Value call_method(const Value& obj, const std::string& n, const List& args, const Dict& kwargs, int line) {
  auto a = [&](size_t i, const char* k) { return arg(args, kwargs, i, k); };
  if (obj.is_string()) {
    const std::string& s = obj.str();
    if (n == "strip" || n == "lstrip" || n == "rstrip")
      return Value(strip(s, a(0, "chars"), n != "rstrip", n != "lstrip"));
    if (n == "split" || n == "rsplit") {
      const Value* mx = a(1, "maxsplit");
      const int64_t maxsplit = mx ? as_int(*mx, line, "maxsplit") : -1;
      if (n == "rsplit" && maxsplit >= 0) fail_at(line, "rsplit() with maxsplit is not supported");
      return Value(split(s, a(0, "sep"), maxsplit, line));
    }
    if (n == "startswith" || n == "endswith") {
      const Value* p = a(0, "prefix");
      if (!p) fail_at(line, n + "() needs an argument");
      List cands = p->is_list() ? p->list() : List{*p};
      for (const auto& c : cands) {
        const std::string& x = need_str(c, line, n + "()");
        if (n == "startswith" ? s.compare(0, x.size(), x) == 0 && s.size() >= x.size()
                              : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0)
          return Value(true);
      }
      return Value(false);
    }
    if (n == "replace") {
      if (args.size() < 2) fail_at(line, "replace() needs two arguments");
      const Value* c = a(2, "count");
      return Value(replace(s, need_str(args[0], line, "replace()"), need_str(args[1], line, "replace()"),
                           c ? as_int(*c, line, "count") : -1));
    }
    if (n == "lower" || n == "upper") return Value(map_case(s, n == "upper"));
    if (n == "title") return Value(title(s));
    if (n == "capitalize") return Value(capitalize(s));
    if (n == "find" || n == "rfind") {
      if (args.empty()) fail_at(line, n + "() needs an argument");
      const std::string& x = need_str(args[0], line, n + "()");
      const size_t f = n == "find" ? s.find(x) : s.rfind(x);
      return Value(f == std::string::npos ? int64_t{-1} : utf8_length(s.substr(0, f)));
    }
    if (n == "count") {
      if (args.empty()) fail_at(line, "count() needs an argument");
      const std::string& x = need_str(args[0], line, "count()");
      if (x.empty()) return Value(utf8_length(s) + 1);
      int64_t c = 0;
      for (size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++c;
      return Value(c);
    }
    if (n == "join") {
      if (args.empty()) fail_at(line, "join() needs an argument");
      std::string out;
      bool first = true;
      for (const auto& e : iterate(args[0], line)) {
        out += (first ? "" : s) + need_str(e, line, "join()");
        first = false;
      }
      return Value(out);
    }
    if (n == "splitlines") {
      List out;
      for (auto& l : splitlines(s)) out.emplace_back(std::move(l));
      return Value(std::move(out));
    }
    if (n == "isdigit" || n == "isalpha" || n == "isalnum" || n == "isspace" || n == "islower" ||
        n == "isupper") {
      const auto cps = decode(s);
      if (cps.empty()) return Value(false);
      bool any_cased = false;
      for (const int32_t c : cps) {
        const auto cat = utf8proc_category(c);
        const bool digit = cat == UTF8PROC_CATEGORY_ND;
        const bool alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        if (n == "isdigit" && !digit) return Value(false);
        if (n == "isalpha" && !alpha) return Value(false);
        if (n == "isalnum" && !alpha && !digit) return Value(false);
        if (n == "isspace" && !py_space(c)) return Value(false);
        if (n == "islower" && (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT))
          return Value(false);
        if (n == "isupper" && (cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT))
          return Value(false);
        any_cased = any_cased || cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL;
      }
      return Value(n == "islower" || n == "isupper" ? any_cased : true);
    }
    fail_at(line, "the string method ." + n + "() is not supported");
  }
  if (obj.is_dict()) {
    if (n == "items") {
      List out;
      for (const auto& [k, v] : obj.dict()) out.emplace_back(List{Value(k), v});
      return Value(std::move(out));
    }
    if (n == "keys" || n == "values") {
      List out;
      for (const auto& [k, v] : obj.dict()) out.push_back(n == "keys" ? Value(k) : v);
      return Value(std::move(out));
    }
    if (n == "get") {
      if (args.empty()) fail_at(line, "get() needs a key");
      if (args[0].is_string())
        if (const Value* v = obj.find(args[0].str())) return *v;
      return args.size() > 1 ? args[1] : Value(None{});
    }
  }
  if (obj.is_list()) {
    if (n == "index" || n == "count") {
      if (args.empty()) fail_at(line, n + "() needs an argument");
      int64_t c = 0;
      for (size_t i = 0; i < obj.list().size(); ++i)
        if (values_equal(obj.list()[i], args[0])) {
          if (n == "index") return Value(static_cast<int64_t>(i));
          ++c;
        }
      if (n == "index") fail_at(line, "index(): the value is not in the list");
      return Value(c);
    }
    fail_at(line, "." + n + "() would modify a list: templates render in a sandbox where data is read-only");
  }
  fail_at(line, "'" + type_name(obj) + "' has no method ." + n + "()");
}

bool apply_test(const std::string& n, const Value& v, const List& args, int line) {
  auto need = [&](size_t k) -> const Value& {
    if (args.size() < k + 1) fail_at(line, "the test '" + n + "' needs an argument");
    return args[k];
  };
  const bool is_int = std::holds_alternative<int64_t>(v.v), is_bool = std::holds_alternative<bool>(v.v);
  if (n == "defined") return !v.is_undefined();
  if (n == "undefined") return v.is_undefined();
  if (n == "none") return v.is_none();
  if (n == "boolean") return is_bool;
  if (n == "true") return is_bool && std::get<bool>(v.v);
  if (n == "false") return is_bool && !std::get<bool>(v.v);
  if (n == "integer") return is_int;
  if (n == "float") return std::holds_alternative<double>(v.v);
  if (n == "number") return v.is_number() || is_bool;
  if (n == "string") return v.is_string();
  if (n == "mapping") return v.is_dict();
  if (n == "sequence") return v.is_list() || v.is_string() || v.is_dict();
  if (n == "iterable") return v.is_list() || v.is_string() || v.is_dict();
  if (n == "callable") return std::holds_alternative<std::shared_ptr<Callable>>(v.v);
  if (n == "sameas") return values_equal(v, need(0)) && v.v.index() == need(0).v.index();
  if (n == "equalto" || n == "eq" || n == "==") return values_equal(v, need(0));
  if (n == "ne" || n == "!=") return !values_equal(v, need(0));
  if (n == "lt" || n == "<") return compare_values(v, need(0), line) < 0;
  if (n == "le" || n == "<=") return compare_values(v, need(0), line) <= 0;
  if (n == "gt" || n == ">") return compare_values(v, need(0), line) > 0;
  if (n == "ge" || n == ">=") return compare_values(v, need(0), line) >= 0;
  if (n == "in") {
    const Value& c = need(0);
    if (c.is_string()) return v.is_string() && c.str().find(v.str()) != std::string::npos;
    for (const auto& e : iterate(c, line))
      if (values_equal(e, v)) return true;
    return false;
  }
  if (n == "even" || n == "odd") return (as_int(v, line, "the value") % 2 != 0) == (n == "odd");
  if (n == "divisibleby") {
    const int64_t d = as_int(need(0), line, "divisibleby's argument");
    return d != 0 && as_int(v, line, "the value") % d == 0;
  }
  if (n == "lower" || n == "upper") return v.is_string() && map_case(v.str(), n == "upper") == v.str();
  if (n == "escaped") return false;
  fail_at(line, "unknown test '" + n + "'");
}

Value apply_filter(const std::string& n, const Value& v, const List& args, const Dict& kw, int line) {
  auto a = [&](size_t i, const char* k) { return arg(args, kw, i, k); };
  auto flag = [&](size_t i, const char* k, bool def) {
    const Value* x = a(i, k);
    return x ? truthy(*x) : def;
  };
  if (n == "default" || n == "d") {
    const Value* def = a(0, "default_value");
    const bool boolean = flag(1, "boolean", false);
    if (v.is_undefined() || (boolean && !truthy(v))) return def ? *def : Value("");
    return v;
  }
  if (n == "safe" || n == "string") return n == "safe" ? v : Value(to_str(v));
  if (n == "tojson") {
    const Value* ind = a(0, "indent");
    const int indent = ind && !ind->is_none() ? static_cast<int>(as_int(*ind, line, "indent")) : -1;
    std::string out = to_json(v, indent, flag(99, "sort_keys", false));
    if (flag(99, "ensure_ascii", false)) out = json_ascii(out);
    if (a(99, "separators")) fail_at(line, "tojson(separators=...) is not supported");
    return Value(out);
  }
  if (n == "trim") return Value(strip(need_str(v, line, "trim"), a(0, "chars"), true, true));
  if (n == "length" || n == "count") {
    if (v.is_string()) return Value(utf8_length(v.str()));
    if (v.is_undefined()) return Value(int64_t{0});
    if (!v.is_list() && !v.is_dict()) fail_at(line, "object of type " + type_name(v) + " has no length");
    return Value(static_cast<int64_t>(v.is_list() ? v.list().size() : v.dict().size()));
  }
  if (n == "items") {
    if (v.is_undefined()) return Value(List{});
    if (!v.is_dict()) fail_at(line, "items needs a mapping, not " + type_name(v));
    return call_method(v, "items", {}, {}, line);
  }
  if (n == "list") return Value(iterate(v, line));
  if (n == "first" || n == "last") {
    const List l = iterate(v, line);
    if (l.empty()) return Value(Undefined{"first item"});
    return n == "first" ? l.front() : l.back();
  }
  if (n == "upper" || n == "lower") return Value(map_case(to_str(v), n == "upper"));
  if (n == "capitalize") return Value(capitalize(to_str(v)));
  if (n == "title") return Value(title(to_str(v)));
  if (n == "replace") {
    if (args.size() < 2) fail_at(line, "replace needs two arguments");
    const Value* c = a(2, "count");
    return Value(replace(to_str(v), to_str(args[0]), to_str(args[1]),
                         c && !c->is_none() ? as_int(*c, line, "count") : -1));
  }
  if (n == "join") {
    const Value* sep = a(0, "d");
    const Value* at = a(1, "attribute");
    std::string out;
    bool first = true;
    for (const auto& e : iterate(v, line)) {
      out += (first ? "" : (sep ? to_str(*sep) : "")) + to_str(at ? attr_path(e, to_str(*at), line) : e);
      first = false;
    }
    return Value(out);
  }
  if (n == "map") {
    List out;
    const Value* at = arg({}, kw, 0, "attribute");
    for (const auto& e : iterate(v, line)) {
      if (at) {
        Value x = attr_path(e, to_str(*at), line);
        if (x.is_undefined())
          if (const Value* def = arg({}, kw, 0, "default")) x = *def;
        out.push_back(x);
      } else {
        if (args.empty()) fail_at(line, "map needs a filter name or attribute=");
        out.push_back(apply_filter(to_str(args[0]), e, List(args.begin() + 1, args.end()), {}, line));
      }
    }
    return Value(std::move(out));
  }
  if (n == "selectattr" || n == "rejectattr" || n == "select" || n == "reject") {
    const bool by_attr = n == "selectattr" || n == "rejectattr", keep = n == "selectattr" || n == "select";
    const size_t t0 = by_attr ? 1 : 0;
    if (by_attr && args.empty()) fail_at(line, n + " needs an attribute name");
    List out;
    for (const auto& e : iterate(v, line)) {
      const Value x = by_attr ? attr_path(e, to_str(args[0]), line) : e;
      const bool ok = args.size() > t0
                          ? apply_test(to_str(args[t0]), x, List(args.begin() + t0 + 1, args.end()), line)
                          : truthy(x);
      if (ok == keep) out.push_back(e);
    }
    return Value(std::move(out));
  }
  if (n == "sort" || n == "unique" || n == "min" || n == "max") {
    const bool cs = flag(n == "sort" ? 1 : 0, "case_sensitive", false);
    const Value* at = a(n == "sort" ? 2 : 1, "attribute");
    auto key = [&](const Value& e) { return sort_key(at ? attr_path(e, to_str(*at), line) : e, cs); };
    List l = iterate(v, line);
    if (n == "unique") {
      List out, seen;
      for (const auto& e : l) {
        const Value k = key(e);
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return values_equal(s, k); }))
          seen.push_back(k), out.push_back(e);
      }
      return Value(std::move(out));
    }
    if (n == "min" || n == "max") {
      if (l.empty()) return Value(Undefined{n + " of an empty sequence"});
      size_t best = 0;
      for (size_t i = 1; i < l.size(); ++i) {
        const int c = compare_values(key(l[i]), key(l[best]), line);
        if (n == "min" ? c < 0 : c > 0) best = i;
      }
      return l[best];
    }
    const bool rev = flag(0, "reverse", false);
    std::stable_sort(l.begin(), l.end(), [&](const Value& x, const Value& y) {
      const int c = compare_values(key(x), key(y), line);
      return rev ? c > 0 : c < 0;
    });
    return Value(std::move(l));
  }
  if (n == "dictsort") {
    if (!v.is_dict()) fail_at(line, "dictsort needs a mapping");
    List items = call_method(v, "items", {}, {}, line).list();
    const bool cs = flag(0, "case_sensitive", false), by_value = a(1, "by") && to_str(*a(1, "by")) == "value";
    const bool rev = flag(2, "reverse", false);
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      const int c = compare_values(sort_key(x.list()[by_value], cs), sort_key(y.list()[by_value], cs), line);
      return rev ? c > 0 : c < 0;
    });
    return Value(std::move(items));
  }
  if (n == "reverse") {
    if (v.is_string()) {
      auto ch = utf8_chars(v.str());
      std::string out;
      for (auto it = ch.rbegin(); it != ch.rend(); ++it) out += *it;
      return Value(out);
    }
    List l = iterate(v, line);
    std::reverse(l.begin(), l.end());
    return Value(std::move(l));
  }
  if (n == "indent") {
    const Value* w = a(0, "width");
    const std::string ind =
        w && w->is_string()
            ? w->str()
            : std::string(static_cast<size_t>(bounded(w ? as_int(*w, line, "width") : 4, line)), ' ');
    const bool first = flag(1, "first", false), blank = flag(2, "blank", false);
    const auto lines = splitlines(to_str(v) + "\n");
    std::string rv;
    if (blank) {
      for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + ind : "") + lines[i];
    } else {
      rv = lines.empty() ? "" : lines[0];
      for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? "" : ind + lines[i]);
    }
    return Value(first ? ind + rv : rv);
  }
  if (n == "int") {
    const Value* def = a(0, "default");
    if (std::holds_alternative<int64_t>(v.v)) return v;
    if (const double* d = std::get_if<double>(&v.v))
      return std::fabs(*d) < 9.2e18 ? Value(static_cast<int64_t>(std::trunc(*d)))
                                    : (def ? *def : Value(int64_t{0}));
    if (const bool* b = std::get_if<bool>(&v.v)) return Value(static_cast<int64_t>(*b));
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string s = strip(v.str(), nullptr, true, true);
        const double d = std::stod(s, &used);
        if (used == s.size() && std::fabs(d) < 9.2e18) return Value(static_cast<int64_t>(std::trunc(d)));
      } catch (const std::exception&) {
      }
    }
    return def ? *def : Value(int64_t{0});
  }
  if (n == "float") {
    const Value* def = a(0, "default");
    if (const int64_t* i = std::get_if<int64_t>(&v.v)) return Value(static_cast<double>(*i));
    if (std::holds_alternative<double>(v.v)) return v;
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string s = strip(v.str(), nullptr, true, true);
        const double d = std::stod(s, &used);
        if (used == s.size()) return Value(d);
      } catch (const std::exception&) {
      }
    }
    return def ? *def : Value(0.0);
  }
  if (n == "abs") {
    if (const int64_t* i = std::get_if<int64_t>(&v.v)) {
      if (*i == INT64_MIN) fail_at(line, "integer overflow in abs");
      return Value(*i < 0 ? -*i : *i);
    }
    if (const double* d = std::get_if<double>(&v.v)) return Value(std::fabs(*d));
    fail_at(line, "abs needs a number");
  }
  if (n == "round") {
    const Value* p = a(0, "precision");
    const int64_t prec = p ? as_int(*p, line, "precision") : 0;
    const std::string method = a(1, "method") ? to_str(*a(1, "method")) : "common";
    if (!v.is_number()) fail_at(line, "round needs a number");
    const double x = std::holds_alternative<int64_t>(v.v) ? static_cast<double>(std::get<int64_t>(v.v))
                                                          : std::get<double>(v.v);
    const double m = std::pow(10.0, static_cast<double>(prec));
    const double r = method == "floor"  ? std::floor(x * m) / m
                     : method == "ceil" ? std::ceil(x * m) / m
                                        : std::round(x * m) / m;
    return Value(r);
  }
  if (n == "sum") {
    const Value* at = a(0, "attribute");
    Value acc = a(1, "start") ? *a(1, "start") : Value(int64_t{0});
    for (const auto& e : iterate(v, line)) {
      const Value x = at ? attr_path(e, to_str(*at), line) : e;
      int64_t r = 0;
      if (std::holds_alternative<int64_t>(acc.v) && std::holds_alternative<int64_t>(x.v) &&
          !__builtin_add_overflow(std::get<int64_t>(acc.v), std::get<int64_t>(x.v), &r))
        acc = Value(r);
      else if (acc.is_number() && x.is_number())
        acc = Value(
            (std::holds_alternative<double>(acc.v) ? std::get<double>(acc.v)
                                                   : double(std::get<int64_t>(acc.v))) +
            (std::holds_alternative<double>(x.v) ? std::get<double>(x.v) : double(std::get<int64_t>(x.v))));
      else
        fail_at(line, "sum needs numbers");
    }
    return acc;
  }
  if (n == "escape" || n == "e" || n == "forceescape") return Value(html_escape(to_str(v)));
  if (n == "center") {
    const Value* w = a(0, "width");
    const int64_t width = bounded(w ? as_int(*w, line, "width") : 80, line);
    const std::string s = to_str(v);
    const int64_t len = utf8_length(s);
    if (len >= width) return Value(s);
    const int64_t total = width - len, left = total / 2 + (total & width & 1);
    return Value(std::string(static_cast<size_t>(left), ' ') + s +
                 std::string(static_cast<size_t>(total - left), ' '));
  }
  if (n == "wordcount") {
    int64_t words = 0;
    bool in = false;
    for (const int32_t c : decode(to_str(v))) {
      const auto cat = utf8proc_category(c);
      const bool w = c == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                     (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
      words += w && !in;
      in = w;
    }
    return Value(words);
  }
  if (n == "attr") {
    if (args.empty()) fail_at(line, "attr needs a name");
    return get_attr(v, to_str(args[0]), line);
  }
  fail_at(line, "unknown filter '" + n + "'");
}

}  // namespace fp4lab::jinja
