// resa/oracle.h — the independent checks of the reference: an fp64 oracle (plain, obviously
// correct code), a naive same-precision baseline (the FlashAttention rule: the reference may be at
// most 2x as wrong as it), derived tolerances, and a comparison that reports the worst element.
//
// Used by tests/test_attention.cpp, tests/test_selection.cpp and `resa selftest`.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "resa/attention.h"
#include "resa/config.h"

namespace resa::oracle {

// Exact softmax attention of one row in double: q, K, V are the stored (rounded) values.
template <class T>
void attention_row(int head_dim, const T* q, std::span<const KeySegment> segments, const T* kh,
                   const T* vh, double* out);
// A naive implementation in the same precision: fp32 FMA-chain scores, fp32 expf softmax, P
// rounded to the storage dtype, fp32 FMA accumulation of P·V and of the sum, one division.
template <class T>
void naive_attention_row(int head_dim, const T* q, std::span<const KeySegment> segments,
                         const T* kh, const T* vh, float* out);

// Error bound of one reference output row against the oracle (absolute), derived from the
// precisions and the inputs (see oracle.cpp for the derivation). `score_abs_max` is
// max_j sum_c |q_c k_jc| over the row's keys, `v_abs_max` max |v| over those keys.
double attention_tolerance(const Schedule& s, int head_dim, int64_t n_keys, double storage_unit,
                           double score_abs_max, double v_abs_max);

// Unit roundoff of the storage type: 2^-8 for bf16, 2^-11 for fp16.
template <class T>
constexpr double unit_roundoff() {
  return std::is_same_v<T, bf16> ? 0x1p-8 : 0x1p-11;
}

struct Comparison {
  int64_t count = 0;
  int64_t failures = 0;      // elements over their tolerance (NaN mismatch counts)
  int64_t worst_index = -1;  // largest error / tolerance
  double worst_ratio = 0.0, worst_expected = 0.0, worst_actual = 0.0, worst_tolerance = 0.0;
  double max_abs_error = 0.0;
  std::string str() const;  // "n=…, failures=…, worst at [i]: expected …, actual …, |err| … > tol …"
};
// Compares actual against expected element-wise with a per-element tolerance (tol[i]); NaN must
// meet NaN.
Comparison compare(std::span<const float> actual, std::span<const double> expected,
                   std::span<const double> tolerance);

// Full check of one attention call: every output row against the oracle with the derived
// tolerance, and the whole tensor against the FlashAttention rule (max error <= 2x that of the
// naive same-precision implementation, plus 2^-20 max|v| for the exact cases where both are ~0).
// `keys(seq, row, kv_head)` lists the key segments of query row `row` (0..n_new-1) of `seq`.
using RowKeys = std::function<std::vector<KeySegment>(int seq, int row, int kv_head)>;
struct AttentionCheck {
  Comparison cmp;
  double ref_error = 0.0, naive_error = 0.0, v_scale = 0.0;
  bool fa_rule_ok() const;
  bool ok() const { return cmp.failures == 0 && fa_rule_ok(); }
  std::string str() const;
};
template <class T>
AttentionCheck check_attention(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                               const std::vector<T>& q, const std::vector<float>& out,
                               const RowKeys& keys, int n_new);

// Pooled query and block score in double (exact products of the stored values, mean of q).
template <class T>
double block_score(int head_dim, const T* q_group, int group, const T* kmin, const T* kmax);

// Selection by its definition, in O(M^2): block i is chosen iff it is forced (last n_local, first
// n_sink) or fewer than (n_sel - forced) non-forced blocks rank before it.
std::vector<int32_t> select_blocks_by_definition(const std::vector<float>& scores,
                                                 const SparseConfig& cfg);

}  // namespace resa::oracle
