// `fp4lab report`: results of two machines (H100 runs kept in tests/data/results and a CPU run made here)
// merged into one Markdown + HTML report; the page is rendered in headless Chromium, which must find every
// chart drawn and produce a screenshot that is not blank.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/error.h"
#include "report/report.h"
#include "report/results_db.h"
#include "common/json_util.h"
#include "test_util.h"

using namespace fp4lab;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  return read_text_file(p.string());
}

std::string run(const std::string& cmd) {
  return test::run_command(cmd + " 2>/dev/null").out;
}

TEST(Report, MergesMachinesAndRendersInChromium) {
  test::TempDir d;
  const std::string data = std::string(FP4LAB_SOURCE_DIR) + "/tests/data/results/";
  // A CPU result made now, through the CLI, stored in a DB as well as JSON.
  const auto r = test::run_fp4lab(
      "bench --backend cpu --model preset:tiny --input-len 8 --output-len 4 --reps 1 "
      "--warmup 0 --batch 2 --json " +
      d.str("cpu.json") + " --db " + d.str("r.db"));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto rep = test::run_fp4lab(
      "report " + d.str("cpu.json") + " " + data + "bench-nemotron-b1-batched-h100.json " + data +
      "bench-nemotron-b32-h100.json " + data + "gsm8k-nemotron-preset-bf16-h100.summary.json " + data +
      "sweep-llama-h200.json " + data + "bench-llama8b-tp2-h200x2.json --out " + d.str("rep"));
  ASSERT_EQ(rep.status, 0) << rep.out;
  const std::string md = slurp(d.str("rep/report.md"));
  EXPECT_NE(md.find("NVIDIA H100 80GB HBM3"), std::string::npos);
  EXPECT_NE(md.find("| CPU |"), std::string::npos) << md.substr(0, 2000);
  // A tensor-parallel run is its own machine, not merged into the single-GPU H200 results.
  EXPECT_NE(md.find("2 x NVIDIA H200"), std::string::npos);
  EXPECT_NE(md.find("## Accuracy"), std::string::npos);
  // The H200 sweep (batch 1, 8, 32, profiled): the explanation carries its numbers (decode 181.9 / 134.2 at
  // batch 1, 1639.9 / 2277.3 at batch 32).
  const auto why = md.find("NVIDIA H200 / llama-3.1-8b: NVFP4 decodes ");
  ASSERT_NE(why, std::string::npos) << md.substr(0, 3000);
  const std::string line = md.substr(why, md.find('\n', why) - why);
  EXPECT_NE(line.find("1.36x as fast as BF16 at batch 1 and 0.72x at batch 32"), std::string::npos) << line;
  EXPECT_NE(line.find("Its linear layers take "), std::string::npos) << line;
  EXPECT_NE(line.find("runs the same kernels in both formats"), std::string::npos) << line;
  for (const char* c : {"throughput-all-gpus", "speedup-all-gpus", "speedup-vs-batch", "measured-vs-roofline",
                        "accuracy", "throughput-CPU"}) {
    EXPECT_GT(fs::file_size(d.str(std::string("rep/charts/") + c + ".png")), 2000u) << c;
    EXPECT_NE(slurp(d.str(std::string("rep/charts/") + c + ".svg")).find("<svg"), std::string::npos) << c;
  }
  const std::string html = slurp(d.str("rep/report.html"));
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org"));  // only SVG namespaces, nothing to fetch
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  // The DB reads back as a report input too.
  const auto from_db = load_result_docs({d.str("r.db")});
  EXPECT_EQ(from_db.size(), 1u);
  EXPECT_THROW(load_result_docs({d.str("nope.json")}), Error);

  ASSERT_FALSE(run("command -v chromium").empty())
      << "chromium not installed: scripts/install-deps.sh --test installs it";
  const std::string flags =
      "chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,3000 ";
  const std::string dom = run(flags + "--dump-dom file://" + d.str("rep/report.html"));
  size_t figures = 0;
  for (size_t p = html.find("class=\"chart\""); p != std::string::npos;
       p = html.find("class=\"chart\"", p + 1))
    ++figures;
  EXPECT_NE(dom.find("charts-ok " + std::to_string(figures) + "/" + std::to_string(figures)),
            std::string::npos)
      << "Chromium did not draw every chart: "
      << dom.substr(dom.find("chart-check") == std::string::npos ? 0 : dom.find("chart-check"), 80);
  run(flags + "--screenshot=" + d.str("shot.png") + " file://" + d.str("rep/report.html"));
  std::ofstream(d.str("blank.html")) << "<html><body></body></html>";
  run(flags + "--screenshot=" + d.str("blank.png") + " file://" + d.str("blank.html"));
  ASSERT_TRUE(fs::exists(d.str("shot.png")));
  // A blank page compresses to a few KB; tables and charts make the PNG many times larger.
  EXPECT_GT(fs::file_size(d.str("shot.png")), 5 * fs::file_size(d.str("blank.png")));
}

}  // namespace

