// The Jinja interpreter's syntax tree, shared by its parser (jinja_parse.cpp) and evaluator (jinja.cpp).
// Internal to src/tokenizer.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja.h"

namespace fp4lab::jinja {

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,   // lit
    Name,      // name
    ListLit,   // args: items
    TupleLit,  // args: items (evaluates to a list)
    DictLit,   // args: key, value, key, value, ...
    Attr,      // args[0].name
    Item,      // args[0][args[1]]
    Slice,     // args[0][args[1]:args[2]:args[3]], absent bounds null
    Call,      // args[0](args[1..], kwargs)
    Filter,    // args[0] | name(args[1..], kwargs)
    Test,      // args[0] is name(args[1..])
    Unary,     // name in {"-", "+", "not"}: args[0]
    Binary,    // args[0] name args[1]; name is the operator ("notin" for `not in`)
    And,       // args[0] and args[1]
    Or,        // args[0] or args[1]
    Cond,      // args[0] if args[1] else args[2] (args[2] null: undefined)
  };
  Kind kind;
  int line = 0;
  Value lit;
  std::string name;
  std::vector<ExprP> args;
  std::vector<std::pair<std::string, ExprP>> kwargs;
};

// namespace(): attributes a loop body can update for the code after the loop.
struct Namespace {
  Dict attrs;
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind {
    Text,         // text
    Output,       // {{ expr }}
    If,           // branches: (cond, body); the else branch has a null cond
    For,          // for targets in expr [if cond]: body [else else_body]
    Set,          // set targets = expr, or set targets[0].attr = expr (attr non-empty)
    SetBlock,     // set targets[0] %} body {% endset
    Macro,        // macro name(params) body
    CallBlock,    // call expr: body is the caller() of the macro
    FilterBlock,  // filter name(args): body (expr: a Filter with a null operand)
    Break,
    Continue,
    Generation,  // HF's {% generation %} marker for assistant masks: renders its body
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprP expr;
  ExprP cond;
  std::vector<std::pair<ExprP, Body>> branches;
  std::vector<std::string> targets;
  std::string attr;
  std::string name;
  std::vector<std::pair<std::string, ExprP>> params;  // macro parameters, default or null
  Body body, else_body;
};

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, Int, Float, String, Op, Eof };

struct Token {
  Tok kind;
  std::string text;  // Text: the text; Name/Op: the spelling; String: the decoded value; numbers: the literal
  int line;
};

// The tokens of a whole template: text, tag delimiters, and the names, literals and operators inside tags.
std::vector<Token> lex_template(std::string_view source, const std::string& what);

// Parses a whole template; throws fp4lab::Error naming `what` and the line.
Body parse_template(std::string_view source, const std::string& what);

// Value semantics shared by the evaluator and its builtins (jinja_value.cpp).
bool values_equal(const Value& a, const Value& b);
int compare_values(const Value& a, const Value& b, int line);  // <0, 0, >0; throws when not comparable
std::string python_repr(const Value& v);
std::string type_name(const Value& v);
int64_t utf8_length(std::string_view s);
[[noreturn]] void fail_at(int line, const std::string& msg);  // "chat template: line N: msg"

// The builtin filters, tests and the str/dict/list methods templates call (jinja_builtins.cpp). An unknown
// name is an Error naming it.
Value apply_filter(const std::string& name, const Value& v, const List& args, const Dict& kwargs, int line);
bool apply_test(const std::string& name, const Value& v, const List& args, int line);
bool has_method(const Value& obj, const std::string& name);
Value call_method(const Value& obj, const std::string& name, const List& args, const Dict& kwargs, int line);
// Item access as jinja2's getitem: list and string indices (negative from the end), dict keys.
Value get_item(const Value& obj, const Value& key, int line);
// Attribute access as jinja2's getattr for data: dict keys, Namespace attributes; Undefined otherwise.
Value get_attr(const Value& obj, const std::string& name, int line);
// The items a for loop visits: list elements, dict keys, string characters; Undefined: none.
List iterate(const Value& v, int line);
std::vector<std::string> utf8_chars(std::string_view s);

}  // namespace fp4lab::jinja
