// cuda/src/selection.cu — block descriptors (range refresh, incremental update of the newest
// token), K/V writes, and block selection fused on the device (reference/src/selection.cpp is the
// spec): block_scores_kernel (pooled query, warp-order scores and rank keys, spread over many
// CTAs) then topk_kernel (n_sel in exact integers, forced local/sink blocks, a radix select over
// the 64-bit rank keys of resa::selection_key with their high words staged in shared memory,
// ascending compaction by a CTA-wide scan). Nothing leaves the device.
// Tested by tests/gpu/test_gpu_kernels.cpp and `resa verify`.
#include <algorithm>
#include <string>

#include "device_common.cuh"
#include "launch.cuh"
#include "resa/selection.h"
#include "resa_cuda/api.h"

namespace resa::cuda {

namespace {

template <class T>
__global__ void descriptors_refresh_kernel(const DeviceKv<T> kv, const DeviceDescriptors<T> desc,
                                           int block_begin) {
  const int blk = block_begin + blockIdx.x, h = blockIdx.y, b = blockIdx.z, j = threadIdx.x;
  const int L = kv.length[b], bs = desc.block_size;
  if (blk * bs >= L) return;
  const int p0 = blk * bs, p1 = min(p0 + bs, L);
  const size_t head = (static_cast<size_t>(b) * kv.n_kv_heads + h);
  const T* k = kv.k + head * kv.capacity * kv.head_dim;
  float lo = to_float(k[static_cast<size_t>(p0) * kv.head_dim + j]), hi = lo;
  for (int p = p0 + 1; p < p1; ++p) {
    const float x = to_float(k[static_cast<size_t>(p) * kv.head_dim + j]);
    lo = min_total(lo, x);
    hi = max_total(hi, x);
  }
  const size_t o = (head * desc.max_blocks + blk) * kv.head_dim + j;
  desc.kmin[o] = from_float<T>(lo);
  desc.kmax[o] = from_float<T>(hi);
}

template <class T>
__global__ void descriptors_update_last_kernel(const DeviceKv<T> kv, const DeviceDescriptors<T> desc) {
  const int h = blockIdx.x, b = blockIdx.y, j = threadIdx.x;
  const int pos = kv.length[b] - 1, bs = desc.block_size;
  if (pos < 0) return;
  const size_t head = static_cast<size_t>(b) * kv.n_kv_heads + h;
  const float x = to_float(kv.k[(head * kv.capacity + pos) * kv.head_dim + j]);
  const size_t o = (head * desc.max_blocks + pos / bs) * kv.head_dim + j;
  const bool fresh = pos % bs == 0;
  desc.kmin[o] = from_float<T>(fresh ? x : min_total(to_float(desc.kmin[o]), x));
  desc.kmax[o] = from_float<T>(fresh ? x : max_total(to_float(desc.kmax[o]), x));
}

template <class T>
__global__ void append_kv_kernel(const DeviceKv<T> kv, const T* k_new, const T* v_new) {
  const int h = blockIdx.x, b = blockIdx.y, j = threadIdx.x;
  const int pos = kv.length[b];
  const size_t src = (static_cast<size_t>(b) * kv.n_kv_heads + h) * kv.head_dim + j;
  const size_t dst = ((static_cast<size_t>(b) * kv.n_kv_heads + h) * kv.capacity + pos) * kv.head_dim + j;
  if (pos < kv.capacity) {
    kv.k[dst] = k_new[src];
    kv.v[dst] = v_new[src];
  }
}

template <class T>
__global__ void advance_length_kernel(const DeviceKv<T> kv) {
  const int b = threadIdx.x + blockIdx.x * blockDim.x;
  if (b < kv.batch && kv.length[b] < kv.capacity) kv.length[b] += 1;
}

template <class T>
__global__ void write_kv_chunk_kernel(const DeviceKv<T> kv, int n, const T* k, const T* v) {
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, j = threadIdx.x;
  const int pos = kv.length[b] - n + i;
  if (pos < 0) return;
  const size_t src = ((static_cast<size_t>(b) * n + i) * kv.n_kv_heads + h) * kv.head_dim + j;
  const size_t dst = ((static_cast<size_t>(b) * kv.n_kv_heads + h) * kv.capacity + pos) * kv.head_dim + j;
  kv.k[dst] = k[src];
  kv.v[dst] = v[src];
}

// Scores and rank keys of blocks [blockIdx.x * kBlocksPerCta, ...) of one (sequence, KV head):
// one warp per block, lane l sums its D/32 consecutive terms, then an XOR butterfly. Warp w
// takes blocks first + w + kScoreWarps * j (j < kBlocksPerWarp) and issues the loads of all of
// them before the first use; each lane pools its own D/32 query elements, so a CTA has no
// barrier and its only wait is one round trip to memory.
constexpr int kScoreThreads = 256;
constexpr int kScoreWarps = kScoreThreads / 32;
constexpr int kBlocksPerWarp = 8;
constexpr int kBlocksPerCta = kScoreWarps * kBlocksPerWarp;
static_assert(kBlocksPerWarp <= 32, "block_scores_kernel: lane j keeps block j's score");
// Four CTAs per SM (64 registers); fp16's software conversion needs more registers than that.
template <class T>
constexpr int kScoreCtasPerSm = detail::MmaTraits<T>::kBf16 ? 4 : 2;
template <class T, int D>
__global__ void __launch_bounds__(kScoreThreads, kScoreCtasPerSm<T>) block_scores_kernel(const SelectParams<T> p) {
  constexpr int kPerLane = D / 32;  // even: the lane's elements are kPerLane / 2 32-bit words
  struct alignas(sizeof(T) * kPerLane) LaneTerms {
    uint32_t w[kPerLane / 2];
    // Element i as a float: to_float, with bf16's shift written per half of the word.
    __device__ float operator[](int i) const {
      const uint32_t x = w[i / 2];
      if constexpr (detail::MmaTraits<T>::kBf16) return __uint_as_float(i % 2 ? x & 0xffff0000u : x << 16);
      return to_float(T{static_cast<uint16_t>(i % 2 ? x >> 16 : x & 0xffffu)});
    }
  };
  detail::wait_for_previous_grid();  // launched with launch_dependent; no early trigger (device_common.cuh)
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int hkv = p.kv.n_kv_heads, g = p.n_q_heads / hkv;
  const int L = p.kv.length[b];
  const int M = (L + p.cfg.block_size - 1) / p.cfg.block_size;
  const int first = blockIdx.x * kBlocksPerCta;
  if (first >= M) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const size_t desc_head = static_cast<size_t>(b * hkv + kvh) * p.desc.max_blocks;
  const int last = min(M, first + kBlocksPerCta);
  LaneTerms lo[kBlocksPerWarp], hi[kBlocksPerWarp];
#pragma unroll
  for (int j = 0; j < kBlocksPerWarp; ++j) {
    const int blk = first + warp + kScoreWarps * j;
    if (blk < last) {
      const size_t o = (desc_head + blk) * D + lane * kPerLane;
      lo[j] = *reinterpret_cast<const LaneTerms*>(p.desc.kmin + o);
      hi[j] = *reinterpret_cast<const LaneTerms*>(p.desc.kmax + o);
    } else {
      lo[j] = hi[j] = LaneTerms{};  // a block past the end: scored, never stored
    }
  }
  // Pooled query elements lane*kPerLane + i: sum over the group's heads in head order, then one
  // division by g.
  float qbar[kPerLane];
  {
    const T* q = p.q + (static_cast<size_t>(b) * p.n_q_heads + kvh * g) * D + lane * kPerLane;
    const LaneTerms q0 = *reinterpret_cast<const LaneTerms*>(q);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) qbar[i] = q0[i];
    for (int h = 1; h < g; ++h) {
      const LaneTerms qh = *reinterpret_cast<const LaneTerms*>(q + h * D);
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) qbar[i] = add_rn(qbar[i], qh[i]);
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) qbar[i] = div_rn(qbar[i], static_cast<float>(g));
  }
  // The terms are block_score_term_any_nan: the sum is canonicalized below, so the scores have
  // the reference's bits. Every block of the warp is scored without a per-block branch (the
  // butterflies of the eight blocks interleave, and the shuffles need no reconvergence), and lane
  // j keeps block j's score: after the XOR butterfly every lane holds the sum, so the rank keys
  // and stores of the eight blocks are one step of lanes 0..7 instead of eight steps of lane 0.
  float mine = 0.f;
#pragma unroll
  for (int j = 0; j < kBlocksPerWarp; ++j) {
    float acc = block_score_term_any_nan(qbar[0], lo[j][0], hi[j][0]);
#pragma unroll
    for (int i = 1; i < kPerLane; ++i) acc = add_rn(acc, block_score_term_any_nan(qbar[i], lo[j][i], hi[j][i]));
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) acc = add_rn(acc, __shfl_xor_sync(0xffffffffu, acc, off));
    mine = lane == j ? acc : mine;
  }
  const int blk = first + warp + kScoreWarps * lane;
  if (lane < kBlocksPerWarp && blk < last) {
    const int local_begin = max(0, M - p.cfg.n_local), sink_end = min(M, p.cfg.n_sink);
    const float score = canonicalize_nan(mine);
    p.scores[desc_head + blk] = score;
    p.keys[desc_head + blk] = selection_key(score, static_cast<uint32_t>(blk), blk >= local_begin || blk < sink_end);
  }
}

