// Hub ids against a stand-in Hub on 127.0.0.1 (tests/hub_standin.py serving tests/data/models/tiny-llama):
// cache layout as huggingface_hub's, reuse of such a cache, resume after a cut or killed download, retries on
// 429/5xx, 404/401, a corrupted blob, the disk-space check, offline mode, and the GSM8K data fetch with its
// checksum.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/sha256.h"
#include "io/hub.h"
#include "common/json_util.h"
#include "io/model_config.h"
#include "test_util.h"

using namespace fp4lab;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  return read_text_file(p.string());
}

class StandinHub : public ::testing::Test {
 protected:
  test::TempDir dir;
  pid_t pid = -1;
  std::string endpoint;
  std::string model = test::data_dir() + "/models/tiny-llama";

  void SetUp() override {
    const std::string port_file = dir.str("port");
    pid = fork();
    if (pid == 0) {
      const std::string script = std::string(FP4LAB_SOURCE_DIR) + "/tests/hub_standin.py";
      const std::string data = test::data_dir() + "/gsm8k";
      execlp("python3", "python3", script.c_str(), model.c_str(), data.c_str(), port_file.c_str(),
             dir.str("log.jsonl").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 200 && !fs::exists(port_file); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    ASSERT_TRUE(fs::exists(port_file)) << "the stand-in Hub did not start (python3 missing?)";
    endpoint = "http://127.0.0.1:" + slurp(port_file);
  }
  void TearDown() override {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
  HubOptions opts() const {
    HubOptions o;
    o.endpoint = endpoint;
    o.cache_dir = dir.str("cache");
    o.backoff_s = 0.01;
    o.progress = false;
    return o;
  }
  std::vector<json> log() const {
    std::vector<json> out;
    std::ifstream f(dir.str("log.jsonl"));
    for (std::string l; std::getline(f, l);) out.push_back(json::parse(l));
    return out;
  }
  int count(const std::string& needle) const {
    int n = 0;
    for (const auto& r : log()) n += r["path"].get<std::string>().find(needle) != std::string::npos;
    return n;
  }
};

TEST(HubIds, Recognized) {
  EXPECT_TRUE(is_hub_id("nvidia/NVIDIA-Nemotron-Nano-9B-v2-NVFP4"));
  EXPECT_TRUE(is_hub_id("Qwen/Qwen3-8B@main"));
  EXPECT_FALSE(is_hub_id("preset:tiny"));
  EXPECT_FALSE(is_hub_id("/abs/path"));
  EXPECT_FALSE(is_hub_id("just-a-name"));
  EXPECT_FALSE(is_hub_id("a/b/c"));
  EXPECT_TRUE(hub_file_wanted("model-00001-of-00002.safetensors"));
  EXPECT_TRUE(hub_file_wanted("hf_quant_config.json"));
  EXPECT_FALSE(hub_file_wanted("pytorch_model.bin"));
  EXPECT_FALSE(hub_file_wanted("onnx/model.safetensors"));
}

TEST_F(StandinHub, DownloadsIntoTheHuggingfaceHubLayoutAndReusesIt) {
  const std::string snap = hub_resolve_model("org/tiny", opts());
  const fs::path repo = fs::path(dir.str("cache")) / "models--org--tiny";
  const std::string commit = slurp(repo / "refs" / "main");
  EXPECT_EQ(fs::path(snap), repo / "snapshots" / commit);
  ASSERT_TRUE(fs::is_symlink(fs::path(snap) / "model.safetensors"));
  const std::string target = fs::read_symlink(fs::path(snap) / "model.safetensors").string();
  EXPECT_EQ(target.rfind("../../blobs/", 0), 0u) << target;
  EXPECT_EQ(slurp(fs::path(snap) / "model.safetensors"), slurp(model + "/model.safetensors"));
  EXPECT_EQ(sha256_hex(slurp(fs::path(snap) / "model.safetensors")),
            target.substr(target.rfind('/') + 1));  // LFS blobs are named by their sha256
  EXPECT_FALSE(fs::exists(fs::path(snap) / "onnx"));
  (void)parse_model_config(read_json_file(snap + "/config.json"), "config.json");
  const int downloads = count("/resolve/");
  EXPECT_GE(downloads, 2);
  // A second resolve asks the API for the commit, finds every blob and downloads nothing.
  EXPECT_EQ(hub_resolve_model("org/tiny", opts()), snap);
  EXPECT_EQ(count("/resolve/"), downloads);
  // Offline: the cache alone, by ref or by commit.
  HubOptions off = opts();
  off.offline = true;
  const int requests = static_cast<int>(log().size());
  EXPECT_EQ(hub_resolve_model("org/tiny", off), snap);
  EXPECT_EQ(hub_resolve_model("org/tiny@" + commit, off), snap);
  EXPECT_EQ(static_cast<int>(log().size()), requests);
  // The CLI takes the id wherever it takes --model.
  const auto r = test::run_fp4lab("generate --model org/tiny --hub-endpoint " + endpoint + " --cache-dir " +
                                  dir.str("cache") + " --prompt-ids 1,2,3 --max-new-tokens 2 --greedy");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("org/tiny -> "), std::string::npos) << r.out;
  try {
    hub_resolve_model("org/flaky", off);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("offline"), std::string::npos) << e.what();
  }
}

TEST_F(StandinHub, ReusesACacheLaidOutByHuggingfaceHub) {
  // Built by hand exactly as huggingface_hub leaves it: blobs named by sha256 (LFS) or git blob id, relative
  // symlinks in snapshots/<commit>, refs/main holding the commit.
  const fs::path repo = fs::path(dir.str("cache")) / "models--org--prebuilt";
  std::string body;
  {
    // The commit the stand-in reports: sha1 of the repo name (as its README says).
    std::string cmd = "python3 -c \"import hashlib;print(hashlib.sha1(b'org/prebuilt').hexdigest(),end='')\"";
    FILE* p = popen(cmd.c_str(), "r");
    char buf[64] = {0};
    ASSERT_TRUE(p && fgets(buf, sizeof buf, p));
    pclose(p);
    body = buf;
  }
  const fs::path snap = repo / "snapshots" / body;
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "refs");
  fs::create_directories(snap);
  std::ofstream(repo / "refs" / "main") << body;
  for (const auto& e : fs::directory_iterator(model)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("golden", 0) == 0) continue;
    const std::string data = slurp(e.path());
    std::string blob;
    if (name.ends_with(".safetensors")) {
      blob = sha256_hex(data);
    } else {
      FILE* p = popen(("python3 -c \"import hashlib,sys;d=open(sys.argv[1],'rb').read();"
                       "print(hashlib.sha1(b'blob %d\\0'%len(d)+d).hexdigest(),end='')\" " +
                       e.path().string())
                          .c_str(),
                      "r");
      char buf[64] = {0};
      ASSERT_TRUE(p && fgets(buf, sizeof buf, p));
      pclose(p);
      blob = buf;
    }
    std::ofstream(repo / "blobs" / blob, std::ios::binary) << data;
    fs::create_symlink("../../blobs/" + blob, snap / name);
  }
  EXPECT_EQ(hub_resolve_model("org/prebuilt", opts()), snap.string());
  EXPECT_EQ(count("/resolve/"), 0);
}

