// oracle.cpp — fp64 oracle, naive same-precision baseline and derived tolerances.
#include "resa/oracle.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "resa/selection.h"

namespace resa::oracle {

template <class T>
void attention_row(int d, const T* q, std::span<const KeySegment> segments, const T* kh,
                   const T* vh, double* out) {
  const std::vector<int64_t> pos = key_positions(segments);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> s(pos.size());
  double m = -INFINITY;
  for (size_t j = 0; j < pos.size(); ++j) {
    double acc = 0.0;  // exact: products of 8/11-bit significands summed in double (d <= 128)
    for (int c = 0; c < d; ++c)
      acc += static_cast<double>(to_float(q[c])) * to_float(kh[pos[j] * d + c]);
    s[j] = acc * scale;
    m = std::max(m, s[j]);
  }
  double l = 0.0;
  std::vector<double> o(d, 0.0);
  for (size_t j = 0; j < pos.size(); ++j) {
    const double w = std::exp(s[j] - m);
    l += w;
    for (int c = 0; c < d; ++c) o[c] += w * to_float(vh[pos[j] * d + c]);
  }
  for (int c = 0; c < d; ++c) out[c] = o[c] / l;
}

template <class T>
void naive_attention_row(int d, const T* q, std::span<const KeySegment> segments, const T* kh,
                         const T* vh, float* out) {
  const std::vector<int64_t> pos = key_positions(segments);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  std::vector<float> t(pos.size());
  float m = -INFINITY;
  for (size_t j = 0; j < pos.size(); ++j) {
    float acc = 0.0f;
    for (int c = 0; c < d; ++c) acc = std::fma(to_float(q[c]), to_float(kh[pos[j] * d + c]), acc);
    t[j] = acc * scale;
    m = std::max(m, t[j]);
  }
  float l = 0.0f;
  std::vector<float> o(d, 0.0f);
  for (size_t j = 0; j < pos.size(); ++j) {
    const float p = round_through<T>(std::exp(t[j] - m));
    l += p;
    for (int c = 0; c < d; ++c) o[c] = std::fma(p, to_float(vh[pos[j] * d + c]), o[c]);
  }
  for (int c = 0; c < d; ++c) out[c] = o[c] / l;
}

// Derivation (u = storage unit roundoff, A = score_abs_max, V = v_abs_max, S = split_len,
// T = key_tile, n_split = ceil(n_keys / S)); all terms are upper bounds:
//  * one k16 dot step (tensor-core rule: 17 terms truncated to 2^(M-25), sum truncated to fp32;
//    FMA chain: 16 roundings of 2^-24) errs by at most 2^-20 times the sum of |terms| seen so far,
//    so a score errs by ds <= (d/16 + 1) * 2^-20 * A, and t = s * scale_log2 by
//    dt <= scale_log2 * ds + 2^-24 * scale_log2 * A.
//  * a weight p = 2^(t - m) carries the errors of t and of m (2 dt, times ln 2), of exp2 (2^-21)
//    and of rounding to storage (u): dw = u + 2^-21 + 2 ln2 dt. The rescale factors multiply acc
//    and l alike and cancel in acc / l up to their roundings (below).
//  * perturbing the weights of a weighted mean by at most dw moves it by <= 2 dw / (1 - dw) * V.
//  * accumulation: acc and l each lose <= 2^-20 relative per k16 step (S/16 + 1 steps per split),
//    2^-24 per rescale (S/T per split), 2^-23 per merge (n_split), and 2^-24 in the division.
double attention_tolerance(const Schedule& s, int d, int64_t n_keys, double u, double A, double V) {
  const double scale_log2 = s.scale_log2;
  const double ds = (d / 16.0 + 1.0) * std::ldexp(1.0, -20) * A;
  const double dt = scale_log2 * ds + std::ldexp(1.0, -24) * scale_log2 * A;
  const double dw = u + std::ldexp(1.0, -21) + 2.0 * std::log(2.0) * dt;
  const double n_split = std::ceil(static_cast<double>(n_keys) / s.split_len);
  const double accum = 2.0 * ((s.split_len / 16.0 + 1.0) * std::ldexp(1.0, -20) +
                              (static_cast<double>(s.split_len) / s.key_tile) * std::ldexp(1.0, -24) +
                              n_split * std::ldexp(1.0, -23)) +
                       std::ldexp(1.0, -24);
  return V * (2.0 * dw / (1.0 - dw) + accum) + 1e-30;
}

std::string Comparison::str() const {
  std::ostringstream os;
  os.precision(9);
  os << "n=" << count << " failures=" << failures << " max|err|=" << max_abs_error;
  if (worst_index >= 0)
    os << " worst at [" << worst_index << "]: expected " << worst_expected << ", actual "
       << worst_actual << ", |err| " << std::fabs(worst_actual - worst_expected) << " vs tol "
       << worst_tolerance << " (" << worst_ratio << "x)";
  return os.str();
}

Comparison compare(std::span<const float> actual, std::span<const double> expected,
                   std::span<const double> tolerance) {
  Comparison c;
  c.count = static_cast<int64_t>(actual.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i], tol = tolerance[i];
    double ratio;
    if (std::isnan(a) || std::isnan(e)) {
      ratio = std::isnan(a) && std::isnan(e) ? 0.0 : INFINITY;
    } else {
      const double err = std::fabs(a - e);
      c.max_abs_error = std::max(c.max_abs_error, err);
      ratio = err / tol;
    }
    if (ratio > 1.0) ++c.failures;
    if (c.worst_index < 0 || ratio > c.worst_ratio) {
      c.worst_index = static_cast<int64_t>(i);
      c.worst_ratio = ratio;
      c.worst_expected = e;
      c.worst_actual = a;
      c.worst_tolerance = tol;
    }
  }
  return c;
}

