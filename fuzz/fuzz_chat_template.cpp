// Any byte string as a chat template (it comes with a downloaded checkpoint): parsed and rendered on a fixed
// conversation, it gives text or a clean fp4lab::Error, never a crash, a hang or unbounded memory.
#include <cstdint>
#include <string>

#include "common/error.h"
#include "tokenizer/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fp4lab::ChatTemplate t(std::string(reinterpret_cast<const char*>(data), size), "<s>", "</s>",
                                 "fuzz");
    fp4lab::ChatRenderOptions o;
    o.date = "2026-07-26";
    (void)t.render({{"system", "be brief"}, {"user", "Hi \"there\" é"}, {"assistant", "<think>x</think>ok"}},
                   o);
    o.add_generation_prompt = false;
    (void)t.render({{"user", ""}}, o);
  } catch (const fp4lab::Error&) {
  }
  return 0;
}
