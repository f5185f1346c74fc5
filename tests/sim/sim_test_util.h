// tests/sim/sim_test_util.h — helpers shared by the simulator tests: temporary folders, a small
// random Qwen2 config, and the fp64 reference forward of the Qwen2 architecture.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "resa/sim/qwen2.h"

namespace resa::sim::testing {

inline std::filesystem::path temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("resa_sim_tests_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// The Qwen2 forward written plainly in fp64 from the same weights: no caches, no storage
// rounding, exact softmax. Returns logits [n][vocab] of tokens at positions 0..n-1.
inline std::vector<double> reference_logits_fp64(const Qwen2Weights& w, const std::vector<int32_t>& tokens) {
  const Qwen2Config& c = w.cfg;
  const int n = static_cast<int>(tokens.size()), H = c.hidden_size, d = c.head_dim, hq = c.num_attention_heads;
  const int hkv = c.num_key_value_heads, g = hq / hkv, I = c.intermediate_size, V = c.vocab_size;
  auto matvec = [](const std::vector<float>& W, const std::vector<double>& x, int out, const std::vector<float>* b) {
    std::vector<double> y(static_cast<size_t>(out));
    const size_t in = x.size();
    for (int r = 0; r < out; ++r) {
      double s = b ? (*b)[static_cast<size_t>(r)] : 0.0;
      for (size_t k = 0; k < in; ++k) s += static_cast<double>(W[static_cast<size_t>(r) * in + k]) * x[k];
      y[static_cast<size_t>(r)] = s;
    }
    return y;
  };
  auto norm = [&](const std::vector<double>& x, const std::vector<float>& wt) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c.rms_norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = wt[i] * x[i] * inv;
    return y;
  };
  auto rope = [&](std::vector<double>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int j = 0; j < d / 2; ++j) {
        const double ang = pos * std::pow(c.rope_theta, -2.0 * j / d);
        double& a = v[static_cast<size_t>(h) * d + j];
        double& b = v[static_cast<size_t>(h) * d + j + d / 2];
        const double na = a * std::cos(ang) - b * std::sin(ang), nb = b * std::cos(ang) + a * std::sin(ang);
        a = na, b = nb;
      }
  };
  std::vector<std::vector<double>> h(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t)
    h[static_cast<size_t>(t)].assign(w.embed.begin() + static_cast<std::ptrdiff_t>(tokens[static_cast<size_t>(t)]) * H,
                                     w.embed.begin() + static_cast<std::ptrdiff_t>(tokens[static_cast<size_t>(t)] + 1) * H);
  for (const Qwen2Layer& L : w.layers) {
    std::vector<std::vector<double>> q(static_cast<size_t>(n)), k(static_cast<size_t>(n)), v(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) {
      const auto x = norm(h[static_cast<size_t>(t)], L.input_norm);
      q[static_cast<size_t>(t)] = matvec(L.wq, x, hq * d, &L.bq);
      k[static_cast<size_t>(t)] = matvec(L.wk, x, hkv * d, &L.bk);
      v[static_cast<size_t>(t)] = matvec(L.wv, x, hkv * d, &L.bv);
      rope(q[static_cast<size_t>(t)], hq, t);
      rope(k[static_cast<size_t>(t)], hkv, t);
    }
    for (int t = 0; t < n; ++t) {
      std::vector<double> o(static_cast<size_t>(hq) * d, 0.0);
      for (int hh = 0; hh < hq; ++hh) {
        const int kh = hh / g;
        std::vector<double> s(static_cast<size_t>(t) + 1);
        double mx = -INFINITY;
        for (int p = 0; p <= t; ++p) {
          double dot = 0;
          for (int j = 0; j < d; ++j)
            dot += q[static_cast<size_t>(t)][static_cast<size_t>(hh) * d + j] * k[static_cast<size_t>(p)][static_cast<size_t>(kh) * d + j];
          s[static_cast<size_t>(p)] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, s[static_cast<size_t>(p)]);
        }
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (int p = 0; p <= t; ++p)
          for (int j = 0; j < d; ++j)
            o[static_cast<size_t>(hh) * d + j] += s[static_cast<size_t>(p)] / sum * v[static_cast<size_t>(p)][static_cast<size_t>(kh) * d + j];
      }
      const auto proj = matvec(L.wo, o, H, nullptr);
      for (int i = 0; i < H; ++i) h[static_cast<size_t>(t)][static_cast<size_t>(i)] += proj[static_cast<size_t>(i)];
      const auto x = norm(h[static_cast<size_t>(t)], L.post_norm);
      auto gt = matvec(L.w_gate, x, I, nullptr);
      const auto up = matvec(L.w_up, x, I, nullptr);
      for (int i = 0; i < I; ++i) gt[static_cast<size_t>(i)] = gt[static_cast<size_t>(i)] / (1.0 + std::exp(-gt[static_cast<size_t>(i)])) * up[static_cast<size_t>(i)];
      const auto down = matvec(L.w_down, gt, H, nullptr);
      for (int i = 0; i < H; ++i) h[static_cast<size_t>(t)][static_cast<size_t>(i)] += down[static_cast<size_t>(i)];
    }
  }
  std::vector<double> logits;
  const std::vector<float> head = w.lm_head.empty() ? w.embed : w.lm_head;
  for (int t = 0; t < n; ++t) {
    const auto y = matvec(head, norm(h[static_cast<size_t>(t)], w.final_norm), V, nullptr);
    logits.insert(logits.end(), y.begin(), y.end());
  }
  return logits;
}

// Allowed |logit - fp64 logit|: the model rounds q, K, V and the attention probabilities to the
// KV dtype (unit roundoff u: 2^-8 bf16, 2^-11 fp16) before attention; each layer adds a relative
// perturbation of a few u to its output, which the layers after it carry to the logits. So the
// bound is c * u * n_layers * (max |logit| + 1) with c = 2 (operands and probabilities rounded once each per layer)
// (fp32 activations add ~2^-24 per operation, negligible next to u).
inline double logit_tolerance(double unit_roundoff, int n_layers, double max_abs_logit) {
  return 2.0 * unit_roundoff * n_layers * (max_abs_logit + 1.0);
}

}  // namespace resa::sim::testing
