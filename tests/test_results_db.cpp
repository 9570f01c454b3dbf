#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/json_util.h"
#include "model/inspect.h"
#include "model/presets.h"
#include "report/results_db.h"
#include "report/roofline.h"
#include "test_util.h"

using namespace fp4lab;
using fp4lab::test::TempDir;

namespace {
json doc(const std::string& model, double tok_bf16, double tok_fp4) {
  return json::parse(R"({"schema":"fp4lab.bench/1","tool":{"name":"fp4lab","version":"0.1.0","commit":"abc"},
    "timestamp":"2026-11-25T00:00:00Z","options":{"model":")" +
                     model + R"(","backend":"cpu"},"gpu":null,
    "measurements":[{"quant":"bf16","tokens_per_s":[)" +
                     std::to_string(tok_bf16) + R"(],"decode_tok_s":[1.0]},
                    {"quant":"nvfp4","tokens_per_s":[)" +
                     std::to_string(tok_fp4) + R"(],"decode_tok_s":[2.0]}]})");
}
int count(const std::string& path, const char* table) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, (std::string("SELECT COUNT(*) FROM ") + table).c_str(), -1, &st, nullptr);
  sqlite3_step(st);
  const int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}
}  // namespace

TEST(ResultsDb, MigratesAnOlderSchema) {
  TempDir d;
  const std::string p = d.str("r.db");
  {
    // A version-1 store as an earlier fp4lab left it.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(p.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(
            db,
            "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, model TEXT "
            "NOT NULL, backend TEXT NOT NULL, gpu TEXT, tool_version TEXT, git_commit TEXT, document TEXT "
            "NOT NULL);"
            "CREATE TABLE measurements (run_id INTEGER NOT NULL, quant TEXT NOT NULL, tokens_per_s REAL,"
            " decode_tok_s REAL, prefill_tok_s REAL, tpot_s_p50 REAL, ttft_s_p50 REAL, weight_bytes REAL);"
            "PRAGMA user_version = 1;",
            nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
  }
  ResultsDb db(p);
  EXPECT_EQ(db.schema_version(), ResultsDb::kSchemaVersion);
  EXPECT_EQ(db.insert_run(doc("m", 1, 2)), 1);
}

TEST(ResultsDb, InterruptedInsertLeavesNothing) {
  TempDir d;
  const std::string p = d.str("r.db");
  {
    ResultsDb db(p);
    db.insert_run(doc("kept", 10, 20));
    EXPECT_THROW(db.insert_run(doc("lost", 1, 2), true), Error);
    EXPECT_THROW(db.insert_run(json::parse(R"({"options":{}})")), Error);
  }
  EXPECT_EQ(count(p, "runs"), 1);
  EXPECT_EQ(count(p, "measurements"), 2);
  ResultsDb db(p);
  const auto runs = db.list_runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].model, "kept");
}

