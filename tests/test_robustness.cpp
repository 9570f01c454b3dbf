// Hostile and faulty input through the CLI, one test per class: a full disk, outputs over inputs, many
// processes opening a new results database, a torn records file, prompts past the context, nonsense configs
// and files that are not files, a Hub ref leading out of the cache, NaN flags. Each failure is one clear line
// and a non-zero exit, never a success message, a destroyed input or a hang.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "io/hub.h"
#include "common/json_util.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace fp4lab;
namespace fs = std::filesystem;
using fp4lab::test::run_command;
using fp4lab::test::run_fp4lab;
using fp4lab::test::TempDir;

namespace {

// A 64 KB tmpfs mounted at dir (the suite runs as root, as CI does), unmounted on scope exit.
struct SmallDisk {
  std::string dir;
  explicit SmallDisk(const std::string& d) : dir(d) {
    fs::create_directories(dir);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64k") != 0)
      throw std::runtime_error("cannot mount a 64 KB tmpfs at " + dir + " (the tests run as root)");
  }
  ~SmallDisk() { ::umount(dir.c_str()); }
  void fill(const std::string& name) const {
    std::ofstream f(dir + "/" + name, std::ios::binary);
    const std::string block(4096, 'x');
    for (int i = 0; i < 64 && f; ++i) f << block << std::flush;
  }
};

}  // namespace

TEST(Robustness, AFullDiskFailsTheWriteAndKeepsThePreviousFile) {
  TempDir d;
  SmallDisk disk(d.str("disk"));
  write_text_file(d.str("in.jsonl"), "{\"text\": \"hello world\"}\n");
  const std::string tok = fp4lab::test::data_dir() + "/tokenizers/gpt2";
  auto r = run_fp4lab("tokenize --tokenizer " + tok + " --jsonl " + d.str("in.jsonl") + " --out " + disk.dir + "/ids.jsonl");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string before = read_text_file(disk.dir + "/ids.jsonl");
  disk.fill("filler");
  r = run_fp4lab("inspect preset:nemotron-nano-9b-v2 --layers --json " + disk.dir + "/inspect.json");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("write failed"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(disk.dir + "/inspect.json"));
  std::string big = "{\"text\": \"" + std::string(20000, 'a') + " " + std::string(20000, 'b') + "\"}\n";
  write_text_file(d.str("big.jsonl"), big + big);
  r = run_fp4lab("tokenize --tokenizer " + tok + " --jsonl " + d.str("big.jsonl") + " --out " + disk.dir + "/ids.jsonl");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_EQ(read_text_file(disk.dir + "/ids.jsonl"), before) << "the previous output must survive a failed write";
  r = run_fp4lab("export --model preset:tiny --out " + disk.dir + "/ckpt");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_EQ(r.out.find("wrote "), std::string::npos) << r.out;
}

