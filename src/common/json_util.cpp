#include "common/json_util.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
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

namespace {

// Bare non-finite literals are rewritten as JSON strings "\\u0000fp4lab:<literal>" before parsing and turned
// into numbers after; the leading NUL keeps them apart from any string a config file means to hold.
constexpr std::string_view kLiteral[] = {"NaN", "Infinity", "-Infinity"};
constexpr std::string_view kMarkerText = "\\u0000fp4lab:";  // in JSON text
constexpr std::string_view kMarkerValue{"\0fp4lab:", 8};    // once parsed

std::optional<double> nonfinite_value(std::string_view s) {
  if (s == "NaN" || s == "nan" || s == "NAN") return std::numeric_limits<double>::quiet_NaN();
  if (s == "Infinity" || s == "inf" || s == "+inf" || s == "INF")
    return std::numeric_limits<double>::infinity();
  if (s == "-Infinity" || s == "-inf" || s == "-INF") return -std::numeric_limits<double>::infinity();
  return std::nullopt;
}

void restore_nonfinite(json& j, const std::string& what) {
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (s.size() > kMarkerValue.size() && std::string_view(s).substr(0, kMarkerValue.size()) == kMarkerValue)
      if (const auto d = nonfinite_value(std::string_view(s).substr(kMarkerValue.size()))) j = *d;
  } else if (j.is_object()) {
    // transformers 5 writes a non-finite float as {"__float__": "Infinity"}.
    if (j.size() == 1 && j.contains("__float__")) {
      const json& v = j["__float__"];
      const auto d = v.is_string() ? nonfinite_value(v.get<std::string>()) : std::nullopt;
      if (!d && !v.is_number())
        throw Error(what + ": '__float__' must hold NaN, Infinity, -Infinity or a number");
      j = d ? *d : v.get<double>();
      return;
    }
    for (auto& [k, v] : j.items()) restore_nonfinite(v, what);
  } else if (j.is_array()) {
    for (auto& v : j) restore_nonfinite(v, what);
  }
}

}  // namespace

json parse_json_config(std::string_view text, const std::string& what) {
  std::string out;
  out.reserve(text.size());
  bool in_str = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_str) {
      out.push_back(c);
      if (c == '\\' && i + 1 < text.size())
        out.push_back(text[++i]);
      else if (c == '"')
        in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    bool replaced = false;
    for (size_t k = 0; k < 3 && !replaced; ++k)
      if (text.substr(i, kLiteral[k].size()) == kLiteral[k]) {
        out += '"';
        out += kMarkerText;
        out += kLiteral[k];
        out += '"';
        i += kLiteral[k].size() - 1;
        replaced = true;
      }
    if (!replaced) out.push_back(c);
  }
  json j = parse_json_untrusted(out, what);
  restore_nonfinite(j, what);
  return j;
}

json read_json_config_file(const std::string& path) {
  // Real configs are a few KB (the largest hf_quant_config.json exclude lists, ~100 KB).
  return parse_json_config(read_text_file(path, 16u << 20), path);
}

std::string dump_json_config(const json& j, int indent) {
  json copy = j;
  bool any = false;
  auto mark = [&](auto&& self, json& v) -> void {
    if (v.is_number_float() && !std::isfinite(v.get<double>())) {
      const double d = v.get<double>();
      v = std::string(kMarkerValue) + std::string(kLiteral[std::isnan(d) ? 0 : d > 0 ? 1 : 2]);
      any = true;
    } else if (v.is_structured()) {
      for (auto& e : v) self(self, e);
    }
  };
  mark(mark, copy);
  std::string s = copy.dump(indent);
  if (!any) return s;
  for (size_t k = 0; k < 3; ++k) {
    const std::string quoted = "\"" + std::string(kMarkerText) + std::string(kLiteral[k]) + "\"";
    for (size_t p = s.find(quoted); p != std::string::npos; p = s.find(quoted, p))
      s.replace(p, quoted.size(), kLiteral[k]);
  }
  return s;
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

std::string read_text_file(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) throw Error(path + ": cannot open file");
  if (!std::filesystem::is_regular_file(st)) throw Error(path + ": not a regular file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_bytes)
    throw Error(path + ": " + std::to_string(size >> 20) + " MiB, more than the " +
                std::to_string(max_bytes >> 20) + " MiB such a file may have");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path + ": read error");
  return ss.str();
}

void write_text_file(const std::string& path, std::string_view text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(tmp + ": cannot create file");
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    f.flush();
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      throw Error(path + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot replace the file");
  }
}

void check_output_dir(const std::string& out, const std::vector<std::string>& inputs, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path o = fs::weakly_canonical(fs::absolute(out), ec);
  auto inside = [](const fs::path& a, const fs::path& b) {  // a is b or below it
    auto ai = a.begin(), bi = b.begin();
    for (; bi != b.end(); ++ai, ++bi)
      if (ai == a.end() || *ai != *bi) return false;
    return true;
  };
  for (const auto& in : inputs) {
    const fs::path i = fs::weakly_canonical(fs::absolute(in), ec);
    if (inside(o, i) || inside(i, o))
      throw Error("--out " + out + " is, or is inside, or holds the input " + in +
                  ": writing there would destroy the input");
  }
  if (!force && fs::is_directory(o, ec) && !fs::is_empty(o, ec))
    throw Error("--out " + out + " already holds files (--force writes into it, replacing the checkpoint's)");
}

json read_json_file(const std::string& path) {
  return parse_json_untrusted(read_text_file(path, 1u << 30), path);
}

}  // namespace fp4lab
