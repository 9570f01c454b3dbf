#include "serve/openai_api.h"

#include <cmath>
#include <limits>

namespace fp4lab::serve {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

ApiError bad_request(const std::string& message, const std::string& param) {
  return ApiError(400, "invalid_request_error", "invalid_request", message, param);
}

json error_body(const ApiError& e) {
  json err{{"message", e.what()}, {"type", e.type}, {"code", e.code}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  return {{"error", err}};
}

namespace {

constexpr size_t kMaxStops = 16;
constexpr size_t kMaxStopBytes = 1024;

std::string type_name(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null:
      return "null";
    case ojson::value_t::boolean:
      return "a boolean";
    case ojson::value_t::string:
      return "a string";
    case ojson::value_t::array:
      return "an array";
    case ojson::value_t::object:
      return "an object";
    case ojson::value_t::number_float:
      return "a number";
    default:
      return "an integer";
  }
}

[[noreturn]] void wrong_type(const std::string& field, const std::string& want, const ojson& v) {
  throw bad_request("'" + field + "' must be " + want + ", not " + type_name(v), field);
}

// A present, non-null field of the body.
const ojson* field(const ojson& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const ojson& body, const char* name, bool dflt) {
  const ojson* v = field(body, name);
  if (!v) return dflt;
  if (!v->is_boolean()) wrong_type(name, "a boolean", *v);
  return v->get<bool>();
}

int64_t get_int(const ojson& body, const char* name, int64_t lo, int64_t hi) {
  const ojson& v = *field(body, name);
  if (!v.is_number_integer()) wrong_type(name, "an integer", v);
  const int64_t x =
      v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi) ? hi + 1 : v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request("'" + std::string(name) + "' must be between " + std::to_string(lo) + " and " +
                          std::to_string(hi) + ", not " + v.dump(),
                      name);
  return x;
}

double get_number(const ojson& body, const char* name, double lo, double hi) {
  const ojson& v = *field(body, name);
  if (!v.is_number()) wrong_type(name, "a number", v);
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    throw bad_request("'" + std::string(name) + "' must be between " + std::to_string(lo) + " and " +
                          std::to_string(hi) + ", not " + v.dump(),
                      name);
  return x;
}

std::vector<int> token_ids(const ojson& v, const std::string& name) {
  std::vector<int> ids;
  for (const auto& t : v) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int>::max())
      throw bad_request("'" + name + "' must hold non-negative integer token ids", name);
    ids.push_back(static_cast<int>(t.get<int64_t>()));
  }
  return ids;
}

void parse_prompt(const ojson& body, CompletionRequest& r) {
  const ojson* p = field(body, "prompt");
  if (!p) throw bad_request("'prompt' is required", "prompt");
  if (p->is_string()) {
    r.prompt_text = p->get<std::string>();
    return;
  }
  if (!p->is_array()) wrong_type("prompt", "a string or an array of token ids", *p);
  if (p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) {
    // A batch of one: ["text"] or [[ids]].
    const ojson& one = (*p)[0];
    if (one.is_string())
      r.prompt_text = one.get<std::string>();
    else
      r.prompt_ids = token_ids(one, "prompt");
  } else if (!p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
    throw bad_request("'prompt' holds several prompts; send one prompt per request", "prompt");
  } else {
    r.prompt_ids = token_ids(*p, "prompt");
  }
  if (!r.prompt_text && r.prompt_ids.empty()) throw bad_request("'prompt' is empty", "prompt");
}

// OpenAI content: a string, or parts of which the text ones are joined (this server reads text only).
std::string message_text(const ojson& content, size_t i) {
  const std::string where = "messages[" + std::to_string(i) + "].content";
  if (content.is_null()) return {};
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) wrong_type(where, "a string or an array of content parts", content);
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      throw bad_request(where + ": each part must be an object with a 'type'", "messages");
    const std::string type = part["type"].get<std::string>();
    if (type != "text")
      throw bad_request(where + ": content parts of type '" + type + "' are not supported", "messages");
    if (!part.contains("text") || !part["text"].is_string())
      throw bad_request(where + ": a text part needs a string 'text'", "messages");
    text += part["text"].get<std::string>();
  }
  return text;
}

void parse_messages(const ojson& body, CompletionRequest& r) {
  const ojson* m = field(body, "messages");
  if (!m) throw bad_request("'messages' is required", "messages");
  if (!m->is_array()) wrong_type("messages", "an array", *m);
  if (m->empty()) throw bad_request("'messages' is empty", "messages");
  r.messages = ojson::array();
  for (size_t i = 0; i < m->size(); ++i) {
    const ojson& msg = (*m)[i];
    if (!msg.is_object()) wrong_type("messages[" + std::to_string(i) + "]", "an object", msg);
    if (!msg.contains("role") || !msg["role"].is_string())
      throw bad_request("messages[" + std::to_string(i) + "] needs a string 'role'", "messages");
    ojson out = msg;  // the template may read other keys (name, tool_calls, reasoning_content)
    out["content"] = message_text(msg.contains("content") ? msg["content"] : ojson(), i);
    r.messages.push_back(std::move(out));
  }
}

