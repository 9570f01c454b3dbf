#include "tokenizer/chat_template.h"

#include <ctime>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/json_util.h"

namespace fp4lab {

namespace {

// A special token in tokenizer_config.json: a string, an AddedToken object {"content": ...}, or null.
std::string token_string(const nlohmann::json& cfg, const char* key) {
  if (!cfg.contains(key) || cfg[key].is_null()) return "";
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return "";
}

nlohmann::json read_config(const std::string& dir) {
  const auto path = std::filesystem::path(dir) / "tokenizer_config.json";
  if (dir.empty() || !std::filesystem::exists(path)) return nlohmann::json::object();
  return read_json_config_file(path.string());
}

}  // namespace

jinja::Value strftime_on(const std::string& date) {
  std::tm tm{};
  if (date.size() != 10 || !strptime(date.c_str(), "%Y-%m-%d", &tm))
    throw Error("chat template date must be YYYY-MM-DD, got '" + date + "'");
  tm.tm_isdst = -1;
  const std::time_t t = timegm(&tm);  // fills in the weekday and day of the year
  gmtime_r(&t, &tm);
  return jinja::strftime_now_function(tm);
}

ChatTemplate::ChatTemplate(std::string source, std::string bos_token, std::string eos_token, std::string what)
    : tmpl_(source, what), bos_(std::move(bos_token)), eos_(std::move(eos_token)), what_(std::move(what)) {}

std::optional<ChatTemplate> ChatTemplate::from_dir(const std::string& dir) {
  const nlohmann::json cfg = read_config(dir);
  const std::string bos = token_string(cfg, "bos_token"), eos = token_string(cfg, "eos_token");
  const auto jinja_file = std::filesystem::path(dir) / "chat_template.jinja";
  if (std::filesystem::exists(jinja_file))
    return ChatTemplate(read_text_file(jinja_file.string()), bos, eos, jinja_file.string());
  if (!cfg.contains("chat_template")) return std::nullopt;
  const auto& ct = cfg["chat_template"];
  const std::string what = (std::filesystem::path(dir) / "tokenizer_config.json").string() + " chat_template";
  if (ct.is_string()) return ChatTemplate(ct.get<std::string>(), bos, eos, what);
  if (ct.is_array()) {
    for (const auto& e : ct)
      if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
          e["template"].is_string())
        return ChatTemplate(e["template"].get<std::string>(), bos, eos, what + " (default)");
    throw Error(what + ": a list of templates without one named \"default\"");
  }
  if (ct.is_null()) return std::nullopt;
  throw Error(what + ": must be a string or a list of {name, template}");
}

ChatTemplate ChatTemplate::from_file(const std::string& path, const std::string& tokenizer_dir) {
  const nlohmann::json cfg = read_config(tokenizer_dir);
  return ChatTemplate(read_text_file(path), token_string(cfg, "bos_token"), token_string(cfg, "eos_token"),
                      path);
}

ChatTemplate ChatTemplate::load(const std::string& model_dir, const std::string& tokenizer_dir,
                                const std::string& file) {
  if (!file.empty()) return from_file(file, tokenizer_dir.empty() ? model_dir : tokenizer_dir);
  if (!model_dir.empty() && !model_dir.starts_with("preset:"))
    if (auto t = from_dir(model_dir)) return std::move(*t);
  if (!tokenizer_dir.empty() && tokenizer_dir != model_dir)
    if (auto t = from_dir(tokenizer_dir)) return std::move(*t);
  throw Error(
      "no chat template: neither chat_template.jinja nor a chat_template in tokenizer_config.json in " +
      (tokenizer_dir.empty() || tokenizer_dir == model_dir ? model_dir : model_dir + " or " + tokenizer_dir) +
      "; give --chat-template FILE");
}

std::pair<std::string, jinja::Value> parse_chat_var(const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw Error("--chat-var needs KEY=VALUE, got '" + assignment + "'");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  try {
    return {key, jinja::Value::from_json(nlohmann::ordered_json::parse(text))};
  } catch (const nlohmann::json::exception&) {
    return {key, jinja::Value(text)};
  }
}

std::string ChatTemplate::render_value(jinja::Value messages, const ChatRenderOptions& opt) const {
  jinja::Dict vars{{"messages", std::move(messages)},
                   {"add_generation_prompt", jinja::Value(opt.add_generation_prompt)},
                   {"bos_token", jinja::Value(bos_)},
                   {"eos_token", jinja::Value(eos_)},
                   {"tools", jinja::Value(jinja::None{})},
                   {"documents", jinja::Value(jinja::None{})}};
  for (const auto& [k, v] : opt.extra) jinja::dict_set(vars, k, v);
  // The template object is shared, so a fixed date comes as a variable that shadows the strftime_now global.
  if (!opt.date.empty()) jinja::dict_set(vars, "strftime_now", strftime_on(opt.date));
  return tmpl_.render(vars);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 const ChatRenderOptions& opt) const {
  jinja::List l;
  for (const auto& m : messages)
    l.emplace_back(jinja::Dict{{"role", jinja::Value(m.role)}, {"content", jinja::Value(m.content)}});
  return render_value(jinja::Value(std::move(l)), opt);
}

std::string ChatTemplate::render_json(const std::string& messages_json, const ChatRenderOptions& opt) const {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(messages_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("chat messages: not valid JSON (") + e.what() + ")");
  }
  if (!j.is_array()) throw Error("chat messages: must be a JSON array of {role, content}");
  return render_value(jinja::Value::from_json(j), opt);
}

}  // namespace fp4lab
