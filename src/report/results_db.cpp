#include "report/results_db.h"

#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "common/error.h"
#include "eval/gsm8k.h"
#include <map>

namespace fp4lab {

namespace {

// Migration i takes the schema from version i to i + 1.
const char* const kMigrations[] = {
    // 0 -> 1: runs and their measurements.
    "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, model TEXT NOT NULL,"
    " backend TEXT NOT NULL, gpu TEXT, tool_version TEXT, git_commit TEXT, document TEXT NOT NULL);"
    "CREATE TABLE measurements (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, quant TEXT "
    "NOT NULL,"
    " tokens_per_s REAL, decode_tok_s REAL, prefill_tok_s REAL, tpot_s_p50 REAL, ttft_s_p50 REAL, "
    "weight_bytes REAL);",
    // 1 -> 2: lookups by model and GPU for cross-machine comparisons.
    "CREATE INDEX runs_model_gpu ON runs(model, gpu);",
    // 2 -> 3: accuracy runs beside speed runs, with one row per question and filter for paired comparisons.
    "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'bench';"
    "CREATE TABLE eval_records (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, question "
    "INTEGER "
    "NOT NULL, filter TEXT NOT NULL, correct INTEGER NOT NULL, extracted TEXT, PRIMARY KEY (run_id, "
    "question, "
    "filter));",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == ResultsDb::kSchemaVersion);

struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt(sqlite3* db, const char* sql, const std::string& path) {
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK)
      throw Error(path + ": SQLite: " + sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(s); }
};

std::string doc_kind(const json& doc) {
  const std::string schema = doc.value("schema", "fp4lab.bench/1");
  if (schema.rfind("fp4lab.bench_serve/", 0) == 0) return "serve";
  return schema.rfind("fp4lab.gsm8k/", 0) == 0 ? "gsm8k" : "bench";
}

}  // namespace

std::string ResultsDb::default_path() {
  const char* xdg = std::getenv("XDG_DATA_HOME");
  const char* home = std::getenv("HOME");
  const std::filesystem::path base = xdg && *xdg ? std::filesystem::path(xdg)
                                     : home      ? std::filesystem::path(home) / ".local/share"
                                                 : std::filesystem::path(".");
  return (base / "fp4lab" / "results.db").string();
}

ResultsDb::ResultsDb(const std::string& path) : path_(path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
  }
  if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(path + ": cannot open results database (" + msg + ")");
  }
  sqlite3_busy_timeout(db_, 30000);
  exec("PRAGMA foreign_keys = ON;");
  migrate();
}

ResultsDb::~ResultsDb() {
  if (db_) sqlite3_close(db_);
}

void ResultsDb::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw Error(path_ + ": SQLite: " + msg);
  }
}

int ResultsDb::schema_version() {
  Stmt st(db_, "PRAGMA user_version;", path_);
  return sqlite3_step(st.s) == SQLITE_ROW ? sqlite3_column_int(st.s, 0) : 0;
}

void ResultsDb::migrate() {
  if (schema_version() == kSchemaVersion) return;
  // Several processes may open a new database at once: the version is read again under the write lock, so
  // only one of them runs each migration and the others see its result.
  exec("BEGIN IMMEDIATE;");
  try {
    const int v = schema_version();
    if (v > kSchemaVersion)
      throw Error(path_ + ": results database schema version " + std::to_string(v) +
                  " is newer than this fp4lab (" + std::to_string(kSchemaVersion) + ")");
    // The migrations and the version bump commit together.
    for (int i = v; i < kSchemaVersion; ++i) {
      exec(kMigrations[i]);
      exec("PRAGMA user_version = " + std::to_string(i + 1) + ";");
    }
    exec("COMMIT;");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    throw;
  }
}

void ResultsDb::check_writable() {
  // A write transaction that changes nothing: a read-only file or directory, or a lock held past the busy
  // timeout, fails here, before a long run, instead of after it.
  exec("BEGIN IMMEDIATE;");
  sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
}

