// GSM8K as lm-eval scores it: few-shot draws identical to CPython's random, prompts identical to lm-eval's
// template (sha256 of the expected strings, computed independently from the task definitions), the filters
// and exact-match normalization on tricky completions, and the whole pipeline on the CPU with resume.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/sha256.h"
#include "eval/gsm8k.h"
#include "eval/python_random.h"
#include "common/json_util.h"
#include "test_util.h"

using namespace fp4lab;

namespace {

const std::string kData = fp4lab::test::data_dir() + "/gsm8k";

TEST(PythonRandom, MatchesCPythonSampleForEveryQuestion) {
  const auto golden = read_json_file(kData + "/fewshot5_seed1234.json")["indices"];
  const auto ours = gsm8k_fewshot_indices(1319, 7473);
  ASSERT_EQ(golden.size(), ours.size());
  for (size_t i = 0; i < ours.size(); ++i)
    ASSERT_EQ(golden[i].get<std::vector<size_t>>(), ours[i]) << "question " << i;
}

TEST(PythonRandom, KnownStreams) {
  // random.Random(0).getrandbits(32) x3 and random.Random(42).sample(range(10), 3) from CPython 3.11.
  PythonRandom r0(0);
  EXPECT_EQ(r0.getrandbits(32), 3626764237u);
  EXPECT_EQ(r0.getrandbits(32), 1654615998u);
  EXPECT_EQ(r0.getrandbits(32), 3255389356u);
  PythonRandom r42(42);
  EXPECT_EQ(r42.sample(10, 3), (std::vector<uint64_t>{1, 0, 4}));
}

TEST(Gsm8k, PromptsAreByteIdenticalToLmEval) {
  const auto test = read_gsm8k_jsonl(kData + "/test.jsonl");
  const auto train = read_gsm8k_jsonl(kData + "/train.jsonl");
  ASSERT_EQ(test.size(), 1319u);
  ASSERT_EQ(train.size(), 7473u);
  const auto shots = gsm8k_fewshot_indices(test.size(), train.size());
  const char* five[] = {"32680f263ba83280e98a8a24ceefed10a722a4cdcd9f4d78e93c45d43143ca66",
                        "e6b9a0195411932e5323ed20ad05e965b08b979103bbb26594a5bdf123d27990",
                        "97eb2662b11bbd7bd0423f898efde0e9a04d22028ed5fc1f80576965b0f570fa"};
  const char* cot[] = {"901fead9abd2535b6d0610c3c90125f38cad81678c4b2b98ec8fb818e3948bde",
                       "d8ef3245c80f640811539185b957683e5036aab3d96e0ecf13cd5728c88cf30f",
                       "dc37b83aca6e54ce0ed7be37efa94c2ba8f01755955ff2c04344d5acd546492b"};
  for (size_t i = 0; i < 3; ++i) {
    std::vector<const Gsm8kItem*> ex;
    for (size_t k : shots[i]) ex.push_back(&train[k]);
    const std::string p = gsm8k_prompt(Gsm8kTask::FiveShot, test[i], ex);
    EXPECT_EQ(sha256_hex(p), five[i]) << "gsm8k prompt " << i;
    EXPECT_EQ(sha256_hex(gsm8k_prompt(Gsm8kTask::CoT8, test[i], {})), cot[i]) << "gsm8k_cot prompt " << i;
  }
  std::vector<const Gsm8kItem*> ex;
  for (size_t k : shots[0]) ex.push_back(&train[k]);
  const std::string p0 = gsm8k_prompt(Gsm8kTask::FiveShot, test[0], ex);
  EXPECT_EQ(p0.substr(0, 10), "Question: ");
  const std::string tail = "make every day at the farmers' market?\nAnswer:";
  EXPECT_EQ(p0.substr(p0.size() - tail.size()), tail);
  const std::string c0 = gsm8k_prompt(Gsm8kTask::CoT8, test[0], {});
  EXPECT_EQ(c0.substr(0, 47), "Q: There are 15 trees in the grove. Grove worke");
  EXPECT_NE(c0.find("The answer is 6.\n\nQ: If there are 3 cars"), std::string::npos);
}

TEST(Gsm8k, ScorerMatchesLmEvalOnTrickyCompletions) {
  struct Case {
    Gsm8kTask task;
    std::string completion, target;  // target as doc_to_target gives it
    std::string strict, flexible;
    bool strict_ok, flexible_ok;
  };
  const std::string t18 = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18";
  const Case cases[] = {
      {Gsm8kTask::FiveShot, " She has 16 - 3 - 4 = 9 eggs. 9 * 2 = $18.\n#### 18", t18, "18", "18", true,
       true},
      {Gsm8kTask::FiveShot, " The total is $1,234.50.", "x\n#### 1234.50", "[invalid]", "$1,234.50.", false,
       true},
      {Gsm8kTask::FiveShot, " #### -5", "#### -5", "-5", "-5", true, true},
      {Gsm8kTask::FiveShot, " I do not know.", t18, "[invalid]", "[invalid]", false, false},
      {Gsm8kTask::FiveShot, " #### 12\n#### 13", "#### 13", "12", "13", false, true},
      {Gsm8kTask::FiveShot, " #### 42.", "#### 42", "42.", "42.", true, true},
      {Gsm8kTask::FiveShot, " #### 1,000", "#### 1000", "1,000", "1,000", true, true},
      {Gsm8kTask::FiveShot, " it costs $5", "#### 5", "[invalid]", "$5", false, true},
      {Gsm8kTask::FiveShot, " 3 apples and 7 pears", "#### 10", "[invalid]", "7", false, false},
      {Gsm8kTask::FiveShot, " The Answer Is 8", "#### 8", "[invalid]", "8", false, true},
      {Gsm8kTask::CoT8, " 23 - 15 is 8. The answer is 8.", "8", "8", "8.", true, true},
      // Strict cot needs one character after the number (its final "." is unescaped).
      {Gsm8kTask::CoT8, " The answer is 8", "8", "[invalid]", "8", false, true},
      {Gsm8kTask::CoT8, " The answer is -3.5 dollars", "-3.5", "-3.5", "-3.5", true, true},
      {Gsm8kTask::CoT8, " The answer is 1,200.\n\n", "1200", "1,200", "1,200.", true, true},
  };
  for (const auto& c : cases) {
    const auto s = score_gsm8k(c.task, c.completion, c.target);
    EXPECT_EQ(s.strict, c.strict) << c.completion;
    EXPECT_EQ(s.flexible, c.flexible) << c.completion;
    EXPECT_EQ(s.strict_ok, c.strict_ok) << c.completion;
    EXPECT_EQ(s.flexible_ok, c.flexible_ok) << c.completion;
  }
  EXPECT_EQ(gsm8k_target(Gsm8kTask::CoT8, {"q", "a b\n#### 72 "}), "72");
  EXPECT_EQ(lm_eval_normalize("Step\n#### $1,000."), "1000");
  EXPECT_EQ(lm_eval_normalize("[invalid]"), "[invalid]");
  EXPECT_EQ(cut_at_stop(" 5\n\nQuestion: next", gsm8k_stop_strings(Gsm8kTask::FiveShot)), " 5\n\n");
  EXPECT_EQ(cut_at_stop(" 5</s>x Question:", gsm8k_stop_strings(Gsm8kTask::FiveShot)), " 5");
}

TEST(Gsm8k, StatisticsAsLmEvalAndMcNemar) {
  const auto m = mean_stderr({true, false, true, true});
  EXPECT_DOUBLE_EQ(m.mean, 0.75);
  EXPECT_NEAR(m.stderr_, 0.25, 1e-12);
  std::vector<bool> a(20, true), b(20, true);
  a[0] = false;                               // only b right
  for (int i = 1; i < 10; ++i) b[i] = false;  // 9 only a right
  const auto mc = mcnemar(a, b);
  EXPECT_EQ(mc.only_a, 9);
  EXPECT_EQ(mc.only_b, 1);
  EXPECT_NEAR(mc.p_value, 2 * 11.0 / 1024.0, 1e-12);
}

TEST(Gsm8k, WholePipelineOnCpuResumes) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("fp4lab_gsm8k_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string base = std::string(FP4LAB_BINARY) + " eval gsm8k --model preset:tiny --tokenizer " +
                           fp4lab::test::data_dir() + "/tokenizers/mistral-v1 --data " + kData +
                           " --max-new-tokens 4 --threads 2 --no-db --records " + (dir / "r.jsonl").string() +
                           " --json " + (dir / "out.json").string();
  ASSERT_EQ(std::system((base + " --limit 1 > /dev/null 2>&1").c_str()), 0);
  ASSERT_EQ(std::system((base + " --limit 2 > /dev/null 2>" + (dir / "log").string()).c_str()), 0);
  const std::string log = read_text_file((dir / "log").string());
  EXPECT_NE(log.find("resuming, 1 of 2"), std::string::npos) << log;
  const auto j = read_json_file((dir / "out.json").string());
  EXPECT_EQ(j["schema"], "fp4lab.gsm8k/1");
  EXPECT_EQ(j["records"].size(), 2u);
  EXPECT_TRUE(j["complete"].get<bool>());
  EXPECT_EQ(j["records"][0]["prompt_sha256"],
            "32680f263ba83280e98a8a24ceefed10a722a4cdcd9f4d78e93c45d43143ca66");
  EXPECT_EQ(j["options"]["task"], "gsm8k");
  // Other options must not silently mix into the same records file.
  EXPECT_NE(std::system((base + " --limit 2 --task gsm8k_cot > /dev/null 2>&1").c_str()), 0);
  fs::remove_all(dir);
}

}  // namespace
