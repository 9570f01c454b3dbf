#include "io/json_util.h"

#include <fstream>
#include <sstream>

#include "common/error.h"

namespace fp4lab {

json parse_json_untrusted(std::string_view text, const std::string& what) {
  // Depth is checked before parsing: brackets inside strings do not count, escapes are skipped.
  int depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_str) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_str = false;
      continue;
    }
    if (c == '"')
      in_str = true;
    else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        throw Error(what + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth));
    } else if (c == ']' || c == '}')
      --depth;
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(what + ": invalid JSON (" + e.what() + ")");
  }
}

std::optional<int64_t> json_int_field(const json& obj, const std::string& key, int64_t lo, int64_t hi) {
  if (!obj.is_object()) return std::nullopt;
  const auto it = obj.find(key);
  if (it == obj.end()) return std::nullopt;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (hi < 0 || u > static_cast<uint64_t>(hi) || static_cast<int64_t>(u) < lo) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (it->is_number_integer()) {
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi) return std::nullopt;
    return v;
  }
  if (it->is_number_float()) {
    const double d = it->get<double>();
    // Compared as doubles before the cast (NaN fails both); hi + 1 is exact for the bounds used here.
    if (!(d > static_cast<double>(lo) - 1.0 && d < static_cast<double>(hi) + 1.0)) return std::nullopt;
    return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path + ": read error");
  return ss.str();
}

json read_json_file(const std::string& path) {
  return parse_json_untrusted(read_text_file(path), path);
}

}  // namespace fp4lab
