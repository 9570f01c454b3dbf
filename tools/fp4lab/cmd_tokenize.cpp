// `fp4lab tokenize`: JSONL in ({"text": ...} per line), JSONL out ({"ids": [...]}), or the other way with
// --decode. Special tokens are never added, so the ids match `tokenizer(text, add_special_tokens=False)`.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <iostream>

#include "commands.h"
#include "common/error.h"
#include "common/json_util.h"
#include "tokenizer/tokenizer.h"

namespace fp4lab::cli {

Action add_tokenize(CLI::App& app) {
  struct Opts {
    std::string tokenizer, jsonl, out;
    bool decode = false, skip_special = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--tokenizer", o->tokenizer, "directory with tokenizer.json (or vocab.json + merges.txt)")
      ->required();
  app.add_option("--jsonl", o->jsonl, "input JSONL: a \"text\" field per line (with --decode: \"ids\")")
      ->required();
  app.add_option("--out", o->out, "output JSONL (default: stdout)");
  app.add_flag("--decode", o->decode, "ids to text");
  app.add_flag("--skip-special", o->skip_special, "with --decode: leave special tokens out of the text");
  return [o]() {
    const auto t_load = std::chrono::steady_clock::now();
    const Tokenizer tok = Tokenizer::from_dir(o->tokenizer);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
    std::ifstream in(o->jsonl);
    if (!in) throw Error(o->jsonl + ": cannot open");
    // --out collects the lines and replaces the file only once all are written (write_text_file): a failure
    // leaves the previous file as it was.
    std::ostringstream buffer;
    std::ostream& out = o->out.empty() ? static_cast<std::ostream&>(std::cout) : buffer;
    std::string line;
    size_t lineno = 0, bytes = 0, tokens = 0;
    double work_s = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = o->jsonl + ":" + std::to_string(lineno);
      const json j = parse_json_untrusted(line, where);
      json r = json::object();
      const auto t0 = std::chrono::steady_clock::now();
      if (o->decode) {
        if (!j.is_object() || !j.contains("ids") || !j["ids"].is_array())
          throw Error(where + ": no \"ids\" array");
        std::vector<int> ids;
        for (const auto& v : j["ids"]) {
          if (!v.is_number_integer()) throw Error(where + ": ids must be integers");
          ids.push_back(v.get<int>());
        }
        r["text"] = tok.decode(ids, o->skip_special);
        tokens += ids.size();
      } else {
        if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
          throw Error(where + ": no \"text\" string");
        const auto& text = j["text"].get_ref<const std::string&>();
        try {
          r["ids"] = tok.encode(text);
        } catch (const Error& e) {
          throw Error(where + ": " + e.what());
        }
        bytes += text.size();
        tokens += r["ids"].size();
      }
      work_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      out << r.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    }
    if (!o->out.empty()) write_text_file(o->out, buffer.str());
    std::cout.flush();
    if (!std::cout) throw Error("standard output: write failed");
    std::fprintf(stderr, "fp4lab tokenize: %zu lines, %zu tokens (%s), loaded in %.2f s", lineno, tokens,
                 tok.describe().c_str(), load_s);
    if (!o->decode && work_s > 0) std::fprintf(stderr, ", encode %.1f MB/s", bytes / work_s / 1e6);
    std::fprintf(stderr, "\n");
    return 0;
  };
}

}  // namespace fp4lab::cli
