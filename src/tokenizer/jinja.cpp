// The Jinja evaluator: jinja2's scoping (a for loop's body is its own scope, `if` is not; macros see the
// scope they were defined in), Python operators, and limits that keep a hostile template from exhausting
// memory or the stack (a chat template comes with a downloaded checkpoint).
#include <cmath>
#include <ctime>

#include "common/error.h"
#include "tokenizer/jinja_ast.h"

namespace fp4lab::jinja {

namespace {

constexpr size_t kMaxOutput = size_t{64} << 20;  // bytes of rendered text
constexpr int64_t kMaxRange = 1 << 20;           // elements of range() and repeated sequences
constexpr int kMaxDepth = 200;                   // nested macro calls
constexpr int64_t kMaxSteps = 10'000'000;        // loop passes and macro calls in one render

struct Scope {
  Scope* parent = nullptr;
  Dict vars;
  Value* find(const std::string& n) {
    for (Scope* s = this; s; s = s->parent)
      for (auto& [k, v] : s->vars)
        if (k == n) return &v;
    return nullptr;
  }
  void set(const std::string& n, Value v) { dict_set(vars, n, std::move(v)); }
};

enum class Flow { Normal, Break, Continue };

int64_t to_index(const Value& v, int line, const char* what) {
  if (v.is_none() || v.is_undefined()) return INT64_MIN;
  if (const int64_t* i = std::get_if<int64_t>(&v.v)) return *i;
  fail_at(line, std::string(what) + " must be an integer");
}

Value slice(const Value& obj, const Value& a, const Value& b, const Value& c, int line) {
  const bool is_str = obj.is_string();
  if (!is_str && !obj.is_list()) fail_at(line, "cannot slice a value of type " + type_name(obj));
  std::vector<std::string> chars;
  if (is_str) chars = utf8_chars(obj.str());
  const int64_t n = static_cast<int64_t>(is_str ? chars.size() : obj.list().size());
  int64_t step = to_index(c, line, "a slice step");
  if (step == INT64_MIN) step = 1;
  if (step == 0) fail_at(line, "slice step cannot be zero");
  auto norm = [&](int64_t x, int64_t def) {
    if (x == INT64_MIN) return def;
    if (x < 0) x += n;
    return step > 0 ? std::clamp<int64_t>(x, 0, n) : std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t start = norm(to_index(a, line, "a slice bound"), step > 0 ? 0 : n - 1);
  const int64_t stop = norm(to_index(b, line, "a slice bound"), step > 0 ? n : -1);
  List out;
  std::string s;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (is_str)
      s += chars[static_cast<size_t>(i)];
    else
      out.push_back(obj.list()[static_cast<size_t>(i)]);
  }
  return is_str ? Value(s) : Value(std::move(out));
}

double num(const Value& v) {
  if (const int64_t* i = std::get_if<int64_t>(&v.v)) return static_cast<double>(*i);
  if (const bool* b = std::get_if<bool>(&v.v)) return *b;
  return std::get<double>(v.v);
}
bool is_num(const Value& v) {
  return v.is_number() || std::holds_alternative<bool>(v.v);
}
bool is_intlike(const Value& v) {
  return std::holds_alternative<int64_t>(v.v) || std::holds_alternative<bool>(v.v);
}
int64_t ival(const Value& v) {
  if (const bool* b = std::get_if<bool>(&v.v)) return *b;
  return std::get<int64_t>(v.v);
}

Value repeat(const Value& seq, int64_t times, int line) {
  times = std::max<int64_t>(times, 0);
  if (seq.is_string()) {
    if (static_cast<double>(seq.str().size()) * static_cast<double>(times) > static_cast<double>(kMaxOutput))
      fail_at(line, "string repetition past the output limit");
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    return Value(out);
  }
  if (static_cast<double>(seq.list().size()) * static_cast<double>(times) > static_cast<double>(kMaxRange))
    fail_at(line, "list repetition past the size limit");
  List out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
  return Value(std::move(out));
}

Value arith(const std::string& op, const Value& a, const Value& b, int line) {
  auto bad = [&]() -> Value {
    fail_at(line, "unsupported operand types for " + op + ": " + type_name(a) + " and " + type_name(b));
  };
  if (a.is_undefined() || b.is_undefined()) {
    const Value& u = a.is_undefined() ? a : b;
    const std::string& name = std::get<Undefined>(u.v).name;
    fail_at(line,
            "'" + (name.empty() ? std::string("value") : name) + "' is undefined (used with " + op + ")");
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
    if (a.is_list() && b.is_list()) {
      List l = a.list();
      l.insert(l.end(), b.list().begin(), b.list().end());
      return Value(std::move(l));
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && is_intlike(b)) return repeat(a, ival(b), line);
    if ((b.is_string() || b.is_list()) && is_intlike(a)) return repeat(b, ival(a), line);
  }
  if (!is_num(a) || !is_num(b)) return bad();
  const bool ints = is_intlike(a) && is_intlike(b);
  if (op == "/") {
    if (num(b) == 0) fail_at(line, "division by zero");
    return Value(num(a) / num(b));
  }
  if (ints) {
    // Python integers do not overflow; these do, so an overflow is an error rather than a wrapped value.
    const int64_t x = ival(a), y = ival(b);
    int64_t r = 0;
    auto checked = [&](bool overflow) {
      if (overflow) fail_at(line, "integer overflow in " + op);
      return Value(r);
    };
    if (op == "+") return checked(__builtin_add_overflow(x, y, &r));
    if (op == "-") return checked(__builtin_sub_overflow(x, y, &r));
    if (op == "*") return checked(__builtin_mul_overflow(x, y, &r));
    if (op == "//" || op == "%") {
      if (y == 0) fail_at(line, "integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) fail_at(line, "integer overflow in " + op);
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;  // Python floors
      return Value(op == "//" ? q : m);
    }
    if (op == "**") {
      if (y < 0) return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
      r = 1;
      for (int64_t i = 0; i < y; ++i) {
        if (__builtin_mul_overflow(r, x, &r)) fail_at(line, "integer overflow in **");
        if (r == 0 || r == 1) break;
        if (r == -1) {
          r = (y - i - 1) % 2 == 0 ? -1 : 1;
          break;
        }
      }
      return Value(r);
    }
  }
  const double x = num(a), y = num(b);
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "**") return Value(std::pow(x, y));
  if (y == 0) fail_at(line, "float division or modulo by zero");
  if (op == "//") return Value(std::floor(x / y));
  if (op == "%") {
    double r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return Value(r);
  }
  return bad();
}

bool contains(const Value& container, const Value& item, int line) {
  if (container.is_string()) {
    if (!item.is_string()) fail_at(line, "'in <string>' needs a string on the left, not " + type_name(item));
    return container.str().find(item.str()) != std::string::npos;
  }
  if (container.is_dict()) return item.is_string() && container.find(item.str()) != nullptr;
  if (container.is_undefined()) return false;
  if (!container.is_list()) fail_at(line, "argument of type '" + type_name(container) + "' is not iterable");
  for (const auto& e : container.list())
    if (values_equal(e, item)) return true;
  return false;
}

}  // namespace

struct Template::Impl {
  Body body;
  std::string what;
  Dict globals;