TEST(ResultsDb, NewerSchemaIsRefused) {
  TempDir d;
  const std::string p = d.str("r.db");
  {
    sqlite3* db = nullptr;
    sqlite3_open(p.c_str(), &db);
    sqlite3_exec(db, "PRAGMA user_version = 99;", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  try {
    ResultsDb db(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos);
  }
}

TEST(ResultsDb, CompareShowsRatios) {
  const std::string c = compare_runs(doc("m", 100, 150), doc("m", 100, 300));
  EXPECT_NE(c.find("nvfp4"), std::string::npos);
  EXPECT_NE(c.find("2.00x"), std::string::npos) << c;
}

TEST(ResultsDb, BenchStoresARunTheCliCanShow) {
  TempDir d;
  const std::string db = d.str("r.db");
  auto r = fp4lab::test::run_fp4lab(
      "bench --backend cpu --model preset:tiny --input-len 8 --output-len 4 --reps 1 "
      "--warmup 0 --db " +
      db + " --json " + d.str("b.json"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("Tokens/sec"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stored as run 1"), std::string::npos) << r.out;
  const json j = read_json_file(d.str("b.json"));
  EXPECT_EQ(j["schema"], "fp4lab.bench/1");
  EXPECT_EQ(j["measurements"].size(), 2u);
  EXPECT_EQ(j["options"]["input_len"], 8);
  r = fp4lab::test::run_fp4lab("results --db " + db + " list");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("preset:tiny"), std::string::npos) << r.out;
  r = fp4lab::test::run_fp4lab("results --db " + db + " compare 1 1");
  EXPECT_NE(r.out.find("1.00x"), std::string::npos) << r.out;
  r = fp4lab::test::run_fp4lab("results --db " + db + " show 7");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no run with id 7"), std::string::npos) << r.out;
}

TEST(Explain, PredictsFromDatasheets) {
  auto r = fp4lab::test::run_fp4lab("explain");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("PREDICTIONS"), std::string::npos);
  // Nemotron-Nano-9B-v2: 16.6 GB BF16 weights do not fit an 8 GB laptop GPU; 5.83 GB of NVFP4 do.
  const auto row = r.out.find("RTX 4060 Laptop");
  ASSERT_NE(row, std::string::npos);
  const std::string line = r.out.substr(row, r.out.find('\n', row) - row);
  EXPECT_NE(line.find("no fit"), std::string::npos) << line;
  EXPECT_NE(line.find("w4a16-sm80"), std::string::npos) << line;
  // H100 SXM at batch 1: 3350 GB/s over 16.89 GB (BF16) and 6.12 GB (NVFP4) per step.
  const auto h = r.out.find("H100 SXM");
  const std::string hl = r.out.substr(h, r.out.find('\n', h) - h);
  EXPECT_NE(hl.find(" 198 "), std::string::npos) << hl;
  EXPECT_NE(hl.find(" 547 "), std::string::npos) << hl;
  r = fp4lab::test::run_fp4lab("explain --gpu 'Voodoo 2'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no datasheet entry"), std::string::npos) << r.out;
  // Tensor parallelism: two H100s over NVLink at batch 1 on the 70B preset, against the roofline model
  // computed here: the all-reduces keep the prediction below twice one GPU's.
  r = fp4lab::test::run_fp4lab("explain --model preset:llama-3.3-70b --gpu 'H100 SXM' --tp 2");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("tensor parallel over 2 GPUs"), std::string::npos) << r.out;
  const auto p70 = find_preset("llama-3.3-70b");
  ASSERT_TRUE(p70);
  const ModelSummary s70 = summarize_config("llama-3.3-70b", p70->config);
  const GpuSpec* h100 = find_gpu_spec("H100 SXM");
  const DecodeBytes one = decode_bytes_tp(p70->config, s70.nvfp4_plan, 256, 1),
                    two = decode_bytes_tp(p70->config, s70.nvfp4_plan, 256, 2);
  const double t1 = roofline_decode_tok_s(one, 1, h100->bandwidth_gbs, h100->bf16_tflops);
  const double t2 =
      roofline_decode_tok_s(two, 1, h100->bandwidth_gbs, h100->bf16_tflops, &comm_spec("nvlink"));
  EXPECT_LT(t2, 2 * t1);
  EXPECT_GT(t2, t1);
  const auto hrow = r.out.find("H100 SXM");
  ASSERT_NE(hrow, std::string::npos);
  const std::string tl = r.out.substr(hrow, r.out.find('\n', hrow) - hrow);
  EXPECT_NE(tl.find(" " + std::to_string(static_cast<int>(t2)) + " "), std::string::npos) << tl;
  r = fp4lab::test::run_fp4lab("explain --tp 2 --link infiniband");
  EXPECT_NE(r.status, 0);
}

TEST(ResultsDb, Gsm8kRunsStorePerQuestionRowsAndComparePaired) {
  TempDir d;
  const std::string p = d.str("r.db");
  auto gdoc = [](const std::string& quant, const std::vector<bool>& correct) {
    json j =
        json::parse(R"({"schema":"fp4lab.gsm8k/1","tool":{"name":"fp4lab","version":"0.1.0","commit":"abc"},
      "timestamp":"2026-11-25T00:00:00Z","options":{"model":"m","backend":"cpu","task":"gsm8k"},"gpu":null})");
    j["options"]["quant"] = quant;
    j["records"] = json::array();
    for (size_t i = 0; i < correct.size(); ++i)
      j["records"].push_back({{"id", i},
                              {"correct", {{"strict-match", correct[i]}, {"flexible-extract", correct[i]}}},
                              {"extracted", {{"strict-match", "1"}, {"flexible-extract", "1"}}}});
    return j;
  };
  std::vector<bool> a(12, true), b(12, true);
  for (int i = 0; i < 8; ++i) b[i] = false;  // 8 questions lost by B, none gained
  ResultsDb db(p);
  const auto ia = db.insert_run(gdoc("bf16", a));
  const auto ib = db.insert_run(gdoc("nvfp4", b));
  EXPECT_EQ(count(p, "eval_records"), 2 * 12 * 2);
  const std::string cmp = compare_runs(db.get_run(ia), db.get_run(ib));
  EXPECT_NE(cmp.find("right only in A 8, only in B 0"), std::string::npos) << cmp;
  EXPECT_NE(cmp.find("McNemar p = 0.0078"), std::string::npos) << cmp;  // 2 * 0.5^8
  EXPECT_THROW(compare_runs(db.get_run(ia), doc("m", 1, 2)), Error);
}

