#include "eval/metrics.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace fp4lab {

std::vector<double> log_softmax(std::span<const float> l) {
  double m = -INFINITY;
  for (float v : l) m = std::max(m, double(v));
  double s = 0;
  for (float v : l) s += std::exp(v - m);
  const double lse = m + std::log(s);
  std::vector<double> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[i] = l[i] - lse;
  return out;
}

double kl_divergence(std::span<const float> p, std::span<const float> q) {
  const auto lp = log_softmax(p), lq = log_softmax(q);
  double kl = 0;
  for (size_t i = 0; i < lp.size(); ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  return std::max(0.0, kl);
}

double PairMetrics::ppl_a() const {
  return std::exp(nll_a);
}
double PairMetrics::ppl_b() const {
  return std::exp(nll_b);
}

PairMetrics compare_distributions(std::span<const float> a, std::span<const float> b,
                                  std::span<const int> tokens, int vocab) {
  const size_t V = static_cast<size_t>(vocab), n = tokens.size();
  if (n < 2) throw Error("compare_distributions: need at least 2 tokens");
  if (a.size() != n * V || b.size() != n * V)
    throw Error("compare_distributions: logits do not match the tokens");
  PairMetrics m;
  std::vector<double> kls;
  int agree = 0;
  for (size_t i = 0; i + 1 < n; ++i) {
    auto ra = a.subspan(i * V, V), rb = b.subspan(i * V, V);
    const auto la = log_softmax(ra), lb = log_softmax(rb);
    const int next = tokens[i + 1];
    m.nll_a -= la[static_cast<size_t>(next)];
    m.nll_b -= lb[static_cast<size_t>(next)];
    double kl = 0;
    for (size_t v = 0; v < V; ++v) kl += std::exp(la[v]) * (la[v] - lb[v]);
    kls.push_back(std::max(0.0, kl));
    agree += std::max_element(ra.begin(), ra.end()) - ra.begin() ==
             std::max_element(rb.begin(), rb.end()) - rb.begin();
  }
  m.positions = static_cast<int>(kls.size());
  m.nll_a /= m.positions;
  m.nll_b /= m.positions;
  double s = 0;
  for (double k : kls) s += k;
  m.kl_mean = s / m.positions;
  std::sort(kls.begin(), kls.end());
  m.kl_p99 = kls[std::min(kls.size() - 1, static_cast<size_t>(0.99 * (kls.size() - 1) + 0.5))];
  m.top1_agreement = double(agree) / m.positions;
  return m;
}

}  // namespace fp4lab
