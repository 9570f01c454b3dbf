#include <cstdio>
#include <fstream>

#include "commands.h"
#include "common/json_util.h"
#include "common/error.h"
#include "report/results_db.h"

namespace fp4lab::cli {

Action add_results(CLI::App& app) {
  struct Opts {
    std::string db = ResultsDb::default_path();
    int64_t id = 0, other = 0;
    std::string out;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--db", o->db, "results database (default: the user's data dir)");
  app.require_subcommand(1);
  auto* list = app.add_subcommand("list", "list stored runs");
  auto* show = app.add_subcommand("show", "print a stored run's document");
  show->add_option("id", o->id, "run id")->required();
  auto* cmp = app.add_subcommand("compare", "compare two runs quantization by quantization");
  cmp->add_option("a", o->id, "baseline run id")->required();
  cmp->add_option("b", o->other, "other run id")->required();
  auto* exp =
      app.add_subcommand("export", "write a run's document as JSON (for merging results across machines)");
  exp->add_option("id", o->id, "run id")->required();
  exp->add_option("--out", o->out, "file (default: stdout)");
  return [o, list, show, cmp, exp]() {
    ResultsDb db(o->db);
    if (list->parsed()) {
      std::printf("%5s  %-20s  %-32s %-6s %-28s %s\n", "id", "timestamp", "model", "backend", "gpu",
                  "commit");
      for (const auto& r : db.list_runs())
        std::printf("%5lld  %-20s  %-32s %-6s %-28s %s\n", static_cast<long long>(r.id), r.timestamp.c_str(),
                    r.model.c_str(), r.backend.c_str(), r.gpu.c_str(), r.commit.c_str());
    } else if (show->parsed()) {
      std::printf("%s\n", db.get_run(o->id).dump(2).c_str());
    } else if (cmp->parsed()) {
      std::printf("%s", compare_runs(db.get_run(o->id), db.get_run(o->other)).c_str());
    } else if (exp->parsed()) {
      const std::string text = db.get_run(o->id).dump(2) + "\n";
      if (o->out.empty()) {
        std::fputs(text.c_str(), stdout);
      } else {
        write_text_file(o->out, text);
      }
    }
    return 0;
  };
}

}  // namespace fp4lab::cli
