// selection.cpp — reference block descriptors and block selection (see selection.h for the order).
#include "resa/selection.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace resa {

namespace {
template <class T>
void check_desc(const KvCache<T>& cache, const BlockDescriptors<T>& desc, int seq, const char* what) {
  if (desc.batch != cache.batch || desc.n_kv_heads != cache.n_kv_heads ||
      desc.head_dim != cache.head_dim || desc.max_blocks < num_blocks(cache.capacity, desc.block_size))
    throw InvalidArgument(std::string(what) + ": descriptors were made for another cache shape");
  if (seq < 0 || seq >= cache.batch)
    throw InvalidArgument(std::string(what) + ": sequence " + std::to_string(seq) +
                          " outside [0, " + std::to_string(cache.batch) + ")");
}

template <class T>
void rebuild_block(const KvCache<T>& cache, BlockDescriptors<T>& desc, int seq, int head, int64_t block) {
  const int d = cache.head_dim, b = desc.block_size;
  const int64_t p0 = block * b, p1 = std::min<int64_t>(p0 + b, cache.length[seq]);
  T* mn = desc.kmin.data() + desc.offset(seq, head, block);
  T* mx = desc.kmax.data() + desc.offset(seq, head, block);
  for (int j = 0; j < d; ++j) {
    float lo = to_float(cache.key(seq, head, p0)[j]), hi = lo;
    for (int64_t p = p0 + 1; p < p1; ++p) {
      const float x = to_float(cache.key(seq, head, p)[j]);
      lo = min_total(lo, x);
      hi = max_total(hi, x);
    }
    mn[j] = from_float<T>(lo);
    mx[j] = from_float<T>(hi);
  }
}
}  // namespace

template <class T>
void build_descriptors(const KvCache<T>& cache, BlockDescriptors<T>& desc) {
  cache.check_lengths("build_descriptors");
  for (int s = 0; s < cache.batch; ++s)
    refresh_descriptors(cache, desc, s, 0, num_blocks(cache.length[s], desc.block_size));
}

template <class T>
void update_descriptors(const KvCache<T>& cache, BlockDescriptors<T>& desc, int seq, int64_t pos) {
  check_desc(cache, desc, seq, "update_descriptors");
  if (pos < 0 || pos >= cache.length[seq])
    throw InvalidArgument("update_descriptors: position " + std::to_string(pos) +
                          " outside the cache length " + std::to_string(cache.length[seq]));
  const int d = cache.head_dim;
  const int64_t block = pos / desc.block_size;
  const bool fresh = pos % desc.block_size == 0;
  for (int h = 0; h < cache.n_kv_heads; ++h) {
    T* mn = desc.kmin.data() + desc.offset(seq, h, block);
    T* mx = desc.kmax.data() + desc.offset(seq, h, block);
    const T* k = cache.key(seq, h, pos);
    for (int j = 0; j < d; ++j) {
      const float x = to_float(k[j]);
      mn[j] = from_float<T>(fresh ? x : min_total(to_float(mn[j]), x));
      mx[j] = from_float<T>(fresh ? x : max_total(to_float(mx[j]), x));
    }
  }
}

template <class T>
void refresh_descriptors(const KvCache<T>& cache, BlockDescriptors<T>& desc, int seq,
                         int64_t block_begin, int64_t block_end) {
  check_desc(cache, desc, seq, "refresh_descriptors");
  const int64_t m = num_blocks(cache.length[seq], desc.block_size);
  if (block_begin < 0 || block_end > m || block_begin > block_end)
    throw InvalidArgument("refresh_descriptors: block range [" + std::to_string(block_begin) + ", " +
                          std::to_string(block_end) + ") outside [0, " + std::to_string(m) + ")");
  for (int h = 0; h < cache.n_kv_heads; ++h)
    for (int64_t blk = block_begin; blk < block_end; ++blk) rebuild_block(cache, desc, seq, h, blk);
}

template <class T>
void pooled_query(const AttentionShape& shape, const T* q, float* qbar) {
  const int d = shape.head_dim, g = shape.group();
  for (int kh = 0; kh < shape.n_kv_heads; ++kh)
    for (int j = 0; j < d; ++j) {
      float sum = to_float(q[(kh * g) * d + j]);
      for (int i = 1; i < g; ++i) sum = add_rn(sum, to_float(q[(kh * g + i) * d + j]));
      qbar[kh * d + j] = div_rn(sum, static_cast<float>(g));
    }
}

template <class T>
float block_score(int d, const float* qbar, const T* kmin, const T* kmax) {
  float lane[32];
  const int per_lane = d / 32;
  for (int l = 0; l < 32; ++l) {
    float acc = 0.0f;
    for (int i = 0; i < per_lane; ++i) {
      const int j = l * per_lane + i;
      const float term = block_score_term(qbar[j], to_float(kmin[j]), to_float(kmax[j]));
      acc = i == 0 ? term : add_rn(acc, term);
    }
    lane[l] = acc;
  }
  for (int off = 16; off >= 1; off /= 2) {
    float next[32];
    for (int l = 0; l < 32; ++l) next[l] = add_rn(lane[l], lane[l ^ off]);
    std::copy(next, next + 32, lane);
  }
  return canonicalize_nan(lane[0]);
}

