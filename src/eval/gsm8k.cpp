#include "eval/gsm8k.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "common/error.h"
#include "common/regex.h"
#include "eval/python_random.h"
#include "common/json_util.h"

namespace fp4lab {

Gsm8kTask parse_gsm8k_task(const std::string& name) {
  if (name == "gsm8k") return Gsm8kTask::FiveShot;
  if (name == "gsm8k_cot") return Gsm8kTask::CoT8;
  throw Error("unknown task '" + name + "' (gsm8k or gsm8k_cot)");
}

const char* gsm8k_task_name(Gsm8kTask t) {
  return t == Gsm8kTask::FiveShot ? "gsm8k" : "gsm8k_cot";
}

std::vector<Gsm8kItem> read_gsm8k_jsonl(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open");
  std::vector<Gsm8kItem> out;
  std::string line;
  size_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    const json j = parse_json_untrusted(line, where);
    if (!j.is_object() || !j.contains("question") || !j["question"].is_string() || !j.contains("answer") ||
        !j["answer"].is_string())
      throw Error(where + ": expected {\"question\": string, \"answer\": string}");
    out.push_back({j["question"].get<std::string>(), j["answer"].get<std::string>()});
  }
  if (out.empty()) throw Error(path + ": no questions");
  return out;
}

std::vector<std::vector<size_t>> gsm8k_fewshot_indices(size_t n_test, size_t n_train, uint64_t seed,
                                                       int shots) {
  PythonRandom rng(seed);
  std::vector<std::vector<size_t>> out(n_test);
  for (auto& o : out)
    for (uint64_t i : rng.sample(n_train, shots)) o.push_back(static_cast<size_t>(i));
  return out;
}

namespace {

// The 8 exemplars of Wei et al. (2022) as lm-eval's gsm8k-cot task lists them.
struct CotShot {
  const char* q;
  const char* a;
};
const CotShot kCotShots[] = {
    {"There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
     "done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must "
     "have "
     "been 21 - 15 = 6. The answer is 6."},
    {"If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."},
    {"Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in "
     "total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating "
     "35, "
     "they had 74 - 35 = 39. The answer is 39."},
    {"Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops "
     "did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = "
     "8. "
     "The answer is 8."},
    {"Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he "
     "have "
     "now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 "
     "= 9. "
     "The answer is 9."},
    {"There were nine computers in the server room. Five more computers were installed each day, from monday "
     "to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
     "computers were added. 9 + 20 is 29. The answer is 29."},
    {"Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many "
     "golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 "
     "more, "
     "he had 35 - 2 = 33 golf balls. The answer is 33."},
    {"Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
     "dollars "
     "left. 23 - 15 is 8. The answer is 8."},
};

// Python's re.findall followed by lm-eval's RegexFilter: pick match `group_select` (negative from the end);
// with several groups take the first non-empty one; strip; "[invalid]" when nothing matched.
std::string regex_filter(const Regex& re, const std::string& s, int group_select) {
  const auto ms = re.find_all(s);
  if (ms.empty()) return "[invalid]";
  const int n = static_cast<int>(ms.size());
  const int idx = group_select < 0 ? n + group_select : group_select;
  if (idx < 0 || idx >= n) return "[invalid]";
  const auto& m = ms[static_cast<size_t>(idx)];
  std::string v;
  if (m.groups.empty()) {
    v = s.substr(m.begin, m.end - m.begin);
  } else {
    bool found = false;
    for (auto [b, e] : m.groups) {
      if (b != std::string::npos && e > b) {
        v = s.substr(b, e - b);
        found = true;
        break;
      }
    }
    // One capture group: Python returns the group itself, even when empty.
    if (!found && m.groups.size() > 1) return "[invalid]";
  }
  const auto first = v.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return "";
  return v.substr(first, v.find_last_not_of(" \t\n\r\f\v") - first + 1);
}

std::string sub_all(const Regex& re, const std::string& s) {
  std::string out;
  size_t last = 0;
  for (const auto& m : re.find_all(s)) {
    out.append(s, last, m.begin - last);
    last = m.end;
  }
  out.append(s, last, std::string::npos);
  return out;
}

}  // namespace