// Inclusive sum of x over the lanes of a warp.
__device__ __forceinline__ int warp_inclusive_sum(int x) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  return x;
}

// Top-k of one (sequence, KV head) from the rank keys: n_sel in exact integers, radix select of
// the K-th largest key, ascending compaction. A key is (high word: the score's order, or all ones
// for a forced block) << 32 | (~block index), so the kernel needs only the high words: they are
// staged in shared memory when M <= smem_keys (one read of the keys from global memory), and read
// in place from the 64-bit keys otherwise.
constexpr int kSelectThreads = 1024;
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kTopkSmemKeys = 32768;  // high words staged in shared memory up to this M (128 KB)
static_assert(kSelectThreads == 1024, "topk_kernel: one thread per radix bin (256) and per (round, warp) of a compaction chunk");
__global__ void __launch_bounds__(kSelectThreads) topk_kernel(const int32_t* length, int n_kv_heads, int max_blocks,
                                                              SparseConfig cfg, const uint64_t* all_keys,
                                                              int32_t* all_blocks, int32_t* n_blocks, int max_selected,
                                                              int smem_keys) {
  extern __shared__ uint32_t staged_hi[];
  __shared__ unsigned hist[256];
  __shared__ int warp_sums[kSelectWarps];
  __shared__ int chunk_offsets[kSelectWarps * kSelectWarps];  // [round in chunk][warp]
  __shared__ int chunk_total;
  __shared__ unsigned long long prefix_s;
  __shared__ int remaining_s;
  __shared__ int done_s;
  detail::wait_for_previous_grid();  // launched with launch_dependent; no early trigger (device_common.cuh)
  const int kvh = blockIdx.x, b = blockIdx.y;
  const int L = length[b];
  const int M = (L + cfg.block_size - 1) / cfg.block_size;
  const int slot = b * n_kv_heads + kvh;
  const uint64_t* keys = all_keys + static_cast<size_t>(slot) * max_blocks;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // Where the high words are: word 1 of each little-endian 64-bit key, or the staged copy.
  const uint32_t* hi_words = reinterpret_cast<const uint32_t*>(keys) + 1;
  int hi_stride = 2;
  if (M <= smem_keys) {
#pragma unroll 8
    for (int i = threadIdx.x; i < M; i += kSelectThreads) staged_hi[i] = hi_words[2 * static_cast<size_t>(i)];
    hi_words = staged_hi;
    hi_stride = 1;
  }
  auto key_at = [&](int i) {
    return (static_cast<unsigned long long>(hi_words[static_cast<size_t>(i) * hi_stride]) << 32) |
           (0xffffffffu - static_cast<uint32_t>(i));
  };

  // n_sel = max(ceil(ratio * M), min(M, n_min)); K = max(n_sel, number of forced blocks).
  const long long by_ratio = (static_cast<long long>(cfg.ratio.num) * M + cfg.ratio.den - 1) / cfg.ratio.den;
  const long long n_sel = min(static_cast<long long>(M), max(by_ratio, static_cast<long long>(min(M, cfg.n_min))));
  const int local_begin = max(0, M - cfg.n_local), sink_end = min(M, cfg.n_sink);
  const int n_forced = (M - local_begin) + max(0, min(sink_end, local_begin));
  const int K = static_cast<int>(max(n_sel, static_cast<long long>(n_forced)));

  // Radix select of the K-th largest key (keys are distinct), 8 bits at a time from the top. Each
  // pass picks the highest bin whose count, added to the counts of the bins above it, reaches the
  // keys still to place: threads 0..255 take bins 255..0, an inclusive scan of their counts gives
  // each bin's "above + count", and the one thread where it first reaches `remaining` writes the
  // new prefix (the same bin a serial walk from bin 255 down stops at). When that bin holds
  // exactly the keys still to place, every key of it is taken: the prefix with zero low bits is
  // then a threshold that selects the same K keys, and the remaining passes are skipped.
  if (threadIdx.x == 0) {
    prefix_s = 0ull;
    remaining_s = K;
    done_s = 0;
  }
  unsigned long long mask = 0ull;
  for (int shift = 56; shift >= 0; shift -= 8) {
    if (threadIdx.x < 256) hist[threadIdx.x] = 0u;
    __syncthreads();  // (first pass: also publishes the staged high words)
    const unsigned long long prefix = prefix_s;
    const int remaining = remaining_s;
    // Histogram with one shared atomic per distinct bin of a warp: the first passes put nearly
    // all keys (scores of one sign and binade) into one or two bins. kHistRounds rounds at a time
    // with the whole warp in every __match_any_sync (lanes that do not count carry a value no bin
    // has), so their loads, votes and matches overlap instead of forming one chain per round.
    constexpr int kHistRounds = 4;
    for (int start = 0; start < M; start += kHistRounds * kSelectThreads) {
      unsigned value[kHistRounds];
#pragma unroll
      for (int u = 0; u < kHistRounds; ++u) {
        const int i = start + u * kSelectThreads + threadIdx.x;
        const unsigned long long key = i < M ? key_at(i) : 0ull;
        value[u] = i < M && (key & mask) == prefix ? static_cast<unsigned>(key >> shift) & 255u : 256u;
      }
#pragma unroll
      for (int u = 0; u < kHistRounds; ++u) {
        const unsigned same = __match_any_sync(0xffffffffu, value[u]);
        if (value[u] < 256u && lane == __ffs(same) - 1) atomicAdd(&hist[value[u]], static_cast<unsigned>(__popc(same)));
      }
    }
    __syncthreads();
    int count = 0, upto = 0;  // this thread's bin 255 - tid: its count, and the counts of bins >= it
    if (threadIdx.x < 256) {
      count = static_cast<int>(hist[255 - threadIdx.x]);
      upto = warp_inclusive_sum(count);
      if (lane == 31) warp_sums[warp] = upto;
    }
    __syncthreads();
    if (threadIdx.x < 256) {
      for (int w = 0; w < warp; ++w) upto += warp_sums[w];
      const int above = upto - count;
      if (above < remaining && upto >= remaining) {
        prefix_s = prefix | (static_cast<unsigned long long>(255 - threadIdx.x) << shift);
        remaining_s = remaining - above;
        done_s = upto == remaining;  // the bin's keys are exactly the ones still to place
      }
    }
    mask |= 255ull << shift;
    __syncthreads();
    if (done_s) break;
  }
  const unsigned long long threshold = prefix_s;

  // Ascending compaction of the keys >= threshold. Key i is visited in round i / 1024 by thread
  // i % 1024, so ascending order is (round, warp, lane). Per chunk of up to 32 rounds: each warp
  // counts its taken keys per round, one CTA-wide exclusive scan over the (round, warp) counts
  // (thread t holds entry t) gives every warp's output offset, and a second visit writes.
  int32_t* out = all_blocks + static_cast<size_t>(slot) * max_selected;
  const unsigned lanes_below = (1u << lane) - 1u;
  const int rounds = (M + kSelectThreads - 1) / kSelectThreads;
  int base = 0;
  for (int r0 = 0; r0 < rounds; r0 += kSelectWarps) {
    const int nr = min(kSelectWarps, rounds - r0);
#pragma unroll 4
    for (int r = 0; r < nr; ++r) {
      const int i = (r0 + r) * kSelectThreads + threadIdx.x;
      const unsigned taken = __ballot_sync(0xffffffffu, i < M && key_at(i) >= threshold);
      if (lane == 0) chunk_offsets[r * kSelectWarps + warp] = __popc(taken);
    }
    __syncthreads();
    const int count = threadIdx.x < nr * kSelectWarps ? chunk_offsets[threadIdx.x] : 0;
    const int incl = warp_inclusive_sum(count);
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      const int total = warp_inclusive_sum(warp_sums[lane]);
      warp_sums[lane] = total - warp_sums[lane];
      if (lane == 31) chunk_total = total;
    }
    __syncthreads();
    if (threadIdx.x < nr * kSelectWarps) chunk_offsets[threadIdx.x] = base + warp_sums[warp] + incl - count;
    __syncthreads();
#pragma unroll 4
    for (int r = 0; r < nr; ++r) {
      const int i = (r0 + r) * kSelectThreads + threadIdx.x;
      const bool take = i < M && key_at(i) >= threshold;
      const unsigned taken = __ballot_sync(0xffffffffu, take);
      if (take) out[chunk_offsets[r * kSelectWarps + warp] + __popc(taken & lanes_below)] = i;
    }
    base += chunk_total;
    __syncthreads();  // chunk_offsets, warp_sums and chunk_total are reused by the next chunk
  }
  if (threadIdx.x == 0) n_blocks[slot] = base;
}

}  // namespace

