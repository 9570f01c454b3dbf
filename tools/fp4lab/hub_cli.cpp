// --model accepts Hub ids; these flags (and the HF_* variables the whole ecosystem reads) control the
// download.
#include <cstdio>

#include "commands.h"
#include "io/hub.h"

namespace fp4lab::cli {

void add_hub_options(CLI::App& app, HubOptions& o) {
  app.add_option("--token", o.token,
                 "Hugging Face token for gated/private repos (default: $HF_TOKEN; never stored)");
  app.add_flag("--offline", o.offline, "use only the local cache (also HF_HUB_OFFLINE=1)");
  app.add_option("--cache-dir", o.cache_dir,
                 "Hub cache (default: $HF_HUB_CACHE or $HF_HOME/hub or ~/.cache/huggingface/hub)");
  app.add_option("--hub-endpoint", o.endpoint,
                 "Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co)");
}

}  // namespace fp4lab::cli
