// attention.cpp — the reference attention: plain loops that follow the schedule (schedule.h) one
// floating-point operation at a time. OpenMP runs independent query rows in parallel; no element's
// arithmetic depends on it.
#include "resa/attention.h"

#include <algorithm>
#include <string>

namespace resa {

namespace {

struct RowState {
  float m, l;
  std::vector<float> acc;
};

template <class T>
void check_cache_shape(const AttentionShape& shape, const KvCache<T>& cache, const char* what) {
  shape.validate();
  if (cache.n_kv_heads != shape.n_kv_heads || cache.head_dim != shape.head_dim)
    throw InvalidArgument(std::string(what) + ": cache has n_kv_heads=" +
                          std::to_string(cache.n_kv_heads) + " head_dim=" +
                          std::to_string(cache.head_dim) + " but the shape is " + shape.str());
  cache.check_lengths(what);
}

}  // namespace

std::vector<KeySegment> block_segments(const int32_t* blocks, int n_blocks, int block_size,
                                       int64_t length) {
  std::vector<KeySegment> segs;
  segs.reserve(n_blocks);
  for (int i = 0; i < n_blocks; ++i) {
    const int64_t b0 = static_cast<int64_t>(blocks[i]) * block_size;
    segs.push_back({b0, std::min<int64_t>(b0 + block_size, length)});
  }
  return segs;
}

std::vector<int64_t> key_positions(std::span<const KeySegment> segments) {
  std::vector<int64_t> pos;
  for (const KeySegment& seg : segments)
    for (int64_t p = seg.begin; p < seg.end; ++p) pos.push_back(p);
  return pos;
}

template <class T>
void attention_row(const Schedule& s, int d, const T* q, std::span<const KeySegment> segments,
                   const T* kh, const T* vh, float* out, int64_t chunk_end) {
  const std::vector<int64_t> pos = key_positions(segments);
  const int64_t n = static_cast<int64_t>(pos.size());
  if (n == 0) throw InvalidArgument("attention_row: the row has no keys");
  if (chunk_end > 0 && (segments.size() != 1 || segments[0].begin != 0 || chunk_end < n))
    throw InvalidArgument("attention_row: chunk_end needs one segment [0, limit) with limit <= chunk_end");

  float qf[128];
  for (int j = 0; j < d; ++j) qf[j] = to_float(q[j]);
  static const float kOnes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

  const int T_ = s.key_tile;
  std::vector<float> t(T_), p(T_), kf(d), vcol(16);
  RowState total{neg_inf(), 0.0f, std::vector<float>(d, 0.0f)};
  RowState st{neg_inf(), 0.0f, std::vector<float>(d, 0.0f)};
  const int n_splits = s.num_splits(n);
  for (int split = 0; split < n_splits; ++split) {
    const int64_t split_begin = static_cast<int64_t>(split) * s.split_len;
    const int64_t split_end = std::min<int64_t>(split_begin + s.split_len, n);
    st.m = neg_inf();
    st.l = 0.0f;
    std::fill(st.acc.begin(), st.acc.end(), 0.0f);
    for (int64_t t0 = split_begin; t0 < split_end; t0 += T_) {
      // Scores in the base-2 logit domain; masked keys (past the list) get -inf.
      float m_new = st.m;
      for (int j = 0; j < T_; ++j) {
        const int64_t idx = t0 + j;
        if (idx >= split_end) {
          t[j] = neg_inf();
          continue;
        }
        const T* kr = kh + pos[idx] * d;
        for (int c = 0; c < d; ++c) kf[c] = to_float(kr[c]);
        float acc = 0.0f;
        for (int u = 0; u < d; u += 16) acc = dot16<T>(s.arith, acc, qf + u, kf.data() + u);
        t[j] = mul_rn(acc, s.scale_log2);
        m_new = max_ignore_nan(m_new, t[j]);
      }
      const float alpha = softmax_rescale(st.m, m_new);
      for (int j = 0; j < T_; ++j) p[j] = round_through<T>(softmax_prob(t[j], m_new));
      st.l = mul_rn(st.l, alpha);
      for (int c = 0; c < d; ++c) st.acc[c] = mul_rn(st.acc[c], alpha);
      for (int u = 0; u < T_; u += 16) {
        st.l = dot16<T>(s.arith, st.l, p.data() + u, kOnes);
        for (int c = 0; c < d; ++c) {
          for (int i = 0; i < 16; ++i) {
            const int64_t idx = t0 + u + i;
            // Masked keys: V = 0, or (tensor-core kernels) the real V of a later chunk position.
            vcol[i] = idx < split_end ? to_float(vh[pos[idx] * d + c])
                      : idx < chunk_end && s.arith == DotArithmetic::TensorCoreHopper ? to_float(vh[idx * d + c])
                                                                                        : 0.0f;
          }
          st.acc[c] = dot16<T>(s.arith, st.acc[c], p.data() + u, vcol.data());
        }
      }
      st.m = m_new;
    }
    if (split == 0) {
      std::swap(total, st);
    } else {
      const MergeFactors f = merge_factors(total.m, st.m);
      total.l = merge_value(total.l, st.l, f);
      for (int c = 0; c < d; ++c) total.acc[c] = merge_value(total.acc[c], st.acc[c], f);
      total.m = f.m;
    }
  }
  for (int c = 0; c < d; ++c) out[c] = softmax_normalize(total.acc[c], total.l);
}

template <class T>
void dense_decode(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                  const T* q, float* out) {
  chunked_attention(shape, s, cache, 1, q, out);
}

template <class T>
void chunked_attention(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                       int n_new, const T* q, float* out) {
  check_cache_shape(shape, cache, "chunked_attention");
  if (n_new < 1) throw InvalidArgument("chunked_attention: n_new = " + std::to_string(n_new) + " < 1");
  for (int b = 0; b < cache.batch; ++b)
    if (cache.length[b] < n_new)
      throw InvalidArgument("chunked_attention: sequence " + std::to_string(b) + " has length " +
                            std::to_string(cache.length[b]) + " < n_new = " + std::to_string(n_new));
  const int d = shape.head_dim, hq = shape.n_q_heads, g = shape.group();
  const int64_t rows = static_cast<int64_t>(cache.batch) * n_new * hq;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int b = static_cast<int>(r / (static_cast<int64_t>(n_new) * hq));
    const int i = static_cast<int>((r / hq) % n_new);
    const int h = static_cast<int>(r % hq);
    const int64_t limit = cache.length[b] - n_new + i + 1;
    const KeySegment seg{0, limit};
    attention_row<T>(s, d, q + r * d, std::span<const KeySegment>(&seg, 1), cache.key(b, h / g, 0),
                     cache.value(b, h / g, 0), out + r * d, n_new > 1 ? cache.length[b] : 0);
  }
}

