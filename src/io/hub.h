// Hugging Face Hub model ids ("org/name[@revision]") resolved to a local snapshot directory, with the cache
// laid out as the huggingface_hub library lays it
// ($HF_HOME/hub/models--org--name/{blobs,snapshots/<commit>,refs}), so checkpoints downloaded by transformers
// or vLLM are reused and the other way round. Downloads go through libcurl: several files in parallel,
// resumed from partial blobs, retried with backoff on 429/5xx, LFS files checked against the sha256 the Hub
// reports.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fp4lab {

struct HubOptions {
  std::string endpoint;    // default: $HF_ENDPOINT or https://huggingface.co
  std::string token;       // default: $HF_TOKEN; sent as a bearer token, never printed or stored
  std::string cache_dir;   // default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
  bool offline = false;    // also set by HF_HUB_OFFLINE=1: only the cache, no network
  int parallel = 4;        // files downloaded at once
  int max_retries = 5;     // per request, on 429/5xx and transport errors (exponential backoff)
  double backoff_s = 1.0;  // first retry delay
  bool progress = true;    // a progress line with rate and ETA on stderr

  // Fills the defaults above from the environment where a field is empty/false.
  static HubOptions from_env();
};

// The hub cache directory: o.cache_dir, else ~/.cache/huggingface/hub (HubOptions::from_env already applied
// HF_HUB_CACHE / HF_HOME). Throws when there is no home directory to put it in.
std::string hub_cache_dir(const HubOptions& o);

// True for "org/name" or "org/name@rev" strings that are not an existing local path.
bool is_hub_id(const std::string& s);

struct HubFile {
  std::string path;  // path in the repository
  uint64_t size = 0;
  std::string blob;    // cache blob name: the LFS sha256, or the git blob id for small files
  std::string sha256;  // LFS files only
};

// The files of a model repository fp4lab needs: configs, tokenizer files, *.safetensors and their index.
bool hub_file_wanted(const std::string& path);

// Resolves a Hub id to its snapshot directory, downloading what is missing (nothing when offline). Throws
// fp4lab::Error with a message a user can act on (unknown repo, gated without a token, disk full, checksum
// mismatch, offline and not cached).
std::string hub_resolve_model(const std::string& id, const HubOptions& o);
// A --model argument as a local path: a Hub id ("org/name[@rev]") resolved to its snapshot directory (named
// on stderr), anything else (a directory, preset:NAME) as given.
std::string resolve_model_arg(const std::string& model, const HubOptions& o);

// Downloads one URL into `dest` (resuming dest + ".incomplete"), checking sha256 when given. For data files
// outside the Hub layout (GSM8K).
void hub_download_file(const std::string& url, const std::string& dest, uint64_t size,
                       const std::string& sha256, const HubOptions& o);

}  // namespace fp4lab
