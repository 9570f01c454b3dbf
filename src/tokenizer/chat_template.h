// A checkpoint's chat template: found where Hugging Face keeps it (chat_template.jinja, or the chat_template
// field of tokenizer_config.json, a string or a list of named templates), rendered on a conversation the way
// transformers' apply_chat_template renders it (messages, add_generation_prompt, bos_token, eos_token, tools
// and documents None unless given, extra keyword variables such as enable_thinking).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/jinja.h"

namespace fp4lab {

struct ChatMessage {
  std::string role;  // system | user | assistant | tool
  std::string content;
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  jinja::Dict extra;  // further template variables (enable_thinking, tools, ...)
  // strftime_now()'s date as "YYYY-MM-DD" (reproducible prompts); empty: today.
  std::string date;
};

class ChatTemplate {
 public:
  // `source` is the Jinja text; bos/eos are the token strings the template may print.
  ChatTemplate(std::string source, std::string bos_token, std::string eos_token, std::string what);

  // Looks in `dir` for chat_template.jinja, then tokenizer_config.json's chat_template ("default" of a list);
  // bos/eos from tokenizer_config.json (strings or {"content": ...}). nullopt when the directory has none.
  static std::optional<ChatTemplate> from_dir(const std::string& dir);
  // A template file given on the command line; bos/eos still from `tokenizer_dir`'s tokenizer_config.json
  // when it has one.
  static ChatTemplate from_file(const std::string& path, const std::string& tokenizer_dir);

  // The template a command uses: `file` when given, else the model directory's, else the tokenizer
  // directory's; an Error saying where it looked when none has one.
  static ChatTemplate load(const std::string& model_dir, const std::string& tokenizer_dir,
                           const std::string& file);

  std::string render(const std::vector<ChatMessage>& messages, const ChatRenderOptions& opt) const;
  // Same, with messages as JSON (an OpenAI request's "messages": content may be a string or text parts).
  std::string render_json(const std::string& messages_json, const ChatRenderOptions& opt) const;

  const std::string& bos_token() const { return bos_; }
  const std::string& eos_token() const { return eos_; }
  const std::string& source_name() const { return what_; }

 private:
  std::string render_value(jinja::Value messages, const ChatRenderOptions& opt) const;
  jinja::Template tmpl_;
  std::string bos_, eos_, what_;
};

// --chat-var KEY=VALUE: VALUE as JSON when it parses (true, 3, "x", [..]), else as a plain string.
std::pair<std::string, jinja::Value> parse_chat_var(const std::string& assignment);

// strftime_now(fmt) for the template, on a fixed date "YYYY-MM-DD" (an Error when malformed).
jinja::Value strftime_on(const std::string& date);

}  // namespace fp4lab