  struct Run {
    const Impl& t;
    std::string out;
    int depth = 0;
    int64_t steps = 0;
    int frames = 0;  // eval/exec recursion: bounded so a hostile template cannot overflow the stack

    struct Frame {
      int& n;
      Frame(int& frames, int line) : n(frames) {
        if (++n > 1500) fail_at(line, "the template nests past 1500 levels of evaluation");
      }
      ~Frame() { --n; }
    };

    // Nested loops over range() could run for hours: a render has a budget of passes.
    void step(int line) {
      if (++steps > kMaxSteps) fail_at(line, "the template runs past 10^7 loop passes and macro calls");
    }

    void emit(std::string_view s) {
      if (out.size() + s.size() > kMaxOutput) throw Error(t.what + ": the rendered text passes 64 MB");
      out += s;
    }

    Value lookup(const std::string& n, Scope& sc) {
      if (Value* v = sc.find(n)) return *v;
      for (const auto& [k, v] : t.globals)
        if (k == n) return v;
      return Value(Undefined{n});
    }

    Value call_value(const Value& f, const List& args, const Dict& kwargs, int line,
                     const std::string& name) {
      if (auto* c = std::get_if<std::shared_ptr<Callable>>(&f.v)) {
        step(line);
        if (++depth > kMaxDepth) fail_at(line, "macro calls nest deeper than " + std::to_string(kMaxDepth));
        Value r = (*c)->fn(args, kwargs);
        --depth;
        return r;
      }
      if (f.is_undefined()) fail_at(line, "'" + name + "' is undefined (called as a function)");
      fail_at(line, "'" + name + "' is a " + type_name(f) + ", not a function");
    }

