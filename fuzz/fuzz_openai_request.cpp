// Any byte string as the body of POST /v1/completions or /v1/chat/completions: a clean ApiError (400) or a
// request whose fields hold what the engine relies on; the stop-string assembler then runs on its stops.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "serve/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    const auto r = fp4lab::serve::parse_completion_request(body, chat);
    if (r.max_tokens && *r.max_tokens < 1) std::abort();
    if (!(r.sampling.temperature >= 0 && r.sampling.temperature <= 2)) std::abort();
    if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1) || r.sampling.top_k < 0) std::abort();
    if (r.stop.size() > 16) std::abort();
    for (const auto& s : r.stop)
      if (s.empty()) std::abort();
    if (chat && !r.messages.is_array()) std::abort();
    if (!chat && !r.prompt_text && r.prompt_ids.empty()) std::abort();
    for (int id : r.prompt_ids)
      if (id < 0) std::abort();
  } catch (const fp4lab::serve::ApiError& e) {
    if (e.status != 400) std::abort();
  }
  return 0;
}
