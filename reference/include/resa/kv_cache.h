// resa/kv_cache.h — one layer's KV cache for a batch of sequences and its block descriptors.
//
// Layout (DESIGN.md §2): head-major [seq][kv_head][pos][d], so one block of b tokens of one head is
// one contiguous run. K is stored after RoPE. Descriptors: [seq][kv_head][block][d] element-wise
// min and max of the block's keys, in the KV dtype (min/max of stored values are exact).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "resa/config.h"
#include "resa/numerics.h"

namespace resa {

template <class T>
struct KvCache {
  int batch = 0, n_kv_heads = 0, capacity = 0, head_dim = 0;
  std::vector<T> k, v;           // [batch][n_kv_heads][capacity][head_dim]
  std::vector<int64_t> length;   // valid positions per sequence (the cache length L)

  KvCache() = default;
  KvCache(int batch_, int n_kv_heads_, int capacity_, int head_dim_)
      : batch(batch_), n_kv_heads(n_kv_heads_), capacity(capacity_), head_dim(head_dim_) {
    if (batch < 1 || n_kv_heads < 1 || capacity < 1 || head_dim < 1)
      throw InvalidArgument("KvCache: batch, n_kv_heads, capacity and head_dim must be >= 1 (got " +
                            std::to_string(batch) + ", " + std::to_string(n_kv_heads) + ", " +
                            std::to_string(capacity) + ", " + std::to_string(head_dim) + ")");
    const size_t n = static_cast<size_t>(batch) * n_kv_heads * capacity * head_dim;
    k.assign(n, T{});
    v.assign(n, T{});
    length.assign(batch, 0);
  }
  size_t offset(int seq, int head, int64_t pos) const {
    return ((static_cast<size_t>(seq) * n_kv_heads + head) * capacity + static_cast<size_t>(pos)) *
           head_dim;
  }
  const T* key(int seq, int head, int64_t pos) const { return k.data() + offset(seq, head, pos); }
  const T* value(int seq, int head, int64_t pos) const { return v.data() + offset(seq, head, pos); }
  T* key(int seq, int head, int64_t pos) { return k.data() + offset(seq, head, pos); }
  T* value(int seq, int head, int64_t pos) { return v.data() + offset(seq, head, pos); }

  // Throws InvalidArgument unless 1 <= length[s] <= capacity for every sequence.
  void check_lengths(const char* what) const {
    for (int s = 0; s < batch; ++s)
      if (length[s] < 1 || length[s] > capacity)
        throw InvalidArgument(std::string(what) + ": sequence " + std::to_string(s) + " length " +
                              std::to_string(length[s]) + " outside [1, capacity = " +
                              std::to_string(capacity) + "]");
  }
};

template <class T>
struct BlockDescriptors {
  int batch = 0, n_kv_heads = 0, max_blocks = 0, head_dim = 0, block_size = 0;
  std::vector<T> kmin, kmax;  // [batch][n_kv_heads][max_blocks][head_dim]

  BlockDescriptors() = default;
  BlockDescriptors(const KvCache<T>& cache, int block_size_)
      : batch(cache.batch), n_kv_heads(cache.n_kv_heads),
        max_blocks(static_cast<int>(num_blocks(cache.capacity, block_size_))),
        head_dim(cache.head_dim), block_size(block_size_) {
    const size_t n = static_cast<size_t>(batch) * n_kv_heads * max_blocks * head_dim;
    kmin.assign(n, T{});
    kmax.assign(n, T{});
  }
  size_t offset(int seq, int head, int64_t block) const {
    return ((static_cast<size_t>(seq) * n_kv_heads + head) * max_blocks +
            static_cast<size_t>(block)) * head_dim;
  }
};

}  // namespace resa