    Value builtin_call(const std::string& n, const List& args, const Dict& kwargs, int line, bool& handled) {
      handled = true;
      if (n == "range") {
        if (args.empty() || args.size() > 3) fail_at(line, "range() takes 1 to 3 integers");
        int64_t a = 0, b = 0, s = 1;
        for (const auto& x : args)
          if (!is_intlike(x)) fail_at(line, "range() takes integers");
        if (args.size() == 1)
          b = ival(args[0]);
        else
          a = ival(args[0]), b = ival(args[1]);
        if (args.size() == 3) s = ival(args[2]);
        if (s == 0) fail_at(line, "range() step cannot be zero");
        List vals;
        for (int64_t i = a; s > 0 ? i < b : i > b;) {
          if (static_cast<int64_t>(vals.size()) >= kMaxRange) fail_at(line, "range() past the size limit");
          vals.emplace_back(i);
          if (__builtin_add_overflow(i, s, &i)) break;
        }
        return Value(std::move(vals));
      }
      if (n == "namespace") {
        auto ns = std::make_shared<Namespace>();
        for (const auto& a : args)
          if (a.is_dict()) ns->attrs = a.dict();
        for (const auto& [k, v] : kwargs) ns->attrs.emplace_back(k, v);
        return Value(ns);
      }
      if (n == "dict") {
        Dict d;
        for (const auto& [k, v] : kwargs) d.emplace_back(k, v);
        return Value(std::move(d));
      }
      handled = false;
      return Value();
    }