TEST_F(StandinHub, ErrorsAUserCanActOn) {
  auto message = [&](const std::string& id, HubOptions o) {
    try {
      hub_resolve_model(id, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("org/nope", opts()).find("no such model repository"), std::string::npos);
  EXPECT_NE(message("org/tiny@v9", opts()).find("no such model repository or revision"), std::string::npos);
  const std::string gated = message("org/gated", opts());
  EXPECT_NE(gated.find("--token"), std::string::npos) << gated;
  HubOptions wrong = opts();
  wrong.token = "not-the-token";
  const std::string denied = message("org/gated", wrong);
  EXPECT_NE(denied.find("access denied"), std::string::npos) << denied;
  EXPECT_EQ(denied.find("not-the-token"), std::string::npos) << "the token must never be printed";
  HubOptions good = opts();
  good.token = "secret";
  EXPECT_NO_THROW(hub_resolve_model("org/gated", good));
  for (const auto& r : log()) EXPECT_EQ(r.dump().find("secret"), std::string::npos);
  EXPECT_NE(message("org/huge", opts()).find("not enough disk space"), std::string::npos);
  // A corrupted blob: deleted, and the message says so.
  const std::string bad = message("org/corrupt", opts());
  EXPECT_NE(bad.find("sha256 mismatch"), std::string::npos) << bad;
  EXPECT_NE(bad.find("deleted"), std::string::npos) << bad;
  for (const auto& e : fs::directory_iterator(fs::path(dir.str("cache")) / "models--org--corrupt" / "blobs"))
    EXPECT_EQ(e.path().string().find(".incomplete"), std::string::npos) << e.path();
  EXPECT_EQ(message("bad id!", opts()).find("not a Hub model id") != std::string::npos, true);
}

TEST_F(StandinHub, RetriesOn429And5xx) {
  const std::string snap = hub_resolve_model("org/flaky", opts());
  EXPECT_EQ(slurp(fs::path(snap) / "model.safetensors"), slurp(model + "/model.safetensors"));
  // The API answered 429 twice and each file 503 twice before succeeding.
  EXPECT_EQ(count("/api/models/org/flaky"), 3);
  EXPECT_EQ(count("/org/flaky/resolve/") % 3, 0);
}

TEST_F(StandinHub, GivesUpAfterTheRetryBudget) {
  HubOptions o = opts();
  o.max_retries = 1;  // the stand-in fails twice: one retry is not enough
  try {
    hub_resolve_model("org/flaky", o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("429"), std::string::npos) << e.what();
  }
}

TEST_F(StandinHub, ResumesACutDownloadAndAKilledOne) {
  // The stand-in cuts the first transfer of each safetensors file halfway; the retry asks for the rest only.
  const std::string snap = hub_resolve_model("org/cut", opts());
  EXPECT_EQ(slurp(fs::path(snap) / "model.safetensors"), slurp(model + "/model.safetensors"));
  bool ranged = false;
  for (const auto& r : log())
    ranged = ranged || (r["path"].get<std::string>().find("model.safetensors") != std::string::npos &&
                        !r["range"].is_null());
  EXPECT_TRUE(ranged) << "no Range request after the cut";
  // A download killed earlier left blobs/<sha>.incomplete: the next run continues from its size.
  const std::string data = slurp(model + "/model.safetensors");
  const fs::path blobs = fs::path(dir.str("cache")) / "models--org--tiny" / "blobs";
  fs::create_directories(blobs);
  const size_t half = data.size() / 2;
  std::ofstream(blobs / (sha256_hex(data) + ".incomplete"), std::ios::binary) << data.substr(0, half);
  const std::string snap2 = hub_resolve_model("org/tiny", opts());
  EXPECT_EQ(slurp(fs::path(snap2) / "model.safetensors"), data);
  bool resumed = false;
  for (const auto& r : log()) resumed = resumed || r["range"] == "bytes=" + std::to_string(half) + "-";
  EXPECT_TRUE(resumed);
}

TEST_F(StandinHub, Gsm8kDataFetchIsChecksummed) {
  const std::string test_sha = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14";
  const std::string dest = dir.str("ds/test.jsonl");
  hub_download_file(endpoint + "/data/test.jsonl", dest, 0, test_sha, opts());
  EXPECT_EQ(sha256_file_hex(dest), test_sha);
  const std::string bad = dir.str("ds/train.jsonl");
  EXPECT_THROW(hub_download_file(endpoint + "/data/train.jsonl", bad, 0, test_sha, opts()), Error);
  EXPECT_FALSE(fs::exists(bad));
  EXPECT_FALSE(fs::exists(bad + ".incomplete"));
  // The CLI path: `eval gsm8k` without --data fetches into the cache and runs.
  const auto r = test::run_fp4lab("eval gsm8k --model preset:tiny --tokenizer " + test::data_dir() +
                                  "/tokenizers/mistral-v1 --limit 1 --max-new-tokens 2 --no-db --cache-dir " +
                                  dir.str("cache") + " --data-url " + endpoint + "/data");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir.str("fp4lab/datasets/gsm8k/train.jsonl"))) << r.out;
}

}  // namespace
