// Token ids written as text (--prompt-ids, token files): integers separated by commas and/or whitespace.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace fp4lab {

// `what` names the source in the error a non-integer gets.
std::vector<int> parse_token_ids(std::string_view text, const std::string& what);
// A file of such ids.
std::vector<int> read_token_file(const std::string& path);

}  // namespace fp4lab