void reject_unsupported(const ojson& body) {
  if (const ojson* n = field(body, "n"); n && !(n->is_number_integer() && n->get<int64_t>() == 1))
    throw bad_request("'n' must be 1 (one choice per request)", "n");
  if (const ojson* e = field(body, "echo"); e && !(e->is_boolean() && !e->get<bool>()))
    throw bad_request("'echo' is not supported", "echo");
  if (const ojson* l = field(body, "logprobs"); l && !((l->is_boolean() && !l->get<bool>())))
    throw bad_request("'logprobs' is not supported", "logprobs");
  if (const ojson* b = field(body, "best_of"); b && !(b->is_number_integer() && b->get<int64_t>() == 1))
    throw bad_request("'best_of' must be 1", "best_of");
  for (const char* pen : {"presence_penalty", "frequency_penalty"})
    if (const ojson* p = field(body, pen); p && !(p->is_number() && p->get<double>() == 0.0))
      throw bad_request("'" + std::string(pen) + "' is not supported (0 only)", pen);
  for (const char* f : {"tools", "functions"})
    if (const ojson* t = field(body, f); t && !(t->is_array() && t->empty()))
      throw bad_request("'" + std::string(f) + "' is not supported", f);
  if (const ojson* rf = field(body, "response_format"))
    if (!rf->is_object() || rf->value("type", "text") != "text")
      throw bad_request("'response_format' other than text is not supported", "response_format");
}

}  // namespace

CompletionRequest parse_completion_request(std::string_view text, bool chat) {
  ojson body;
  try {
    body = ojson::parse(text);
  } catch (const ojson::exception& e) {
    throw bad_request(std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw bad_request("the body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (const ojson* m = field(body, "model")) {
    if (!m->is_string()) wrong_type("model", "a string", *m);
    r.model = m->get<std::string>();
  }
  reject_unsupported(body);
  if (chat) {
    parse_messages(body, r);
    if (const ojson* k = field(body, "chat_template_kwargs")) {
      if (!k->is_object()) wrong_type("chat_template_kwargs", "an object", *k);
      r.template_kwargs = *k;
    }
    r.add_generation_prompt = get_bool(body, "add_generation_prompt", true);
  } else {
    parse_prompt(body, r);
  }
  constexpr int64_t kMaxTokens = 1 << 24;
  // max_completion_tokens is the chat API's newer name; a request that gives both gets the smaller.
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (field(body, name)) {
      const int v = static_cast<int>(get_int(body, name, 1, kMaxTokens));
      r.max_tokens = r.max_tokens ? std::min(*r.max_tokens, v) : v;
    }
  if (field(body, "temperature"))
    r.sampling.temperature = static_cast<float>(get_number(body, "temperature", 0, 2));
  r.sampling.greedy = r.sampling.temperature <= 0.0f;
  if (field(body, "top_p")) {
    r.sampling.top_p = static_cast<float>(get_number(body, "top_p", 0, 1));
    if (!(r.sampling.top_p > 0)) throw bad_request("'top_p' must be above 0", "top_p");
  }
  if (field(body, "top_k")) {
    const int64_t k = get_int(body, "top_k", -1, 1 << 20);
    r.sampling.top_k = k <= 0 ? 0 : static_cast<int>(k);
  }
  if (field(body, "seed")) {
    const ojson& s = *field(body, "seed");
    if (!s.is_number_integer()) wrong_type("seed", "an integer", s);
    r.sampling.seed = s.is_number_unsigned() ? s.get<uint64_t>() : static_cast<uint64_t>(s.get<int64_t>());
    r.seed_given = true;
  }
  if (const ojson* s = field(body, "stop")) {
    if (s->is_string()) {
      r.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const auto& x : *s) {
        if (!x.is_string()) throw bad_request("'stop' must be a string or an array of strings", "stop");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      wrong_type("stop", "a string or an array of strings", *s);
    }
    std::erase(r.stop, std::string());
    if (r.stop.size() > kMaxStops) throw bad_request("'stop' holds more than 16 strings", "stop");
    for (const auto& x : r.stop)
      if (x.size() > kMaxStopBytes) throw bad_request("a 'stop' string is longer than 1024 bytes", "stop");
  }
  if (const ojson* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) wrong_type("stop_token_ids", "an array of token ids", *ids);
    r.stop_token_ids = token_ids(*ids, "stop_token_ids");
  }
  r.ignore_eos = get_bool(body, "ignore_eos", false);
  r.stream = get_bool(body, "stream", false);
  if (const ojson* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  return r;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

namespace {

json envelope(const CompletionRequest& r, const std::string& id, int64_t created, const std::string& model,
              bool chunk) {
  const char* object = r.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", id}, {"object", object}, {"created", created}, {"model", model}};
}

json finish_value(const std::string& reason) {
  return reason.empty() ? json(nullptr) : json(reason);
}

}  // namespace

json completion_response(const CompletionRequest& r, const std::string& id, int64_t created,
                         const std::string& model, const std::string& text, const std::string& finish_reason,
                         const Usage& u) {
  json out = envelope(r, id, created, model, false);
  json choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_value(finish_reason)}};
  if (r.chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(u);
  return out;
}

json completion_chunk(const CompletionRequest& r, const std::string& id, int64_t created,
                      const std::string& model, const std::string& text, const std::string& finish_reason,
                      bool first) {
  json out = envelope(r, id, created, model, true);
  json choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_value(finish_reason)}};
  if (r.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish_reason.empty())) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  out["choices"] = json::array({choice});
  if (r.include_usage) out["usage"] = nullptr;
  return out;
}

json usage_chunk(const CompletionRequest& r, const std::string& id, int64_t created, const std::string& model,
                 const Usage& u) {
  json out = envelope(r, id, created, model, true);
  out["choices"] = json::array();
  out["usage"] = usage_json(u);
  return out;
}

}  // namespace fp4lab::serve