template <class T>
void block_scores(const BlockDescriptors<T>& desc, int seq, int head, const float* qbar, int64_t m,
                  float* scores) {
  for (int64_t i = 0; i < m; ++i)
    scores[i] = block_score<T>(desc.head_dim, qbar, desc.kmin.data() + desc.offset(seq, head, i),
                               desc.kmax.data() + desc.offset(seq, head, i));
}

int64_t max_selected_blocks(int64_t length, const SparseConfig& cfg) {
  const int64_t m = num_blocks(length, cfg.block_size);
  const int64_t forced = std::min<int64_t>(m, static_cast<int64_t>(cfg.n_local) + cfg.n_sink);
  return std::max(num_selected(length, cfg), forced);
}

std::vector<int32_t> select_blocks(const float* scores, int64_t m, const SparseConfig& cfg) {
  const int64_t n_sel = num_selected(m * cfg.block_size, cfg);
  std::vector<char> chosen(m, 0);
  int64_t n_chosen = 0;
  auto force = [&](int64_t i) {
    if (!chosen[i]) {
      chosen[i] = 1;
      ++n_chosen;
    }
  };
  for (int64_t i = std::max<int64_t>(0, m - cfg.n_local); i < m; ++i) force(i);
  for (int64_t i = 0; i < std::min<int64_t>(m, cfg.n_sink); ++i) force(i);
  if (n_chosen < n_sel) {
    std::vector<int64_t> order;
    order.reserve(m);
    for (int64_t i = 0; i < m; ++i)
      if (!chosen[i]) order.push_back(i);
    const int64_t need = n_sel - n_chosen;
    std::partial_sort(order.begin(), order.begin() + need, order.end(), [&](int64_t a, int64_t b) {
      return ranks_before(scores[a], a, scores[b], b);
    });
    for (int64_t i = 0; i < need; ++i) force(order[i]);
  }
  std::vector<int32_t> out;
  out.reserve(n_chosen);
  for (int64_t i = 0; i < m; ++i)
    if (chosen[i]) out.push_back(static_cast<int32_t>(i));
  return out;
}

template <class T>
BlockSelection select_for_decode(const AttentionShape& shape, const SparseConfig& cfg,
                                 const KvCache<T>& cache, const BlockDescriptors<T>& desc,
                                 const T* q) {
  cfg.validate();
  shape.validate();
  cache.check_lengths("select_for_decode");
  if (desc.block_size != cfg.block_size)
    throw InvalidArgument("select_for_decode: descriptors have block_size " +
                          std::to_string(desc.block_size) + ", config has " +
                          std::to_string(cfg.block_size));
  const int d = shape.head_dim;
  int64_t max_sel = 1;
  for (int b = 0; b < cache.batch; ++b)
    max_sel = std::max(max_sel, max_selected_blocks(cache.length[b], cfg));
  BlockSelection sel(cache.batch, shape.n_kv_heads, static_cast<int>(max_sel));
  std::vector<float> qbar(static_cast<size_t>(shape.n_kv_heads) * d);
  for (int b = 0; b < cache.batch; ++b) {
    pooled_query<T>(shape, q + static_cast<size_t>(b) * shape.n_q_heads * d, qbar.data());
    const int64_t m = num_blocks(cache.length[b], cfg.block_size);
    std::vector<float> scores(m);
    for (int h = 0; h < shape.n_kv_heads; ++h) {
      block_scores(desc, b, h, qbar.data() + h * d, m, scores.data());
      const std::vector<int32_t> chosen = select_blocks(scores.data(), m, cfg);
      std::copy(chosen.begin(), chosen.end(), sel.list(b, h));
      sel.count[static_cast<size_t>(b) * shape.n_kv_heads + h] = static_cast<int32_t>(chosen.size());
    }
  }
  return sel;
}

#define RESA_INSTANTIATE(T)                                                                        \
  template void build_descriptors<T>(const KvCache<T>&, BlockDescriptors<T>&);                    \
  template void update_descriptors<T>(const KvCache<T>&, BlockDescriptors<T>&, int, int64_t);     \
  template void refresh_descriptors<T>(const KvCache<T>&, BlockDescriptors<T>&, int, int64_t,     \
                                       int64_t);                                                   \
  template void pooled_query<T>(const AttentionShape&, const T*, float*);                         \
  template float block_score<T>(int, const float*, const T*, const T*);                           \
  template void block_scores<T>(const BlockDescriptors<T>&, int, int, const float*, int64_t,      \
                                float*);                                                           \
  template BlockSelection select_for_decode<T>(const AttentionShape&, const SparseConfig&,        \
                                               const KvCache<T>&, const BlockDescriptors<T>&,     \
                                               const T*);
RESA_INSTANTIATE(bf16)
RESA_INSTANTIATE(fp16)
#undef RESA_INSTANTIATE

}  // namespace resa
