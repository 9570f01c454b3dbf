// GSM8K as lm-evaluation-harness scores it (tasks `gsm8k`, 5-shot, and `gsm8k_cot`, 8-shot chain of thought):
// the same prompts byte for byte, the same stop strings, the same regex filters and answer normalization, so
// a fp4lab accuracy can stand next to an lm-eval one.
#pragma once
#include <string>
#include <vector>

namespace fp4lab {

struct Gsm8kItem {
  std::string question, answer;  // answer: the worked solution ending in "#### N"
};

enum class Gsm8kTask { FiveShot, CoT8 };

Gsm8kTask parse_gsm8k_task(const std::string& name);  // "gsm8k" | "gsm8k_cot"
const char* gsm8k_task_name(Gsm8kTask t);

// A JSONL file of {"question", "answer"} objects; throws fp4lab::Error naming the file and line.
std::vector<Gsm8kItem> read_gsm8k_jsonl(const std::string& path);

// Per test question, the indices of its 5 train exemplars: random.Random(seed).sample(range(n_train), 5) once
// per question in order (lm-eval's default sampler with its fixed seed 1234).
std::vector<std::vector<size_t>> gsm8k_fewshot_indices(size_t n_test, size_t n_train, uint64_t seed = 1234,
                                                       int shots = 5);

// The full prompt for one test question. For FiveShot, `shots` are train items in order; CoT8 uses the fixed
// Wei et al. exemplars and ignores `shots`.
std::string gsm8k_prompt(Gsm8kTask t, const Gsm8kItem& q, const std::vector<const Gsm8kItem*>& shots);

// lm-eval's `until` strings for the task (the model's EOS text is added by the caller).
std::vector<std::string> gsm8k_stop_strings(Gsm8kTask t);

// The completion up to (not including) the earliest stop string.
std::string cut_at_stop(const std::string& completion, const std::vector<std::string>& stops);

// The exact_match normalization: regexes_to_ignore (",", "\$", "(?s).*#### ", "\.$") then lower case.
std::string lm_eval_normalize(const std::string& s);

struct Gsm8kScore {
  std::string strict, flexible;  // the extracted answers ("[invalid]" when the filter finds none)
  bool strict_ok = false, flexible_ok = false;
};

// The reference answer string as lm-eval's doc_to_target gives it for the task.
std::string gsm8k_target(Gsm8kTask t, const Gsm8kItem& q);
Gsm8kScore score_gsm8k(Gsm8kTask t, const std::string& completion, const std::string& target);

// lm-eval's mean with its standard error (sample standard deviation / sqrt(n)).
struct MeanStderr {
  double mean = 0, stderr_ = 0;
  int n = 0;
};
MeanStderr mean_stderr(const std::vector<bool>& v);

// Paired comparison of two runs on the same questions: discordant counts and McNemar's exact (binomial)
// two-sided p-value.
struct McNemar {
  int only_a = 0, only_b = 0, both = 0, neither = 0;
  double p_value = 1.0;
};
McNemar mcnemar(const std::vector<bool>& a, const std::vector<bool>& b);

}  // namespace fp4lab
