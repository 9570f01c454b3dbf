// The OpenAI API's requests and responses as fp4lab serves them: /v1/completions and /v1/chat/completions
// bodies parsed and checked (a field of the wrong type or out of range is a 400 naming it), and the JSON of
// responses, stream chunks and errors in the shapes the openai clients and vLLM's benchmarks read.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/scheduler.h"

namespace fp4lab::serve {

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError : std::runtime_error {
  ApiError(int http_status, std::string type_, std::string code_, const std::string& message,
           std::string param_ = {})
      : std::runtime_error(message),
        status(http_status),
        type(std::move(type_)),
        code(std::move(code_)),
        param(std::move(param_)) {}
  int status;
  std::string type, code, param;
};
ApiError bad_request(const std::string& message, const std::string& param = {});
nlohmann::json error_body(const ApiError& e);

struct CompletionRequest {
  bool chat = false;
  std::string model;  // empty: not given
  // /v1/completions: a text prompt or token ids (one prompt per request).
  std::optional<std::string> prompt_text;
  std::vector<int> prompt_ids;
  // /v1/chat/completions: the messages as the chat template reads them (text parts joined into content).
  nlohmann::ordered_json messages;
  nlohmann::ordered_json template_kwargs;  // chat_template_kwargs (an object, or null)
  bool add_generation_prompt = true;
  std::optional<int> max_tokens;  // unset: completions 16, chat until the context is full
  SamplingOptions sampling;       // temperature 0 is greedy; the default temperature is 1
  bool seed_given = false;
  std::vector<std::string> stop;
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses a request body; throws ApiError (400) naming the first bad field.
CompletionRequest parse_completion_request(std::string_view body, bool chat);

struct Usage {
  int prompt_tokens = 0, completion_tokens = 0;
};
nlohmann::json usage_json(const Usage& u);

// The non-streamed response.
nlohmann::json completion_response(const CompletionRequest& r, const std::string& id, int64_t created,
                                   const std::string& model, const std::string& text,
                                   const std::string& finish_reason, const Usage& u);
// One streamed chunk: text (a delta), with finish_reason null until the last; `first` adds the chat role.
nlohmann::json completion_chunk(const CompletionRequest& r, const std::string& id, int64_t created,
                                const std::string& model, const std::string& text,
                                const std::string& finish_reason, bool first);
// The final usage chunk of stream_options.include_usage (no choices).
nlohmann::json usage_chunk(const CompletionRequest& r, const std::string& id, int64_t created,
                           const std::string& model, const Usage& u);

}  // namespace fp4lab::serve