// Result files come from other machines: their labels reach the gnuplot scripts only as inert text. A GPU name
// with a newline, quotes, a backslash, a backquote and system() calls must not run anything.
TEST(Report, LabelsFromResultFilesCannotRunCommands) {
  test::TempDir d;
  json doc = read_json_file(std::string(FP4LAB_SOURCE_DIR) + "/tests/data/results/bench-nemotron-b32-h100.json");
  const std::string marker = d.str("pwned");
  doc["gpu"]["name"] = "H100'\nsystem('touch " + marker + "')\nset output '" + marker + "2'\n\"`touch " + marker +
                       "3`\\";
  doc["options"]["model"] = "m\nsystem(\"touch " + marker + "4\")";
  doc["measurements"][0]["quant"] = "bf16'\n!touch " + marker + "5\n";
  write_text_file(d.str("evil.json"), doc.dump());
  const auto rep = test::run_fp4lab("report " + d.str("evil.json") + " --out " + d.str("rep"));
  ASSERT_EQ(rep.status, 0) << rep.out;
  for (const char* suffix : {"", "2", "3", "4", "5"})
    EXPECT_FALSE(fs::exists(marker + suffix)) << "a label ran a command: " << marker + suffix;
  for (const auto& e : fs::directory_iterator(d.str("rep/charts")))
    if (e.path().extension() == ".gp") {
      const std::string gp = slurp(e.path());
      std::istringstream in(gp);
      std::string line;
      while (std::getline(in, line)) {
        EXPECT_NE(line.rfind("system", 0), 0u) << e.path() << ": " << line;
        EXPECT_NE(line.rfind("!", 0), 0u) << e.path() << ": " << line;
      }
      EXPECT_EQ(gp.find('`'), std::string::npos) << e.path();
    }
}

