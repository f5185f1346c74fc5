// resa/analysis/metrics.h — KV-misalignment metrics of one run against the dense run at one
// decode step (DESIGN.md §4). All sums in fp64; identical inputs give exactly 0 (bit-identical
// caches, outputs and logits make every error, KL and NLL difference exactly zero).
// Tested by tests/sim/test_metrics.cpp and through the study tests.
#pragma once

#include <cstdint>
#include <vector>

#include "resa/kv_cache.h"
#include "resa/sim/lockstep.h"

namespace resa::analysis {

// ||a - ref||_2 / ||ref||_2 over n elements; 0 when a == ref bit for bit (also when ref is 0),
// +inf when ref is all zeros and a is not.
double relative_error(const float* a, const float* ref, size_t n);
// KL(p || q) with p = softmax(dense_logits), q = softmax(mode_logits), in nats, fp64.
double kl_divergence(const float* dense_logits, const float* mode_logits, int vocab);
// -log softmax(logits)[target], fp64.
double nll(const float* logits, int vocab, int32_t target);
// The target is among the k most likely tokens: fewer than k logits are strictly larger than its
// own (ties count for the target); a NaN target logit never is.
bool in_top_k(const float* logits, int vocab, int32_t target, int k);

// Relative Frobenius errors of the whole cache [0, length) and of the newest entry
// (length - 1), per KV head: out arrays [Hkv].
template <class T>
void cache_errors(const KvCache<T>& dense, const KvCache<T>& mode, int64_t length, double* k_err, double* v_err,
                  double* k_new_err, double* v_new_err);

// One run's metrics at one step. Per-layer arrays are row-major [layer][head].
struct StepMetrics {
  std::vector<double> k_err, v_err, k_new_err, v_new_err;  // [layers][Hkv]
  std::vector<double> attn_err;                            // [layers][Hq]
  std::vector<double> hidden_err;                          // [layers]
  std::vector<double> recall;                              // [layers][Hq]
  std::vector<double> top_mass;                            // [layers][Hq]
  std::vector<int32_t> selected;                           // [layers][Hkv]
  std::vector<double> bytes_read;                          // [layers]
  double kl = 0, nll = 0;
  uint8_t top1_agree = 1, rectified = 0;
  uint8_t top3_hit = 0;  // the target is among this run's 3 most likely tokens
  int64_t position = 0;
  int32_t token = 0, target = 0;
};

// Metrics of run r of `ls` at the step just taken; `token` was fed, `target` is the next token.
template <class T>
StepMetrics step_metrics(const sim::Lockstep<T>& ls, int r, int32_t token, int32_t target);

}  // namespace resa::analysis
