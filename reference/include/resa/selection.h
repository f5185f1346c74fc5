// resa/selection.h — block descriptors (build, incremental update, range refresh) and block
// selection (pooled query, scores, n_sel, local/sink blocks, top-k by rank), DESIGN.md §2.
//
// Order of operations (the CUDA kernels reproduce it):
//   q̄_j      = (sum over the g query heads of the group, in head order, of q[h][j]) / g    (fp32)
//   score_i  = sum_j max(q̄_j * kmax_ij, q̄_j * kmin_ij), summed as one warp would: lane l adds
//              its d/32 consecutive terms j = l*d/32 ... in order, then an XOR butterfly with
//              offsets 16, 8, 4, 2, 1 (each lane adds its partner's partial to its own).
//   ranking  : higher score first, ties toward the lower block index, NaN scores last.
//   selected : the last n_local blocks, the first n_sink blocks, then the best-ranked others until
//              n_sel = max(ceil(ratio*M), min(M, n_min)) blocks (or all forced ones, if more),
//              returned ascending.
// Descriptors use min/max with -0 < +0 and NaN propagating, so they do not depend on order.
// Tested by tests/test_selection.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "resa/attention.h"
#include "resa/config.h"
#include "resa/kv_cache.h"

namespace resa {

// Rebuild every block of every sequence from the cache (blocks covering [0, length)).
template <class T>
void build_descriptors(const KvCache<T>& cache, BlockDescriptors<T>& desc);
// Incremental update after the token at `pos` of sequence `seq` was written (pos % b == 0 starts
// the block afresh).
template <class T>
void update_descriptors(const KvCache<T>& cache, BlockDescriptors<T>& desc, int seq, int64_t pos);
// Rebuild blocks [block_begin, block_end) of sequence `seq` from the cache (positions < length).
template <class T>
void refresh_descriptors(const KvCache<T>& cache, BlockDescriptors<T>& desc, int seq,
                         int64_t block_begin, int64_t block_end);

// q̄ for every KV head of one sequence: q [Hq][d] (storage dtype) -> qbar [Hkv][d] fp32.
template <class T>
void pooled_query(const AttentionShape& shape, const T* q, float* qbar);
// Upper-bound score of one block (the warp order described above).
template <class T>
float block_score(int head_dim, const float* qbar, const T* kmin, const T* kmax);
// Scores of blocks [0, M) of one (sequence, KV head).
template <class T>
void block_scores(const BlockDescriptors<T>& desc, int seq, int head, const float* qbar, int64_t m,
                  float* scores);

// True when block a ranks before block b (score higher; tie -> lower index; NaN last).
inline bool ranks_before(float score_a, int64_t a, float score_b, int64_t b) {
  const bool nan_a = is_nan(score_a), nan_b = is_nan(score_b);
  if (nan_a != nan_b) return nan_b;
  if (!nan_a && score_a != score_b) return score_a > score_b;
  return a < b;
}

// Selected block indices (ascending) for M blocks with the given scores.
std::vector<int32_t> select_blocks(const float* scores, int64_t m, const SparseConfig& cfg);
// Upper bound of the selected count for a cache of `length` (forced blocks included).
int64_t max_selected_blocks(int64_t length, const SparseConfig& cfg);

// Whole selection for one decode step of a batch: q [batch][Hq][d]. The descriptors must be up to
// date for cache.length.
template <class T>
BlockSelection select_for_decode(const AttentionShape& shape, const SparseConfig& cfg,
                                 const KvCache<T>& cache, const BlockDescriptors<T>& desc,
                                 const T* q);

}  // namespace resa
