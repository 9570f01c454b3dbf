// `fp4lab report RESULTS... --out DIR`: tables and charts from bench/GSM8K results of one or many machines.
#include <cstdio>

#include "commands.h"
#include "report/report.h"

namespace fp4lab::cli {

Action add_report(CLI::App& app) {
  struct Opts {
    std::vector<std::string> inputs;
    std::string out = "report";
  };
  auto o = std::make_shared<Opts>();
  app.add_option("results", o->inputs,
                 "result JSON files (bench, gsm8k, sweeps) and/or results databases (*.db)")
      ->required();
  app.add_option("--out", o->out, "output directory (report.md, report.html, charts/)");
  return [o]() {
    const auto docs = load_result_docs(o->inputs);
    const auto r = write_report(docs, o->out);
    std::printf("report: %s and %s, %zu charts (PNG + SVG) from %zu results\n", r.markdown.c_str(),
                r.html.c_str(), r.charts.size(), docs.size());
    return 0;
  };
}

}  // namespace fp4lab::cli
