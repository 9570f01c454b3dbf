// The Jinja parser: tokens (jinja_lex.cpp) to the syntax tree, with jinja2's operator precedence.
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <set>

#include "common/error.h"
#include "tokenizer/jinja_ast.h"

namespace fp4lab::jinja {

namespace {

class Parser {
 public:
  Parser(std::vector<Token> toks, const std::string& what) : t_(std::move(toks)), what_(what) {}

  Body parse_all() {
    std::string end;
    Body b = parse_body({}, end);
    if (!end.empty()) fail("unexpected {% " + end + " %}");
    return b;
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(what_ + ": line " + std::to_string(peek().line) + ": " + msg);
  }
  const Token& peek(int k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  Token next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool at_op(const char* op) const { return peek().kind == Tok::Op && peek().text == op; }
  bool at_name(const char* n) const { return peek().kind == Tok::Name && peek().text == n; }
  void expect_op(const char* op) {
    if (!at_op(op)) fail(std::string("expected '") + op + "', found '" + describe(peek()) + "'");
    ++i_;
  }
  void expect_block_end() {
    if (peek().kind != Tok::BlockEnd)
      fail("expected the end of the block tag, found '" + describe(peek()) + "'");
    ++i_;
  }
  std::string expect_name() {
    if (peek().kind != Tok::Name) fail("expected a name, found '" + describe(peek()) + "'");
    return next().text;
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Tok::VarEnd:
        return "}}";
      case Tok::BlockEnd:
        return "%}";
      case Tok::Eof:
        return "end of template";
      case Tok::String:
        return "'" + t.text + "'";
      default:
        return t.text;
    }
  }

  // Statements until one of `ends` opens a block tag; `end` receives that keyword (empty at the end of
  // input).
  Body parse_body(const std::set<std::string>& ends, std::string& end) {
    Body body;
    while (true) {
      const Token& tk = peek();
      if (tk.kind == Tok::Eof) {
        end.clear();
        return body;
      }
      if (tk.kind == Tok::Text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Text;
        n->line = tk.line;
        n->text = next().text;
        body.push_back(std::move(n));
      } else if (tk.kind == Tok::VarBegin) {
        ++i_;
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Output;
        n->line = tk.line;
        n->expr = parse_expr();
        if (peek().kind != Tok::VarEnd) fail("expected '}}', found '" + describe(peek()) + "'");
        ++i_;
        body.push_back(std::move(n));
      } else if (tk.kind == Tok::BlockBegin) {
        ++i_;
        const std::string kw = expect_name();
        if (ends.count(kw)) {
          end = kw;
          return body;
        }
        body.push_back(parse_statement(kw));
      } else {
        fail("unexpected '" + describe(tk) + "'");
      }
    }
  }

  Body parse_until(const std::set<std::string>& ends, std::string& end, const std::string& opener) {
    Body b = parse_body(ends, end);
    if (end.empty()) fail("{% " + opener + " %} is never closed");
    return b;
  }