template <class T>
void block_sparse_decode(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                         int block_size, const BlockSelection& sel, const T* q, float* out) {
  check_cache_shape(shape, cache, "block_sparse_decode");
  check_block_fits_schedule(block_size, s);
  if (sel.batch != cache.batch || sel.n_kv_heads != shape.n_kv_heads)
    throw InvalidArgument("block_sparse_decode: selection is for batch=" + std::to_string(sel.batch) +
                          " n_kv_heads=" + std::to_string(sel.n_kv_heads) + ", cache has batch=" +
                          std::to_string(cache.batch) + " n_kv_heads=" + std::to_string(shape.n_kv_heads));
  for (int b = 0; b < cache.batch; ++b) {
    const int64_t m = num_blocks(cache.length[b], block_size);
    for (int h = 0; h < shape.n_kv_heads; ++h) {
      const int32_t* list = sel.list(b, h);
      const int n = sel.n(b, h);
      if (n < 1 || n > sel.max_selected)
        throw InvalidArgument("block_sparse_decode: sequence " + std::to_string(b) + " head " +
                              std::to_string(h) + " selects " + std::to_string(n) + " blocks");
      for (int i = 0; i < n; ++i)
        if (list[i] < 0 || list[i] >= m || (i > 0 && list[i] <= list[i - 1]))
          throw InvalidArgument("block_sparse_decode: sequence " + std::to_string(b) + " head " +
                                std::to_string(h) + ": block list must be ascending within [0, " +
                                std::to_string(m) + "), entry " + std::to_string(i) + " is " +
                                std::to_string(list[i]));
    }
  }
  const int d = shape.head_dim, hq = shape.n_q_heads, g = shape.group();
  const int64_t rows = static_cast<int64_t>(cache.batch) * hq;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int b = static_cast<int>(r / hq), h = static_cast<int>(r % hq), kvh = h / g;
    const auto segs = block_segments(sel.list(b, kvh), sel.n(b, kvh), block_size, cache.length[b]);
    attention_row<T>(s, d, q + r * d, segs, cache.key(b, kvh, 0), cache.value(b, kvh, 0),
                     out + r * d);
  }
}

#define RESA_INSTANTIATE(T)                                                                        \
  template void attention_row<T>(const Schedule&, int, const T*, std::span<const KeySegment>,     \
                                 const T*, const T*, float*, int64_t);                             \
  template void dense_decode<T>(const AttentionShape&, const Schedule&, const KvCache<T>&,        \
                                const T*, float*);                                                 \
  template void chunked_attention<T>(const AttentionShape&, const Schedule&, const KvCache<T>&,   \
                                     int, const T*, float*);                                       \
  template void block_sparse_decode<T>(const AttentionShape&, const Schedule&, const KvCache<T>&, \
                                       int, const BlockSelection&, const T*, float*);
RESA_INSTANTIATE(bf16)
RESA_INSTANTIATE(fp16)
#undef RESA_INSTANTIATE

}  // namespace resa
