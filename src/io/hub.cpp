#include "io/hub.h"

#include <curl/curl.h>
#include <sys/statvfs.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <algorithm>
#include <cstring>
#include <unistd.h>

#include "common/error.h"
#include "common/regex.h"
#include "common/sha256.h"
#include "common/json_util.h"

namespace fp4lab {

namespace fs = std::filesystem;

namespace {

std::string env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

std::string human(double b) {
  char buf[32];
  if (b >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else
    std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  return buf;
}

void curl_global() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Curl {
  CURL* h;
  Curl() : h(curl_easy_init()) {
    if (!h) throw Error("libcurl: cannot create a handle");
  }
  ~Curl() { curl_easy_cleanup(h); }
};

// Common settings: redirects (the Hub sends LFS files to a CDN), the bearer token (curl keeps it to the
// original host, so it never reaches the CDN), sane timeouts for stalled connections.
void setup(CURL* h, const std::string& url, const HubOptions& o) {
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "fp4lab/" FP4LAB_VERSION);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  if (!o.token.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
    curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, o.token.c_str());
  }
}

size_t append_string(char* p, size_t sz, size_t n, void* ud) {
  static_cast<std::string*>(ud)->append(p, sz * n);
  return sz * n;
}

bool retryable(long status) {
  return status == 429 || status >= 500;
}

void backoff(const HubOptions& o, int attempt) {
  const double s = o.backoff_s * (1 << std::min(attempt, 6));
  std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

// GET returning the body; retried on 429/5xx and transport errors. Returns the final status.
long get_text(const std::string& url, const HubOptions& o, std::string& body) {
  curl_global();
  for (int attempt = 0;; ++attempt) {
    Curl c;
    body.clear();
    setup(c.h, url, o);
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, append_string);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &body);
    const CURLcode rc = curl_easy_perform(c.h);
    long status = 0;
    curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && !retryable(status)) return status;
    if (attempt >= o.max_retries) {
      if (rc != CURLE_OK) throw Error(url + ": " + curl_easy_strerror(rc));
      return status;
    }
    backoff(o, attempt);
  }
}

struct Progress {
  std::atomic<uint64_t> done{0};
  uint64_t total = 0;
  std::atomic<int> files_done{0};
  int files = 0;
  std::string label;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  void print(bool final) const {
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double d = static_cast<double>(done.load()), rate = el > 0 ? d / el : 0;
    const double eta = rate > 0 ? (static_cast<double>(total) - d) / rate : 0;
    std::fprintf(stderr, "\r%s: %s / %s  %s/s  ETA %dm%02ds  (%d/%d files)   %s", label.c_str(),
                 human(d).c_str(), human(static_cast<double>(total)).c_str(), human(rate).c_str(),
                 static_cast<int>(eta) / 60, static_cast<int>(eta) % 60, files_done.load(), files,
                 final ? "\n" : "");
  }
};

// One transfer's state, shared by curl's header and body callbacks. Only a 200/206 body is file content: the
// body of an error answer (429, 5xx, 416) must never land in the partial file a retry resumes from.
struct Transfer {
  std::FILE* f;
  Progress* p;
  uint64_t have;  // bytes already in the file when the request started
  long status = 0;
  bool ok = true;
};

size_t on_header(char* b, size_t sz, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  const std::string line(b, sz * n);
  if (line.rfind("HTTP/", 0) == 0) {
    const auto sp = line.find(' ');
    t->status = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
    // A server that ignores the range answers 200 with the whole file: start the file over.
    if (t->status == 200 && t->have > 0) {
      if (std::fflush(t->f) != 0 || ftruncate(fileno(t->f), 0) != 0 || std::fseek(t->f, 0, SEEK_SET) != 0)
        t->ok = false;
      if (t->p) t->p->done -= t->have;
      t->have = 0;
    }
  }
  return sz * n;
}

size_t on_body(char* data, size_t sz, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  if (t->status != 200 && t->status != 206) return sz * n;  // an error page: dropped
  const size_t wrote = std::fwrite(data, 1, sz * n, t->f);
  if (wrote != sz * n) t->ok = false;
  if (t->p) t->p->done += wrote;
  return wrote;
}