  std::unique_ptr<Node> parse_statement(const std::string& kw) {
    const Nest nest(*this);
    auto n = std::make_unique<Node>();
    n->line = peek().line;
    std::string end;
    if (kw == "if") {
      n->kind = Node::Kind::If;
      ExprP cond = parse_expr();
      expect_block_end();
      while (true) {
        Body b = parse_until({"elif", "else", "endif"}, end, "if");
        n->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "endif") break;
        if (end == "else") {
          expect_block_end();
          Body eb = parse_until({"endif"}, end, "if");
          n->branches.emplace_back(nullptr, std::move(eb));
          break;
        }
        cond = parse_expr();
        expect_block_end();
      }
      expect_block_end();
    } else if (kw == "for") {
      n->kind = Node::Kind::For;
      n->targets.push_back(expect_name());
      while (at_op(",")) {
        ++i_;
        n->targets.push_back(expect_name());
      }
      if (!at_name("in")) fail("expected 'in' in the for statement");
      ++i_;
      n->expr = parse_or_cond(false);
      if (at_name("if")) {
        ++i_;
        n->cond = parse_or_cond(false);
      }
      if (at_name("recursive")) fail("recursive for loops are not supported");
      expect_block_end();
      n->body = parse_until({"else", "endfor"}, end, "for");
      if (end == "else") {
        expect_block_end();
        n->else_body = parse_until({"endfor"}, end, "for");
      }
      expect_block_end();
    } else if (kw == "set") {
      n->targets.push_back(expect_name());
      if (at_op(".")) {
        ++i_;
        n->attr = expect_name();
      }
      while (at_op(",")) {
        ++i_;
        n->targets.push_back(expect_name());
      }
      if (at_op("=")) {
        ++i_;
        n->kind = Node::Kind::Set;
        n->expr = parse_tuple_or_expr();
        expect_block_end();
      } else {
        if (n->targets.size() != 1 || !n->attr.empty()) fail("a {% set %} block takes one plain name");
        if (at_op("|")) fail("filtered {% set %} blocks are not supported");
        n->kind = Node::Kind::SetBlock;
        expect_block_end();
        n->body = parse_until({"endset"}, end, "set");
        expect_block_end();
      }
    } else if (kw == "macro") {
      n->kind = Node::Kind::Macro;
      n->name = expect_name();
      expect_op("(");
      while (!at_op(")")) {
        std::string p = expect_name();
        ExprP def;
        if (at_op("=")) {
          ++i_;
          def = parse_expr();
        }
        n->params.emplace_back(std::move(p), std::move(def));
        if (!at_op(")")) expect_op(",");
      }
      ++i_;
      expect_block_end();
      n->body = parse_until({"endmacro"}, end, "macro");
      if (peek().kind == Tok::Name) ++i_;  // {% endmacro name %}
      expect_block_end();
    } else if (kw == "call") {
      n->kind = Node::Kind::CallBlock;
      if (at_op("(")) fail("{% call(args) %} with caller arguments is not supported");
      n->expr = parse_expr();
      if (n->expr->kind != Expr::Kind::Call) fail("{% call %} needs a macro call");
      expect_block_end();
      n->body = parse_until({"endcall"}, end, "call");
      expect_block_end();
    } else if (kw == "filter") {
      n->kind = Node::Kind::FilterBlock;
      auto f = std::make_unique<Expr>();
      f->kind = Expr::Kind::Filter;
      f->line = n->line;
      f->args.push_back(nullptr);
      parse_filter_call(*f);
      n->expr = std::move(f);
      expect_block_end();
      n->body = parse_until({"endfilter"}, end, "filter");
      expect_block_end();
    } else if (kw == "break" || kw == "continue") {
      n->kind = kw == "break" ? Node::Kind::Break : Node::Kind::Continue;
      expect_block_end();
    } else if (kw == "generation") {
      n->kind = Node::Kind::Generation;
      expect_block_end();
      n->body = parse_until({"endgeneration"}, end, "generation");
      expect_block_end();
    } else {
      fail("the {% " + kw + " %} statement is not supported");
    }
    return n;
  }

  int64_t int_literal(const std::string& text) const {
    int64_t v = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    if (r.ec != std::errc() || r.ptr != text.data() + text.size())
      fail("integer literal out of range: " + text);
    return v;
  }

  ExprP make(Expr::Kind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }

  // `a, b` without brackets (set a, b = ...; set x = 1, 2) is a tuple.
  ExprP parse_tuple_or_expr() {
    const int line = peek().line;
    ExprP first = parse_expr();
    if (!at_op(",")) return first;
    ExprP t = make(Expr::Kind::TupleLit, line);
    t->args.push_back(std::move(first));
    while (at_op(",")) {
      ++i_;
      if (peek().kind == Tok::BlockEnd) break;
      t->args.push_back(parse_expr());
    }
    return t;
  }

  ExprP parse_expr() { return parse_or_cond(true); }

