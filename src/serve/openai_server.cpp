#include "serve/openai_server.h"

#include <httplib.h>

#include <atomic>
#include <ctime>
#include <optional>

#include "common/error.h"
#include "serve/openai_api.h"

namespace fp4lab::serve {

using json = nlohmann::json;

struct OpenAIServer::Impl {
  ServerOptions o;
  const Tokenizer& tok;
  const ChatTemplate* tmpl;
  ServeQueue& queue;
  ServeMetrics& metrics;
  httplib::Server svr;
  int port = -1;
  std::atomic<uint64_t> next_id{1};
  const int64_t started = static_cast<int64_t>(std::time(nullptr));

  Impl(ServerOptions opt, const Tokenizer& t, const ChatTemplate* ct, ServeQueue& q, ServeMetrics& m)
      : o(std::move(opt)), tok(t), tmpl(ct), queue(q), metrics(m) {}

  static void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  }
  void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_body(e)); }

  void authorize(const httplib::Request& req) {
    if (o.api_key.empty()) return;
    if (req.get_header_value("Authorization") != "Bearer " + o.api_key) {
      metrics.request_rejected("unauthorized");
      throw ApiError(401, "invalid_request_error", "invalid_api_key",
                     req.has_header("Authorization") ? "Incorrect API key provided" : "Missing API key");
    }
  }

  std::vector<int> prompt_of(const CompletionRequest& r) {
    std::vector<int> ids;
    if (r.chat) {
      if (!tmpl)
        throw ApiError(
            400, "invalid_request_error", "no_chat_template",
            "this model has no chat template; use /v1/completions or start the server with --chat-template");
      ChatRenderOptions ro = o.chat;
      ro.add_generation_prompt = r.add_generation_prompt;
      if (r.template_kwargs.is_object())
        for (const auto& [k, v] : r.template_kwargs.items())
          jinja::dict_set(ro.extra, k, jinja::Value::from_json(v));
      std::string text;
      try {
        text = tmpl->render_json(r.messages.dump(), ro);
      } catch (const Error& e) {
        throw bad_request(std::string("the chat template rejected the messages: ") + e.what(), "messages");
      }
      ids = tok.encode(text);
    } else if (r.prompt_text) {
      ids = tok.encode(*r.prompt_text);
      if (o.add_bos_id >= 0) ids.insert(ids.begin(), o.add_bos_id);
    } else {
      ids = r.prompt_ids;
    }
    // A tokenizer larger than the model (a preset served with another model's tokenizer) can encode ids that
    // the embedding does not have.
    for (int id : ids)
      if (id >= o.vocab_size)
        throw bad_request("prompt token id " + std::to_string(id) +
                              " is not below the model's vocabulary size " + std::to_string(o.vocab_size),
                          r.chat ? "messages" : "prompt");
    if (ids.empty()) throw bad_request("the prompt encodes to no tokens", r.chat ? "messages" : "prompt");
    return ids;
  }

  // The error a finished request answers with, when it did not end by a stop or its length: an engine
  // failure (500), or cancelled by the shutdown's grace period (503).
  static std::optional<ApiError> ended_badly(const RequestStream::Update& u) {
    if (!u.done) return std::nullopt;
    if (u.finish_reason == "error") return ApiError(500, "server_error", "engine_error", u.error);
    if (u.finish_reason == "cancelled")
      return ApiError(503, "server_error", "shutting_down",
                      "the server shut down before the request finished");
    return std::nullopt;
  }

  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    const auto arrived = Clock::now();  // TTFT counts parsing and tokenization too
    try {
      authorize(req);
      CompletionRequest r;
      std::vector<int> prompt;
      int max_tokens = 0;
      try {
        r = parse_completion_request(req.body, chat);
        if (!r.model.empty() && r.model != o.model_name)
          throw ApiError(
              404, "invalid_request_error", "model_not_found",
              "the model '" + r.model + "' does not exist; this server serves '" + o.model_name + "'",
              "model");
        prompt = prompt_of(r);
        const int n = static_cast<int>(prompt.size());
        max_tokens = r.max_tokens.value_or(chat ? o.max_model_len - n : 16);
        if (max_tokens < 1 || static_cast<int64_t>(n) + max_tokens > o.max_model_len)
          throw ApiError(400, "invalid_request_error", "context_length_exceeded",
                         "this model's maximum context length is " + std::to_string(o.max_model_len) +
                             " tokens; the request has " + std::to_string(n) +
                             " prompt tokens and asks for " + std::to_string(std::max(max_tokens, 0)) +
                             " completion tokens",
                         chat ? "messages" : "prompt");
        for (int id : r.stop_token_ids)
          if (id >= o.vocab_size)
            throw bad_request("stop_token_ids: " + std::to_string(id) + " is not a token id",
                              "stop_token_ids");
      } catch (const ApiError&) {
        metrics.request_rejected("bad_request");
        throw;
      }
      const int n = static_cast<int>(prompt.size());
      ServeJob job;
      job.id = next_id++;
      job.prompt = std::move(prompt);
      job.max_tokens = max_tokens;
      job.sampling = r.sampling;
      // Without a seed each request draws differently; with one, the same request draws the same.
      if (!r.seed_given) job.sampling.seed = job.id * 0x9E3779B97F4A7C15ull;
      job.ignore_eos = r.ignore_eos;
      job.stop = r.stop;
      job.stop_ids = r.stop_token_ids;
      job.out = std::make_shared<RequestStream>();
      job.out->set_arrival(arrived, static_cast<int>(job.prompt.size()));
      const auto out = job.out;
      const std::string id =
          std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(job.id) + "-" + std::to_string(started);
      switch (queue.push(std::move(job))) {
        case ServeQueue::Push::Ok:
          break;
        case ServeQueue::Push::Full:
          metrics.request_rejected("queue_full");
          throw ApiError(503, "server_error", "queue_full",
                         "the server is at capacity (" + std::to_string(queue.in_system()) +
                             " requests running or queued); retry later");
        case ServeQueue::Push::Closed:
          metrics.request_rejected("shutting_down");
          throw ApiError(503, "server_error", "shutting_down", "the server is shutting down");
      }
      const int64_t created = static_cast<int64_t>(std::time(nullptr));
      if (!r.stream) {
        std::string text;
        RequestStream::Update u;
        while (true) {
          if (!out->read(u, std::chrono::milliseconds(100))) continue;
          text += u.text;
          if (u.done) break;
        }
        if (out->leave()) metrics.request_finished(out->times());
        if (const auto e = ended_badly(u)) throw *e;
        send_json(res, 200,
                  completion_response(r, id, created, o.model_name, text, u.finish_reason,
                                      {n, u.completion_tokens}));
        return;
      }
      res.status = 200;
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, r, id, created, n, out](size_t, httplib::DataSink& sink) {
            const auto event = [&](const json& j) {
              const std::string s =
                  "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
              return sink.write(s.data(), s.size());
            };
            bool first = true;
            RequestStream::Update u;
            while (true) {
              if (!out->read(u, std::chrono::milliseconds(100))) continue;
              if (const auto e = ended_badly(u)) {
                event(error_body(*e));
                break;
              }
              if (!u.text.empty() || (first && r.chat)) {
                if (!event(completion_chunk(r, id, created, o.model_name, u.text, "", first))) {
                  out->cancel();  // the client went away: the engine frees its slot at the next step
                  return false;
                }
                if (!u.text.empty()) out->mark_sent();
                first = false;
              }
              if (u.done) {
                event(completion_chunk(r, id, created, o.model_name, "", u.finish_reason, false));
                if (r.include_usage)
                  event(usage_chunk(r, id, created, o.model_name, {n, u.completion_tokens}));
                break;
              }
            }
            const std::string done = "data: [DONE]\n\n";
            sink.write(done.data(), done.size());
            sink.done();
            return true;
          },
          // Called once the response is over, however it ended: this thread is done with the request.
          [this, out](bool success) {
            if (!success) out->cancel();
            if (out->leave()) metrics.request_finished(out->times());
          });
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      send_error(res, bad_request(e.what()));
    }
  }

  void routes() {
    svr.Post("/v1/completions",
             [this](const httplib::Request& q, httplib::Response& s) { completions(q, s, false); });
    svr.Post("/v1/chat/completions",
             [this](const httplib::Request& q, httplib::Response& s) { completions(q, s, true); });
    svr.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& s) {
      try {
        authorize(q);
      } catch (const ApiError& e) {
        return send_error(s, e);
      }
      json m{{"id", o.model_name},         {"object", "model"},    {"created", started},
             {"owned_by", "fp4lab"},       {"root", o.model_root}, {"max_model_len", o.max_model_len},
             {"vocab_size", o.vocab_size}, {"device", o.device},   {"quant", o.quant}};
      send_json(s, 200, {{"object", "list"}, {"data", json::array({m})}});
    });
    svr.Get("/health",
            [](const httplib::Request&, httplib::Response& s) { s.set_content("", "text/plain"); });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& s) {
      s.set_content(metrics.render(), "text/plain; version=0.0.4");
    });
    svr.set_error_handler([](const httplib::Request& q, httplib::Response& s) {
      if (!s.body.empty()) return;  // a handler's own answer
      const std::string msg = s.status == 404   ? "no route " + q.method + " " + q.path
                              : s.status == 413 ? "the request body is too large"
                                                : "HTTP " + std::to_string(s.status);
      send_json(
          s, s.status,
          error_body(ApiError(s.status, "invalid_request_error", "http_" + std::to_string(s.status), msg)));
    });
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& s, std::exception_ptr ep) {
      std::string msg = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        msg = e.what();
      } catch (...) {
      }
      send_json(s, 500, error_body(ApiError(500, "server_error", "internal_error", msg)));
    });
  }
};

