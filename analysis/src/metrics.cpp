// metrics.cpp — misalignment metrics (see metrics.h).
#include "resa/analysis/metrics.h"

#include <cmath>
#include <limits>

namespace resa::analysis {

double relative_error(const float* a, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double r = ref[i], diff = static_cast<double>(a[i]) - r;
    num += diff * diff;
    den += r * r;
  }
  if (num == 0) return 0.0;
  if (den == 0) return std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

namespace {
// log-softmax in fp64: out[i] = x[i] - logsumexp(x)
std::vector<double> log_softmax(const float* x, int n) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
  const double lse = mx + std::log(s);
  std::vector<double> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<double>(x[i]) - lse;
  return out;
}
}  // namespace

double kl_divergence(const float* p_logits, const float* q_logits, int vocab) {
  const auto lp = log_softmax(p_logits, vocab), lq = log_softmax(q_logits, vocab);
  double kl = 0;
  for (size_t i = 0; i < lp.size(); ++i) {
    const double d = lp[i] - lq[i];
    if (d != 0) kl += std::exp(lp[i]) * d;
  }
  return std::max(kl, 0.0);
}

double nll(const float* logits, int vocab, int32_t target) {
  return -log_softmax(logits, vocab)[static_cast<size_t>(target)];
}

bool in_top_k(const float* logits, int vocab, int32_t target, int k) {
  const float t = logits[target];
  if (std::isnan(t)) return false;
  int above = 0;  // tokens strictly more likely than the target (NaN never is)
  for (int i = 0; i < vocab; ++i) above += logits[i] > t;
  return above < k;
}

template <class T>
void cache_errors(const KvCache<T>& dense, const KvCache<T>& mode, int64_t length, double* k_err, double* v_err,
                  double* k_new_err, double* v_new_err) {
  const int d = dense.head_dim;
  for (int h = 0; h < dense.n_kv_heads; ++h) {
    double kn = 0, kd = 0, vn = 0, vd = 0, kn1 = 0, kd1 = 0, vn1 = 0, vd1 = 0;
    for (int64_t p = 0; p < length; ++p) {
      const T* ka = mode.key(0, h, p);
      const T* kr = dense.key(0, h, p);
      const T* va = mode.value(0, h, p);
      const T* vr = dense.value(0, h, p);
      double pk = 0, pkd = 0, pv = 0, pvd = 0;
      for (int j = 0; j < d; ++j) {
        const double rk = to_float(kr[j]), rv = to_float(vr[j]);
        const double dk = to_float(ka[j]) - rk, dv = to_float(va[j]) - rv;
        pk += dk * dk, pkd += rk * rk, pv += dv * dv, pvd += rv * rv;
      }
      kn += pk, kd += pkd, vn += pv, vd += pvd;
      if (p == length - 1) kn1 = pk, kd1 = pkd, vn1 = pv, vd1 = pvd;
    }
    auto rel = [](double num, double den) {
      return num == 0 ? 0.0 : den == 0 ? std::numeric_limits<double>::infinity() : std::sqrt(num / den);
    };
    k_err[h] = rel(kn, kd), v_err[h] = rel(vn, vd), k_new_err[h] = rel(kn1, kd1), v_new_err[h] = rel(vn1, vd1);
  }
}

template <class T>
StepMetrics step_metrics(const sim::Lockstep<T>& ls, int r, int32_t token, int32_t target) {
  const sim::StepObservation& od = ls.observation(0);
  const sim::StepObservation& om = ls.observation(r);
  const int n_layers = static_cast<int>(od.bytes_read.size());
  const KvCache<T>& c0 = ls.engine(0).cache(0);
  const int hkv = c0.n_kv_heads, d = c0.head_dim;
  const int hq = static_cast<int>(od.recall.size()) / n_layers;
  const int H = static_cast<int>(od.hidden.size()) / n_layers;
  const int V = static_cast<int>(od.logits.size());
  StepMetrics m;
  const size_t LK = static_cast<size_t>(n_layers) * hkv;
  m.k_err.resize(LK), m.v_err.resize(LK), m.k_new_err.resize(LK), m.v_new_err.resize(LK);
  m.attn_err.resize(static_cast<size_t>(n_layers) * hq);
  m.hidden_err.resize(static_cast<size_t>(n_layers));
  const bool follows = ls.follows_dense(r);  // its cache is dense's: every error is 0
  for (int l = 0; l < n_layers; ++l) {
    if (!follows)
      cache_errors(ls.engine(0).cache(l), ls.engine(r).cache(l), ls.length(), &m.k_err[l * hkv], &m.v_err[l * hkv],
                   &m.k_new_err[l * hkv], &m.v_new_err[l * hkv]);
    for (int h = 0; h < hq; ++h) {
      const size_t o = (static_cast<size_t>(l) * hq + h) * d;
      m.attn_err[static_cast<size_t>(l) * hq + h] = relative_error(om.attn_out.data() + o, od.attn_out.data() + o, d);
    }
    const size_t o = static_cast<size_t>(l) * H;
    m.hidden_err[l] = relative_error(om.hidden.data() + o, od.hidden.data() + o, H);
  }
  m.recall = om.recall;
  m.top_mass = om.top_mass;
  m.selected = om.selected;
  m.bytes_read = om.bytes_read;
  m.kl = kl_divergence(od.logits.data(), om.logits.data(), V);
  m.nll = nll(om.logits.data(), V, target);
  m.top3_hit = in_top_k(om.logits.data(), V, target, 3);
  m.top1_agree = sim::argmax_token(od.logits.data(), V) == sim::argmax_token(om.logits.data(), V);
  m.rectified = om.report.rectified;
  m.position = om.report.pos;
  m.token = token;
  m.target = target;
  return m;
}

template void cache_errors<bf16>(const KvCache<bf16>&, const KvCache<bf16>&, int64_t, double*, double*, double*, double*);
template void cache_errors<fp16>(const KvCache<fp16>&, const KvCache<fp16>&, int64_t, double*, double*, double*, double*);
template StepMetrics step_metrics<bf16>(const sim::Lockstep<bf16>&, int, int32_t, int32_t);
template StepMetrics step_metrics<fp16>(const sim::Lockstep<fp16>&, int, int32_t, int32_t);

}  // namespace resa::analysis