// Fetches url into `part`, continuing from its current size with a Range request; retries keep what arrived.
void fetch_resumable(const std::string& url, const fs::path& part, uint64_t size, const HubOptions& o,
                     Progress* prog, const std::string& what) {
  curl_global();
  for (int attempt = 0;; ++attempt) {
    uint64_t have = fs::exists(part) ? fs::file_size(part) : 0;
    if (size && have > size) {
      fs::remove(part);
      have = 0;
    }
    if (size && have == size) return;
    if (prog) prog->done += have;
    std::FILE* f = std::fopen(part.c_str(), have ? "ab" : "wb");
    if (!f) throw Error(part.string() + ": cannot write (" + std::strerror(errno) + ")");
    Transfer tr{f, prog, have};
    Curl c;
    setup(c.h, url, o);
    const std::string range = std::to_string(have) + "-";
    if (have) curl_easy_setopt(c.h, CURLOPT_RANGE, range.c_str());
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &tr);
    curl_easy_setopt(c.h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c.h, CURLOPT_HEADERDATA, &tr);
    const CURLcode rc = curl_easy_perform(c.h);
    long status = 0;
    curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &status);
    const bool closed = std::fclose(f) == 0 && tr.ok;
    if (!closed) throw Error(part.string() + ": write failed (disk full?)");
    const uint64_t now = fs::exists(part) ? fs::file_size(part) : 0;
    if (prog) prog->done -= now;  // re-added from the file size on the next round or by the caller
    if (rc == CURLE_OK && (status == 200 || status == 206)) {
      if (!size || now == size) {
        if (prog) prog->done += now;
        return;
      }
      if (now > size)
        throw Error(what + ": server sent " + std::to_string(now) + " bytes, expected " +
                    std::to_string(size));
    } else if (rc == CURLE_OK && status == 416 && size && now == size) {
      if (prog) prog->done += now;
      return;
    } else if (rc == CURLE_OK && !retryable(status)) {
      if (status == 401 || status == 403)
        throw Error(what + ": access denied (HTTP " + std::to_string(status) +
                    "); the repository is gated or private: pass --token or set HF_TOKEN");
      if (status == 404) throw Error(what + ": not found on the server (HTTP 404)");
      throw Error(what + ": HTTP " + std::to_string(status));
    }
    if (attempt >= o.max_retries)
      throw Error(what + ": download failed after " + std::to_string(attempt + 1) + " attempts (" +
                  (rc != CURLE_OK ? std::string(curl_easy_strerror(rc)) : "HTTP " + std::to_string(status)) +
                  "); the partial file is kept and the next run resumes it");
    backoff(o, attempt);
  }
}

void verify_and_commit(const fs::path& part, const fs::path& blob, uint64_t size, const std::string& sha256,
                       const std::string& what) {
  const uint64_t got = fs::file_size(part);
  if (size && got != size) {
    fs::remove(part);
    throw Error(what + ": size " + std::to_string(got) + " != expected " + std::to_string(size) +
                "; the download was deleted, run again");
  }
  if (!sha256.empty()) {
    const std::string h = sha256_file_hex(part.string());
    if (h != sha256) {
      fs::remove(part);
      throw Error(what + ": sha256 mismatch (expected " + sha256 + ", got " + h +
                  "); the corrupted download was deleted, run again");
    }
  }
  fs::rename(part, blob);
}

struct RepoRef {
  std::string repo, revision;
};

RepoRef parse_id(const std::string& id) {
  RepoRef r;
  const auto at = id.find('@');
  r.repo = id.substr(0, at);
  r.revision = at == std::string::npos ? "main" : id.substr(at + 1);
  static const Regex ok(R"([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)",
                        Regex::Options{.utf = false, .anchored_full = true}, "hub id");
  if (!ok.full_match(r.repo) || r.revision.empty() || r.revision.find("..") != std::string::npos ||
      r.revision.find('/') == 0)
    throw Error("'" + id + "' is not a Hub model id (org/name or org/name@revision)");
  return r;
}

fs::path repo_dir(const HubOptions& o, const std::string& repo) {
  std::string name = "models--" + repo;
  for (size_t p; (p = name.find('/')) != std::string::npos;) name.replace(p, 1, "--");
  return fs::path(o.cache_dir) / name;
}

bool is_commit(const std::string& s) {
  return s.size() == 40 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// A snapshot is usable offline when it has a config and every safetensors shard its index names (or one
// file).
std::vector<std::string> snapshot_missing(const fs::path& snap) {
  std::vector<std::string> miss;
  if (!fs::exists(snap / "config.json")) miss.push_back("config.json");
  if (fs::exists(snap / "model.safetensors.index.json")) {
    try {
      const json idx = read_json_file((snap / "model.safetensors.index.json").string());
      std::vector<std::string> shards;
      for (const auto& [k, v] : idx.at("weight_map").items())
        if (v.is_string()) shards.push_back(v.get<std::string>());
      std::sort(shards.begin(), shards.end());
      shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
      for (const auto& s : shards)
        if (!fs::exists(snap / s)) miss.push_back(s);
    } catch (const std::exception&) {
      miss.push_back("model.safetensors.index.json (unreadable)");
    }
  } else if (!fs::exists(snap / "model.safetensors")) {
    bool any = false;
    if (fs::is_directory(snap))
      for (const auto& e : fs::directory_iterator(snap)) any = any || e.path().extension() == ".safetensors";
    if (!any) miss.push_back("*.safetensors");
  }
  return miss;
}

void link_snapshot(const fs::path& snap, const std::string& path, const std::string& blob) {
  const fs::path link = snap / path;
  fs::create_directories(link.parent_path());
  // Relative, as huggingface_hub makes them: the cache can be moved or mounted elsewhere.
  std::string target = "../../blobs/" + blob;
  for (size_t n = std::count(path.begin(), path.end(), '/'); n > 0; --n) target = "../" + target;
  std::error_code ec;
  if (fs::is_symlink(link, ec) && fs::read_symlink(link, ec) == target) return;
  fs::remove(link, ec);
  fs::create_symlink(target, link);
}

}  // namespace

