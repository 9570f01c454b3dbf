#include "io/token_ids.h"

#include <cctype>
#include <stdexcept>

#include "common/error.h"
#include "common/json_util.h"

namespace fp4lab {

std::vector<int> parse_token_ids(std::string_view text, const std::string& what) {
  std::vector<int> ids;
  std::string tok;
  auto flush = [&] {
    if (tok.empty()) return;
    try {
      size_t used = 0;
      ids.push_back(std::stoi(tok, &used));
      if (used != tok.size()) throw std::invalid_argument(tok);
    } catch (const std::exception&) {
      throw Error(what + ": '" + tok + "' is not an integer token id");
    }
    tok.clear();
  };
  for (char ch : text) {
    if (ch == ',' || std::isspace(static_cast<unsigned char>(ch)))
      flush();
    else
      tok.push_back(ch);
  }
  flush();
  return ids;
}

std::vector<int> read_token_file(const std::string& path) {
  return parse_token_ids(read_text_file(path), path);
}

}  // namespace fp4lab