template <class T>
void descriptors_refresh(const DeviceKv<T>& kv, const DeviceDescriptors<T>& desc, int block_begin,
                         int block_end, cudaStream_t stream) {
  if (block_begin < 0 || block_end > desc.max_blocks || block_begin > block_end)
    throw InvalidArgument("cuda::descriptors_refresh: block range [" + std::to_string(block_begin) + ", " +
                          std::to_string(block_end) + ") outside [0, " + std::to_string(desc.max_blocks) + ")");
  if (block_begin == block_end) return;
  descriptors_refresh_kernel<T><<<dim3(block_end - block_begin, kv.n_kv_heads, kv.batch), kv.head_dim, 0, stream>>>(
      kv, desc, block_begin);
  RESA_CUDA_CHECK_LAUNCH("descriptors_refresh_kernel");
}

template <class T>
void descriptors_update_last(const DeviceKv<T>& kv, const DeviceDescriptors<T>& desc, cudaStream_t stream) {
  descriptors_update_last_kernel<T><<<dim3(kv.n_kv_heads, kv.batch), kv.head_dim, 0, stream>>>(kv, desc);
  RESA_CUDA_CHECK_LAUNCH("descriptors_update_last_kernel");
}

template <class T>
void append_kv(const DeviceKv<T>& kv, const T* k_new, const T* v_new, cudaStream_t stream) {
  append_kv_kernel<T><<<dim3(kv.n_kv_heads, kv.batch), kv.head_dim, 0, stream>>>(kv, k_new, v_new);
  RESA_CUDA_CHECK_LAUNCH("append_kv_kernel");
  advance_length_kernel<T><<<(kv.batch + 127) / 128, 128, 0, stream>>>(kv);
  RESA_CUDA_CHECK_LAUNCH("advance_length_kernel");
}