TEST(Robustness, OutputsNeverOverwriteInputs) {
  TempDir d;
  const std::string src = fp4lab::test::data_dir() + "/models/tiny-llama";
  fs::copy(src, d.str("m"));
  const std::string sum = read_text_file(d.str("m/model.safetensors"));
  for (const std::string& out : {d.str("m"), d.str("m/q"), d.str("")}) {
    const auto r = run_fp4lab("quantize --in " + d.str("m") + " --out " + out);
    EXPECT_NE(r.status, 0) << out << ": " << r.out;
    EXPECT_NE(r.out.find("would destroy the input"), std::string::npos) << r.out;
  }
  EXPECT_EQ(read_text_file(d.str("m/model.safetensors")), sum);
  fs::create_directories(d.str("busy"));
  write_text_file(d.str("busy/note.txt"), "x");
  auto r = run_fp4lab("quantize --in " + d.str("m") + " --out " + d.str("busy"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  r = run_fp4lab("quantize --in " + d.str("m") + " --out " + d.str("busy") + " --force");
  EXPECT_EQ(r.status, 0) << r.out;
  r = run_fp4lab("export --model preset:tiny --out " + d.str("busy"));
  EXPECT_NE(r.status, 0);
}

TEST(Robustness, ManyProcessesOpenANewResultsDatabase) {
  TempDir d;
  std::string cmd;
  for (int i = 0; i < 8; ++i)
    cmd += std::string(FP4LAB_BINARY) + " results --db " + d.str("new.db") + " list >" + d.str("o" + std::to_string(i)) +
           " 2>&1 || echo fail-" + std::to_string(i) + " & ";
  const auto r = run_command("(" + cmd + "wait)");
  EXPECT_EQ(r.out.find("fail-"), std::string::npos) << r.out;
  // A database that cannot be written stops a bench before it runs, not after.
  write_text_file(d.str("file"), "x");
  const auto b = run_fp4lab("bench --backend cpu --model preset:tiny --input-len 4 --output-len 2 --reps 1 --db " +
                            d.str("file") + "/r.db --json " + d.str("b.json"));
  EXPECT_NE(b.status, 0) << b.out;
  EXPECT_EQ(b.out.find("Tokens/sec"), std::string::npos) << "the run should not have started: " << b.out;
}

TEST(Robustness, ATornRecordsLineIsCutOnResume) {
  TempDir d;
  const std::string base = std::string(FP4LAB_BINARY) + " eval gsm8k --model preset:tiny --tokenizer " +
                           fp4lab::test::data_dir() + "/tokenizers/mistral-v1 --data " + fp4lab::test::data_dir() +
                           "/gsm8k --max-new-tokens 2 --threads 2 --no-db --records " + d.str("r.jsonl") +
                           " --json " + d.str("out.json");
  ASSERT_EQ(std::system((base + " --limit 1 > /dev/null 2>&1").c_str()), 0);
  {
    std::ofstream f(d.str("r.jsonl"), std::ios::app);
    f << "{\"id\": 1, \"prompt_sha";  // a write cut by a kill or a full disk
  }
  ASSERT_EQ(std::system((base + " --limit 3 > " + d.str("log") + " 2>&1").c_str()), 0) << read_text_file(d.str("log"));
  EXPECT_NE(read_text_file(d.str("log")).find("torn"), std::string::npos);
  std::ifstream in(d.str("r.jsonl"));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    EXPECT_NO_THROW(parse_json_untrusted(line, "r.jsonl")) << line;
    ++n;
  }
  EXPECT_EQ(n, 4);  // the key line and three records
  ASSERT_EQ(std::system((base + " --limit 3 > /dev/null 2>&1").c_str()), 0);
}

TEST(Robustness, PromptsPastTheContextNeedAFlag) {
  const std::string m = fp4lab::test::data_dir() + "/models/tiny-llama";  // max_position_embeddings 256
  std::string ids = "1";
  for (int i = 0; i < 250; ++i) ids += ",2";
  auto r = run_fp4lab("generate --model " + m + " --greedy --max-new-tokens 10 --prompt-ids " + ids);
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("max_position_embeddings"), std::string::npos) << r.out;
  r = run_fp4lab("generate --model " + m + " --greedy --max-new-tokens 10 --beyond-context --prompt-ids " + ids);
  EXPECT_EQ(r.status, 0) << r.out;
  r = run_fp4lab("generate --model " + m + " --temperature nan --prompt-ids 1,2");
  EXPECT_NE(r.status, 0) << r.out;
  r = run_fp4lab("generate --model " + m + " --top-p nan --prompt-ids 1,2");
  EXPECT_NE(r.status, 0) << r.out;
}

TEST(Robustness, NonsenseConfigsAndNonFilesAreRefused) {
  TempDir d;
  const std::string src = fp4lab::test::data_dir() + "/models/tiny-llama";
  const json cfg = read_json_config_file(src + "/config.json");
  auto with = [&](const std::string& name, const std::string& key, const json& value) {
    fs::create_directories(d.str(name));
    fs::copy_file(src + "/model.safetensors", d.str(name + "/model.safetensors"));
    json c = cfg;
    c[key] = value;
    write_text_file(d.str(name + "/config.json"), c.dump());
    return run_fp4lab("generate --model " + d.str(name) + " --prompt-ids 1,2 --max-new-tokens 2");
  };
  auto r = with("eps", "rms_norm_eps", -1.0);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("rms_norm_eps"), std::string::npos) << r.out;
  r = with("layers", "num_hidden_layers", 0);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("num_hidden_layers"), std::string::npos) << r.out;
  r = with("ctx", "max_position_embeddings", 0);
  EXPECT_NE(r.status, 0);
  // A FIFO as config.json would block a reader forever; a huge file would be read whole.
  fs::create_directories(d.str("fifo"));
  fs::copy_file(src + "/model.safetensors", d.str("fifo/model.safetensors"));
  ASSERT_EQ(::mkfifo(d.str("fifo/config.json").c_str(), 0600), 0);
  r = run_fp4lab("inspect " + d.str("fifo"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("not a regular file"), std::string::npos) << r.out;
  fs::create_directories(d.str("huge"));
  fs::copy_file(src + "/model.safetensors", d.str("huge/model.safetensors"));
  {
    std::ofstream f(d.str("huge/config.json"));
    f << "{\"pad\": \"" << std::string(17u << 20, ' ') << "\"}";
  }
  r = run_fp4lab("inspect " + d.str("huge"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("MiB"), std::string::npos) << r.out;
}

TEST(Robustness, AHubRefCannotLeadOutOfTheCache) {
  TempDir d;
  const std::string rdir = d.str("cache/models--org--tiny");
  fs::create_directories(rdir + "/refs");
  fs::create_directories(d.str("elsewhere"));
  fs::copy(fp4lab::test::data_dir() + "/models/tiny-llama", d.str("elsewhere/snap"));
  write_text_file(rdir + "/refs/main", "../../../elsewhere/snap");
  HubOptions o;
  o.cache_dir = d.str("cache");
  o.offline = true;
  try {
    hub_resolve_model("org/tiny", o);
    FAIL() << "a ref that is not a commit hash was followed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a commit hash"), std::string::npos) << e.what();
  }
}