int64_t ResultsDb::insert_run(const json& doc, bool fail_after_run_row) {
  exec("BEGIN IMMEDIATE;");
  try {
    const json& opt = doc.at("options");
    Stmt st(
        db_,
        "INSERT INTO runs (timestamp, model, backend, gpu, tool_version, git_commit, document, kind) VALUES "
        "(?,?,?,?,?,?,?,?);",
        path_);
    const std::string ts = doc.value("timestamp", ""), model = opt.value("model", ""),
                      backend = opt.value("backend", "");
    const std::string gpu =
        doc.contains("gpu") && doc["gpu"].is_object() ? doc["gpu"].value("name", "") : "cpu";
    const std::string ver = doc.at("tool").value("version", ""), commit = doc.at("tool").value("commit", "");
    const std::string text = doc.dump();
    sqlite3_bind_text(st.s, 1, ts.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.s, 2, model.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.s, 3, backend.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.s, 4, gpu.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.s, 5, ver.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.s, 6, commit.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.s, 7, text.c_str(), -1, SQLITE_TRANSIENT);
    const std::string kind = doc_kind(doc);
    sqlite3_bind_text(st.s, 8, kind.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st.s) != SQLITE_DONE) throw Error(path_ + ": SQLite: " + sqlite3_errmsg(db_));
    const int64_t id = sqlite3_last_insert_rowid(db_);
    if (fail_after_run_row) throw Error("simulated failure after the run row");
    if (kind == "gsm8k") {
      for (const auto& r : doc.at("records")) {
        for (const char* f : {"strict-match", "flexible-extract"}) {
          Stmt rs(db_, "INSERT INTO eval_records VALUES (?,?,?,?,?);", path_);
          sqlite3_bind_int64(rs.s, 1, id);
          sqlite3_bind_int64(rs.s, 2, r.at("id").get<int64_t>());
          sqlite3_bind_text(rs.s, 3, f, -1, SQLITE_STATIC);
          sqlite3_bind_int(rs.s, 4, r.at("correct").at(f).get<bool>() ? 1 : 0);
          const std::string ex = r.at("extracted").at(f).get<std::string>();
          sqlite3_bind_text(rs.s, 5, ex.c_str(), -1, SQLITE_TRANSIENT);
          if (sqlite3_step(rs.s) != SQLITE_DONE) throw Error(path_ + ": SQLite: " + sqlite3_errmsg(db_));
        }
      }
    }
    for (const auto& m : doc.value("measurements", json::array())) {
      Stmt ms(db_, "INSERT INTO measurements VALUES (?,?,?,?,?,?,?,?);", path_);
      sqlite3_bind_int64(ms.s, 1, id);
      const std::string q = m.value("quant", "");
      sqlite3_bind_text(ms.s, 2, q.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_double(ms.s, 3, mean_of(m.value("tokens_per_s", json::array())));
      sqlite3_bind_double(ms.s, 4, mean_of(m.value("decode_tok_s", json::array())));
      sqlite3_bind_double(ms.s, 5, mean_of(m.value("prefill_tok_s", json::array())));
      sqlite3_bind_double(ms.s, 6, m.value("tpot_s_p50", 0.0));
      sqlite3_bind_double(ms.s, 7, m.value("ttft_s_p50", 0.0));
      sqlite3_bind_double(ms.s, 8, m.value("weight_bytes", 0.0));
      if (sqlite3_step(ms.s) != SQLITE_DONE) throw Error(path_ + ": SQLite: " + sqlite3_errmsg(db_));
    }
    exec("COMMIT;");
    return id;
  } catch (const json::exception& e) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    throw Error(path_ + ": not a bench or gsm8k results document (" + e.what() + ")");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    throw;
  }
}

std::vector<ResultsDb::RunRow> ResultsDb::list_runs() {
  Stmt st(
      db_,
      "SELECT id, timestamp, model, backend, IFNULL(gpu, ''), IFNULL(git_commit, '') FROM runs ORDER BY id;",
      path_);
  std::vector<RunRow> out;
  while (sqlite3_step(st.s) == SQLITE_ROW) {
    RunRow r;
    r.id = sqlite3_column_int64(st.s, 0);
    auto col = [&](int i) {
      return std::string(reinterpret_cast<const char*>(sqlite3_column_text(st.s, i)));
    };
    r.timestamp = col(1);
    r.model = col(2);
    r.backend = col(3);
    r.gpu = col(4);
    r.commit = col(5);
    out.push_back(r);
  }
  return out;
}