template <class T>
void write_kv_chunk(const DeviceKv<T>& kv, int n, const T* k, const T* v, cudaStream_t stream) {
  if (n < 1) throw InvalidArgument("cuda::write_kv_chunk: n = " + std::to_string(n) + " < 1");
  write_kv_chunk_kernel<T><<<dim3(n, kv.n_kv_heads, kv.batch), kv.head_dim, 0, stream>>>(kv, n, k, v);
  RESA_CUDA_CHECK_LAUNCH("write_kv_chunk_kernel");
}

template <class T>
void select_blocks(const SelectParams<T>& p, cudaStream_t stream) {
  p.cfg.validate();
  const AttentionShape shape{p.n_q_heads, p.kv.n_kv_heads, p.kv.head_dim};
  shape.validate();
  if (p.desc.block_size != p.cfg.block_size)
    throw InvalidArgument("cuda::select_blocks: descriptors have block_size " + std::to_string(p.desc.block_size) +
                          ", config has " + std::to_string(p.cfg.block_size));
  const int64_t need = max_selected_blocks(p.kv.capacity, p.cfg);
  if (p.max_selected < need)
    throw InvalidArgument("cuda::select_blocks: max_selected = " + std::to_string(p.max_selected) +
                          " < " + std::to_string(need) + " needed at capacity " + std::to_string(p.kv.capacity));
  if (!p.q || !p.scores || !p.keys || !p.blocks || !p.n_blocks || !p.desc.kmin || !p.desc.kmax)
    throw InvalidArgument("cuda::select_blocks: a device pointer is null");
  const dim3 score_grid((p.desc.max_blocks + kBlocksPerCta - 1) / kBlocksPerCta, p.kv.n_kv_heads, p.kv.batch);
  detail::launch_dependent(p.kv.head_dim == 128 ? block_scores_kernel<T, 128> : block_scores_kernel<T, 64>, score_grid,
                           kScoreThreads, 0, stream, "block_scores_kernel", p);
  const int smem_keys = std::min(p.desc.max_blocks, kTopkSmemKeys);
  static bool configured = false;  // the shared-memory attribute is per function
  if (!configured) {
    RESA_CUDA_CHECK(cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kTopkSmemKeys * sizeof(uint32_t))));
    configured = true;
  }
  detail::launch_dependent(topk_kernel, dim3(p.kv.n_kv_heads, p.kv.batch), kSelectThreads,
                           smem_keys * sizeof(uint32_t), stream, "topk_kernel", p.kv.length,
                           p.kv.n_kv_heads, p.desc.max_blocks, p.cfg, p.keys, p.blocks, p.n_blocks,
                           p.max_selected, smem_keys);
}

#define RESA_INSTANTIATE(T)                                                                              \
  template void descriptors_refresh<T>(const DeviceKv<T>&, const DeviceDescriptors<T>&, int, int,      \
                                       cudaStream_t);                                                   \
  template void descriptors_update_last<T>(const DeviceKv<T>&, const DeviceDescriptors<T>&, cudaStream_t); \
  template void append_kv<T>(const DeviceKv<T>&, const T*, const T*, cudaStream_t);                    \
  template void write_kv_chunk<T>(const DeviceKv<T>&, int, const T*, const T*, cudaStream_t);          \
  template void select_blocks<T>(const SelectParams<T>&, cudaStream_t);
RESA_INSTANTIATE(bf16)
RESA_INSTANTIATE(fp16)
#undef RESA_INSTANTIATE

}  // namespace resa::cuda
