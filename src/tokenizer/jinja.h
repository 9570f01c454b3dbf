// A Jinja2 interpreter for chat templates: the subset of the language that Hugging Face chat templates use,
// with the environment transformers renders them in (trim_blocks, lstrip_blocks, loop controls, no
// autoescape, sandboxed: no attribute writes, only the string/dict methods templates call). The values follow
// Python's semantics where the output depends on them (str() of lists, dicts, floats and None; truthiness;
// floor division; code-point string indexing), because a chat prompt that differs by one byte from what the
// model was trained on is a silently wrong prompt. A construct outside the subset is an Error naming it and
// its line, never skipped.
#pragma once
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace fp4lab::jinja {

struct Value;
using List = std::vector<Value>;
// Python dicts keep insertion order, and tojson and items() show it.
using Dict = std::vector<std::pair<std::string, Value>>;
struct Callable;
struct Namespace;  // namespace(): the one mutable object templates have

struct Undefined {
  std::string name;  // what was looked up, for the error when the template uses it as a value
  bool operator==(const Undefined&) const { return true; }
};
struct None {
  bool operator==(const None&) const { return true; }
};

struct Value {
  std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<List>,
               std::shared_ptr<Dict>, std::shared_ptr<Callable>, std::shared_ptr<Namespace>>
      v;

  Value() = default;
  Value(Undefined u) : v(std::move(u)) {}
  Value(None) : v(None{}) {}
  Value(bool b) : v(b) {}
  Value(int i) : v(int64_t{i}) {}
  Value(int64_t i) : v(i) {}
  Value(double d) : v(d) {}
  Value(const char* s) : v(std::string(s)) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(List l) : v(std::make_shared<List>(std::move(l))) {}
  Value(Dict d) : v(std::make_shared<Dict>(std::move(d))) {}
  Value(std::shared_ptr<Callable> f) : v(std::move(f)) {}
  Value(std::shared_ptr<Namespace> ns) : v(std::move(ns)) {}

  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return std::holds_alternative<Undefined>(v); }
  bool is_none() const { return std::holds_alternative<None>(v); }
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(v); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(v); }
  bool is_number() const { return std::holds_alternative<int64_t>(v) || std::holds_alternative<double>(v); }
  const std::string& str() const { return std::get<std::string>(v); }
  const List& list() const { return *std::get<std::shared_ptr<List>>(v); }
  const Dict& dict() const { return *std::get<std::shared_ptr<Dict>>(v); }
  const Value* find(std::string_view key) const;  // dict lookup; null if absent or not a dict
};

// A function the template can call (globals such as raise_exception, macros). Positional arguments, then
// keyword arguments.
struct Callable {
  std::function<Value(const List& args, const Dict& kwargs)> fn;
};

// Python's d[key] = v on an insertion-ordered dict: replaces the value where the key is, appends otherwise.
void dict_set(Dict& d, const std::string& key, Value v);

// strftime_now(fmt) as transformers defines it: the local time at the call, formatted; with `fixed`, that
// date instead (a reproducible render).
Value strftime_now_function(std::optional<std::tm> fixed = std::nullopt);

bool truthy(const Value& v);
std::string to_str(const Value& v);  // Python's str()
// HF's tojson: json.dumps(x, ensure_ascii=False, indent=indent, separators=..., sort_keys=...).
std::string to_json(const Value& v, int indent = -1, bool sort_keys = false);

class Template {
 public:
  // Parses the whole template; a syntax error or an unsupported construct throws fp4lab::Error with the line.
  // `what` names the source in messages.
  explicit Template(std::string_view source, std::string what = "chat template");
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  ~Template();

  // Renders with these top-level variables and the globals raise_exception() (throws fp4lab::Error with its
  // message) and strftime_now() (today; a variable of that name takes its place).
  std::string render(const Dict& vars) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4lab::jinja