    // The arguments of a call, filter or test: e.args[1..] (e.args[0] is the callee or operand) and e.kwargs.
    void eval_args(const Expr& e, Scope& sc, List& args, Dict& kwargs) {
      for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i], sc));
      for (const auto& [k, x] : e.kwargs) kwargs.emplace_back(k, eval(*x, sc));
    }

    Value eval(const Expr& e, Scope& sc) {
      const Frame frame(frames, e.line);
      using K = Expr::Kind;
      switch (e.kind) {
        case K::Literal:
          return e.lit;
        case K::Name:
          return lookup(e.name, sc);
        case K::ListLit:
        case K::TupleLit: {
          List l;
          for (const auto& a : e.args) l.push_back(eval(*a, sc));
          return Value(std::move(l));
        }
        case K::DictLit: {
          Dict d;
          for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
            const Value k = eval(*e.args[i], sc);
            if (!k.is_string()) fail_at(e.line, "dict keys must be strings here");
            dict_set(d, k.str(), eval(*e.args[i + 1], sc));
          }
          return Value(std::move(d));
        }
        case K::Attr:
          return get_attr(eval(*e.args[0], sc), e.name, e.line);
        case K::Item:
          return get_item(eval(*e.args[0], sc), eval(*e.args[1], sc), e.line);
        case K::Slice: {
          const Value obj = eval(*e.args[0], sc);
          Value b[3];
          for (int k = 0; k < 3; ++k)
            if (e.args[1 + k]) b[k] = eval(*e.args[1 + k], sc);
          return slice(obj, b[0], b[1], b[2], e.line);
        }
        case K::Call: {
          List args;
          Dict kwargs;
          eval_args(e, sc, args, kwargs);
          const Expr& callee = *e.args[0];
          if (callee.kind == K::Attr) {
            const Value obj = eval(*callee.args[0], sc);
            if (has_method(obj, callee.name)) return call_method(obj, callee.name, args, kwargs, e.line);
            return call_value(get_attr(obj, callee.name, e.line), args, kwargs, e.line, callee.name);
          }
          if (callee.kind == K::Name && !sc.find(callee.name)) {
            bool handled = false;
            Value r = builtin_call(callee.name, args, kwargs, e.line, handled);
            if (handled) return r;
          }
          return call_value(eval(callee, sc), args, kwargs, e.line,
                            callee.kind == K::Name ? callee.name : std::string("expression"));
        }
        case K::Filter: {
          const Value v = eval(*e.args[0], sc);
          List args;
          Dict kwargs;
          eval_args(e, sc, args, kwargs);
          return apply_filter(e.name, v, args, kwargs, e.line);
        }
        case K::Test: {
          const Value v = eval(*e.args[0], sc);
          List args;
          Dict kwargs;  // the parser gives tests none
          eval_args(e, sc, args, kwargs);
          return Value(apply_test(e.name, v, args, e.line));
        }
        case K::Unary: {
          const Value v = eval(*e.args[0], sc);
          if (e.name == "not") return Value(!truthy(v));
          if (!is_num(v)) fail_at(e.line, "bad operand type for unary " + e.name + ": " + type_name(v));
          if (e.name == "+") return is_intlike(v) ? Value(ival(v)) : v;
          if (is_intlike(v) && ival(v) == INT64_MIN) fail_at(e.line, "integer overflow in unary -");
          return is_intlike(v) ? Value(-ival(v)) : Value(-num(v));
        }
        case K::And: {
          Value a = eval(*e.args[0], sc);
          return truthy(a) ? eval(*e.args[1], sc) : a;
        }
        case K::Or: {
          Value a = eval(*e.args[0], sc);
          return truthy(a) ? a : eval(*e.args[1], sc);
        }
        case K::Cond: {
          if (truthy(eval(*e.args[1], sc))) return eval(*e.args[0], sc);
          return e.args[2] ? eval(*e.args[2], sc) : Value();
        }
        case K::Binary: {
          const Value a = eval(*e.args[0], sc), b = eval(*e.args[1], sc);
          const std::string& op = e.name;
          if (op == "~") return Value(to_str(a) + to_str(b));
          if (op == "==") return Value(values_equal(a, b));
          if (op == "!=") return Value(!values_equal(a, b));
          if (op == "<") return Value(compare_values(a, b, e.line) < 0);
          if (op == ">") return Value(compare_values(a, b, e.line) > 0);
          if (op == "<=") return Value(compare_values(a, b, e.line) <= 0);
          if (op == ">=") return Value(compare_values(a, b, e.line) >= 0);
          if (op == "in") return Value(contains(b, a, e.line));
          if (op == "notin") return Value(!contains(b, a, e.line));
          return arith(op, a, b, e.line);
        }
      }
      fail_at(e.line, "unknown expression");
    }

    void assign(const Node& n, Value v, Scope& sc) {
      if (!n.attr.empty()) {
        Value* target = sc.find(n.targets[0]);
        auto* ns = target ? std::get_if<std::shared_ptr<Namespace>>(&target->v) : nullptr;
        if (!ns)
          fail_at(n.line, "cannot set ." + n.attr + " on '" + n.targets[0] + "': only a namespace() can be");
        dict_set((*ns)->attrs, n.attr, std::move(v));
        return;
      }
      if (n.targets.size() == 1) {
        sc.set(n.targets[0], std::move(v));
        return;
      }
      const List items = iterate(v, n.line);
      if (items.size() != n.targets.size())
        fail_at(n.line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                            std::to_string(n.targets.size()) + " names");
      for (size_t i = 0; i < items.size(); ++i) sc.set(n.targets[i], items[i]);
    }

    std::string capture(const Body& b, Scope& sc) {
      std::string saved;
      saved.swap(out);
      exec(b, sc);
      saved.swap(out);
      return saved;
    }

    Value make_macro(const Node& n, Scope& defining) {
      auto c = std::make_shared<Callable>();
      const Node* node = &n;
      Scope* def = &defining;
      c->fn = [this, node, def](const List& args, const Dict& kwargs) -> Value {
        Scope local{def, {}};
        if (args.size() > node->params.size())
          fail_at(node->line, "macro '" + node->name + "' takes " + std::to_string(node->params.size()) +
                                  " arguments, got " + std::to_string(args.size()));
        for (size_t i = 0; i < node->params.size(); ++i) {
          const auto& [pname, pdef] = node->params[i];
          const Value* kv = nullptr;
          for (const auto& [k, v] : kwargs)
            if (k == pname) kv = &v;
          if (i < args.size())
            local.set(pname, args[i]);
          else if (kv)
            local.set(pname, *kv);
          else
            local.set(pname, pdef ? eval(*pdef, local) : Value(Undefined{pname}));
        }
        for (const auto& [k, v] : kwargs) {
          bool known = k == "caller";
          for (const auto& p : node->params) known = known || p.first == k;
          if (!known) fail_at(node->line, "macro '" + node->name + "' has no parameter '" + k + "'");
          if (k == "caller") local.set(k, v);
        }
        return Value(capture(node->body, local));
      };
      return Value(c);
    }

    Flow exec(const Body& nodes, Scope& sc) {
      const Frame frame(frames, nodes.empty() ? 0 : nodes.front()->line);
      for (const auto& np : nodes) {
        const Node& n = *np;
        using K = Node::Kind;
        switch (n.kind) {
          case K::Text:
            emit(n.text);
            break;
          case K::Output:
            emit(to_str(eval(*n.expr, sc)));
            break;
          case K::If:
            for (const auto& [cond, b] : n.branches)
              if (!cond || truthy(eval(*cond, sc))) {
                const Flow f = exec(b, sc);
                if (f != Flow::Normal) return f;
                break;
              }
            break;
          case K::For: {
            const List all = iterate(eval(*n.expr, sc), n.line);
            Node unpack;  // the loop targets, assigned like a set statement
            unpack.targets = n.targets;
            unpack.line = n.line;
            List items;
            for (const auto& it : all) {
              if (n.cond) {
                Scope probe{&sc, {}};
                assign(unpack, it, probe);
                if (!truthy(eval(*n.cond, probe))) continue;
              }
              items.push_back(it);
            }
            const int64_t len = static_cast<int64_t>(items.size());
            for (int64_t i = 0; i < len; ++i) {
              step(n.line);
              // Each pass is a fresh scope: a set in the body lasts for that pass only (jinja2).
              Scope pass{&sc, {}};
              const auto at = [&](int64_t j, const char* name) {
                return j >= 0 && j < len ? items[static_cast<size_t>(j)] : Value(Undefined{name});
              };
              pass.set("loop", Value(Dict{{"index", Value(i + 1)},
                                          {"index0", Value(i)},
                                          {"revindex", Value(len - i)},
                                          {"revindex0", Value(len - i - 1)},
                                          {"first", Value(i == 0)},
                                          {"last", Value(i == len - 1)},
                                          {"length", Value(len)},
                                          {"previtem", at(i - 1, "loop.previtem")},
                                          {"nextitem", at(i + 1, "loop.nextitem")}}));
              assign(unpack, items[static_cast<size_t>(i)], pass);
              if (exec(n.body, pass) == Flow::Break) break;
            }
            if (items.empty() && !n.else_body.empty()) {
              const Flow f = exec(n.else_body, sc);
              if (f != Flow::Normal) return f;
            }
            break;
          }
          case K::Set:
            assign(n, eval(*n.expr, sc), sc);
            break;
          case K::SetBlock:
            sc.set(n.targets[0], Value(capture(n.body, sc)));
            break;
          case K::Macro:
            sc.set(n.name, make_macro(n, sc));
            break;
          case K::CallBlock: {
            auto caller = std::make_shared<Callable>();
            const Body* b = &n.body;
            Scope* s = &sc;
            caller->fn = [this, b, s](const List&, const Dict&) -> Value {
              Scope local{s, {}};
              return Value(capture(*b, local));
            };
            const Expr& call = *n.expr;
            List args;
            Dict kwargs;
            eval_args(call, sc, args, kwargs);
            kwargs.emplace_back("caller", Value(caller));
            emit(to_str(call_value(eval(*call.args[0], sc), args, kwargs, n.line, "call block")));
            break;
          }
          case K::FilterBlock: {
            const std::string text = capture(n.body, sc);
            const Expr& f = *n.expr;
            List args;
            Dict kwargs;
            eval_args(f, sc, args, kwargs);
            emit(to_str(apply_filter(f.name, Value(text), args, kwargs, n.line)));
            break;
          }
          case K::Break:
            return Flow::Break;
          case K::Continue:
            return Flow::Continue;
          case K::Generation: {
            const Flow f = exec(n.body, sc);
            if (f != Flow::Normal) return f;
            break;
          }
        }
      }
      return Flow::Normal;
    }
  };
};

