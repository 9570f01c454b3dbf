// The Jinja interpreter and chat templates. Goldens: real chat templates rendered by Python's jinja2 in
// transformers' environment (scripts/gen_chat_goldens.py; tests/data/chat_templates/README.md); the output
// must be byte-identical, and where jinja2 raised, we must raise too.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

using namespace fp4lab;
using fp4lab::jinja::Dict;
using fp4lab::jinja::List;
using fp4lab::jinja::Value;

namespace {

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f.good()) << p;
  return {std::istreambuf_iterator<char>(f), {}};
}

std::string render(const std::string& src, const Dict& vars = {}) {
  return jinja::Template(src, "test").render(vars);
}

std::string render_error(const std::string& src, const Dict& vars = {}) {
  try {
    render(src, vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ChatTemplate, RealTemplatesMatchJinja2ByteForByte) {
  const std::string dir = test::data_dir() + "/chat_templates/";
  std::ifstream in(dir + "goldens.jsonl");
  ASSERT_TRUE(in.good());
  std::map<std::string, std::string> sources;
  std::string line;
  int rendered = 0, raised = 0;
  while (std::getline(in, line)) {
    const auto g = nlohmann::ordered_json::parse(line);
    const std::string name = g["template"], what = name + " " + g["case"].get<std::string>();
    if (!sources.count(name)) sources[name] = read_file(dir + name);
    const ChatTemplate t(sources[name], g["bos_token"], g["eos_token"], name);
    ChatRenderOptions opt;
    opt.add_generation_prompt = g["add_generation_prompt"];
    opt.date = g["strftime_now"];
    for (const auto& [k, v] : g["extra"].items()) opt.extra.emplace_back(k, Value::from_json(v));
    if (g.contains("output")) {
      std::string out;
      EXPECT_NO_THROW(out = t.render_json(g["messages"].dump(), opt)) << what;
      EXPECT_EQ(out, g["output"].get<std::string>()) << what;
      ++rendered;
    } else {
      try {
        t.render_json(g["messages"].dump(), opt);
        ADD_FAILURE() << what << ": rendered, jinja2 raised " << g["error"];
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(g["error"].get<std::string>()), std::string::npos)
            << what << ": " << e.what();
      }
      ++raised;
    }
  }
  EXPECT_GE(sources.size(), 9u);
  EXPECT_GE(rendered, 100);
  EXPECT_GE(raised, 5);
}

TEST(Jinja, WhitespaceControlAsTransformersConfiguresIt) {
  // trim_blocks eats the newline after a block tag; lstrip_blocks the indentation before one.
  EXPECT_EQ(render("{% if true %}\n  a\n  {% endif %}\nb"), "  a\nb");
  EXPECT_EQ(render("x  {{- ' y ' -}}  z"), "x y z");
  EXPECT_EQ(render("a {#- c -#} b"), "ab");
  EXPECT_EQ(render("{# c #}\nx"), "x");
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(render("line\n"), "line");  // one final newline dropped
  EXPECT_EQ(render("a\r\nb"), "a\nb");
  EXPECT_EQ(render("{{ '}}' }}"), "}}");
}

TEST(Jinja, ScopesFollowJinja2) {
  // A set in a loop body lasts for that pass; a namespace carries state out; if does not scope.
  EXPECT_EQ(render("{% set x=1 %}{% for i in [1,2] %}{{x}}{% set x=x+1 %}{{x}}{% endfor %}|{{x}}"), "1212|1");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}"
                   "{{ ns.n }}"),
            "3");
  EXPECT_EQ(render("{% if true %}{% set y = 'in' %}{% endif %}{{ y }}"), "in");
  EXPECT_EQ(render("{% macro m(a, b='B') %}[{{a}}{{b}}{{ top }}]{% endmacro %}{% set top='T' %}{{ m(1) }}{{ "
                   "m(2, b=3) }}"),
            "[1BT][23T]");
  EXPECT_EQ(
      render("{% for k, v in d.items() if v > 1 %}{{k}}{{v}}{{ loop.index }}/{{ loop.length }}{% endfor %}",
             {{"d", Value(Dict{{"a", Value(1)}, {"b", Value(2)}, {"c", Value(3)}})}}),
      "b21/2c32/2");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}"
                   "{% endif %}{{i}}{% endfor %}"),
            "02");
}