namespace {
// Starts fp4lab with arguments (no shell), returns its pid.
pid_t spawn_fp4lab(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv{const_cast<char*>(FP4LAB_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    freopen(log.c_str(), "w", stderr);
    freopen("/dev/null", "w", stdout);
    execv(FP4LAB_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}
}  // namespace

TEST(ResultsDb, CtrlCKeepsFinishedRepetitionsAndKillLeavesNoHalfRun) {
  TempDir d;
  const std::vector<std::string> args{"bench",
                                      "--backend",
                                      "cpu",
                                      "--model",
                                      "preset:tiny-nemotron-h",
                                      "--input-len",
                                      "32",
                                      "--output-len",
                                      "32",
                                      "--reps",
                                      "1000",
                                      "--warmup",
                                      "0",
                                      "--db",
                                      d.str("r.db"),
                                      "--json",
                                      d.str("out.json")};
  pid_t pid = spawn_fp4lab(args, d.str("log1"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  kill(pid, SIGINT);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 130);
  const json j = read_json_file(d.str("out.json"));
  EXPECT_TRUE(j.value("interrupted", false));
  ASSERT_GE(j["measurements"].size(), 1u);
  EXPECT_GE(j["measurements"][0]["total_s"].size(), 1u);
  EXPECT_LT(j["measurements"][0]["total_s"].size(), 1000u);
  EXPECT_EQ(count(d.str("r.db"), "runs"), 1);
  // SIGKILL at arbitrary moments: whatever is in the store is whole (each run has its measurement rows).
  for (int ms : {200, 700, 1300}) {
    pid = spawn_fp4lab(
        {"bench", "--backend", "cpu", "--model", "preset:tiny", "--input-len", "8", "--output-len", "4",
         "--reps", "1", "--warmup", "0", "--sweep-batch", "1,2,1,2,1,2,1,2", "--db", d.str("r.db")},
        d.str("log2"));
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(d.str("r.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM runs WHERE id NOT IN (SELECT run_id FROM measurements)", -1,
                     &q, nullptr);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(q, 0), 0) << "a run row without its measurements";
  sqlite3_finalize(q);
  sqlite3_close(db);
  ResultsDb reopened(d.str("r.db"));  // and the store still opens
  EXPECT_GE(reopened.list_runs().size(), 1u);
}

TEST(ResultsDb, BenchDocumentFollowsTheDocumentedSchema) {
  // docs/results-schema.md is the contract: every option it lists is in `options`, every measurement field it
  // names is in each measurement, with the documented types.
  TempDir d;
  auto r = fp4lab::test::run_fp4lab(
      "bench --backend cpu --model preset:tiny --input-len 8 --output-len 4 --reps 2 "
      "--warmup 0 --no-db --json " +
      d.str("b.json"));
  ASSERT_EQ(r.status, 0) << r.out;
  const json j = read_json_file(d.str("b.json"));
  const std::string doc = read_text_file(std::string(FP4LAB_SOURCE_DIR) + "/docs/results-schema.md");
  auto backticked = [](const std::string& s) {
    std::vector<std::string> out;
    for (size_t a = s.find('`'); a != std::string::npos; a = s.find('`', a + 1)) {
      const size_t b = s.find('`', a + 1);
      if (b == std::string::npos) break;
      out.push_back(s.substr(a + 1, b - a - 1));
      a = b;
    }
    return out;
  };
  // The options row of the table.
  const size_t orow = doc.find("| `options` |");
  ASSERT_NE(orow, std::string::npos);
  const std::string options_line = doc.substr(orow, doc.find('\n', orow) - orow);
  int checked = 0;
  for (const auto& k : backticked(options_line)) {
    if (k == "options") continue;
    EXPECT_TRUE(j["options"].contains(k)) << "documented option missing from the document: " << k;
    ++checked;
  }
  EXPECT_GE(checked, 12);
  for (const char* k : {"schema", "tool", "timestamp", "host", "options", "gpu", "measurements"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_TRUE(j["gpu"].is_null());  // CPU run
  for (const char* k : {"name", "version", "commit"}) EXPECT_TRUE(j["tool"][k].is_string()) << k;
  // The measurement paragraph.
  const size_t mp = doc.find("Each measurement:");
  ASSERT_NE(mp, std::string::npos);
  const size_t mp_end = doc.find("Every run is also stored", mp);
  ASSERT_NE(mp_end, std::string::npos);
  const std::string para = doc.substr(mp, mp_end - mp);
  for (const auto& m : j["measurements"]) {
    for (const char* k : {"tokens_per_s", "total_s", "prefill_tok_s", "decode_tok_s"}) {
      ASSERT_TRUE(m[k].is_array()) << k;
      EXPECT_EQ(m[k].size(), 2u) << k << ": one entry per repetition";
    }
    for (const auto& k : backticked(para)) {
      if (k.empty() || k[0] == '-' || k.find(' ') != std::string::npos || k.find('.') != std::string::npos ||
          k.find('(') != std::string::npos)
        continue;  // prose or a flag, not a key
      if (k == "sm_mhz" || k == "mem_mhz" || k == "temperature_c" || k == "power_w" ||
          k == "throttle_reasons" || k == "copy_bandwidth_gbs" || k == "bf16_tflops")
        continue;  // nested in gpu_before/after, or top-level GPU-run fields
      EXPECT_TRUE(m.contains(k)) << "documented measurement field missing: " << k;
    }
    const size_t lp = doc.find("The `load` object of each measurement");
    ASSERT_NE(lp, std::string::npos);
    const std::string load_para = doc.substr(lp, doc.find("\n\n", lp) - lp);
    for (const auto& k : backticked(load_para))
      if (k.find('_') != std::string::npos && k.find(' ') == std::string::npos) {
        EXPECT_TRUE(m["load"].contains(k)) << "documented load field missing: " << k;
      }
    EXPECT_EQ(m["load"]["cache"], "preset");
  }
}
