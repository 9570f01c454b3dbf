#include "io/openai_client.h"

#include <curl/curl.h>

#include <chrono>

#include "common/error.h"

namespace fp4lab {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Easy {
  CURL* h;
  curl_slist* headers = nullptr;
  Easy() : h(curl_easy_init()) {
    if (!h) throw Error("libcurl: cannot create a handle");
  }
  ~Easy() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
  }
  Easy(const Easy&) = delete;
  Easy& operator=(const Easy&) = delete;
};

size_t append(char* p, size_t size, size_t n, void* ud) {
  static_cast<std::string*>(ud)->append(p, size * n);
  return size * n;
}

void setup(Easy& e, const std::string& url, const std::string& key, double timeout_s) {
  curl_easy_setopt(e.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e.h, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(e.h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_s * 1000));
  curl_easy_setopt(e.h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e.h, CURLOPT_USERAGENT, "fp4lab/" FP4LAB_VERSION);
  e.headers = curl_slist_append(e.headers, "Content-Type: application/json");
  if (!key.empty()) e.headers = curl_slist_append(e.headers, ("Authorization: Bearer " + key).c_str());
  curl_easy_setopt(e.h, CURLOPT_HTTPHEADER, e.headers);
}

// The text a chunk adds: choices[0].text (completions) or choices[0].delta.content (chat).
std::string chunk_text(const json& j, std::string& finish) {
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return {};
  const json& c = j["choices"][0];
  if (c.contains("finish_reason") && c["finish_reason"].is_string())
    finish = c["finish_reason"].get<std::string>();
  if (c.contains("text") && c["text"].is_string()) return c["text"].get<std::string>();
  if (c.contains("delta") && c["delta"].is_object() && c["delta"].contains("content") &&
      c["delta"]["content"].is_string())
    return c["delta"]["content"].get<std::string>();
  return {};
}

}  // namespace

OpenAIClient::OpenAIClient(std::string base_url, std::string api_key, double timeout_s)
    : base_(std::move(base_url)), key_(std::move(api_key)), timeout_s_(timeout_s) {
  while (!base_.empty() && base_.back() == '/') base_.pop_back();
  if (!base_.starts_with("http://") && !base_.starts_with("https://"))
    throw Error("endpoint '" + base_ + "': give a URL such as http://127.0.0.1:8000/v1");
  if (!base_.ends_with("/v1")) base_ += "/v1";
}

namespace {

// Runs a prepared transfer whose body is collected whole.
HttpReply perform(Easy& e) {
  HttpReply r;
  curl_easy_setopt(e.h, CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(e.h, CURLOPT_WRITEDATA, &r.body);
  const CURLcode rc = curl_easy_perform(e.h);
  if (rc != CURLE_OK)
    r.error = curl_easy_strerror(rc);
  else
    curl_easy_getinfo(e.h, CURLINFO_RESPONSE_CODE, &r.status);
  return r;
}

}  // namespace

HttpReply OpenAIClient::get(const std::string& path, bool from_root) const {
  Easy e;
  setup(e, (from_root ? base_.substr(0, base_.size() - 3) : base_) + path, key_, timeout_s_);
  return perform(e);
}

HttpReply OpenAIClient::post(const std::string& path, const json& body) const {
  Easy e;
  setup(e, base_ + path, key_, timeout_s_);
  const std::string data = body.dump();
  curl_easy_setopt(e.h, CURLOPT_POSTFIELDS, data.c_str());
  curl_easy_setopt(e.h, CURLOPT_POSTFIELDSIZE, static_cast<long>(data.size()));
  return perform(e);
}

namespace {

struct SseState {
  std::string buf, raw;  // unparsed bytes; the whole body when the status is not 200
  StreamedCompletion* out;
  const std::function<bool(const json&)>* on_event;
  Clock::time_point sent, last;
  bool done = false, stopped = false;
  CURL* h;
  long status = 0;
};

// Parses complete events ("data: ...\n\n") out of the buffer; false to abort the transfer.
bool drain_events(SseState& s) {
  size_t end;
  while ((end = s.buf.find("\n\n")) != std::string::npos) {
    std::string event = s.buf.substr(0, end);
    s.buf.erase(0, end + 2);
    for (size_t at = 0; at < event.size();) {
      size_t nl = event.find('\n', at);
      if (nl == std::string::npos) nl = event.size();
      std::string line = event.substr(at, nl - at);
      at = nl + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.starts_with("data:")) continue;
      std::string data = line.substr(5);
      if (!data.empty() && data[0] == ' ') data.erase(0, 1);
      if (data == "[DONE]") {
        s.done = true;
        continue;
      }
      json j = json::parse(data, nullptr, false);
      if (j.is_discarded()) {
        s.out->error = "a stream event is not JSON: " + data.substr(0, 200);
        return false;
      }
      if (j.contains("error")) {
        s.out->error =
            j["error"].is_object() ? j["error"].value("message", j["error"].dump()) : j["error"].dump();
        continue;
      }
      const auto now = Clock::now();
      const std::string text = chunk_text(j, s.out->finish_reason);
      if (!text.empty()) {
        const double t = std::chrono::duration<double>(now - s.sent).count();
        if (s.out->chunks == 0)
          s.out->ttft_s = t;
        else
          s.out->itl_s.push_back(std::chrono::duration<double>(now - s.last).count());
        s.last = now;
        ++s.out->chunks;
        s.out->text += text;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        s.out->prompt_tokens = j["usage"].value("prompt_tokens", -1);
        s.out->completion_tokens = j["usage"].value("completion_tokens", -1);
      }
      if (*s.on_event && !(*s.on_event)(j)) {
        s.stopped = true;
        return false;
      }
    }
  }
  return true;
}

size_t on_sse(char* p, size_t size, size_t n, void* ud) {
  auto& s = *static_cast<SseState*>(ud);
  if (s.status == 0) curl_easy_getinfo(s.h, CURLINFO_RESPONSE_CODE, &s.status);
  if (s.status != 200) {
    s.raw.append(p, size * n);
    return size * n;
  }
  s.buf.append(p, size * n);
  // Servers may end lines with \r\n; events are split on a blank line either way.
  for (size_t i; (i = s.buf.find("\r\n")) != std::string::npos;) s.buf.erase(i, 1);
  return drain_events(s) ? size * n : 0;
}

}  // namespace

