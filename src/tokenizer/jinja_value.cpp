// Jinja values with Python's semantics where the rendered text depends on them: str() and repr() of every
// type, float formatting, json.dumps as transformers' tojson calls it, equality and ordering.
#include <algorithm>
#include <charconv>
#include <cmath>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tokenizer/jinja_ast.h"

namespace fp4lab::jinja {

const Value* Value::find(std::string_view key) const {
  if (!is_dict()) return nullptr;
  for (const auto& [k, val] : dict())
    if (k == key) return &val;
  return nullptr;
}

void dict_set(Dict& d, const std::string& key, Value v) {
  for (auto& [k, old] : d)
    if (k == key) {
      old = std::move(v);
      return;
    }
  d.emplace_back(key, std::move(v));
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value(None{});
    case nlohmann::ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(from_json(e));
      return Value(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      for (const auto& [k, e] : j.items()) d.emplace_back(k, from_json(e));
      return Value(std::move(d));
    }
    default:
      throw Error("chat template: a binary JSON value cannot be a template variable");
  }
}

bool truthy(const Value& v) {
  return std::visit(
      [](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined> || std::is_same_v<T, None>)
          return false;
        else if constexpr (std::is_same_v<T, bool>)
          return x;
        else if constexpr (std::is_same_v<T, int64_t>)
          return x != 0;
        else if constexpr (std::is_same_v<T, double>)
          return x != 0.0;
        else if constexpr (std::is_same_v<T, std::string>)
          return !x.empty();
        else if constexpr (std::is_same_v<T, std::shared_ptr<List>> ||
                           std::is_same_v<T, std::shared_ptr<Dict>>)
          return !x->empty();
        else
          return true;
      },
      v.v);
}

namespace {

// float.__repr__: the shortest digits that round-trip, fixed notation for exponents -4 .. 15.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t epos = s.find('e');
  const int exp = std::stoi(s.substr(epos + 1));
  std::string digits = s.substr(0, epos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      std::string ip = digits.substr(0, std::min<size_t>(digits.size(), exp + 1));
      ip.append(static_cast<size_t>(exp + 1) - ip.size(), '0');
      std::string fp = digits.size() > static_cast<size_t>(exp + 1) ? digits.substr(exp + 1) : "0";
      return sign + ip + "." + fp;
    }
    return sign + "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  }
  std::string m = digits.substr(0, 1);
  if (digits.size() > 1) m += "." + digits.substr(1);
  const int a = std::abs(exp);
  return sign + m + "e" + (exp < 0 ? "-" : "+") + (a < 10 ? "0" : "") + std::to_string(a);
}

std::string hex2(unsigned c) {
  static const char* h = "0123456789abcdef";
  return std::string{h[c >> 4], h[c & 15]};
}

std::string str_repr(const std::string& s) {
  const bool has_sq = s.find('\'') != std::string::npos, has_dq = s.find('"') != std::string::npos;
  const char q = has_sq && !has_dq ? '"' : '\'';
  std::string out(1, q);
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\\')
      out += "\\\\";
    else if (c == static_cast<unsigned char>(q))
      out += std::string("\\") + q;
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7f)
      out += "\\x" + hex2(c);
    else if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0xA0) {
      out += "\\x" + hex2(static_cast<unsigned char>(s[++i]));  // U+0080 .. U+00A0 are not printable
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + q;
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20)
          out += "\\u00" + hex2(c);
        else
          out += ch;
    }
  }
  out += '"';
}

void json_dump(std::string& out, const Value& v, int indent, bool sort_keys, int level) {
  const std::string nl =
      indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent * (level + 1)), ' ') : "";
  const std::string close = indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent * level), ' ') : "";
  const std::string sep = indent >= 0 ? "," : ", ";
  if (v.is_none()) {
    out += "null";
  } else if (const bool* b = std::get_if<bool>(&v.v)) {
    out += *b ? "true" : "false";
  } else if (const int64_t* i = std::get_if<int64_t>(&v.v)) {
    out += std::to_string(*i);
  } else if (const double* d = std::get_if<double>(&v.v)) {
    out += std::isnan(*d) ? "NaN" : std::isinf(*d) ? (*d < 0 ? "-Infinity" : "Infinity") : float_repr(*d);
  } else if (v.is_string()) {
    json_string(out, v.str());
  } else if (v.is_list()) {
    if (v.list().empty()) {
      out += "[]";
      return;
    }
    out += "[";
    for (size_t k = 0; k < v.list().size(); ++k) {
      out += k ? sep + nl : nl;
      json_dump(out, v.list()[k], indent, sort_keys, level + 1);
    }
    out += close + "]";
  } else if (v.is_dict()) {
    if (v.dict().empty()) {
      out += "{}";
      return;
    }
    std::vector<const std::pair<std::string, Value>*> items;
    for (const auto& kv : v.dict()) items.push_back(&kv);
    if (sort_keys)
      std::stable_sort(items.begin(), items.end(), [](auto* x, auto* y) { return x->first < y->first; });
    out += "{";
    for (size_t k = 0; k < items.size(); ++k) {
      out += k ? sep + nl : nl;
      json_string(out, items[k]->first);
      out += ": ";
      json_dump(out, items[k]->second, indent, sort_keys, level + 1);
    }
    out += close + "}";
  } else {
    throw Error("chat template: tojson: object of type " + type_name(v) + " is not JSON serializable");
  }
}

