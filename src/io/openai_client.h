// A client of OpenAI-compatible servers (fp4lab serve, vLLM, SGLang, llama.cpp's server) over libcurl: plain
// JSON calls, and streamed completions read as server-sent events with the arrival time of every chunk, which
// is what a serving benchmark measures.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4lab {

struct HttpReply {
  long status = 0;  // 0: no HTTP answer (connection refused, timeout)
  std::string body;
  std::string error;  // the transport's message when status is 0
};

// One streamed completion as the client saw it.
struct StreamedCompletion {
  long status = 0;
  bool ok = false;    // HTTP 200, [DONE] or a finish_reason seen, no error event
  std::string error;  // why not ok: transport, HTTP status and body, or the server's error event
  std::string text;   // the concatenated text (completions) or delta content (chat)
  std::string finish_reason;
  int prompt_tokens = -1, completion_tokens = -1;  // from the usage chunk; -1 when none came
  int chunks = 0;                                  // chunks that carried text
  double ttft_s = 0;                               // request sent -> first chunk with text
  double latency_s = 0;                            // request sent -> end of the stream
  std::vector<double> itl_s;                       // gaps between successive chunks with text
};

class OpenAIClient {
 public:
  // base_url: "http://host:port" or ".../v1" (the /v1 is added when missing).
  OpenAIClient(std::string base_url, std::string api_key = {}, double timeout_s = 600);
  // path under the base URL (/models), or under the server's root with from_root (/metrics, /health).
  HttpReply get(const std::string& path, bool from_root = false) const;
  HttpReply post(const std::string& path, const nlohmann::json& body) const;
  // POSTs `body` with "stream": true to path (/completions or /chat/completions). on_event sees every parsed
  // event; returning false closes the connection (a client that goes away).
  StreamedCompletion stream(const std::string& path, nlohmann::json body,
                            const std::function<bool(const nlohmann::json&)>& on_event = {}) const;
  // The first entry /models lists, as the server wrote it (an Error naming the server when it answers none).
  nlohmann::json first_listed_model() const;
  // Its id.
  std::string first_model() const;
  const std::string& base_url() const { return base_; }

 private:
  std::string base_, key_;
  double timeout_s_;
};

}  // namespace fp4lab