  // with_cond: `x if c else y` allowed (not inside a for's iterable, where `if` filters).
  ExprP parse_or_cond(bool with_cond) {
    const Nest nest(*this);
    ExprP e = parse_or();
    while (with_cond && at_name("if")) {
      const int line = peek().line;
      ++i_;
      ExprP c = make(Expr::Kind::Cond, line);
      c->args.push_back(std::move(e));
      c->args.push_back(parse_or());
      if (at_name("else")) {
        ++i_;
        c->args.push_back(parse_or_cond(true));
      } else {
        c->args.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }
  ExprP binary(Expr::Kind k, const std::string& op, ExprP a, ExprP b, int line) {
    ExprP e = make(k, line);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }
  ExprP parse_or() {
    ExprP e = parse_and();
    while (at_name("or")) {
      const int line = next().line;
      e = binary(Expr::Kind::Or, "or", std::move(e), parse_and(), line);
    }
    return e;
  }
  ExprP parse_and() {
    ExprP e = parse_not();
    while (at_name("and")) {
      const int line = next().line;
      e = binary(Expr::Kind::And, "and", std::move(e), parse_not(), line);
    }
    return e;
  }
  ExprP parse_not() {
    const Nest nest(*this);
    if (at_name("not")) {
      ExprP e = make(Expr::Kind::Unary, next().line);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprP parse_compare() {
    ExprP e = parse_math1();
    while (true) {
      const int line = peek().line;
      std::string op;
      if (peek().kind == Tok::Op &&
          (at_op("==") || at_op("!=") || at_op("<") || at_op(">") || at_op("<=") || at_op(">="))) {
        op = next().text;
      } else if (at_name("in")) {
        ++i_;
        op = "in";
      } else if (at_name("not") && peek(1).kind == Tok::Name && peek(1).text == "in") {
        i_ += 2;
        op = "notin";
      } else {
        return e;
      }
      e = binary(Expr::Kind::Binary, op, std::move(e), parse_math1(), line);
    }
  }
  ExprP parse_math1() {
    ExprP e = parse_concat();
    while (at_op("+") || at_op("-")) {
      const Token t = next();
      e = binary(Expr::Kind::Binary, t.text, std::move(e), parse_concat(), t.line);
    }
    return e;
  }
  ExprP parse_concat() {
    ExprP e = parse_math2();
    while (at_op("~")) {
      const int line = next().line;
      e = binary(Expr::Kind::Binary, "~", std::move(e), parse_math2(), line);
    }
    return e;
  }
  ExprP parse_math2() {
    ExprP e = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token t = next();
      e = binary(Expr::Kind::Binary, t.text, std::move(e), parse_pow(), t.line);
    }
    return e;
  }
  ExprP parse_pow() {
    ExprP e = parse_unary(true);
    while (at_op("**")) {
      const int line = next().line;
      e = binary(Expr::Kind::Binary, "**", std::move(e), parse_unary(true), line);
    }
    return e;
  }
  ExprP parse_unary(bool with_filter) {
    const Nest nest(*this);
    ExprP e;
    if (at_op("-") || at_op("+")) {
      const Token t = next();
      e = make(Expr::Kind::Unary, t.line);
      e->name = t.text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filters(std::move(e));
    return e;
  }

  ExprP parse_primary() {
    const Token t = next();
    switch (t.kind) {
      case Tok::Name: {
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          ExprP e = make(Expr::Kind::Literal, t.line);
          e->lit = Value(t.text[0] == 't' || t.text[0] == 'T');
          return e;
        }
        if (t.text == "none" || t.text == "None") {
          ExprP e = make(Expr::Kind::Literal, t.line);
          e->lit = Value(None{});
          return e;
        }
        ExprP e = make(Expr::Kind::Name, t.line);
        e->name = t.text;
        return e;
      }
      case Tok::String: {
        std::string s = t.text;
        while (peek().kind == Tok::String) s += next().text;  // adjacent literals concatenate
        ExprP e = make(Expr::Kind::Literal, t.line);
        e->lit = Value(std::move(s));
        return e;
      }
      case Tok::Int: {
        ExprP e = make(Expr::Kind::Literal, t.line);
        e->lit = Value(int_literal(t.text));
        return e;
      }
      case Tok::Float: {
        ExprP e = make(Expr::Kind::Literal, t.line);
        e->lit = Value(std::strtod(t.text.c_str(), nullptr));  // past DBL_MAX: inf, as Python
        return e;
      }
      case Tok::Op:
        if (t.text == "(") {
          if (at_op(")")) {
            ++i_;
            return make(Expr::Kind::TupleLit, t.line);
          }
          ExprP first = parse_expr();
          if (at_op(")")) {
            ++i_;
            return first;
          }
          ExprP tup = make(Expr::Kind::TupleLit, t.line);
          tup->args.push_back(std::move(first));
          while (at_op(",")) {
            ++i_;
            if (at_op(")")) break;
            tup->args.push_back(parse_expr());
          }
          expect_op(")");
          return tup;
        }
        if (t.text == "[") {
          ExprP l = make(Expr::Kind::ListLit, t.line);
          while (!at_op("]")) {
            l->args.push_back(parse_expr());
            if (!at_op("]")) expect_op(",");
          }
          ++i_;
          return l;
        }
        if (t.text == "{") {
          ExprP d = make(Expr::Kind::DictLit, t.line);
          while (!at_op("}")) {
            d->args.push_back(parse_expr());
            expect_op(":");
            d->args.push_back(parse_expr());
            if (!at_op("}")) expect_op(",");
          }
          ++i_;
          return d;
        }
        break;
      default:
        break;
    }
    --i_;
    fail("unexpected '" + describe(t) + "' in an expression");
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    while (!at_op(")")) {
      if (peek().kind == Tok::Name && peek(1).kind == Tok::Op && peek(1).text == "=") {
        std::string k = next().text;
        ++i_;
        e.kwargs.emplace_back(std::move(k), parse_expr());
      } else {
        if (at_op("*") || at_op("**")) fail("*args and **kwargs in calls are not supported");
        e.args.push_back(parse_expr());
      }
      if (!at_op(")")) expect_op(",");
    }
    ++i_;
  }

  ExprP parse_postfix(ExprP e) {
    while (true) {
      const int line = peek().line;
      if (at_op(".")) {
        ++i_;
        ExprP a = make(Expr::Kind::Attr, line);
        if (peek().kind == Tok::Int) {  // foo.0 is foo[0]
          a->kind = Expr::Kind::Item;
          a->args.push_back(std::move(e));
          ExprP idx = make(Expr::Kind::Literal, line);
          idx->lit = Value(int_literal(next().text));
          a->args.push_back(std::move(idx));
        } else {
          a->name = expect_name();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (at_op("[")) {
        ++i_;
        ExprP parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!at_op(":") && !at_op("]")) parts[k] = parse_expr();
          if (k < 2 && at_op(":")) {
            ++i_;
            slice = true;
          } else {
            break;
          }
        }
        expect_op("]");
        ExprP s = make(slice ? Expr::Kind::Slice : Expr::Kind::Item, line);
        s->args.push_back(std::move(e));
        if (!slice && !parts[0]) fail("empty subscript");
        for (int k = 0; k < (slice ? 3 : 1); ++k) s->args.push_back(std::move(parts[k]));
        e = std::move(s);
      } else if (at_op("(")) {
        ExprP c = make(Expr::Kind::Call, line);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  void parse_filter_call(Expr& f) {
    f.name = expect_name();
    while (at_op(".")) {  // dotted filter names do not exist in jinja2's builtins
      fail("unknown filter '" + f.name + ".'");
    }
    if (at_op("(")) parse_call_args(f);
  }

  ExprP parse_filters(ExprP e) {
    while (true) {
      const int line = peek().line;
      if (at_op("|")) {
        ++i_;
        ExprP f = make(Expr::Kind::Filter, line);
        f->args.push_back(std::move(e));
        parse_filter_call(*f);
        e = parse_postfix(std::move(f));
      } else if (at_name("is")) {
        ++i_;
        bool negate = false;
        if (at_name("not")) {
          ++i_;
          negate = true;
        }
        ExprP t = make(Expr::Kind::Test, line);
        t->args.push_back(std::move(e));
        if (peek().kind == Tok::Name) {
          t->name = next().text;
        } else if (at_op("==") || at_op("!=") || at_op("<") || at_op(">") || at_op("<=") || at_op(">=")) {
          t->name = next().text;  // `is ==` spelled as an operator
        } else {
          fail("expected a test name after 'is'");
        }
        if (at_op("(")) {
          parse_call_args(*t);
        } else if (peek().kind == Tok::String || peek().kind == Tok::Int || peek().kind == Tok::Float ||
                   (peek().kind == Tok::Name && !at_name("and") && !at_name("or") && !at_name("if") &&
                    !at_name("else") && !at_name("is") && !at_name("in") && !at_name("not"))) {
          t->args.push_back(parse_primary());  // `x is divisibleby 3`, `x is sameas none`
        }
        if (negate) {
          ExprP n = make(Expr::Kind::Unary, line);
          n->name = "not";
          n->args.push_back(std::move(t));
          e = std::move(n);
        } else {
          e = std::move(t);
        }
      } else {
        return e;
      }
    }
  }

  // Nesting bound: the parser and the evaluator recurse once per level, and a template is untrusted input.
  struct Nest {
    Parser& p;
    explicit Nest(Parser& parser) : p(parser) {
      if (++p.depth_ > 256) p.fail("nesting deeper than 256 levels");
    }
    ~Nest() { --p.depth_; }
  };

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  const std::string& what_;
};

}  // namespace

Body parse_template(std::string_view source, const std::string& what) {
  Parser p(lex_template(source, what), what);
  return p.parse_all();
}

}  // namespace fp4lab::jinja