// Fields of the wrong type in a result file are one error naming the file and the field.
TEST(Report, MalformedResultFilesNameTheField) {
  test::TempDir d;
  const json good = read_json_file(std::string(FP4LAB_SOURCE_DIR) + "/tests/data/results/bench-nemotron-b32-h100.json");
  auto expect_error = [&](json doc, const std::string& field) {
    write_text_file(d.str("bad.json"), doc.dump());
    const auto r = test::run_fp4lab("report " + d.str("bad.json") + " --out " + d.str("rep"));
    EXPECT_NE(r.status, 0) << field;
    EXPECT_NE(r.out.find("bad.json: field '" + field + "'"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("json.exception"), std::string::npos) << r.out;
  };
  json doc = good;
  doc["measurements"][0]["tokens_per_s"] = {"fast"};
  expect_error(doc, "measurements[0].tokens_per_s");
  doc = good;
  doc["gpu"]["name"] = 42;
  expect_error(doc, "gpu.name");
  doc = good;
  doc["measurements"][1]["quant"] = json::object();
  expect_error(doc, "measurements[1].quant");
  doc = good;
  doc["options"]["batch"] = "32";
  expect_error(doc, "options.batch");
  doc = good;
  doc["schema"] = 3;
  write_text_file(d.str("bad.json"), doc.dump());
  const auto r = test::run_fp4lab("report " + d.str("bad.json") + " --out " + d.str("rep"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("without a schema string"), std::string::npos) << r.out;
}

// Serving runs of two models under one server label (fp4lab-nvfp4 serving both presets) are two series of
// the serving charts, not one overwritten by the other.
TEST(Report, ServingChartsKeepEachModelApart) {
  test::TempDir d;
  json docs = json::array();
  for (const auto& [model, tput] :
       {std::pair{"preset:llama-3.1-8b", 5843.0}, {"preset:nemotron-nano-9b-v2", 2833.0}}) {
    json r = {{"model_id", model},     {"max_concurrency", 32},     {"request_rate", "inf"},
              {"completed", 64},       {"output_throughput", tput}, {"request_throughput", 10.0},
              {"mean_ttft_ms", 200.0}, {"mean_tpot_ms", 5.0},       {"p99_tpot_ms", 6.0},
              {"p99_itl_ms", 9.0}};
    docs.push_back({{"schema", "fp4lab.bench_serve/1"},
                    {"label", "fp4lab-nvfp4"},
                    {"gpu", {{"name", "NVIDIA H100 80GB HBM3"}}},
                    {"options", {{"model", model}, {"quant", "nvfp4"}}},
                    {"results", json::array({r})}});
  }
  write_text_file(d.str("serve.json"), docs.dump());
  const auto rep = test::run_fp4lab("report " + d.str("serve.json") + " --out " + d.str("rep"));
  ASSERT_EQ(rep.status, 0) << rep.out;
  const std::string dat = slurp(d.str("rep/charts/serving-throughput.dat"));
  EXPECT_NE(dat.find("5843"), std::string::npos) << dat;
  EXPECT_NE(dat.find("2833"), std::string::npos) << dat;
  const std::string gp = slurp(d.str("rep/charts/serving-throughput.gp"));
  EXPECT_NE(gp.find("llama-3.1-8b"), std::string::npos) << gp;
  EXPECT_NE(gp.find("nemotron-nano-9b-v2"), std::string::npos) << gp;
}

// A three-way run (bench's default on GPUs with FP8 tensor cores): the throughput charts get an FP8 bar and
// the speedup charts an FP8 / BF16 series next to NVFP4's.
TEST(Report, Fp8RunsGetTheirOwnBarsAndSpeedups) {
  test::TempDir d;
  json doc =
      read_json_file(std::string(FP4LAB_SOURCE_DIR) + "/tests/data/results/bench-nemotron-b32-h100.json");
  json fp8 = doc["measurements"][0];
  ASSERT_EQ(fp8["quant"], "bf16");
  fp8["quant"] = "fp8";
  fp8["decode_tok_s"] = json::array({1.7 * mean_of(fp8["decode_tok_s"])});
  doc["measurements"].push_back(fp8);
  write_text_file(d.str("three.json"), doc.dump());
  const auto rep = test::run_fp4lab("report " + d.str("three.json") + " --out " + d.str("rep"));
  ASSERT_EQ(rep.status, 0) << rep.out;
  const std::string sp = slurp(d.str("rep/charts/speedup-all-gpus.gp"));
  EXPECT_NE(sp.find("fp8 / bf16"), std::string::npos) << sp;
  EXPECT_NE(sp.find("nvfp4 / bf16"), std::string::npos) << sp;
  const std::string dat = slurp(d.str("rep/charts/speedup-all-gpus.dat"));
  EXPECT_NE(dat.find(" 1.7"), std::string::npos) << dat;
  const std::string tp = slurp(d.str("rep/charts/throughput-all-gpus.gp"));
  EXPECT_NE(tp.find("fp8"), std::string::npos) << tp;
}
