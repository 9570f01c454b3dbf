// Parsing of untrusted JSON (checkpoint headers, configs, tokenizers) with a nesting limit, so a hostile
// file fails with a message instead of exhausting the stack.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fp4lab {

using json = nlohmann::json;

constexpr int kMaxJsonDepth = 128;

// Throws fp4lab::Error("<what>: <reason>") on malformed input or nesting deeper than kMaxJsonDepth.
json parse_json_untrusted(std::string_view text, const std::string& what);
json read_json_file(const std::string& path);

// Configuration files (config.json, hf_quant_config.json, generation_config.json, tokenizer_config.json) as
// Python writes them: json.dump's bare NaN, Infinity and -Infinity (NVIDIA's Nemotron-H configs carry
// "time_step_limit": [0.0, Infinity]) and transformers 5's {"__float__": "Infinity"} become float numbers;
// otherwise as parse_json_untrusted.
json parse_json_config(std::string_view text, const std::string& what);
json read_json_config_file(const std::string& path);
// The inverse for configs fp4lab writes: non-finite numbers as Python's bare literals (nlohmann would write
// null, which turns an unbounded limit into a missing one), everything else as j.dump(indent).
std::string dump_json_config(const json& j, int indent = 2);
// A whole regular file of at most max_bytes as bytes; throws fp4lab::Error naming the path when it cannot be
// read, is not a regular file (a FIFO or a device would block or never end) or is larger.
std::string read_text_file(const std::string& path, uint64_t max_bytes = uint64_t{1} << 32);
// Writes path.tmp, then renames it over path: a failed write (disk full, no permission) throws naming the
// file and leaves any previous file as it was.
void write_text_file(const std::string& path, std::string_view text);
// An output directory a command may write a checkpoint into: never one of the inputs, inside one or holding
// one (the output would destroy what it is made from), and, unless force, not a directory that already holds
// files. Throws naming both paths.
void check_output_dir(const std::string& out, const std::vector<std::string>& inputs, bool force);

// obj[key] as an integer when it is a JSON number in [lo, hi] (a float is truncated, as nlohmann's conversion
// does); std::nullopt when obj is not an object, the key is absent, or the value is not a number or out of
// range; lo and hi within +-2^53. For untrusted files: nlohmann's get<int>() / value(key, 0) cast a float
// straight to the integer type (undefined behaviour when it does not fit) and throw its own type_error on a
// string.
std::optional<int64_t> json_int_field(const json& obj, const std::string& key, int64_t lo, int64_t hi);

}  // namespace fp4lab