OpenAIServer::OpenAIServer(ServerOptions o, const Tokenizer& tok, const ChatTemplate* tmpl, ServeQueue& queue,
                           ServeMetrics& metrics)
    : impl_(std::make_unique<Impl>(std::move(o), tok, tmpl, queue, metrics)) {
  const int threads = std::max(4, impl_->o.http_threads);
  impl_->svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  impl_->svr.set_payload_max_length(impl_->o.max_body_bytes);
  impl_->svr.set_tcp_nodelay(true);
  impl_->routes();
}

OpenAIServer::~OpenAIServer() = default;

void OpenAIServer::bind() {
  auto& i = *impl_;
  if (i.o.port == 0)
    i.port = i.svr.bind_to_any_port(i.o.host);
  else
    i.port = i.svr.bind_to_port(i.o.host, i.o.port) ? i.o.port : -1;
  if (i.port < 0)
    throw Error("cannot listen on " + i.o.host + ":" + std::to_string(i.o.port) +
                " (address in use, not an address of this machine, or a privileged port)");
}

int OpenAIServer::port() const {
  return impl_->port;
}

void OpenAIServer::run() {
  impl_->svr.listen_after_bind();
}

void OpenAIServer::stop() {
  impl_->svr.stop();
}

}  // namespace fp4lab::serve
