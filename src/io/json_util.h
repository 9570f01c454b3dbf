// Parsing of untrusted JSON (checkpoint headers, configs, tokenizers) with a nesting limit, so a hostile
// file fails with a message instead of exhausting the stack.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace fp4lab {

using json = nlohmann::json;

constexpr int kMaxJsonDepth = 128;

// Throws fp4lab::Error("<what>: <reason>") on malformed input or nesting deeper than kMaxJsonDepth.
json parse_json_untrusted(std::string_view text, const std::string& what);
json read_json_file(const std::string& path);
// A whole file as bytes; throws fp4lab::Error("<path>: cannot open file") when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace fp4lab
