// The SQLite results store: every `fp4lab bench` run, one transaction each, schema upgraded by numbered
// migrations.
#pragma once
#include <string>
#include <vector>

#include "common/json_util.h"

struct sqlite3;

namespace fp4lab {

class ResultsDb {
 public:
  static constexpr int kSchemaVersion = 3;
  // Opens (creating if needed) and migrates to kSchemaVersion. Throws fp4lab::Error naming the file.
  explicit ResultsDb(const std::string& path);
  ~ResultsDb();
  ResultsDb(const ResultsDb&) = delete;
  ResultsDb& operator=(const ResultsDb&) = delete;

  int schema_version();
  // Throws naming the file when a run could not be stored (read-only file or directory, held lock): called
  // before a long run so that it does not end with its results lost.
  void check_writable();
  // Stores a bench document (schema fp4lab.bench/1) atomically; returns the run id. fail_after_run_row exists
  // for the test that an interrupted insert leaves nothing behind.
  int64_t insert_run(const json& doc, bool fail_after_run_row = false);

  struct RunRow {
    int64_t id = 0;
    std::string timestamp, model, backend, gpu, commit;
  };
  std::vector<RunRow> list_runs();
  json get_run(int64_t id);  // the stored document; throws when absent

  static std::string default_path();  // $XDG_DATA_HOME/fp4lab/results.db or ~/.local/share/fp4lab/results.db

 private:
  void exec(const std::string& sql);
  void migrate();
  sqlite3* db_ = nullptr;
  std::string path_;
};

// Mean of a JSON array of numbers (a measurement's per-repetition values); 0 for an empty or missing one.
double mean_of(const json& values);

// Side-by-side comparison of two stored runs: bench runs per quantization (tokens/s, decode tok/s, ratio);
// GSM8K runs paired by question (accuracy per filter, flips each way, McNemar p-value).
std::string compare_runs(const json& a, const json& b);

}  // namespace fp4lab
