#include "cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>

#include "common/error.h"
#include "common/random.h"

namespace fp4lab::cpu {

void rmsnorm(std::span<const float> x, std::span<const float> w, float eps, std::span<float> y) {
  const size_t h = w.size();
  for (size_t r = 0; r < x.size() / h; ++r) {
    double ss = 0;
    for (size_t i = 0; i < h; ++i) ss += double(x[r * h + i]) * x[r * h + i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / h) + eps);
    for (size_t i = 0; i < h; ++i) y[r * h + i] = w[i] * (x[r * h + i] * inv);
  }
}

std::vector<float> rope_inv_freq(const RopeConfig& r, int hd) {
  std::vector<float> f(static_cast<size_t>(hd / 2));
  for (int i = 0; i < hd / 2; ++i)
    f[static_cast<size_t>(i)] = static_cast<float>(1.0 / std::pow(double(r.theta), 2.0 * i / hd));
  if (r.type == "linear") {
    for (auto& v : f) v /= r.factor;
  } else if (r.type == "llama3") {
    const double old_ctx = r.original_max_position;
    const double low_wl = old_ctx / r.low_freq_factor, high_wl = old_ctx / r.high_freq_factor;
    for (auto& v : f) {
      const double wl = 2 * std::numbers::pi / v;
      if (wl > low_wl) {
        v = static_cast<float>(v / r.factor);
      } else if (wl >= high_wl) {
        const double smooth = (old_ctx / wl - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        v = static_cast<float>((1 - smooth) * v / r.factor + smooth * v);
      }
    }
  }
  return f;
}

void rope_apply(std::span<float> x, int heads, int hd, std::span<const int> pos,
                std::span<const float> inv_freq) {
  const int half = hd / 2;
  for (size_t t = 0; t < pos.size(); ++t)
    for (int h = 0; h < heads; ++h) {
      float* v = x.data() + (t * heads + h) * hd;
      for (int i = 0; i < half; ++i) {
        const float ang = static_cast<float>(pos[t]) * inv_freq[static_cast<size_t>(i)];
        const float c = std::cos(ang), s = std::sin(ang);
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
}

void attention(std::span<const float> q, int t, int nh, int nkv, int hd, std::span<const float> kc,
               std::span<const float> vc, int pos0, std::span<float> out) {
  const int group = nh / nkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> p;
  for (int i = 0; i < t; ++i) {
    const int len = pos0 + i + 1;  // causal: keys 0..pos
    p.resize(static_cast<size_t>(len));
    for (int h = 0; h < nh; ++h) {
      const float* qv = q.data() + (static_cast<size_t>(i) * nh + h) * hd;
      const int kh = h / group;
      float mx = -INFINITY;
      for (int j = 0; j < len; ++j) {
        const float* kv = kc.data() + (static_cast<size_t>(j) * nkv + kh) * hd;
        float s = 0;
        for (int d = 0; d < hd; ++d) s += qv[d] * kv[d];
        p[static_cast<size_t>(j)] = s * scale;
        mx = std::max(mx, p[static_cast<size_t>(j)]);
      }
      double sum = 0;
      for (auto& v : p) sum += (v = std::exp(v - mx));
      float* o = out.data() + (static_cast<size_t>(i) * nh + h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int j = 0; j < len; ++j) {
        const float w = static_cast<float>(p[static_cast<size_t>(j)] / sum);
        const float* vv = vc.data() + (static_cast<size_t>(j) * nkv + kh) * hd;
        for (int d = 0; d < hd; ++d) o[d] += w * vv[d];
      }
    }
  }
}

int argmax(std::span<const float> row) {
  float best = -std::numeric_limits<float>::infinity();
  size_t bi = row.size();
  for (size_t i = 0; i < row.size(); ++i)
    if (!std::isnan(row[i]) && (row[i] > best || bi == row.size())) best = row[i], bi = i;
  return bi < row.size() ? static_cast<int>(bi) : kNoId;
}

std::vector<TopLogit> top_logits(std::span<const float> row, int c) {
  const auto key = [&](size_t i) {
    return std::isnan(row[i]) ? -std::numeric_limits<float>::infinity() : row[i];
  };
  const size_t v = row.size(), k = std::min(v, static_cast<size_t>(std::max(c, 0)));
  if (k == 0) return {};
  // The k largest keys in a min-heap, one pass (sampling calls this per token on 128K logits: nth_element on
  // a copy took ~1.5 ms there, its partitions mispredicting on random data; the heap's comparisons mostly
  // fail and predict well). Every key above the k-th is in the heap; the ids tied at it fill what is left of
  // k, in id order.
  std::vector<float> heap;
  heap.reserve(k);
  for (size_t i = 0; i < v; ++i) {
    const float x = key(i);
    if (heap.size() < k) {
      heap.push_back(x);
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    } else if (x > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      heap.back() = x;
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  }
  const float thr = heap.front();
  size_t ties =
      k - static_cast<size_t>(std::count_if(heap.begin(), heap.end(), [&](float x) { return x > thr; }));
  std::vector<TopLogit> out;
  out.reserve(k);
  for (size_t i = 0; i < v; ++i) {
    const float x = key(i);
    if (x > thr || (x == thr && ties > 0 && ties--)) out.push_back({x, static_cast<int>(i)});
  }
  std::sort(out.begin(), out.end(), [](const TopLogit& a, const TopLogit& b) {
    return a.key > b.key || (a.key == b.key && a.id < b.id);
  });
  return out;
}

int sample_gumbel(std::span<const float> row, float temperature, uint64_t seed) {
  float best = 0.0f;
  size_t bi = row.size();
  for (size_t i = 0; i < row.size(); ++i) {
    if (std::isnan(row[i])) continue;
    const float s = row[i] / temperature + gumbel_noise(seed, i);
    if (s > best || bi == row.size()) best = s, bi = i;
  }
  return bi < row.size() ? static_cast<int>(bi) : kNoId;
}

void silu_mul(std::span<const float> g, std::span<const float> u, std::span<float> o) {
  for (size_t i = 0; i < g.size(); ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void gather_vocab_shards(std::span<const float> gathered, int64_t rows, int64_t shard, int64_t vocab,
                         std::span<float> out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t v = 0; v < vocab; ++v)
      out[static_cast<size_t>(r * vocab + v)] =
          gathered[static_cast<size_t>(((v / shard) * rows + r) * shard + v % shard)];
}

void relu2(std::span<float> x) {
  for (auto& v : x) v = v > 0 ? v * v : 0.0f;
}

float softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}

void causal_conv1d_silu(std::span<float> xbc, int t, int ch, int kernel, std::span<const float> w,
                        std::span<const float> b, std::span<float> state) {
  const int hist = kernel - 1;
  std::vector<float> win(static_cast<size_t>(kernel));
  for (int c = 0; c < ch; ++c) {
    float* st = state.data() + static_cast<size_t>(c) * hist;
    for (int i = 0; i < t; ++i) {
      float& v = xbc[static_cast<size_t>(i) * ch + c];
      for (int j = 0; j < hist; ++j) win[static_cast<size_t>(j)] = st[j];
      win[static_cast<size_t>(hist)] = v;
      float acc = b.empty() ? 0.0f : b[static_cast<size_t>(c)];
      for (int j = 0; j < kernel; ++j)
        acc += w[static_cast<size_t>(c) * kernel + j] * win[static_cast<size_t>(j)];
      for (int j = 0; j < hist; ++j) st[j] = win[static_cast<size_t>(j + 1)];
      v = acc / (1.0f + std::exp(-acc));
    }
  }
}

void ssm_scan_sequential(std::span<const float> x, std::span<const float> b, std::span<const float> c,
                         std::span<const float> dt, std::span<const float> a, std::span<const float> d, int t,
                         SsmShape s, std::span<float> state, std::span<float> y) {
  const int P = s.head_dim, N = s.state, hpg = s.heads / s.groups;
  const size_t xw = static_cast<size_t>(s.heads) * P, bw = static_cast<size_t>(s.groups) * N;
  for (int i = 0; i < t; ++i)
    for (int h = 0; h < s.heads; ++h) {
      const int g = h / hpg;
      const float dth = dt[static_cast<size_t>(i) * s.heads + h];
      const float decay = std::exp(dth * a[static_cast<size_t>(h)]);
      const float* xb = x.data() + i * xw + static_cast<size_t>(h) * P;
      const float* bb = b.data() + i * bw + static_cast<size_t>(g) * N;
      const float* cb = c.data() + i * bw + static_cast<size_t>(g) * N;
      for (int p = 0; p < P; ++p) {
        float* S = state.data() + (static_cast<size_t>(h) * P + p) * N;
        float acc = 0;
        for (int n = 0; n < N; ++n) {
          S[n] = S[n] * decay + dth * xb[p] * bb[n];
          acc += S[n] * cb[n];
        }
        y[i * xw + static_cast<size_t>(h) * P + p] = acc + d[static_cast<size_t>(h)] * xb[p];
      }
    }
}

void ssm_scan_chunked(std::span<const float> x, std::span<const float> b, std::span<const float> c,
                      std::span<const float> dt, std::span<const float> a, std::span<const float> d, int t,
                      SsmShape s, int chunk, std::span<float> state, std::span<float> y) {
  if (chunk <= 0) throw Error("ssm_scan_chunked: chunk size must be positive");
  const int P = s.head_dim, N = s.state, hpg = s.heads / s.groups;
  const size_t xw = static_cast<size_t>(s.heads) * P, bw = static_cast<size_t>(s.groups) * N;
  std::vector<double> L(static_cast<size_t>(chunk));
  std::vector<float> cb(static_cast<size_t>(chunk) * chunk);
  for (int h = 0; h < s.heads; ++h) {
    const int g = h / hpg;
    float* S = state.data() + static_cast<size_t>(h) * P * N;
    for (int s0 = 0; s0 < t; s0 += chunk) {
      const int q = std::min(chunk, t - s0);
      double acc = 0;  // cumulative log-decay inside the chunk
      for (int i = 0; i < q; ++i) {
        acc += double(dt[static_cast<size_t>(s0 + i) * s.heads + h]) * a[static_cast<size_t>(h)];
        L[static_cast<size_t>(i)] = acc;
      }
      // C_i . B_j for the causal pairs of this chunk.
      for (int i = 0; i < q; ++i)
        for (int j = 0; j <= i; ++j) {
          const float* ci = c.data() + static_cast<size_t>(s0 + i) * bw + static_cast<size_t>(g) * N;
          const float* bj = b.data() + static_cast<size_t>(s0 + j) * bw + static_cast<size_t>(g) * N;
          float v = 0;
          for (int n = 0; n < N; ++n) v += ci[n] * bj[n];
          cb[static_cast<size_t>(i) * chunk + j] = v;
        }
      for (int i = 0; i < q; ++i) {
        const float* ci = c.data() + static_cast<size_t>(s0 + i) * bw + static_cast<size_t>(g) * N;
        const float in_decay = static_cast<float>(std::exp(L[static_cast<size_t>(i)]));
        for (int p = 0; p < P; ++p) {
          // Contribution of the state entering the chunk, then of the chunk's own inputs.
          float v = 0;
          for (int n = 0; n < N; ++n) v += S[static_cast<size_t>(p) * N + n] * ci[n];
          v *= in_decay;
          for (int j = 0; j <= i; ++j) {
            const float w =
                static_cast<float>(std::exp(L[static_cast<size_t>(i)] - L[static_cast<size_t>(j)])) *
                cb[static_cast<size_t>(i) * chunk + j] * dt[static_cast<size_t>(s0 + j) * s.heads + h];
            v += w * x[static_cast<size_t>(s0 + j) * xw + static_cast<size_t>(h) * P + p];
          }
          const float xv = x[static_cast<size_t>(s0 + i) * xw + static_cast<size_t>(h) * P + p];
          y[static_cast<size_t>(s0 + i) * xw + static_cast<size_t>(h) * P + p] =
              v + d[static_cast<size_t>(h)] * xv;
        }
      }
      // State at the chunk's end.
      const double Lq = L[static_cast<size_t>(q - 1)];
      const float total = static_cast<float>(std::exp(Lq));
      for (int p = 0; p < P; ++p)
        for (int n = 0; n < N; ++n) {
          float v = S[static_cast<size_t>(p) * N + n] * total;
          for (int j = 0; j < q; ++j) {
            const float w = static_cast<float>(std::exp(Lq - L[static_cast<size_t>(j)])) *
                            dt[static_cast<size_t>(s0 + j) * s.heads + h];
            v += w * x[static_cast<size_t>(s0 + j) * xw + static_cast<size_t>(h) * P + p] *
                 b[static_cast<size_t>(s0 + j) * bw + static_cast<size_t>(g) * N + n];
          }
          S[static_cast<size_t>(p) * N + n] = v;
        }
    }
  }
}

void gated_rmsnorm(std::span<float> y, std::span<const float> z, std::span<const float> w, int groups,
                   float eps) {
  const size_t width = w.size(), gs = width / static_cast<size_t>(groups);
  for (size_t r = 0; r < y.size() / width; ++r) {
    float* row = y.data() + r * width;
    const float* zr = z.data() + r * width;
    for (size_t i = 0; i < width; ++i) row[i] *= zr[i] / (1.0f + std::exp(-zr[i]));
    for (int g = 0; g < groups; ++g) {
      double ss = 0;
      for (size_t i = 0; i < gs; ++i) ss += double(row[g * gs + i]) * row[g * gs + i];
      const float inv = 1.0f / std::sqrt(static_cast<float>(ss / gs) + eps);
      for (size_t i = 0; i < gs; ++i) row[g * gs + i] = w[g * gs + i] * (row[g * gs + i] * inv);
    }
  }
}

void mamba_decode_step(std::span<const float> proj, const MambaStepWeights& w, std::span<float> conv_state,
                       std::span<float> ssm_state, std::span<float> y) {
  const SsmShape& s = w.shape;
  const size_t di = static_cast<size_t>(s.heads) * s.head_dim, gn = static_cast<size_t>(s.groups) * s.state,
               cd = di + 2 * gn, nh = static_cast<size_t>(s.heads);
  if (proj.size() < di + cd + nh || y.size() != di || w.norm.size() != di)
    throw Error("mamba_decode_step: proj must hold z | xBC | dt of one row and y d_inner values");
  std::vector<float> xbc(proj.begin() + static_cast<ptrdiff_t>(di),
                         proj.begin() + static_cast<ptrdiff_t>(di + cd));
  causal_conv1d_silu(xbc, 1, static_cast<int>(cd), w.kernel, w.conv_w, w.conv_b, conv_state);
  std::vector<float> dt(nh), a(nh);
  for (size_t h = 0; h < nh; ++h) {
    dt[h] = std::clamp(softplus(proj[di + cd + h] + w.dt_bias[h]), w.dt_lo, w.dt_hi);
    a[h] = -std::exp(w.a_log[h]);
  }
  const std::span<const float> xs(xbc);
  ssm_scan_sequential(xs.subspan(0, di), xs.subspan(di, gn), xs.subspan(di + gn, gn), dt, a, w.d, 1, s,
                      ssm_state, y);
  gated_rmsnorm(y, proj.subspan(0, di), w.norm, s.groups, w.eps);
}

}  // namespace fp4lab::cpu