TEST(Jinja, ValuesPrintAsPythonPrintsThem) {
  EXPECT_EQ(
      render("{{ none }} {{ true }} {{ 1.0 }} {{ 1e16 }} {{ 0.0001 }} {{ 1e-5 }} {{ 7 // 2 }} {{ -7 // 2 }} "
             "{{ -7 % 3 }} {{ 7 / 2 }}"),
      "None True 1.0 1e+16 0.0001 1e-05 3 -4 2 3.5");
  EXPECT_EQ(render("{{ ['a', \"it's\", 1, none] }} {{ {'k': [true]} }}"),
            "['a', \"it's\", 1, None] {'k': [True]}");
  EXPECT_EQ(render("{{ d | tojson }}|{{ d | tojson(indent=2) }}",
                   {{"d", Value(Dict{{"b", Value("é\"\n")}, {"a", Value(List{Value(1), Value(2.5)})}})}}),
            "{\"b\": \"é\\\"\\n\", \"a\": [1, 2.5]}|{\n  \"b\": \"é\\\"\\n\",\n  \"a\": [\n    1,\n    2.5\n "
            " ]\n}");
  EXPECT_EQ(
      render("{{ undefined_thing }}|{{ undefined_thing | default('d') }}|{{ '' | default('e', true) }}"),
      "|d|e");
}

TEST(Jinja, StringMethodsAndFiltersFollowPython) {
  EXPECT_EQ(render("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n\\nq'.lstrip('\\n') }}"),
            "a b|a|q");
  EXPECT_EQ(render("{{ 'a<t>b<t>c'.split('<t>')[-1] }}|{{ ' a  b '.split() | length }}|{{ 'abc'[::-1] }}"),
            "c|2|cba");
  EXPECT_EQ(render("{{ 'Grüße'.upper() }}|{{ 'héllo wörld'.title() }}|{{ 'ab'.startswith(('x', 'a')) }}"),
            "GRÜSSE|Héllo Wörld|True");
  EXPECT_EQ(render("{{ 'Grüße' | length }}|{{ 'Grüße'[2] }}|{{ [3,1,2] | sort | join(',') }}"), "5|ü|1,2,3");
  EXPECT_EQ(render("{{ m | selectattr('role', 'equalto', 'user') | map(attribute='c') | join }}",
                   {{"m", Value(List{Value(Dict{{"role", Value("user")}, {"c", Value("1")}}),
                                     Value(Dict{{"role", Value("bot")}, {"c", Value("2")}}),
                                     Value(Dict{{"role", Value("user")}, {"c", Value("3")}})})}}),
            "13");
  EXPECT_EQ(
      render("{{ 'a\\nb' | indent(2) }}|{{ ['x','code','y'] | reject('equalto','code') | join(', ') }}"),
      "a\n  b|x, y");
}

TEST(Jinja, UnsupportedOrBrokenTemplatesFailWithTheirLine) {
  EXPECT_NE(render_error("{% include 'x' %}").find("line 1: the {% include %} statement is not supported"),
            std::string::npos);
  EXPECT_NE(render_error("a\n{{ x | frobnicate }}").find("line 2: unknown filter 'frobnicate'"),
            std::string::npos);
  EXPECT_NE(render_error("{% if x %}").find("never closed"), std::string::npos);
  EXPECT_NE(render_error("{{ 'abc }}").find("unterminated string"), std::string::npos);
  EXPECT_NE(render_error("{{ raise_exception('roles must alternate') }}").find("roles must alternate"),
            std::string::npos);
  EXPECT_NE(render_error("{{ x.y.z }}").find("'x' is undefined"), std::string::npos);
  EXPECT_NE(render_error("{{ [1].append(2) }}").find("read-only"), std::string::npos);
  // Hostile templates: bounded memory and depth.
  EXPECT_NE(render_error("{{ 'x' * 100000000000 }}").find("limit"), std::string::npos);
  EXPECT_NE(render_error("{% for i in range(100000000) %}{% endfor %}").find("limit"), std::string::npos);
  EXPECT_NE(render_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("nest deeper"),
            std::string::npos);
}

TEST(ChatTemplate, FoundInTokenizerConfigOrJinjaFile) {
  const auto dir = std::filesystem::temp_directory_path() / "fp4lab_chat_template_test";
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "tokenizer_config.json");
    f << R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>",
             "chat_template": [{"name": "tool_use", "template": "T"},
                               {"name": "default", "template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"}]})";
  }
  auto t = ChatTemplate::from_dir(dir.string());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->render({{"user", "hi"}}, {}), "<s>[user:hi]>");
  {
    std::ofstream f(dir / "chat_template.jinja");
    f << "{{ messages[0].content }}{{ eos_token }}\n";
  }
  t = ChatTemplate::from_dir(dir.string());
  EXPECT_EQ(t->render({{"user", "hi"}}, {}), "hi</s>");
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(ChatTemplate::from_dir(test::data_dir() + "/tokenizers/gpt2").has_value());
}