std::string gsm8k_prompt(Gsm8kTask t, const Gsm8kItem& q, const std::vector<const Gsm8kItem*>& shots) {
  // lm-eval: each exemplar is doc_to_text + " " + doc_to_target, joined by "\n\n", then "\n\n" + doc_to_text.
  std::string p;
  if (t == Gsm8kTask::FiveShot) {
    for (const auto* s : shots) p += "Question: " + s->question + "\nAnswer: " + s->answer + "\n\n";
    p += "Question: " + q.question + "\nAnswer:";
  } else {
    for (const auto& s : kCotShots) p += std::string("Q: ") + s.q + "\nA: " + s.a + "\n\n";
    p += "Q: " + q.question + "\nA:";
  }
  return p;
}

std::vector<std::string> gsm8k_stop_strings(Gsm8kTask t) {
  if (t == Gsm8kTask::FiveShot) return {"Question:", "</s>", "<|im_end|>"};
  return {"Q:", "</s>", "<|im_end|>"};
}

std::string cut_at_stop(const std::string& completion, const std::vector<std::string>& stops) {
  size_t cut = completion.size();
  for (const auto& s : stops)
    if (!s.empty()) cut = std::min(cut, completion.find(s));
  return completion.substr(0, cut);
}

std::string lm_eval_normalize(const std::string& s) {
  static const Regex comma(",", "lm-eval normalize");
  static const Regex dollar("\\$", "lm-eval normalize");
  static const Regex upto_hashes("(?s).*#### ", "lm-eval normalize");
  static const Regex trailing_dot("\\.$", "lm-eval normalize");
  std::string r = s;
  for (const Regex* re : {&comma, &dollar, &upto_hashes, &trailing_dot}) r = sub_all(*re, r);
  // Python's str.lower on what the filters can extract (digits, signs, separators, "[invalid]") is ASCII.
  for (auto& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

std::string gsm8k_target(Gsm8kTask t, const Gsm8kItem& q) {
  if (t == Gsm8kTask::FiveShot) return q.answer;
  // gsm8k_cot: answer.split('####')[-1].strip()
  const size_t p = q.answer.rfind("####");
  std::string v = p == std::string::npos ? q.answer : q.answer.substr(p + 4);
  const auto first = v.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return "";
  return v.substr(first, v.find_last_not_of(" \t\n\r\f\v") - first + 1);
}

Gsm8kScore score_gsm8k(Gsm8kTask t, const std::string& completion, const std::string& target) {
  static const Regex strict5("#### (\\-?[0-9\\.\\,]+)", "gsm8k strict-match");
  static const Regex strict_cot("The answer is (\\-?[0-9\\.\\,]+).", "gsm8k_cot strict-match");
  static const Regex flexible("(-?[$0-9.,]{2,})|(-?[0-9]+)", "gsm8k flexible-extract");
  Gsm8kScore s;
  s.strict = regex_filter(t == Gsm8kTask::FiveShot ? strict5 : strict_cot, completion, 0);
  s.flexible = regex_filter(flexible, completion, -1);
  const std::string ref = lm_eval_normalize(target);
  s.strict_ok = lm_eval_normalize(s.strict) == ref;
  s.flexible_ok = lm_eval_normalize(s.flexible) == ref;
  return s;
}

MeanStderr mean_stderr(const std::vector<bool>& v) {
  MeanStderr r;
  r.n = static_cast<int>(v.size());
  if (v.empty()) return r;
  const double k = static_cast<double>(std::count(v.begin(), v.end(), true));
  r.mean = k / r.n;
  if (r.n > 1) {
    const double var = (k * (1 - r.mean) * (1 - r.mean) + (r.n - k) * r.mean * r.mean) / (r.n - 1);
    r.stderr_ = std::sqrt(var / r.n);
  }
  return r;
}

McNemar mcnemar(const std::vector<bool>& a, const std::vector<bool>& b) {
  if (a.size() != b.size()) throw Error("mcnemar: the runs cover different question counts");
  McNemar m;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] && b[i])
      ++m.both;
    else if (a[i])
      ++m.only_a;
    else if (b[i])
      ++m.only_b;
    else
      ++m.neither;
  }
  // Exact test: under H0 the discordant pairs split Binomial(n, 1/2); two-sided p = min(1, 2 P(X <= min)).
  const int n = m.only_a + m.only_b, k = std::min(m.only_a, m.only_b);
  if (n == 0) return m;
  double cdf = 0;
  for (int i = 0; i <= k; ++i)
    cdf +=
        std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) - n * std::log(2.0));
  m.p_value = std::min(1.0, 2 * cdf);
  return m;
}

}  // namespace fp4lab