double as_double(const Value& v) {
  if (const int64_t* i = std::get_if<int64_t>(&v.v)) return static_cast<double>(*i);
  if (const bool* b = std::get_if<bool>(&v.v)) return *b ? 1.0 : 0.0;
  return std::get<double>(v.v);
}
bool numeric(const Value& v) {
  return v.is_number() || std::holds_alternative<bool>(v.v);
}

}  // namespace

std::string type_name(const Value& v) {
  static const char* const names[] = {"undefined", "NoneType", "bool", "int",      "float",
                                      "str",       "list",     "dict", "function", "Namespace"};
  return names[v.v.index()];
}

std::string python_repr(const Value& v) {
  if (v.is_string()) return str_repr(v.str());
  if (v.is_list()) {
    std::string out = "[";
    for (size_t k = 0; k < v.list().size(); ++k) out += (k ? ", " : "") + python_repr(v.list()[k]);
    return out + "]";
  }
  if (v.is_dict()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, e] : v.dict()) {
      out += (first ? "" : ", ") + str_repr(k) + ": " + python_repr(e);
      first = false;
    }
    return out + "}";
  }
  return to_str(v);
}

std::string to_str(const Value& v) {
  if (v.is_undefined()) return "";
  if (v.is_none()) return "None";
  if (v.is_string()) return v.str();
  if (const bool* b = std::get_if<bool>(&v.v)) return *b ? "True" : "False";
  if (const int64_t* i = std::get_if<int64_t>(&v.v)) return std::to_string(*i);
  if (const double* d = std::get_if<double>(&v.v)) return float_repr(*d);
  if (v.is_list() || v.is_dict()) return python_repr(v);
  if (std::holds_alternative<std::shared_ptr<Callable>>(v.v)) return "<function>";
  return "<Namespace>";
}

std::string to_json(const Value& v, int indent, bool sort_keys) {
  std::string out;
  json_dump(out, v, indent, sort_keys, 0);
  return out;
}

bool values_equal(const Value& a, const Value& b) {
  if (numeric(a) && numeric(b)) return as_double(a) == as_double(b);
  if (a.v.index() != b.v.index()) return false;
  if (a.is_undefined() || a.is_none()) return true;
  if (a.is_string()) return a.str() == b.str();
  if (a.is_list()) {
    if (a.list().size() != b.list().size()) return false;
    for (size_t k = 0; k < a.list().size(); ++k)
      if (!values_equal(a.list()[k], b.list()[k])) return false;
    return true;
  }
  if (a.is_dict()) {
    if (a.dict().size() != b.dict().size()) return false;
    for (const auto& [k, e] : a.dict()) {
      const Value* o = b.find(k);
      if (!o || !values_equal(e, *o)) return false;
    }
    return true;
  }
  if (auto* f = std::get_if<std::shared_ptr<Callable>>(&a.v))
    return *f == std::get<std::shared_ptr<Callable>>(b.v);
  return std::get<std::shared_ptr<Namespace>>(a.v) == std::get<std::shared_ptr<Namespace>>(b.v);
}

int compare_values(const Value& a, const Value& b, int line) {
  if (numeric(a) && numeric(b)) {
    const double x = as_double(a), y = as_double(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.str().compare(b.str()) < 0 ? -1 : a.str() == b.str() ? 0 : 1;
  if (a.is_list() && b.is_list()) {
    const size_t n = std::min(a.list().size(), b.list().size());
    for (size_t k = 0; k < n; ++k)
      if (const int c = compare_values(a.list()[k], b.list()[k], line)) return c;
    return a.list().size() < b.list().size() ? -1 : a.list().size() > b.list().size() ? 1 : 0;
  }
  throw Error("chat template: line " + std::to_string(line) + ": cannot order values of type " +
              type_name(a) + " and " + type_name(b));
}

int64_t utf8_length(std::string_view s) {
  int64_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

std::vector<std::string> utf8_chars(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t j = i + 1;
    while (j < s.size() && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) ++j;
    out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace fp4lab::jinja