StreamedCompletion OpenAIClient::stream(const std::string& path, json body,
                                        const std::function<bool(const json&)>& on_event) const {
  body["stream"] = true;
  Easy e;
  setup(e, base_ + path, key_, timeout_s_);
  e.headers = curl_slist_append(e.headers, "Accept: text/event-stream");
  curl_easy_setopt(e.h, CURLOPT_HTTPHEADER, e.headers);
  const std::string data = body.dump();
  StreamedCompletion out;
  SseState s;
  s.out = &out;
  s.on_event = &on_event;
  s.h = e.h;
  curl_easy_setopt(e.h, CURLOPT_POSTFIELDS, data.c_str());
  curl_easy_setopt(e.h, CURLOPT_POSTFIELDSIZE, static_cast<long>(data.size()));
  curl_easy_setopt(e.h, CURLOPT_WRITEFUNCTION, on_sse);
  curl_easy_setopt(e.h, CURLOPT_WRITEDATA, &s);
  s.sent = s.last = Clock::now();
  const CURLcode rc = curl_easy_perform(e.h);
  out.latency_s = std::chrono::duration<double>(Clock::now() - s.sent).count();
  curl_easy_getinfo(e.h, CURLINFO_RESPONSE_CODE, &out.status);
  if (s.stopped) {
    out.error = "closed by the client";
    return out;
  }
  if (rc != CURLE_OK && out.error.empty()) {
    out.error = curl_easy_strerror(rc);
    return out;
  }
  if (out.status != 200) {
    json j = json::parse(s.raw, nullptr, false);
    const bool api = !j.is_discarded() && j.contains("error") && j["error"].is_object();
    out.error = "HTTP " + std::to_string(out.status) + ": " +
                (api ? j["error"].value("message", std::string()) : s.raw.substr(0, 300));
    return out;
  }
  drain_events(s);
  out.ok = out.error.empty() && (s.done || !out.finish_reason.empty());
  if (!out.ok && out.error.empty()) out.error = "the stream ended without [DONE] or a finish_reason";
  return out;
}

json OpenAIClient::first_listed_model() const {
  const HttpReply r = get("/models");
  if (r.status != 200)
    throw Error(base_ + "/models: " +
                (r.status ? "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 200) : r.error));
  const json j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id") || !j["data"][0]["id"].is_string())
    throw Error(base_ + "/models lists no model");
  return j["data"][0];
}

std::string OpenAIClient::first_model() const {
  return first_listed_model()["id"].get<std::string>();
}

}  // namespace fp4lab