json ResultsDb::get_run(int64_t id) {
  Stmt st(db_, "SELECT document FROM runs WHERE id = ?;", path_);
  sqlite3_bind_int64(st.s, 1, id);
  if (sqlite3_step(st.s) != SQLITE_ROW) throw Error(path_ + ": no run with id " + std::to_string(id));
  return parse_json_untrusted(reinterpret_cast<const char*>(sqlite3_column_text(st.s, 0)), path_);
}

namespace {

// Two GSM8K runs on the same questions: accuracy per filter and the paired view (questions flipped each way,
// McNemar's exact p-value), the comparison accuracy changes need.
std::string compare_gsm8k(const json& a, const json& b) {
  auto label = [](const json& d) {
    const std::string gpu = d.contains("gpu") && d["gpu"].is_object() ? d["gpu"].value("name", "") : "CPU";
    return d["options"].value("model", "") + " (" + d["options"].value("quant", "") + ", " +
           d["options"].value("task", "") + ") on " + gpu;
  };
  std::string out = "A: " + label(a) + "\nB: " + label(b) + "\n";
  std::map<int64_t, const json*> ra, rb;
  for (const auto& r : a["records"]) ra[r["id"].get<int64_t>()] = &r;
  for (const auto& r : b["records"]) rb[r["id"].get<int64_t>()] = &r;
  char buf[256];
  for (const char* f : {"flexible-extract", "strict-match"}) {
    std::vector<bool> va, vb;
    for (const auto& [id, r] : ra) {
      auto it = rb.find(id);
      if (it == rb.end()) continue;
      va.push_back((*r)["correct"][f].get<bool>());
      vb.push_back((*it->second)["correct"][f].get<bool>());
    }
    const auto ma = mean_stderr(va), mb = mean_stderr(vb);
    const auto mc = mcnemar(va, vb);
    std::snprintf(
        buf, sizeof buf,
        "%-17s %zu paired questions: A %.4f ± %.4f, B %.4f ± %.4f; right only in A %d, only in B %d, "
        "both %d, neither %d; McNemar p = %.4g\n",
        f, va.size(), ma.mean, ma.stderr_, mb.mean, mb.stderr_, mc.only_a, mc.only_b, mc.both, mc.neither,
        mc.p_value);
    out += buf;
  }
  return out;
}

}  // namespace

double mean_of(const json& a) {
  if (!a.is_array() || a.empty()) return 0.0;
  double s = 0;
  for (const auto& v : a) s += v.get<double>();
  return s / static_cast<double>(a.size());
}

std::string compare_runs(const json& a, const json& b) {
  if (doc_kind(a) == "serve" || doc_kind(b) == "serve")
    throw Error(
        "bench serve runs are compared in `fp4lab report` (its Serving section), not by `results compare`");
  if (doc_kind(a) == "gsm8k" || doc_kind(b) == "gsm8k") {
    if (doc_kind(a) != doc_kind(b)) throw Error("cannot compare a GSM8K run with a bench run");
    return compare_gsm8k(a, b);
  }
  auto label = [](const json& d) {
    const std::string gpu = d.contains("gpu") && d["gpu"].is_object() ? d["gpu"].value("name", "") : "CPU";
    return d["options"].value("model", "") + " on " + gpu;
  };
  std::string out = "A: " + label(a) + "\nB: " + label(b) + "\n";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-8s %14s %14s %8s %14s %14s %8s\n", "quant", "A tok/s", "B tok/s", "B/A",
                "A decode", "B decode", "B/A");
  out += buf;
  for (const auto& ma : a["measurements"]) {
    for (const auto& mb : b["measurements"]) {
      if (ma.value("quant", "") != mb.value("quant", "")) continue;
      const double ta = mean_of(ma["tokens_per_s"]), tb = mean_of(mb["tokens_per_s"]);
      const double da = mean_of(ma["decode_tok_s"]), db = mean_of(mb["decode_tok_s"]);
      std::snprintf(buf, sizeof buf, "%-8s %14.2f %14.2f %7.2fx %14.2f %14.2f %7.2fx\n",
                    ma.value("quant", "").c_str(), ta, tb, ta > 0 ? tb / ta : 0.0, da, db,
                    da > 0 ? db / da : 0.0);
      out += buf;
    }
  }
  return out;
}

}  // namespace fp4lab
