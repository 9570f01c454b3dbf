#include <cstdio>

#include "commands.h"
#include "common/error.h"
#include "io/nvfp4_checkpoint.h"

namespace fp4lab::cli {

Action add_quantize(CLI::App& app) {
  struct Opts {
    std::string in, out;
    std::vector<std::string> exclude;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--in", o->in, "BF16/F16/F32 checkpoint directory")->required();
  app.add_option("--out", o->out, "output directory (ModelOpt-layout NVFP4 checkpoint)")->required();
  app.add_option("--exclude", o->exclude,
                 "module patterns kept in BF16 (default: lm_head, plus attention for Nemotron-H)")
      ->delimiter(',');
  return [o]() {
    QuantizeOptions q;
    q.exclude = o->exclude;
    const QuantizeReport r = quantize_checkpoint_nvfp4(o->in, o->out, q);
    std::printf(
        "wrote %s: %d linear layers NVFP4 (W4A16_NVFP4, no activation calibration), %d kept; %s -> %s\n",
        o->out.c_str(), r.quantized, r.kept, human_bytes(r.bytes_in).c_str(),
        human_bytes(r.bytes_out).c_str());
    return 0;
  };
}

}  // namespace fp4lab::cli