HubOptions HubOptions::from_env() {
  HubOptions o;
  o.endpoint = env("HF_ENDPOINT");
  o.token = env("HF_TOKEN");
  o.offline = env("HF_HUB_OFFLINE") == "1" || env("HF_HUB_OFFLINE") == "true";
  if (!env("HF_HUB_CACHE").empty())
    o.cache_dir = env("HF_HUB_CACHE");
  else if (!env("HF_HOME").empty())
    o.cache_dir = env("HF_HOME") + "/hub";
  return o;
}

std::string hub_cache_dir(const HubOptions& o) {
  if (!o.cache_dir.empty()) return o.cache_dir;
  const std::string home = env("HOME");
  if (home.empty()) throw Error("no cache directory: set HF_HOME or pass --cache-dir");
  return home + "/.cache/huggingface/hub";
}

bool is_hub_id(const std::string& s) {
  if (s.empty() || s.rfind("preset:", 0) == 0 || s[0] == '/' || s[0] == '.' || s[0] == '~') return false;
  std::error_code ec;
  if (fs::exists(s, ec)) return false;
  const auto at = s.find('@');
  const std::string repo = s.substr(0, at);
  return std::count(repo.begin(), repo.end(), '/') == 1 && repo.front() != '/' && repo.back() != '/';
}

bool hub_file_wanted(const std::string& p) {
  static const char* names[] = {"config.json",
                                "generation_config.json",
                                "hf_quant_config.json",
                                "tokenizer.json",
                                "tokenizer_config.json",
                                "special_tokens_map.json",
                                "vocab.json",
                                "merges.txt",
                                "model.safetensors.index.json",
                                "chat_template.jinja"};
  if (p.find('/') != std::string::npos) return false;  // sub-folders hold other variants (onnx, gguf, ...)
  for (const char* n : names)
    if (p == n) return true;
  return p.size() > 12 && p.compare(p.size() - 12, 12, ".safetensors") == 0;
}