// generate --chat renders each prompt as a user turn; fp4lab chat holds a conversation whose every turn is
// the greedy continuation of the rendered conversation so far, and /reset starts it again.
TEST(ChatTemplate, GenerateChatAndChatAgreeTurnByTurn) {
  using fp4lab::test::run_fp4lab;
  fp4lab::test::TempDir d;
  const std::string model = test::data_dir() + "/models/tiny-llama",
                    tok = test::data_dir() + "/tokenizers/gpt2";
  std::ofstream(d.str("t.jinja")) << "{% for m in messages %}{{ m.content }} {% endfor %}";
  const std::string common = " --model " + model + " --tokenizer " + tok + " --chat-template " +
                             d.str("t.jinja") + " --greedy --max-new-tokens 6";
  auto r = run_fp4lab("generate --chat --prompt \"in on he\"" + common + " --json " + d.str("g.json"));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto g = nlohmann::json::parse(read_file(d.str("g.json")));
  EXPECT_EQ(g["prompts"][0], Tokenizer::from_dir(tok).encode("in on he "));
  EXPECT_EQ(g["options"]["chat"], true);
  const std::string reply = g["new_text"][0];
  ASSERT_FALSE(reply.empty());

  std::ofstream(d.str("in1.txt")) << "in on he\n/reset\nin on he\n/exit\nnever read\n";
  r = run_fp4lab("chat" + common + " < " + d.str("in1.txt"));
  ASSERT_EQ(r.status, 0) << r.out;
  size_t first = r.out.find(reply + "\n");
  ASSERT_NE(first, std::string::npos) << r.out;
  EXPECT_NE(r.out.find(reply + "\n", first + 1), std::string::npos) << r.out;  // the same after /reset

  // Two turns: the second is the continuation of "user1 reply1 user2 ". One-token replies: the tiny model's
  // vocabulary is GPT-2's first 512 ids, and a longer reply's text can re-encode past them.
  const std::string one = " --model " + model + " --tokenizer " + tok + " --greedy --max-new-tokens 1";
  std::ofstream(d.str("in2.txt")) << "in on he\nre at\n";
  r = run_fp4lab("chat" + one + " --chat-template " + d.str("t.jinja") + " < " + d.str("in2.txt"));
  ASSERT_EQ(r.status, 0) << r.out;
  auto r1 = run_fp4lab("generate --prompt \"in on he \"" + one + " --json " + d.str("g1.json"));
  ASSERT_EQ(r1.status, 0) << r1.out;
  const std::string reply1 = nlohmann::json::parse(read_file(d.str("g1.json")))["new_text"][0];
  auto r2 = run_fp4lab("generate --prompt \"in on he " + reply1 + " re at \"" + one + " --json " +
                       d.str("g2.json"));
  ASSERT_EQ(r2.status, 0) << r2.out;
  const std::string reply2 = nlohmann::json::parse(read_file(d.str("g2.json")))["new_text"][0];
  EXPECT_NE(r.out.find(reply1 + "\n" + reply2 + "\n"), std::string::npos)
      << r.out << "\nwant:" << reply1 << "|" << reply2;

  // No template anywhere, chat flags without --chat: one clear error each.
  r = run_fp4lab("generate --chat --prompt hi --model " + model + " --tokenizer " + tok);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("no chat template"), std::string::npos) << r.out;
  r = run_fp4lab("generate --system be-brief --prompt hi --model " + model + " --tokenizer " + tok);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("add --chat"), std::string::npos) << r.out;
  std::ofstream(d.str("bad.jinja")) << "{% for m in messages %}{{ m.content | nosuchfilter }}{% endfor %}";
  r = run_fp4lab("generate --chat --prompt hi --model " + model + " --tokenizer " + tok +
                 " --chat-template " + d.str("bad.jinja"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("unknown filter 'nosuchfilter'"), std::string::npos) << r.out;
}

// --chat-var values are JSON when they parse, text otherwise; --chat-date fixes strftime_now().
TEST(ChatTemplate, ChatVarsAndDateParse) {
  auto [k, v] = parse_chat_var("enable_thinking=false");
  EXPECT_EQ(k, "enable_thinking");
  EXPECT_EQ(jinja::to_str(v), "False");
  EXPECT_EQ(jinja::to_str(parse_chat_var("n=3").second), "3");
  EXPECT_EQ(jinja::to_str(parse_chat_var("s=plain text").second), "plain text");
  EXPECT_EQ(jinja::to_str(parse_chat_var("l=[1, \"a\"]").second), "[1, 'a']");
  EXPECT_THROW(parse_chat_var("no-equals"), Error);
  EXPECT_THROW(parse_chat_var("=x"), Error);
  const ChatTemplate t("{{ strftime_now('%d %b %Y') }}|{{ x }}", "", "", "t");
  ChatRenderOptions o;
  o.date = "2026-07-26";
  o.extra.push_back(parse_chat_var("x=true"));
  EXPECT_EQ(t.render({{"user", "hi"}}, o), "26 Jul 2026|True");
  o.date = "26/07/2026";
  EXPECT_THROW(t.render({{"user", "hi"}}, o), Error);
}
