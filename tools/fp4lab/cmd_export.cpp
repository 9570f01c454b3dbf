// `fp4lab export`: a preset as a Hugging Face checkpoint on disk (BF16, or the ModelOpt NVFP4 layout), for
// benchmarks and tests of the real loading path at full size without downloads.
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "commands.h"
#include "common/error.h"
#include "common/json_util.h"
#include "model/export.h"

namespace fp4lab::cli {

Action add_export(CLI::App& app) {
  struct Opts {
    std::string model, out, quant = "bf16";
    uint64_t seed = 0;
    double shard_gb = 5.0;
    int threads = 0;
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "preset:NAME (fp4lab inspect lists the presets)")->required();
  app.add_option("--out", o->out, "output directory (created; its checkpoint files are replaced)")->required();
  app.add_option("--quant", o->quant, "bf16, or nvfp4 (the preset's NVFP4 plan in the ModelOpt layout)")
      ->check(CLI::IsMember({"bf16", "nvfp4"}));
  app.add_option("--seed", o->seed, "the preset's weights seed (as --seed of bench and generate)");
  app.add_option("--shard-gb", o->shard_gb, "largest shard in GB (10^9 bytes)")->check(CLI::Range(1e-4, 1e6));
  app.add_option("--threads", o->threads, "generation threads (0: all cores)")->check(CLI::Range(0, 4096));
  app.add_flag("--force", o->force, "write into a non-empty --out directory");
  return [o]() {
    if (!o->model.starts_with("preset:")) throw Error("export: --model must be preset:NAME");
    check_output_dir(o->out, {}, o->force);
    ExportOptions e;
    e.quant = o->quant == "nvfp4" ? QuantMode::NVFP4 : QuantMode::BF16;
    e.seed = o->seed;
    e.shard_bytes = static_cast<uint64_t>(o->shard_gb * 1e9);
    e.threads = o->threads;
    const auto t0 = std::chrono::steady_clock::now();
    const bool tty = ::isatty(2);
    double last = -1;
    e.progress = [&](uint64_t done, uint64_t total) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (done < total && s - last < (tty ? 0.2 : 5.0)) return;
      last = s;
      std::fprintf(stderr, "%sexport: %.2f / %.2f GB (%.0f%%), %.1f s%s", tty ? "\r" : "", done / 1e9, total / 1e9,
                   100.0 * done / total, s, tty && done < total ? "" : "\n");
    };
    const ExportReport r = export_preset(o->model.substr(7), o->out, e);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %s: %s %s, %d tensors in %d shard(s), %.2f GB (%d NVFP4 / %d BF16 linear layers), %.1f s\n",
                o->out.c_str(), o->model.c_str(), o->quant.c_str(), r.tensors, r.shards, r.bytes / 1e9,
                r.nvfp4_layers, r.bf16_layers, s);
    return 0;
  };
}

}  // namespace fp4lab::cli
