// Distribution metrics between two models' next-token distributions (perplexity, KL, top-1 agreement).
#pragma once
#include <span>
#include <vector>

namespace fp4lab {

// log-softmax of one row of logits, in double.
std::vector<double> log_softmax(std::span<const float> logits);
// KL(p || q) in nats from two rows of logits.
double kl_divergence(std::span<const float> p_logits, std::span<const float> q_logits);

struct PairMetrics {
  int positions = 0;
  double nll_a = 0, nll_b = 0;  // mean negative log-likelihood of the next token
  double ppl_a() const;
  double ppl_b() const;
  double kl_mean = 0, kl_p99 = 0;  // KL(a || b) per position
  double top1_agreement = 0;
};

// logits_a/b: [tokens.size(), vocab]; position i predicts tokens[i + 1].
PairMetrics compare_distributions(std::span<const float> logits_a, std::span<const float> logits_b,
                                  std::span<const int> tokens, int vocab);

}  // namespace fp4lab