std::string hub_resolve_model(const std::string& id, const HubOptions& opt) {
  HubOptions o = opt;
  if (o.endpoint.empty()) o.endpoint = "https://huggingface.co";
  while (!o.endpoint.empty() && o.endpoint.back() == '/') o.endpoint.pop_back();
  o.cache_dir = hub_cache_dir(o);
  const RepoRef r = parse_id(id);
  const fs::path rdir = repo_dir(o, r.repo);

  if (o.offline) {
    std::string commit = r.revision;
    if (!is_commit(commit)) {
      std::ifstream ref(rdir / "refs" / r.revision);
      if (!(ref >> commit))
        throw Error("offline: " + id + " is not in the cache (" + rdir.string() + "/refs/" + r.revision +
                    " missing); run once without --offline / HF_HUB_OFFLINE to download it");
      // A ref holds a commit hash; anything else (a path such as ../../elsewhere) would lead out of the cache.
      if (!is_commit(commit))
        throw Error(rdir.string() + "/refs/" + r.revision + ": holds '" + commit.substr(0, 80) +
                    "', not a commit hash");
    }
    const fs::path snap = rdir / "snapshots" / commit;
    const auto miss = snapshot_missing(snap);
    if (!miss.empty()) {
      std::string m;
      for (const auto& x : miss) m += " " + x;
      throw Error("offline: the cached snapshot of " + id + " (" + snap.string() + ") lacks:" + m);
    }
    return snap.string();
  }

  std::string body;
  const std::string api = o.endpoint + "/api/models/" + r.repo + "/revision/" + r.revision + "?blobs=true";
  const long status = get_text(api, o, body);
  if (status == 401 || status == 403) {
    if (o.token.empty())
      throw Error(id + ": the repository needs authentication (gated or private). Accept its terms at " +
                  o.endpoint + "/" + r.repo + " and pass --token or set HF_TOKEN");
    throw Error(id + ": access denied with the given token (HTTP " + std::to_string(status) +
                "): check it has read access and that the terms are accepted at " + o.endpoint + "/" +
                r.repo);
  }
  if (status == 404)
    throw Error(id + ": no such model repository or revision on " + o.endpoint +
                " (a private repository also answers this without a token)");
  if (status != 200) throw Error(id + ": the Hub API answered HTTP " + std::to_string(status));
  const json info = parse_json_untrusted(body, api);
  const std::string commit = info.value("sha", "");
  if (!is_commit(commit)) throw Error(api + ": no commit sha in the answer");
  std::vector<HubFile> files;
  if (!info.contains("siblings") || !info["siblings"].is_array()) throw Error(api + ": no file list");
  for (const auto& s : info["siblings"]) {
    const std::string p = s.value("rfilename", "");
    if (p.empty() || p.find("..") != std::string::npos || !hub_file_wanted(p)) continue;
    HubFile f;
    f.path = p;
    if (s.contains("lfs") && s["lfs"].is_object()) {
      f.sha256 = s["lfs"].value("sha256", "");
      f.size = s["lfs"].value("size", uint64_t{0});
      f.blob = f.sha256;
    } else {
      f.blob = s.value("blobId", "");
      f.size = s.value("size", uint64_t{0});
    }
    if (f.blob.empty() || f.blob.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw Error(api + ": file " + p + " has no usable blob id (the API answer lacks ?blobs=true data)");
    files.push_back(f);
  }
  if (files.empty())
    throw Error(id + ": the repository has no config.json or safetensors files fp4lab can use");

  const fs::path blobs = rdir / "blobs", snap = rdir / "snapshots" / commit;
  fs::create_directories(blobs);
  fs::create_directories(rdir / "refs");
  fs::create_directories(snap);
  if (!is_commit(r.revision)) {
    write_text_file((rdir / "refs" / r.revision).string(), commit);
  }
  std::vector<HubFile> todo;
  uint64_t need = 0;
  for (const auto& f : files) {
    const fs::path b = blobs / f.blob;
    std::error_code ec;
    if (fs::exists(b, ec) && (!f.size || fs::file_size(b) == f.size)) {
      link_snapshot(snap, f.path, f.blob);
      continue;
    }
    const fs::path part = blobs / (f.blob + ".incomplete");
    need += f.size - (fs::exists(part, ec) ? std::min<uint64_t>(f.size, fs::file_size(part)) : 0);
    todo.push_back(f);
  }
  if (todo.empty()) return snap.string();
  struct statvfs vs {};
  if (statvfs(blobs.c_str(), &vs) == 0) {
    const uint64_t free_b = static_cast<uint64_t>(vs.f_bavail) * vs.f_frsize;
    if (need + (64ull << 20) > free_b)
      throw Error("not enough disk space for " + id + " in " + o.cache_dir + ": " +
                  human(static_cast<double>(need)) + " to download, " + human(static_cast<double>(free_b)) +
                  " free");
  }
  Progress prog;
  prog.label = "downloading " + r.repo;
  prog.files = static_cast<int>(todo.size());
  for (const auto& f : todo) prog.total += f.size;
  std::atomic<size_t> next{0};
  std::mutex err_mu;
  std::string first_error;
  std::atomic<bool> finished{false};
  auto worker = [&] {
    for (size_t i; (i = next++) < todo.size();) {
      {
        std::lock_guard lock(err_mu);
        if (!first_error.empty()) return;
      }
      const HubFile& f = todo[i];
      try {
        const fs::path part = blobs / (f.blob + ".incomplete");
        fetch_resumable(o.endpoint + "/" + r.repo + "/resolve/" + commit + "/" + f.path, part, f.size, o,
                        &prog, id + ": " + f.path);
        verify_and_commit(part, blobs / f.blob, f.size, f.sha256, id + ": " + f.path);
        link_snapshot(snap, f.path, f.blob);
        ++prog.files_done;
      } catch (const std::exception& e) {
        std::lock_guard lock(err_mu);
        if (first_error.empty()) first_error = e.what();
      }
    }
  };
  std::thread printer([&] {
    while (!finished) {
      if (o.progress) prog.print(false);
      for (int k = 0; k < 5 && !finished; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, o.parallel); ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  finished = true;
  printer.join();
  if (o.progress) prog.print(true);
  if (!first_error.empty()) throw Error(first_error);
  return snap.string();
}

void hub_download_file(const std::string& url, const std::string& dest, uint64_t size,
                       const std::string& sha256, const HubOptions& o) {
  const fs::path d(dest), part(dest + ".incomplete");
  fs::create_directories(d.parent_path());
  fetch_resumable(url, part, size, o, nullptr, url);
  verify_and_commit(part, d, size, sha256, url);
}

std::string resolve_model_arg(const std::string& model, const HubOptions& o) {
  if (!is_hub_id(model)) return model;
  const std::string dir = hub_resolve_model(model, o);
  std::fprintf(stderr, "%s -> %s\n", model.c_str(), dir.c_str());
  return dir;
}

}  // namespace fp4lab
