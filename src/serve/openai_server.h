// The HTTP side of `fp4lab serve` (cpp-httplib): the OpenAI routes, API-key check, tokenization and chat
// templates on the request threads, the job handed to the engine thread through a ServeQueue, and the reply,
// whole or as server-sent events.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "serve/metrics.h"
#include "serve/request_stream.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace fp4lab::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;      // 0: any free port (port() tells which)
  std::string api_key;  // non-empty: /v1/* need "Authorization: Bearer <key>"
  std::string model_name;
  std::string model_root;    // the checkpoint, shown by /v1/models
  int max_model_len = 4096;  // prompt + completion
  int vocab_size = 0;        // token-id prompts must be below it
  int add_bos_id = -1;       // >= 0: text prompts of /v1/completions start with this id
  std::string device = "cpu";  // what the model runs on (a GPU's name), listed by /v1/models
  std::string quant;           // the weights' format as loaded, listed by /v1/models
  int http_threads = 72;
  size_t max_body_bytes = 32u << 20;
  ChatRenderOptions chat;  // add_generation_prompt is the request's; the rest (date, extra vars) from the CLI
};

class OpenAIServer {
 public:
  // `tmpl` may be null (chat completions then answer 400).
  OpenAIServer(ServerOptions o, const Tokenizer& tok, const ChatTemplate* tmpl, ServeQueue& queue,
               ServeMetrics& metrics);
  ~OpenAIServer();
  OpenAIServer(const OpenAIServer&) = delete;
  OpenAIServer& operator=(const OpenAIServer&) = delete;
  // Binds the socket (an Error naming the address when it cannot).
  void bind();
  int port() const;
  // Serves until stop(); in-flight requests finish first.
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4lab::serve