Value strftime_now_function(std::optional<std::tm> fixed) {
  auto f = std::make_shared<Callable>();
  f->fn = [fixed](const List& args, const Dict&) -> Value {
    std::tm tm{};
    if (fixed) {
      tm = *fixed;
    } else {
      const std::time_t t = std::time(nullptr);
      localtime_r(&t, &tm);
    }
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, args.empty() ? "%Y-%m-%d" : to_str(args[0]).c_str(), &tm);
    return Value(std::string(buf, n));
  };
  return Value(f);
}

Template::Template(std::string_view source, std::string what) : impl_(std::make_unique<Impl>()) {
  impl_->what = std::move(what);
  impl_->body = parse_template(source, impl_->what);
  auto raise = std::make_shared<Callable>();
  raise->fn = [w = impl_->what](const List& args, const Dict&) -> Value {
    throw Error(w + " raised an error: " + (args.empty() ? std::string() : to_str(args[0])));
  };
  impl_->globals = {{"raise_exception", Value(raise)}, {"strftime_now", strftime_now_function()}};
}

Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;
Template::~Template() = default;

std::string Template::render(const Dict& vars) const {
  Impl::Run run{*impl_, {}, 0, 0, 0};
  Scope top{nullptr, vars};
  // A break or continue outside any loop ends the body it stands in (jinja2 rejects it at parse time).
  run.exec(impl_->body, top);
  return std::move(run.out);
}

}  // namespace fp4lab::jinja
