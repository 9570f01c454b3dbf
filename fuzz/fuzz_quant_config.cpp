// Any byte string as hf_quant_config.json (first half) and config.json (second half).
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "io/quant_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t cut = all.find('\0');
  const std::string_view a = all.substr(0, cut),
                         b = cut == std::string_view::npos ? std::string_view() : all.substr(cut + 1);
  try {
    fp4lab::json hfq, cfg;
    try {
      hfq = fp4lab::parse_json_config(a, "hf_quant_config.json");
    } catch (const fp4lab::Error&) {
    }
    try {
      cfg = fp4lab::parse_json_config(b, "config.json");
    } catch (const fp4lab::Error&) {
    }
    const auto q = fp4lab::parse_quant_config(hfq, cfg, "fuzz");
    for (const char* layer :
         {"lm_head", "model.layers.0.self_attn.q_proj", "backbone.layers.3.mixer.in_proj"})
      (void)q.algo_for(layer);
  } catch (const fp4lab::Error&) {
  }
  return 0;
}
