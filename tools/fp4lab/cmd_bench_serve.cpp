// fp4lab bench serve: drives an OpenAI-compatible endpoint (fp4lab serve or another engine) and reports
// the metrics of `vllm bench serve`, once per request rate and concurrency asked for.
#include <cmath>
#include <cstdio>
#include <limits>

#include "bench/serve_bench.h"
#include "commands.h"
#include "common/error.h"
#include "common/json_util.h"
#include "report/results_db.h"

namespace fp4lab::cli {

namespace {

struct ServeBenchCli {
  ServeBenchOptions o;
  std::vector<std::string> rates{"inf"};
  std::vector<int> concurrency{0};
  std::string json_out, label, db = ResultsDb::default_path();
  bool no_db = false;
};

double parse_rate(const std::string& s) {
  if (s == "inf") return std::numeric_limits<double>::infinity();
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size() && v > 0 && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw Error("--request-rate: '" + s + "' is not a positive number or inf");
}

}  // namespace

std::function<int()> add_bench_serve(CLI::App& app) {
  auto c = std::make_shared<ServeBenchCli>();
  auto& o = c->o;
  app.add_option("--endpoint", o.endpoint, "the server's base URL, e.g. http://127.0.0.1:8000/v1")
      ->required();
  app.add_option("--api-key", o.api_key, "sent as 'Authorization: Bearer KEY'");
  app.add_option("--model", o.model, "model id to request (default: the first one the server lists)");
  app.add_flag("--chat", o.chat, "use /v1/chat/completions (text prompts only: --dataset gsm8k)");
  app.add_option("--dataset", o.dataset, "random (token-id prompts) or gsm8k (question prompts)")
      ->check(CLI::IsMember({"random", "gsm8k"}));
  app.add_option("--gsm8k", o.gsm8k_file, "the GSM8K test JSONL for --dataset gsm8k");
  app.add_option("--num-prompts", o.num_prompts, "requests per run")->check(CLI::Range(1, 1 << 20));
  app.add_option("--random-input-len", o.input_len, "random: prompt tokens")->check(CLI::Range(1, 1 << 22));
  app.add_option("--random-output-len", o.output_len, "max_tokens per request")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--random-range-ratio", o.range_ratio, "random: lengths drawn within +-this fraction")
      ->check(finite_range(0, 1));
  app.add_option("--vocab", o.vocab,
                 "random: prompt ids below this (default: the vocab_size fp4lab serve lists)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--request-rate", c->rates,
                 "requests per second, Poisson arrivals (inf: all at once); a list runs each")
      ->delimiter(',');
  app.add_option("--max-concurrency", c->concurrency,
                 "requests in flight at most (0: no cap); a list runs each")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 20));
  app.add_flag("!--no-ignore-eos", o.ignore_eos,
               "let requests stop at EOS (default: every request runs its max_tokens)");
  app.add_option("--seed", o.seed, "seed of the prompts and arrival times");
  app.add_option("--goodput-ttft-ms", o.slo_ttft_ms, "goodput SLO on TTFT (ms)")->check(finite_range(0, 1e9));
  app.add_option("--goodput-tpot-ms", o.slo_tpot_ms, "goodput SLO on TPOT (ms)")->check(finite_range(0, 1e9));
  app.add_option("--goodput-e2el-ms", o.slo_e2el_ms, "goodput SLO on end-to-end latency (ms)")
      ->check(finite_range(0, 1e9));
  app.add_option("--label", c->label,
                 "a name for the server under test (engine, quant), kept in the results");
  app.add_option("--json", c->json_out, "write the runs as JSON (schema fp4lab.bench_serve/1)");
  app.add_option("--db", c->db, "results database to store the runs in");
  app.add_flag("--no-db", c->no_db, "do not store the runs");
  return [c]() {
    std::vector<double> rates;
    for (const auto& r : c->rates) rates.push_back(parse_rate(r));
    nlohmann::json runs = nlohmann::json::array();
    for (double rate : rates)
      for (int conc : c->concurrency) {
        ServeBenchOptions run = c->o;
        run.request_rate = rate;
        run.max_concurrency = conc;
        run.progress = [](int done, int total) {
          if (done == total || done % std::max(1, total / 10) == 0)
            std::fprintf(stderr, "\r  %d/%d requests", done, total);
          if (done == total) std::fprintf(stderr, "\n");
        };
        std::fprintf(stderr, "bench serve: %s, rate %s, concurrency %s\n", run.endpoint.c_str(),
                     std::isinf(rate) ? "inf" : std::to_string(rate).c_str(),
                     conc ? std::to_string(conc).c_str() : "unlimited");
        nlohmann::json m = run_serve_bench(run);
        std::printf("%s", serve_bench_table(m).c_str());
        std::fflush(stdout);
        runs.push_back(std::move(m));
      }
    for (const auto& m : runs)
      if (m["completed"].get<int>() == 0)
        throw Error("no request completed against " + c->o.endpoint + ": " + m["errors"].dump());
    nlohmann::json doc{{"schema", "fp4lab.bench_serve/1"}, {"label", c->label}, {"results", runs}};
    run_environment(doc, false);
    // The results' GPU is the server's, where it says which (fp4lab serve does).
    const nlohmann::json server = runs[0]["server"];
    if (server.contains("device") && server["device"].is_string() && server["device"] != "cpu")
      doc["gpu"] = {{"name", server["device"]}};
    doc["options"] = {{"model", runs[0]["model_id"]},
                      {"backend", "endpoint"},
                      {"endpoint", c->o.endpoint},
                      {"label", c->label},
                      {"quant", server.value("quant", "")},
                      {"dataset", c->o.dataset},
                      {"num_prompts", c->o.num_prompts},
                      {"random_input_len", c->o.input_len},
                      {"random_output_len", c->o.output_len},
                      {"random_range_ratio", c->o.range_ratio},
                      {"vocab", c->o.vocab},
                      {"request_rate", c->rates},
                      {"max_concurrency", c->concurrency},
                      {"ignore_eos", c->o.ignore_eos},
                      {"seed", c->o.seed},
                      {"chat", c->o.chat},
                      {"goodput_ttft_ms", c->o.slo_ttft_ms},
                      {"goodput_tpot_ms", c->o.slo_tpot_ms},
                      {"goodput_e2el_ms", c->o.slo_e2el_ms}};
    if (!c->json_out.empty()) write_text_file(c->json_out, doc.dump(2) + "\n");
    if (!c->no_db) {
      ResultsDb db(c->db);
      const auto id = db.insert_run(doc);
      std::fprintf(stderr, "stored as run %lld in %s\n", static_cast<long long>(id), c->db.c_str());
    }
    return 0;
  };
}

}  // namespace fp4lab::cli