TEST(Robustness, NonFiniteWeightsAndScalesAreRefusedAtLoad) {
  TempDir d;
  const std::string src = fp4lab::test::data_dir() + "/models/tiny-llama";
  auto poisoned = [&](const std::string& dir, const std::string& tensor, float value) {
    fs::create_directories(dir);
    fs::copy_file(src + "/config.json", dir + "/config.json");
    fp4lab::test::rewrite_tensors(src, dir + "/model.safetensors", [&](const std::string& name, auto& b) {
      if (name == tensor) std::memcpy(b.data() + 4, &value, 4);  // element 1 (F32)
      return true;
    });
  };
  poisoned(d.str("nan"), "model.layers.1.input_layernorm.weight", std::nanf(""));
  auto r = run_fp4lab("generate --model " + d.str("nan") + " --prompt-ids 1,2 --max-new-tokens 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("model.layers.1.input_layernorm.weight' holds NaN"), std::string::npos) << r.out;
  poisoned(d.str("inf"), "model.layers.0.mlp.up_proj.weight", INFINITY);
  r = run_fp4lab("generate --model " + d.str("inf") + " --prompt-ids 1,2 --max-new-tokens 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("holds Inf"), std::string::npos) << r.out;
  // A NaN tensor scale in an NVFP4 checkpoint.
  r = run_fp4lab("quantize --in " + src + " --out " + d.str("q"));
  ASSERT_EQ(r.status, 0) << r.out;
  fp4lab::test::rewrite_tensors(d.str("q"), d.str("q/model.safetensors"), [](const std::string& name, auto& b) {
    const float nan = std::nanf("");
    if (name == "model.layers.0.mlp.down_proj.weight_scale_2") std::memcpy(b.data(), &nan, 4);
    return true;
  });
  r = run_fp4lab("generate --model " + d.str("q") + " --prompt-ids 1,2 --max-new-tokens 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("weight_scale_2' holds NaN"), std::string::npos) << r.out;
}

// Finite weights can still overflow: a final norm of 3e38 makes every logit a sum of +inf and -inf terms,
// NaN. Greedy decoding, a Gumbel-max sample and a top-k sample each stop with an error naming the prompt and
// the step (each once picked token 0 forever with exit 0).
TEST(Robustness, NanLogitsStopGenerationNamingTheStep) {
  TempDir d;
  const std::string src = fp4lab::test::data_dir() + "/models/tiny-llama";
  fs::create_directories(d.str("m"));
  fs::copy_file(src + "/config.json", d.str("m/config.json"));
  fp4lab::test::rewrite_tensors(src, d.str("m/model.safetensors"), [](const std::string& name, auto& b) {
    if (name == "model.norm.weight")
      for (size_t i = 0; i + 4 <= b.size(); i += 4) {
        const float big = 3e38f;
        std::memcpy(b.data() + i, &big, 4);
      }
    return true;
  });
  for (const std::string sampling : {"--greedy", "--temperature 0.8", "--temperature 0.8 --top-k 5"}) {
    const auto r = run_fp4lab("generate --model " + d.str("m") + " --prompt-ids 1,2,3 --max-new-tokens 4 " +
                              sampling);
    EXPECT_NE(r.status, 0) << sampling;
    EXPECT_NE(r.out.find("prompt 0, new token 0: the logits are NaN"), std::string::npos) << sampling << r.out;
  }
}
