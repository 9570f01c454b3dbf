#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "report/results_db.h"

namespace fp4lab {

namespace fs = std::filesystem;

namespace {

// The machine a result ran on: the GPU's name, with the count for tensor-parallel runs ("2 x NVIDIA H200"),
// so that they are neither merged with nor mistaken for single-GPU runs of the same card.
std::string gpu_name(const json& d) {
  if (!d.contains("gpu") || !d["gpu"].is_object()) return "CPU";
  const std::string name = d["gpu"].value("name", "GPU");
  const json& count = d.contains("gpu_count") ? d["gpu_count"] : json(1);
  return count.is_number_integer() && count.get<int>() > 1 ? std::to_string(count.get<int>()) + " x " + name
                                                           : name;
}

std::string model_name(const json& d) {
  std::string m = d["options"].value("model", "?");
  if (m.rfind("preset:", 0) == 0) m = m.substr(7);
  const auto slash = m.find_last_of('/');
  return slash == std::string::npos || m.find("--") == std::string::npos ? m : m.substr(slash + 1);
}

bool is_bench(const json& d) {
  return d.value("schema", "").rfind("fp4lab.bench/", 0) == 0;
}
bool is_gsm8k(const json& d) {
  return d.value("schema", "").rfind("fp4lab.gsm8k/", 0) == 0;
}
bool is_serve(const json& d) {
  return d.value("schema", "").rfind("fp4lab.bench_serve/", 0) == 0;
}
int batch_of(const json& d) {
  return d["options"].value("batch", 1);
}

const json* measurement(const json& d, const std::string& quant) {
  for (const auto& m : d["measurements"])
    if (m.value("quant", "") == quant) return &m;
  return nullptr;
}

std::string slug(std::string s) {
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '-';
  return s;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Text from result files (GPU names, models, quantizations) is untrusted: a newline inside a gnuplot string
// ends the command and starts another (gnuplot's system() runs shell commands), a quote ends the string, a
// backquote is command substitution. Only printable characters other than those stay (UTF-8 bytes too).
std::string plot_text(std::string s) {
  s.erase(std::remove_if(s.begin(), s.end(),
                         [](char ch) {
                           const auto u = static_cast<unsigned char>(ch);
                           return u < 0x20 || u == 0x7f || ch == '\'' || ch == '"' || ch == '`' || ch == '\\';
                         }),
          s.end());
  return s;
}

// A gnuplot single-quoted string of untrusted text.
std::string gq(const std::string& s) {
  return "'" + plot_text(s) + "'";
}

struct Chart {
  std::string name, title, ylabel;
  std::vector<std::string> series;                                // bar series (columns)
  std::vector<std::pair<std::string, std::vector<double>>> rows;  // x label -> one value per series
  bool lines = false;                                             // x labels are numbers: a line chart
  std::vector<std::vector<double>> errors;                        // optional error bars per row/series
};

void render(const Chart& c, const fs::path& dir) {
  const fs::path dat = dir / (c.name + ".dat"), gp = dir / (c.name + ".gp");
  {
    std::ostringstream f;
    for (size_t r = 0; r < c.rows.size(); ++r) {
      const std::string label = plot_text(c.rows[r].first);
      if (c.lines)
        f << label;  // numeric x (batch size)
      else
        f << '"' << label << '"';
      for (size_t s = 0; s < c.rows[r].second.size(); ++s) {
        f << ' ' << c.rows[r].second[s];
        if (!c.errors.empty()) f << ' ' << c.errors[r][s];
      }
      f << '\n';
    }
    write_text_file(dat.string(), f.str());
  }
  std::ostringstream g;
  g << "set datafile separator whitespace\nset title " << gq(c.title) << "\nset ylabel " << gq(c.ylabel)
    << "\nset grid ytics\nset key outside bottom center horizontal\nset yrange [0:*]\n";
  if (c.lines) {
    g << "set xlabel 'batch size'\nset logscale x 2\nset offsets graph 0.05, graph 0.05, 0, 0\n";
  } else {
    g << "set style data histograms\nset style histogram "
      << (c.errors.empty() ? "clustered gap 1" : "errorbars gap 1")
      << "\nset style fill solid 0.85 border -1\nset boxwidth 0.9\nset xtics rotate by -20\n";
  }
  auto plot = [&](const std::string& term, const fs::path& out) {
    g << "set terminal " << term << "\nset output " << gq(out.string()) << "\nplot ";
    const int stride = c.errors.empty() ? 1 : 2;
    for (size_t s = 0; s < c.series.size(); ++s) {
      const int col = 2 + static_cast<int>(s) * stride;
      if (s) g << ", ";
      if (c.lines)
        g << gq(dat.string()) << " using 1:" << col << " with linespoints lw 2 pt 7 title "
          << gq(c.series[s]);
      else if (stride == 2)
        g << gq(dat.string()) << " using " << col << ":" << col + 1 << ":xtic(1) title " << gq(c.series[s]);
      else
        g << gq(dat.string()) << " using " << col << ":xtic(1) title " << gq(c.series[s]);
    }
    g << "\n";
  };
  plot("svg size 900,480 dynamic font 'sans,12' background rgb 'white'", dir / (c.name + ".svg"));
  plot("pngcairo size 900,480 font 'sans,10' background rgb 'white'", dir / (c.name + ".png"));
  write_text_file(gp.string(), g.str());
  const std::string cmd = "gnuplot " + gq(gp.string()) + " 2>" + gq((dir / (c.name + ".log")).string());
  if (std::system(cmd.c_str()) != 0)
    throw Error("gnuplot failed on " + gp.string() + " (see " + (dir / (c.name + ".log")).string() +
                "); is gnuplot installed?");
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else if (c == '"')
      o += "&quot;";
    else
      o += c;
  }
  return o;
}

// A table rendered both ways.
struct Table {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
  std::string md() const {
    std::string s = "|";
    for (const auto& h : head) s += " " + h + " |";
    s += "\n|";
    for (size_t i = 0; i < head.size(); ++i) s += i ? "---:|" : "---|";
    s += "\n";
    for (const auto& r : rows) {
      s += "|";
      for (const auto& c : r) s += " " + c + " |";
      s += "\n";
    }
    return s;
  }
  std::string html() const {
    std::string s = "<table><tr>";
    for (const auto& h : head) s += "<th>" + html_escape(h) + "</th>";
    s += "</tr>";
    for (const auto& r : rows) {
      s += "<tr>";
      for (const auto& c : r) s += "<td>" + html_escape(c) + "</td>";
      s += "</tr>";
    }
    return s + "</table>";
  }
};

}  // namespace

namespace {

// Result documents come from other machines: the fields the report reads are checked against
// docs/results-schema.md before anything uses them, so a wrong type is one error naming the file and the
// field, not a library exception halfway through the report.
void validate_doc(const json& d, const std::string& src) {
  auto fail = [&](const std::string& field, const char* want) {
    throw Error(src + ": field '" + field + "' must be " + want + " (docs/results-schema.md)");
  };
  auto number = [&](const json& o, const std::string& k, const std::string& where) {
    if (o.contains(k) && !o[k].is_null() && !o[k].is_number()) fail(where + k, "a number");
  };
  auto text = [&](const json& o, const std::string& k, const std::string& where) {
    if (o.contains(k) && !o[k].is_null() && !o[k].is_string()) fail(where + k, "a string");
  };
  if (!d.is_object()) fail("(document)", "an object");
  if (!d.contains("options") || !d["options"].is_object()) fail("options", "an object");
  const json& opt = d["options"];
  for (const char* k : {"model", "backend", "task", "tokenizer", "data"}) text(opt, k, "options.");
  for (const char* k : {"batch", "input_len", "output_len", "reps", "limit", "tp"}) number(opt, k, "options.");
  if (d.contains("gpu") && !d["gpu"].is_null()) {
    if (!d["gpu"].is_object()) fail("gpu", "an object or null");
    for (const char* k : {"name", "compute_capability", "nvfp4_path"}) text(d["gpu"], k, "gpu.");
    for (const char* k : {"memory_bytes", "peak_bandwidth_gbs", "sm_count", "driver", "cuda_runtime"})
      number(d["gpu"], k, "gpu.");
  }
  for (const char* k : {"copy_bandwidth_gbs", "bf16_tflops", "gpu_count"}) number(d, k, "");
  text(d, "interconnect", "");
  if (is_bench(d)) {
    if (!d.contains("measurements") || !d["measurements"].is_array()) fail("measurements", "a list");
    for (size_t i = 0; i < d["measurements"].size(); ++i) {
      const json& m = d["measurements"][i];
      const std::string at = "measurements[" + std::to_string(i) + "].";
      if (!m.is_object()) fail(at, "an object");
      if (!m.contains("quant") || !m["quant"].is_string()) fail(at + "quant", "a string");
      for (const char* k : {"tokens_per_s", "total_s", "prefill_tok_s", "decode_tok_s"}) {
        if (!m.contains(k)) continue;
        if (!m[k].is_array()) fail(at + k, "a list of numbers");
        for (const auto& v : m[k])
          if (!v.is_number()) fail(at + k, "a list of numbers");
      }
      for (const auto& [k, v] : m.items())
        if (k != "quant" && !v.is_array() && !v.is_object() && !v.is_null() && !v.is_number() && !v.is_boolean())
          fail(at + k, "a number");
      for (const char* k : {"op_ms", "decode_step"})
        if (m.contains(k) && !m[k].is_null()) {
          if (!m[k].is_object()) fail(at + k, "an object of numbers");
          for (const auto& [kk, v] : m[k].items())
            if (!v.is_number()) fail(at + k + "." + kk, "a number");
        }
    }
  } else if (d.contains("summary") && !d["summary"].is_object()) {
    fail("summary", "an object");
  }
  if (is_serve(d)) {
    if (!d.contains("results") || !d["results"].is_array()) fail("results", "a list");
    for (size_t i = 0; i < d["results"].size(); ++i) {
      const json& r = d["results"][i];
      const std::string at = "results[" + std::to_string(i) + "].";
      if (!r.is_object()) fail(at, "an object");
      for (const char* k : {"output_throughput", "request_throughput", "mean_ttft_ms", "mean_tpot_ms",
                            "p99_tpot_ms", "completed"})
        if (!r.contains(k) || !r[k].is_number()) fail(at + k, "a number");
    }
  }
}

}  // namespace

std::vector<json> load_result_docs(const std::vector<std::string>& paths) {
  std::vector<json> docs;
  auto add = [&](const json& j, const std::string& src) {
    const size_t first = docs.size();
    if (j.is_array()) {
      for (const auto& x : j) docs.push_back(x);
    } else if (j.is_object() && j.contains("runs") && j["runs"].is_array()) {
      for (const auto& x : j["runs"]) docs.push_back(x);
    } else if (j.is_object() && j.contains("schema")) {
      docs.push_back(j);
    } else {
      throw Error(src + ": not an fp4lab results document");
    }
    for (size_t i = first; i < docs.size(); ++i) {
      if (!docs[i].is_object() || !docs[i].contains("schema") || !docs[i]["schema"].is_string())
        throw Error(src + ": a results document without a schema string");
      if (!(is_bench(docs[i]) || is_gsm8k(docs[i]) || is_serve(docs[i])))
        throw Error(src + ": a results document with an unknown schema (" +
                    docs[i]["schema"].get<std::string>() + ")");
      validate_doc(docs[i], src);
    }
  };
  for (const auto& p : paths) {
    if (!fs::exists(p)) throw Error(p + ": no such file");
    if (fs::path(p).extension() == ".db") {
      ResultsDb db(p);
      json runs = json::array();
      for (const auto& r : db.list_runs()) runs.push_back(db.get_run(r.id));
      add(runs, p);
    } else {
      add(read_json_file(p), p);
    }
  }
  for (const auto& d : docs)
    if (!d.is_object() || !d.contains("options") || !(is_bench(d) || is_gsm8k(d) || is_serve(d)))
      throw Error("a results document without options or with an unknown schema (" +
                  d.value("schema", "none") + ")");
  return docs;
}

// Per (GPU, model) with at least two batch sizes and both formats: why NVFP4's gain moves with the batch, in
// numbers the runs carry (decode speedups, the linear layers' GPU time from --profile, the weight-byte ratio,
// each format's share of its roofline).
std::vector<std::string> batch_explanations(const std::vector<const json*>& bench) {
  struct Point {
    double speedup = 0, lin_ratio = 0, rest_share = 0, roof4 = 0, roof16 = 0, byte_ratio = 0;
    bool profiled = false;
  };
  std::map<std::pair<std::string, std::string>, std::map<int, Point>> groups;
  auto linear_ms = [](const json& m, double* total) {
    double lin = 0, all = 0;
    for (const auto& [k, v] : m["op_ms"].items()) {
      all += v.get<double>();
      if (k.rfind("linear", 0) == 0) lin += v.get<double>();
    }
    *total = all;
    return lin;
  };
  for (const json* d : bench) {
    const json *a = measurement(*d, "bf16"), *b = measurement(*d, "nvfp4");
    if (!a || !b || mean_of((*a)["decode_tok_s"]) <= 0) continue;
    Point p;
    const double da = mean_of((*a)["decode_tok_s"]), db = mean_of((*b)["decode_tok_s"]);
    p.speedup = db / da;
    if (a->value("roofline_decode_tok_s", 0.0) > 0 && b->value("roofline_decode_tok_s", 0.0) > 0) {
      p.roof16 = da / (*a)["roofline_decode_tok_s"].get<double>();
      p.roof4 = db / (*b)["roofline_decode_tok_s"].get<double>();
    }
    if (a->contains("decode_step") && b->contains("decode_step") &&
        (*a)["decode_step"].value("weight_bytes", 0.0) > 0)
      p.byte_ratio =
          (*b)["decode_step"].value("weight_bytes", 0.0) / (*a)["decode_step"]["weight_bytes"].get<double>();
    if (a->contains("op_ms") && b->contains("op_ms") && (*a)["op_ms"].is_object() && !(*a)["op_ms"].empty() &&
        (*b)["op_ms"].is_object() && !(*b)["op_ms"].empty()) {
      double ta = 0, tb = 0;
      const double la = linear_ms(*a, &ta), lb = linear_ms(*b, &tb);
      if (la > 0 && ta > 0) {
        p.profiled = true;
        p.lin_ratio = lb / la;
        p.rest_share = 1.0 - la / ta;
      }
    }
    groups[{gpu_name(*d), model_name(*d)}][batch_of(*d)] = p;
  }
  std::vector<std::string> out;
  for (const auto& [key, pts] : groups) {
    if (pts.size() < 2) continue;
    const auto& [b0, p0] = *pts.begin();
    const auto& [b1, p1] = *pts.rbegin();
    std::string s = key.first + " / " + key.second + ": NVFP4 decodes " + fmt("%.2fx", p0.speedup) +
                    " as fast as BF16 at batch " + std::to_string(b0) + " and " + fmt("%.2fx", p1.speedup) +
                    " at batch " + std::to_string(b1) + ".";
    if (p0.profiled && p1.profiled) {
      s += " Its linear layers take " + fmt("%.2fx", p0.lin_ratio) + " BF16's GPU time at batch " +
           std::to_string(b0) + " and " + fmt("%.2fx", p1.lin_ratio) + " at batch " + std::to_string(b1);
      if (p0.byte_ratio > 0)
        s += " (their weight bytes alone would give " + fmt("%.2fx", p0.byte_ratio) + ")";
      s += "; the rest of the step (" + fmt("%.0f%%", 100 * p0.rest_share) + " of BF16's GPU time at batch " +
           std::to_string(b0) + ", " + fmt("%.0f%%", 100 * p1.rest_share) + " at batch " +
           std::to_string(b1) + ") runs the same kernels in both formats.";
    }
    if (p0.roof4 > 0 && p1.roof4 > 0)
      s += " Against its own roofline NVFP4 runs at " + fmt("%.0f%%", 100 * p0.roof4) + " (batch " +
           std::to_string(b0) + ") and " + fmt("%.0f%%", 100 * p1.roof4) + " (batch " + std::to_string(b1) +
           "), BF16 at " + fmt("%.0f%%", 100 * p0.roof16) + " and " + fmt("%.0f%%", 100 * p1.roof16) + ".";
    out.push_back(s);
  }
  return out;
}

ReportOutput write_report(const std::vector<json>& docs, const std::string& out_dir) {
  if (docs.empty()) throw Error("report: no results given");
  const fs::path out(out_dir), cdir = out / "charts";
  fs::create_directories(cdir);
  ReportOutput ro;
  std::vector<Chart> charts;
  std::string md = "# fp4lab report\n\n", body;
  std::set<std::string> gpus;
  for (const auto& d : docs) gpus.insert(gpu_name(d));
  {
    std::string g;
    for (const auto& x : gpus) g += (g.empty() ? "" : ", ") + x;
    md += std::to_string(docs.size()) + " result documents from: " + g +
          ". Throughput is decode tokens/s summed over the batch; speedup is NVFP4 over BF16 on the same "
          "GPU, model and batch.\n\n";
    body += "<p>" + std::to_string(docs.size()) + " result documents from: " + html_escape(g) + ".</p>";
  }

  // Bench runs: the table users know, per run.
  std::vector<const json*> bench;
  for (const auto& d : docs)
    if (is_bench(d)) bench.push_back(&d);
  if (!bench.empty()) {
    Table t{{"GPU", "Model", "batch", "quant", "Tokens/sec", "Total Time (s)", "Speedup", "decode tok/s",
             "TPOT p50 (ms)", "roofline tok/s", "% of roofline", "weights (GB)"},
            {}};
    for (const json* d : bench) {
      const json& ms = (*d)["measurements"];
      const double base = ms.empty() ? 0 : mean_of(ms[0].value("tokens_per_s", json()));
      for (const auto& m : ms) {
        const double tok = mean_of(m.value("tokens_per_s", json())),
                     dec = mean_of(m.value("decode_tok_s", json()));
        const double roof = m.value("roofline_decode_tok_s", 0.0);
        t.rows.push_back({gpu_name(*d), model_name(*d), std::to_string(batch_of(*d)), m.value("quant", ""),
                          fmt("%.2f", tok), fmt("%.2f", mean_of(m.value("total_s", json()))),
                          fmt("%.2fx", base > 0 ? tok / base : 0), fmt("%.1f", dec),
                          fmt("%.2f", 1e3 * m.value("tpot_s_p50", 0.0)), roof > 0 ? fmt("%.0f", roof) : "-",
                          roof > 0 ? fmt("%.0f%%", 100 * dec / roof) : "-",
                          fmt("%.2f", m.value("weight_bytes", 0.0) / 1e9)});
      }
    }
    md += "## Throughput\n\n" + t.md() + "\n";
    body += "<h2>Throughput</h2>" + t.html();

    // Where the time goes, for runs made with --profile.
    Table ops{{"GPU", "Model", "batch", "quant", "GPU time by op class (share of the profiled run)"}, {}};
    for (const json* d : bench)
      for (const auto& m : (*d)["measurements"]) {
        if (!m.contains("op_ms") || !m["op_ms"].is_object() || m["op_ms"].empty()) continue;
        double total = 0;
        std::vector<std::pair<double, std::string>> v;
        for (const auto& [k, x] : m["op_ms"].items()) {
          total += x.get<double>();
          v.emplace_back(x.get<double>(), k);
        }
        std::sort(v.rbegin(), v.rend());
        std::string cell;
        for (size_t i = 0; i < v.size() && i < 6; ++i)
          cell += (i ? ", " : "") + v[i].second + " " + fmt("%.0f%%", 100 * v[i].first / total);
        ops.rows.push_back(
            {gpu_name(*d), model_name(*d), std::to_string(batch_of(*d)), m.value("quant", ""), cell});
      }
    if (!ops.rows.empty()) {
      md += "### Where the time goes\n\n" + ops.md() + "\n";
      body += "<h3>Where the time goes</h3>" + ops.html();
    }

    // Per GPU: BF16 vs NVFP4 per model and batch.
    std::set<std::string> quants;
    for (const json* d : bench)
      for (const auto& m : (*d)["measurements"]) quants.insert(m.value("quant", ""));
    const std::vector<std::string> qv(quants.begin(), quants.end());
    for (const auto& g : gpus) {
      Chart c{"throughput-" + slug(g), "Decode throughput on " + g, "decode tokens/s", qv, {}, false, {}};
      for (const json* d : bench) {
        if (gpu_name(*d) != g) continue;
        std::vector<double> v;
        for (const auto& q : qv)
          v.push_back(measurement(*d, q) ? mean_of((*measurement(*d, q))["decode_tok_s"]) : 0);
        c.rows.push_back({model_name(*d) + " b" + std::to_string(batch_of(*d)), v});
      }
      if (!c.rows.empty()) charts.push_back(c);
    }
    // Across GPUs: the smallest batch per (GPU, model), throughput and speedup.
    std::map<std::pair<std::string, std::string>, const json*> first;
    for (const json* d : bench) {
      auto& slot = first[{gpu_name(*d), model_name(*d)}];
      if (!slot || batch_of(*d) < batch_of(*slot)) slot = d;
    }
    Chart all{"throughput-all-gpus",
              "Decode throughput across GPUs (batch as run)",
              "decode tokens/s",
              qv,
              {},
              false,
              {}};
    // The speedup of each quantized format over BF16: NVFP4, and FP8 where a run measured it.
    std::vector<std::string> fmts{"nvfp4"};
    if (quants.count("fp8")) fmts.push_back("fp8");
    std::vector<std::string> sp_series;
    for (const auto& f : fmts) sp_series.push_back(f + " / bf16");
    Chart sp{"speedup-all-gpus",
             quants.count("fp8") ? "NVFP4 and FP8 speedup over BF16 across GPUs"
                                 : "NVFP4 speedup over BF16 across GPUs",
             "decode speedup (x)",
             sp_series,
             {},
             false,
             {}};
    const auto ratio = [](const json* d, const std::string& q) {
      const json *a = measurement(*d, "bf16"), *b = measurement(*d, q);
      return a && b && mean_of((*a)["decode_tok_s"]) > 0
                 ? mean_of((*b)["decode_tok_s"]) / mean_of((*a)["decode_tok_s"])
                 : 0.0;
    };
    for (const auto& [key, d] : first) {
      std::vector<double> v;
      for (const auto& q : qv)
        v.push_back(measurement(*d, q) ? mean_of((*measurement(*d, q))["decode_tok_s"]) : 0);
      all.rows.push_back({key.first + " / " + key.second, v});
      std::vector<double> r;
      for (const auto& f : fmts) r.push_back(ratio(d, f));
      if (r[0] > 0) sp.rows.push_back({key.first + " / " + key.second, r});
    }
    charts.push_back(all);
    if (!sp.rows.empty()) charts.push_back(sp);
    // Speedup vs batch, one line per (GPU, model) with at least two batch sizes.
    std::map<std::pair<std::string, std::string>, std::map<int, double>> sweep;
    for (const json* d : bench)
      for (const auto& f : fmts)
        if (const double r = ratio(d, f); r > 0)
          sweep[{gpu_name(*d), model_name(*d) + (f == "nvfp4" ? "" : " " + f)}][batch_of(*d)] = r;
    std::set<int> batches;
    std::vector<std::string> lines;
    for (const auto& [k, v] : sweep)
      if (v.size() >= 2) {
        lines.push_back(k.first + " / " + k.second);
        for (const auto& [b, s] : v) batches.insert(b);
      }
    const auto why = batch_explanations(bench);
    if (!why.empty()) {
      md += "### Why the speedup changes with the batch\n\n";
      body += "<h3>Why the speedup changes with the batch</h3>";
      for (const auto& w : why) {
        md += "- " + w + "\n";
        body += "<p>" + html_escape(w) + "</p>";
      }
      md += "\n";
    }
    if (!lines.empty()) {
      Chart c{"speedup-vs-batch",
              quants.count("fp8") ? "NVFP4 (and FP8) / BF16 decode speedup vs batch size"
                                  : "NVFP4 / BF16 decode speedup vs batch size",
              "speedup (x)",
              lines,
              {},
              true,
              {}};
      for (int b : batches) {
        std::vector<double> v;
        for (const auto& [k, m] : sweep)
          if (m.size() >= 2) v.push_back(m.count(b) ? m.at(b) : NAN);
        c.rows.push_back({std::to_string(b), v});
      }
      charts.push_back(c);
    }
    // Measured vs roofline.
    Chart rf{"measured-vs-roofline",
             "Decode: measured vs memory/compute roofline",
             "decode tokens/s",
             {"measured", "roofline"},
             {},
             false,
             {}};
    for (const json* d : bench)
      for (const auto& m : (*d)["measurements"])
        if (m.value("roofline_decode_tok_s", 0.0) > 0)
          rf.rows.push_back({gpu_name(*d) + " " + model_name(*d) + " b" + std::to_string(batch_of(*d)) + " " +
                                 m.value("quant", ""),
                             {mean_of(m["decode_tok_s"]), m["roofline_decode_tok_s"].get<double>()}});
    if (!rf.rows.empty()) charts.push_back(rf);
  }

  // Accuracy runs.
  std::vector<const json*> acc;
  for (const auto& d : docs)
    if (is_gsm8k(d)) acc.push_back(&d);
  if (!acc.empty()) {
    Table t{{"GPU", "Model", "quant", "task", "questions", "strict-match", "flexible-extract", "wall (s)"},
            {}};
    Chart c{"accuracy", "GSM8K exact match (lm-eval scoring)",
            "accuracy", {"strict-match", "flexible-extract"},
            {},         false,
            {}};
    for (const json* d : acc) {
      const json& s = (*d)["summary"];
      auto cell = [&](const char* f) {
        return fmt("%.4f", s[f].value("exact_match", 0.0)) + " ± " + fmt("%.4f", s[f].value("stderr", 0.0));
      };
      t.rows.push_back({gpu_name(*d), model_name(*d), (*d)["options"].value("quant", ""),
                        (*d)["options"].value("task", ""), std::to_string(s.value("questions", 0)),
                        cell("strict-match"), cell("flexible-extract"),
                        fmt("%.1f", d->contains("timing") ? (*d)["timing"].value("wall_s", 0.0) : 0.0)});
      c.rows.push_back(
          {gpu_name(*d) + " " + model_name(*d) + " " + (*d)["options"].value("quant", ""),
           {s["strict-match"].value("exact_match", 0.0), s["flexible-extract"].value("exact_match", 0.0)}});
      c.errors.push_back(
          {s["strict-match"].value("stderr", 0.0), s["flexible-extract"].value("stderr", 0.0)});
    }
    md += "## Accuracy\n\n" + t.md() + "\n";
    body += "<h2>Accuracy</h2>" + t.html();
    charts.push_back(c);
  }

  // Serving runs (bench serve): throughput and latency per server, load and GPU.
  std::vector<const json*> serving;
  for (const auto& d : docs)
    if (is_serve(d)) serving.push_back(&d);
  if (!serving.empty()) {
    Table t{{"GPU", "server", "model", "quant", "load", "done", "output tok/s", "req/s", "TTFT mean (ms)",
             "TPOT mean (ms)", "TPOT p99 (ms)", "ITL p99 (ms)"},
            {}};
    std::vector<std::string> servers, loads;
    std::map<std::pair<std::string, std::string>, std::pair<double, double>>
        cell;  // (load, server) -> tok/s, TPOT
    for (const json* d : serving) {
      const std::string server =
          (*d).value("label", "").empty() ? model_name(*d) : (*d)["label"].get<std::string>();
      for (const auto& r : (*d)["results"]) {
        // A series per GPU, server and model: runs of two models under one label are two series.
        std::string model = r.value("model_id", model_name(*d));
        if (model.starts_with("preset:")) model = model.substr(7);
        const std::string who = gpu_name(*d) + " " + server + " " + model;
        if (std::find(servers.begin(), servers.end(), who) == servers.end()) servers.push_back(who);
        const std::string load =
            (r.value("max_concurrency", json()).is_number() ? "conc " + r["max_concurrency"].dump() + " "
                                                            : "") +
            (r["request_rate"].is_number() ? "rate " + fmt("%g", r["request_rate"].get<double>()) : "");
        if (std::find(loads.begin(), loads.end(), load) == loads.end()) loads.push_back(load);
        cell[{load, who}] = {r["output_throughput"].get<double>(), r["mean_tpot_ms"].get<double>()};
        t.rows.push_back(
            {gpu_name(*d), server, r.value("model_id", ""), (*d)["options"].value("quant", ""), load,
             r["completed"].dump(), fmt("%.1f", r["output_throughput"].get<double>()),
             fmt("%.2f", r["request_throughput"].get<double>()), fmt("%.1f", r["mean_ttft_ms"].get<double>()),
             fmt("%.2f", r["mean_tpot_ms"].get<double>()), fmt("%.2f", r["p99_tpot_ms"].get<double>()),
             fmt("%.2f", r.value("p99_itl_ms", 0.0))});
      }
    }
    Chart tput{
        "serving-throughput", "Serving: output tokens/s by load", "output tokens/s", servers, {}, false, {}};
    Chart lat{
        "serving-tpot", "Serving: mean time per output token by load", "TPOT (ms)", servers, {}, false, {}};
    for (const auto& load : loads) {
      std::vector<double> a, b;
      for (const auto& s : servers) {
        const auto it = cell.find({load, s});
        a.push_back(it == cell.end() ? 0.0 : it->second.first);
        b.push_back(it == cell.end() ? 0.0 : it->second.second);
      }
      tput.rows.push_back({load, a});
      lat.rows.push_back({load, b});
    }
    md += "## Serving\n\n" + t.md() + "\n";
    body += "<h2>Serving</h2>" + t.html();
    charts.push_back(tput);
    charts.push_back(lat);
  }

  md += "## Charts\n\n";
  body += "<h2>Charts</h2>";
  for (const auto& c : charts) {
    render(c, cdir);
    ro.charts.push_back(c.name);
    md += "### " + c.title + "\n\n![" + c.title + "](charts/" + c.name + ".png) ([SVG](charts/" + c.name +
          ".svg))\n\n";
    const std::string svg = read_text_file((cdir / (c.name + ".svg")).string());
    const auto at = svg.find("<svg");
    if (at == std::string::npos) throw Error("gnuplot wrote no SVG for " + c.name);
    // Inline, so the page has no external references and no loads that can fail.
    body += "<figure class=\"chart\" data-chart=\"" + c.name + "\">" + svg.substr(at) + "<figcaption>" +
            html_escape(c.title) + "</figcaption></figure>";
  }
  ro.markdown = (out / "report.md").string();
  ro.html = (out / "report.html").string();
  write_text_file(ro.markdown, md);
  write_text_file(ro.html, "<!doctype html><html><head><meta charset=\"utf-8\"><title>fp4lab report</title><style>"
       "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
       "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
       "figure{margin:1.5em 0}svg{max-width:100%;height:auto}</style></head><body><h1>fp4lab report</h1>" +
                                 body +
                                 "<p id=\"chart-check\">charts not checked</p><script>"
       // Every chart must have rendered: a figure whose SVG has a non-empty box.
       "const figs=[...document.querySelectorAll('figure.chart')];"
       "const ok=figs.filter(f=>{const s=f.querySelector('svg');if(!s)return false;const b=s.getBBox();"
       "return b.width>0&&b.height>0;}).length;"
       "document.getElementById('chart-check').textContent='charts-ok '+ok+'/'+figs.length;"
       "</script></body></html>\n");
  return ro;
}

}  // namespace fp4lab
