// resa/attention.h — the reference attention kernels: dense decode, chunked causal attention
// (prefill and rectification) and block-sparse decode, all one per-row computation (schedule.h).
//
// Shapes: q [batch][n_new][Hq][d] in the KV dtype T (what the kernels read), out [batch][n_new][Hq][d]
// fp32. Query head h attends KV head h / g. Tested by tests/test_attention.cpp against the fp64
// oracle (oracle.h) and for the exact properties (ratio 1 = dense, batch invariance).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "resa/kv_cache.h"
#include "resa/schedule.h"

namespace resa {

// A run of consecutive cache positions [begin, end).
struct KeySegment {
  int64_t begin, end;
};

// The positions a list of segments names, in order.
std::vector<int64_t> key_positions(std::span<const KeySegment> segments);

// One query row against the keys listed by `segments` (in order) of one KV head; kh/vh point at
// position 0 of that head ([pos][d]). Writes out[d]. This is the executable schedule.
// The last tile is padded with masked keys (p = 0). Their V is 0, except for a causal chunk row:
// there the kernels share each tile among the chunk's rows, so a row's masked keys at positions
// [limit, chunk_end) carry their real V and enter P·V as 0 * v. `chunk_end` (> 0 only for a single
// segment starting at 0) says where those present keys end; it applies to the tensor-core
// arithmetic, the one the kernels implement (the FMA chain keeps V = 0). For finite V this changes
// nothing;
// a NaN or Inf in V at a later position of the same chunk and 64-key tile makes the row NaN —
// the one case where a chunk row differs from a decode of the same position (DESIGN.md §6:
// non-finite inputs have defined, documented behaviour).
template <class T>
void attention_row(const Schedule& s, int head_dim, const T* q, std::span<const KeySegment> segments,
                   const T* kh, const T* vh, float* out, int64_t chunk_end = 0);

// Dense decode: one new query per sequence (n_new = 1) against the whole cache [0, length).
template <class T>
void dense_decode(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                  const T* q, float* out);

// Chunked causal attention of the last n_new positions of every sequence (already written to the
// cache): row r of sequence b is position length[b] - n_new + r and sees keys [0, that + 1). The
// later positions of the chunk are present in the row's last tile (see attention_row).
template <class T>
void chunked_attention(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                       int n_new, const T* q, float* out);

// Selected blocks per (sequence, KV head), ascending block index.
struct BlockSelection {
  int batch = 0, n_kv_heads = 0, max_selected = 0;
  std::vector<int32_t> blocks;  // [batch][n_kv_heads][max_selected]; first count[] entries valid
  std::vector<int32_t> count;   // [batch][n_kv_heads]

  BlockSelection() = default;
  BlockSelection(int batch_, int n_kv_heads_, int max_selected_)
      : batch(batch_), n_kv_heads(n_kv_heads_), max_selected(max_selected_),
        blocks(static_cast<size_t>(batch_) * n_kv_heads_ * max_selected_, -1),
        count(static_cast<size_t>(batch_) * n_kv_heads_, 0) {}
  const int32_t* list(int seq, int head) const {
    return blocks.data() + (static_cast<size_t>(seq) * n_kv_heads + head) * max_selected;
  }
  int32_t* list(int seq, int head) {
    return blocks.data() + (static_cast<size_t>(seq) * n_kv_heads + head) * max_selected;
  }
  int32_t n(int seq, int head) const { return count[static_cast<size_t>(seq) * n_kv_heads + head]; }
};

// Key segments of a block list: block i covers [i*b, min((i+1)*b, length)).
std::vector<KeySegment> block_segments(const int32_t* blocks, int n_blocks, int block_size,
                                       int64_t length);

// Block-sparse decode: one query per sequence over the selected blocks of its KV head.
template <class T>
void block_sparse_decode(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                         int block_size, const BlockSelection& sel, const T* q, float* out);

}  // namespace resa
