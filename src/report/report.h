// `fp4lab report`: Markdown and one self-contained HTML page with gnuplot charts (PNG + SVG) from bench and
// GSM8K result documents, merged across machines: per-GPU throughput BF16 vs NVFP4, the comparison across all
// GPUs in the inputs (throughput, speedup, accuracy), speedup vs batch, measured vs roofline.
#pragma once
#include <string>
#include <vector>

#include "common/json_util.h"

namespace fp4lab {

// Reads result documents from JSON files (one document, an array of them, or a sweep {"runs": [...]}) and
// from results databases (*.db: every stored run). Throws fp4lab::Error naming the file.
std::vector<json> load_result_docs(const std::vector<std::string>& paths);

struct ReportOutput {
  std::string markdown, html;       // paths written
  std::vector<std::string> charts;  // chart base names (each as .svg and .png under charts/)
};

// Writes out_dir/report.md, out_dir/report.html and out_dir/charts/*. gnuplot must be on PATH.
ReportOutput write_report(const std::vector<json>& docs, const std::string& out_dir);

}  // namespace fp4lab