bool AttentionCheck::fa_rule_ok() const {
  return ref_error <= 2.0 * naive_error + std::ldexp(v_scale, -20);
}

std::string AttentionCheck::str() const {
  std::ostringstream os;
  os.precision(4);
  os << cmp.str() << "; max|err| reference " << ref_error << " vs naive same-precision "
     << naive_error << (fa_rule_ok() ? " (within 2x)" : " (MORE THAN 2x)");
  return os.str();
}

template <class T>
AttentionCheck check_attention(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                               const std::vector<T>& q, const std::vector<float>& out,
                               const RowKeys& keys, int n_new) {
  const int d = shape.head_dim, hq = shape.n_q_heads, g = shape.group();
  std::vector<double> expected(out.size()), tol(out.size());
  AttentionCheck r;
  std::vector<float> naive(d);
  for (int b = 0; b < cache.batch; ++b)
    for (int i = 0; i < n_new; ++i)
      for (int h = 0; h < hq; ++h) {
        const size_t row = (static_cast<size_t>(b) * n_new + i) * hq + h;
        const std::vector<KeySegment> segs = keys(b, i, h / g);
        const T* kh = cache.key(b, h / g, 0);
        const T* vh = cache.value(b, h / g, 0);
        const T* qr = q.data() + row * d;
        attention_row<T>(d, qr, segs, kh, vh, expected.data() + row * d);
        naive_attention_row<T>(d, qr, segs, kh, vh, naive.data());
        double A = 0, V = 0;
        int64_t n_keys = 0;
        for (const KeySegment& sg : segs)
          for (int64_t p = sg.begin; p < sg.end; ++p, ++n_keys) {
            double a = 0;
            for (int c = 0; c < d; ++c) {
              a += std::fabs(static_cast<double>(to_float(qr[c])) * to_float(kh[p * d + c]));
              V = std::max(V, std::fabs(static_cast<double>(to_float(vh[p * d + c]))));
            }
            A = std::max(A, a);
          }
        const double t = attention_tolerance(s, d, n_keys, unit_roundoff<T>(), A, V);
        for (int c = 0; c < d; ++c) {
          tol[row * d + c] = t;
          const double e = expected[row * d + c];
          if (!std::isnan(e)) {
            r.naive_error = std::max(r.naive_error, std::fabs(naive[c] - e));
            r.ref_error = std::max(r.ref_error, std::fabs(out[row * d + c] - e));
          }
        }
        r.v_scale = std::max(r.v_scale, V);
      }
  r.cmp = compare(out, expected, tol);
  return r;
}

template <class T>
double block_score(int d, const T* q_group, int g, const T* kmin, const T* kmax) {
  double score = 0.0;
  for (int j = 0; j < d; ++j) {
    double qbar = 0.0;
    for (int i = 0; i < g; ++i) qbar += to_float(q_group[i * d + j]);
    qbar /= g;
    score += std::max(qbar * to_float(kmax[j]), qbar * to_float(kmin[j]));
  }
  return score;
}

std::vector<int32_t> select_blocks_by_definition(const std::vector<float>& scores,
                                                 const SparseConfig& cfg) {
  const int64_t m = static_cast<int64_t>(scores.size());
  const int64_t n_sel = num_selected(m * cfg.block_size, cfg);
  auto forced = [&](int64_t i) { return i >= m - cfg.n_local || i < cfg.n_sink; };
  int64_t n_forced = 0;
  for (int64_t i = 0; i < m; ++i) n_forced += forced(i);
  const int64_t need = std::max<int64_t>(0, n_sel - n_forced);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < m; ++i) {
    if (forced(i)) {
      out.push_back(static_cast<int32_t>(i));
      continue;
    }
    int64_t ahead = 0;
    for (int64_t j = 0; j < m; ++j)
      if (j != i && !forced(j) && ranks_before(scores[j], j, scores[i], i)) ++ahead;
    if (ahead < need) out.push_back(static_cast<int32_t>(i));
  }
  return out;
}

#define RESA_INSTANTIATE(T)                                                                        \
  template void attention_row<T>(int, const T*, std::span<const KeySegment>, const T*, const T*,  \
                                 double*);                                                         \
  template void naive_attention_row<T>(int, const T*, std::span<const KeySegment>, const T*,      \
                                       const T*, float*);                                          \
  template double block_score<T>(int, const T*, int, const T*, const T*);                         \
  template AttentionCheck check_attention<T>(const AttentionShape&, const Schedule&,              \
                                             const KvCache<T>&, const std::vector<T>&,            \
                                             const std::vector<float>&, const RowKeys&, int);
RESA_INSTANTIATE(bf16)
RESA_INSTANTIATE(fp16)
#undef RESA_INSTANTIATE

}  // namespace resa::oracle
