// cuda/src/selection.cu — block descriptors (range refresh, incremental update of the newest
// token), K/V writes, and block selection fused on the device (reference/src/selection.cpp is the
// spec). Selection is one launch for short sequences (select_fused_kernel: a cluster of CTAs per
// head scores its blocks and runs the top-k) and two for long ones (block_scores_kernel over many
// CTAs, then topk_kernel on a cluster per head); a cluster has 1-8 CTAs, as many as the heads
// leave SMs for (launch_selection). The top-k computes n_sel in exact integers, forces
// the local/sink blocks, radix-selects over the 64-bit rank keys of resa::selection_key (the
// CTAs' histograms meet in distributed shared memory) and compacts in ascending block order.
// Nothing leaves the device. Tested by tests/gpu/test_gpu_kernels.cpp and `resa verify`.
#include <algorithm>
#include <string>

#include <cooperative_groups.h>

#include "device_common.cuh"
#include "launch.cuh"
#include "resa/selection.h"
#include "resa_cuda/api.h"

namespace resa::cuda {

namespace {

namespace cg = cooperative_groups;

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

// Block scores. Lane l of a warp sums its D/32 consecutive terms of each block, then the XOR
// butterfly over the lanes runs as a reduce-scatter over the warp's eight blocks (below). A warp
// issues the loads of its eight blocks before their first use, and each lane pools its own D/32
// query elements, so scoring has no barrier and its only wait is one round trip to memory.
constexpr int kBlocksPerWarp = 8;

// One lane's D/32 consecutive elements of a query or descriptor row, as loaded.
template <class T, int D>
struct alignas(sizeof(T) * (D / 32)) LaneTerms {
  static constexpr int kPerLane = D / 32;  // even: kPerLane / 2 32-bit words
  uint32_t w[kPerLane / 2];
  // Element i as a float: to_float, with bf16's shift written per half of the word.
  __device__ float operator[](int i) const {
    const uint32_t x = w[i / 2];
    if constexpr (detail::MmaTraits<T>::kBf16) return __uint_as_float(i % 2 ? x & 0xffff0000u : x << 16);
    return to_float(T{static_cast<uint16_t>(i % 2 ? x >> 16 : x & 0xffffu)});
  }
};

// The descriptor terms of a warp's eight blocks first + warp + stride * j (j < 8) below `last`.
template <class T, int D>
struct WarpBlocks {
  LaneTerms<T, D> lo[kBlocksPerWarp], hi[kBlocksPerWarp];

  __device__ void load(const SelectParams<T>& p, size_t desc_head, int first, int stride, int last) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int j = 0; j < kBlocksPerWarp; ++j) {
      const int blk = first + warp + stride * j;
      if (blk < last) {
        const size_t o = (desc_head + blk) * D + lane * LaneTerms<T, D>::kPerLane;
        lo[j] = *reinterpret_cast<const LaneTerms<T, D>*>(p.desc.kmin + o);
        hi[j] = *reinterpret_cast<const LaneTerms<T, D>*>(p.desc.kmax + o);
      } else {
        lo[j] = hi[j] = LaneTerms<T, D>{};  // a block past the end: scored, never stored
      }
    }
  }

  // The score of block j = lane / 4 (every lane of quad j holds it), not yet canonicalized. The
  // terms are block_score_term_any_nan: the caller canonicalizes the sum, so the scores have the
  // reference's bits. The XOR butterfly of the reference (offsets 16, 8, ..., 1) runs as a
  // reduce-scatter: at offsets 16, 8 and 4 a lane sends the half of its blocks its partner keeps
  // and adds the partner's partial of the half it keeps (one shuffle per block kept instead of
  // one per block), so after them lane l holds block l / 4 alone and offsets 2 and 1 finish it.
  // Each addition has the butterfly's two operands (in the other order for half of the lanes;
  // IEEE addition commutes), so every lane ends with the reference's lane-0 sum.
  __device__ float score(const float (&qbar)[D / 32]) const {
    static_assert(kBlocksPerWarp == 8, "WarpBlocks::score: three reduce-scatter steps leave one block per lane quad");
    constexpr int kPerLane = LaneTerms<T, D>::kPerLane;
    const int lane = threadIdx.x % 32;
    float part[kBlocksPerWarp];
#pragma unroll
    for (int j = 0; j < kBlocksPerWarp; ++j) {
      part[j] = block_score_term_any_nan(qbar[0], lo[j][0], hi[j][0]);
#pragma unroll
      for (int i = 1; i < kPerLane; ++i) part[j] = add_rn(part[j], block_score_term_any_nan(qbar[i], lo[j][i], hi[j][i]));
    }
#pragma unroll
    for (int off = 16, n = kBlocksPerWarp; n > 1; off /= 2, n /= 2) {
      const bool upper = lane & off;  // keeps blocks [n/2, n) of the current set, sends [0, n/2)
#pragma unroll
      for (int k = 0; k < n / 2; ++k) {
        const float keep = upper ? part[k + n / 2] : part[k], send = upper ? part[k] : part[k + n / 2];
        part[k] = add_rn(keep, __shfl_xor_sync(0xffffffffu, send, off));
      }
    }
#pragma unroll
    for (int off = 2; off >= 1; off /= 2) part[0] = add_rn(part[0], __shfl_xor_sync(0xffffffffu, part[0], off));
    return part[0];
  }
};

// Pooled query elements lane*D/32 + i of (sequence b, KV head kvh): sum over the group's heads in
// head order, then one division by g.
template <class T, int D>
__device__ void pooled_query(const SelectParams<T>& p, int b, int kvh, float (&qbar)[D / 32]) {
  const int g = p.n_q_heads / p.kv.n_kv_heads, lane = threadIdx.x % 32;
  const T* q = p.q + (static_cast<size_t>(b) * p.n_q_heads + kvh * g) * D + lane * (D / 32);
  const LaneTerms<T, D> q0 = *reinterpret_cast<const LaneTerms<T, D>*>(q);
#pragma unroll
  for (int i = 0; i < D / 32; ++i) qbar[i] = q0[i];
  for (int h = 1; h < g; ++h) {
    const LaneTerms<T, D> qh = *reinterpret_cast<const LaneTerms<T, D>*>(q + h * D);
#pragma unroll
    for (int i = 0; i < D / 32; ++i) qbar[i] = add_rn(qbar[i], qh[i]);
  }
#pragma unroll
  for (int i = 0; i < D / 32; ++i) qbar[i] = div_rn(qbar[i], static_cast<float>(g));
}

// Scores and rank keys of a warp's eight blocks (WarpBlocks), stored by lane 0 of each quad; with
// `staged_hi` (the fused kernel's top-k staging), also each key's high word, at
// staged_hi[blk - staged_begin].
template <class T, int D>
__device__ void score_and_store(const SelectParams<T>& p, const WarpBlocks<T, D>& blocks, const float (&qbar)[D / 32],
                                size_t desc_head, int M, int first, int stride, int last, uint32_t* staged_hi = nullptr,
                                int staged_begin = 0) {
  const float sum = blocks.score(qbar);
  const int lane = threadIdx.x % 32, blk = first + threadIdx.x / 32 + stride * (lane / 4);
  if (lane % 4 == 0 && blk < last) {
    const int local_begin = max(0, M - p.cfg.n_local), sink_end = min(M, p.cfg.n_sink);
    const float score = canonicalize_nan(sum);
    const uint64_t key = selection_key(score, static_cast<uint32_t>(blk), blk >= local_begin || blk < sink_end);
    p.scores[desc_head + blk] = score;
    p.keys[desc_head + blk] = key;
    if (staged_hi) staged_hi[blk - staged_begin] = static_cast<uint32_t>(key >> 32);
  }
}

// Scores and rank keys of the blocks of one (sequence, KV head), spread over many CTAs (long
// sequences; topk_kernel follows). A CTA takes `rounds` runs of kBlocksPerCta consecutive blocks
// from first = blockIdx.x * rounds * kBlocksPerCta (ScoreRuns); in each run warp w takes blocks
// run_first + w + kScoreWarps * j. A block's score and key do not depend on which warp or round
// computes them.
//   One round (block_scores_kernel): a warp loads its eight blocks, pools the query while they
// are in flight, scores and leaves; four CTAs per SM (64 registers) cover the one round trip.
// This serves grids of one or two waves (batch 1), where more blocks per CTA would mean fewer
// CTAs than SMs can hold.
//   Several rounds (block_scores_prefetch_kernel): a warp issues the loads of its next round's
// blocks before it scores the current ones, so its loads stay in flight while it computes, and
// pools the query once for all its rounds. The single-round kernel at 28/4 batch 8 256K was
// latency-bound at 60% of DRAM bandwidth (each warp loads, waits, then computes with nothing in
// flight; PERFORMANCE.md); four rounds took that selection from 104.6 to 89.2 us (H200). The
// second register set costs a CTA per SM (three per SM: at most 85 registers; 80 used).
constexpr int kScoreThreads = 256;
constexpr int kScoreWarps = kScoreThreads / 32;
constexpr int kBlocksPerCta = kScoreWarps * kBlocksPerWarp;
// CTAs per SM: fp16's software conversion needs more registers than bf16's shift.
template <class T>
constexpr int kScoreCtasPerSm = detail::MmaTraits<T>::kBf16 ? 4 : 2;
template <class T>
constexpr int kScorePrefetchCtasPerSm = detail::MmaTraits<T>::kBf16 ? 3 : 2;

// The blocks one CTA of the scores kernels covers: runs [first + r * kBlocksPerCta, ...) for
// r < rounds, clipped to the sequence's M blocks.
struct ScoreRuns {
  int M, first, end;
  size_t desc_head;
  template <class T>
  __device__ ScoreRuns(const SelectParams<T>& p, int b, int kvh, int rounds)
      : M((p.kv.length[b] + p.cfg.block_size - 1) / p.cfg.block_size),
        first(blockIdx.x * rounds * kBlocksPerCta),
        end(min(M, first + rounds * kBlocksPerCta)),
        desc_head(static_cast<size_t>(b * p.kv.n_kv_heads + kvh) * p.desc.max_blocks) {}
  __device__ int run_first(int r) const { return first + r * kBlocksPerCta; }
  __device__ int run_last(int r) const { return min(end, run_first(r) + kBlocksPerCta); }
};

template <class T, int D>
__global__ void __launch_bounds__(kScoreThreads, kScoreCtasPerSm<T>) block_scores_kernel(const SelectParams<T> p) {
  detail::wait_for_previous_grid();  // launched with launch_dependent; no early trigger (device_common.cuh)
  const int kvh = blockIdx.y, b = blockIdx.z;
  const ScoreRuns runs(p, b, kvh, 1);
  if (runs.first >= runs.M) return;
  WarpBlocks<T, D> blocks;
  blocks.load(p, runs.desc_head, runs.first, kScoreWarps, runs.end);  // in flight while the query is pooled
  float qbar[D / 32];
  pooled_query<T, D>(p, b, kvh, qbar);
  score_and_store<T, D>(p, blocks, qbar, runs.desc_head, runs.M, runs.first, kScoreWarps, runs.end);
}

template <class T, int D>
__global__ void __launch_bounds__(kScoreThreads, kScorePrefetchCtasPerSm<T>)
    block_scores_prefetch_kernel(const SelectParams<T> p, int rounds) {
  detail::wait_for_previous_grid();  // launched with launch_dependent; no early trigger (device_common.cuh)
  const int kvh = blockIdx.y, b = blockIdx.z;
  const ScoreRuns runs(p, b, kvh, rounds);
  if (runs.first >= runs.M) return;
  // Two register sets in turn (the loop is unrolled by two so that each set stays in registers);
  // a run past runs.end loads nothing (WarpBlocks::load's `blk < last`) and is not scored.
  WarpBlocks<T, D> even, odd;
  even.load(p, runs.desc_head, runs.run_first(0), kScoreWarps, runs.run_last(0));
  float qbar[D / 32];
  pooled_query<T, D>(p, b, kvh, qbar);
  for (int r = 0; runs.run_first(r) < runs.end; r += 2) {
    odd.load(p, runs.desc_head, runs.run_first(r + 1), kScoreWarps, runs.run_last(r + 1));
    score_and_store<T, D>(p, even, qbar, runs.desc_head, runs.M, runs.run_first(r), kScoreWarps, runs.run_last(r));
    if (runs.run_first(r + 1) >= runs.end) break;
    even.load(p, runs.desc_head, runs.run_first(r + 2), kScoreWarps, runs.run_last(r + 2));
    score_and_store<T, D>(p, odd, qbar, runs.desc_head, runs.M, runs.run_first(r + 1), kScoreWarps,
                          runs.run_last(r + 1));
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

// Top-k of one (sequence, KV head), on a cluster of kCtas CTAs (1, 2, 4 or 8): n_sel in exact
// integers, radix select of the K-th largest rank key, ascending compaction. CTA r of the cluster
// owns the contiguous blocks [r * share, (r + 1) * share) of the sequence (topk_share); the CTAs'
// histograms meet through distributed shared memory (one cluster barrier per radix pass), and
// each CTA writes its selected blocks after those of the CTAs below it. A key is (high word: the
// score's order, or all ones for a forced block) << 32 | (~block index), so the top-k needs only
// the high words of its share: hi_words[i * hi_stride] is that of block begin + i.
// launch_selection takes the largest cluster that still gives every CTA an SM of its own: eight
// CTAs for a few heads (batch 1), down to one CTA of 1024 threads, without cluster barriers, once
// the heads fill the card.
template <int kCtas>
constexpr int kTopkThreads = kCtas == 1 ? 1024 : 512;

struct TopkShare {
  int M, begin, n;  // the sequence's blocks; this CTA's first block and block count
};
template <int kCtas>
__device__ TopkShare topk_share(int length, int block_size) {
  const int M = (length + block_size - 1) / block_size;
  const int share = (M + kCtas - 1) / kCtas;
  const int rank = kCtas == 1 ? 0 : static_cast<int>(cg::this_cluster().block_rank());
  const int begin = min(M, rank * share);
  return {M, begin, min(M, begin + share) - begin};
}

// The top-k proper, run by every thread of every CTA of the cluster (no thread may have left).
template <int kCtas>
__device__ void topk_cluster(const TopkShare sh, const uint32_t* hi_words, int hi_stride, const SparseConfig& cfg,
                             int32_t* out, int32_t* n_blocks_out) {
  constexpr int kSelectThreads = kTopkThreads<kCtas>, kSelectWarps = kSelectThreads / 32;
  static_assert(kSelectThreads >= 256, "topk: one thread per radix bin");
  static_assert(kSelectWarps * kSelectWarps <= kSelectThreads, "topk: one thread per (round, warp) of a compaction chunk");
  static_assert(kCtas <= 8, "topk: a portable cluster, one lane per CTA of it");
  __shared__ unsigned hist[2][256];  // pass p counts into hist[p % 2] (see the barrier below)
  __shared__ int warp_sums[kSelectWarps];
  __shared__ int chunk_offsets[kSelectWarps * kSelectWarps];  // [round in chunk][warp]
  __shared__ int chunk_total;
  __shared__ unsigned long long prefix_s;
  __shared__ int remaining_s;
  __shared__ int done_s;
  __shared__ int taken_s;  // keys of this CTA's share that are selected (read by the whole cluster)
  __shared__ int base_s;   // output position of this CTA's first selected block
  const int M = sh.M, begin = sh.begin, n = sh.n;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  auto key_at = [&](int i) {  // key of block begin + i
    return (static_cast<unsigned long long>(hi_words[static_cast<size_t>(i) * hi_stride]) << 32) |
           (0xffffffffu - static_cast<uint32_t>(begin + i));
  };

  // n_sel = max(ceil(ratio * M), min(M, n_min)); K = max(n_sel, number of forced blocks).
  const long long by_ratio = (static_cast<long long>(cfg.ratio.num) * M + cfg.ratio.den - 1) / cfg.ratio.den;
  const long long n_sel = min(static_cast<long long>(M), max(by_ratio, static_cast<long long>(min(M, cfg.n_min))));
  const int local_begin = max(0, M - cfg.n_local), sink_end = min(M, cfg.n_sink);
  const int n_forced = (M - local_begin) + max(0, min(sink_end, local_begin));
  const int K = static_cast<int>(max(n_sel, static_cast<long long>(n_forced)));

  // Radix select of the K-th largest key (keys are distinct), 8 bits at a time from the top. Each
  // pass counts the CTA's share into its own histogram, then every CTA adds the cluster's
  // histograms bin by bin (the same integers in every CTA, so every CTA makes the same choice):
  // the pass picks the highest bin whose count, added to the counts of the bins above it, reaches
  // the keys still to place: threads 0..255 take bins 255..0, an inclusive scan of their counts
  // gives each bin's "above + count", and the one thread where it first reaches `remaining`
  // writes the new prefix (the same bin a serial walk from bin 255 down stops at). When that bin
  // holds exactly the keys still to place, every key of it is taken: the prefix with zero low bits
  // is then a threshold that selects the same K keys, and the remaining passes are skipped.
  // Pass p counts into hist[p % 2]: a CTA clears that buffer again only in pass p + 2, after the
  // cluster barrier of pass p + 1, which every CTA reaches after it has read pass p's histograms.
  if (threadIdx.x == 0) {
    prefix_s = 0ull;
    remaining_s = K;
    done_s = 0;
    if constexpr (kCtas > 1) taken_s = 0;  // taken_s and base_s serve clusters of two or more
  }
  unsigned long long mask = 0ull;
  for (int shift = 56, pass = 0; shift >= 0; shift -= 8, ++pass) {
    unsigned* const counts = hist[pass % 2];
    if (threadIdx.x < 256) counts[threadIdx.x] = 0u;
    __syncthreads();  // (first pass: also publishes the caller's staged high words)
    const unsigned long long prefix = prefix_s;
    const int remaining = remaining_s;
    // Histogram with one shared atomic per distinct bin of a warp: the first passes put nearly
    // all keys (scores of one sign and binade) into one or two bins. kHistRounds rounds at a time
    // with the whole warp in every __match_any_sync (lanes that do not count carry a value no bin
    // has), so their loads, votes and matches overlap instead of forming one chain per round.
    constexpr int kHistRounds = 4;
    for (int start = 0; start < n; start += kHistRounds * kSelectThreads) {
      unsigned value[kHistRounds];
#pragma unroll
      for (int u = 0; u < kHistRounds; ++u) {
        const int i = start + u * kSelectThreads + threadIdx.x;
        const unsigned long long key = i < n ? key_at(i) : 0ull;
        value[u] = i < n && (key & mask) == prefix ? static_cast<unsigned>(key >> shift) & 255u : 256u;
      }
#pragma unroll
      for (int u = 0; u < kHistRounds; ++u) {
        const unsigned same = __match_any_sync(0xffffffffu, value[u]);
        if (value[u] < 256u && lane == __ffs(same) - 1) atomicAdd(&counts[value[u]], static_cast<unsigned>(__popc(same)));
      }
    }
    int count = 0, upto = 0;  // this thread's bin 255 - tid: its count, and the counts of bins >= it
    if constexpr (kCtas == 1) {
      __syncthreads();
      if (threadIdx.x < 256) count = static_cast<int>(counts[255 - threadIdx.x]);
    } else {
      cg::this_cluster().sync();  // every CTA's histogram of this pass is complete and visible to the cluster
      if (threadIdx.x < 256) {
        unsigned sum = 0u;
#pragma unroll
        for (int r = 0; r < kCtas; ++r) sum += *cg::this_cluster().map_shared_rank(&counts[255 - threadIdx.x], r);
        count = static_cast<int>(sum);
      }
    }
    if (threadIdx.x < 256) {
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

  // Where this CTA's selected blocks go: after those of the CTAs below it in the cluster.
  int base = 0;
  if constexpr (kCtas > 1) {
    int mine = 0;
    for (int i = threadIdx.x; i < n; i += kSelectThreads) mine += key_at(i) >= threshold;
    mine = __reduce_add_sync(0xffffffffu, mine);
    if (lane == 0) atomicAdd(&taken_s, mine);
    cg::cluster_group cluster = cg::this_cluster();
    const int rank = static_cast<int>(cluster.block_rank());
    cluster.sync();
    if (warp == 0) {
      const int taken = lane < kCtas ? *cluster.map_shared_rank(&taken_s, lane) : 0;
      const int below = __reduce_add_sync(0xffffffffu, lane < rank ? taken : 0);
      const int total = __reduce_add_sync(0xffffffffu, taken);
      if (lane == 0) {
        base_s = below;
        if (rank == 0) *n_blocks_out = total;
      }
    }
    __syncthreads();
    base = base_s;
    cluster.barrier_arrive();  // done reading the cluster's counts; the wait at the end keeps ours alive
  }

  // Ascending compaction of the CTA's keys >= threshold. Key i is visited in round i /
  // kSelectThreads by thread i % kSelectThreads, so ascending order is (round, warp, lane). Per
  // chunk of up to kSelectWarps rounds: each warp counts its taken keys per round, one CTA-wide
  // exclusive scan over the (round, warp) counts (thread t holds entry t) gives every warp's output
  // offset, and a second visit writes.
  const unsigned lanes_below = (1u << lane) - 1u;
  const int rounds = (n + kSelectThreads - 1) / kSelectThreads;
  for (int r0 = 0; r0 < rounds; r0 += kSelectWarps) {
    const int nr = min(kSelectWarps, rounds - r0);
#pragma unroll 4
    for (int r = 0; r < nr; ++r) {
      const int i = (r0 + r) * kSelectThreads + threadIdx.x;
      const unsigned taken = __ballot_sync(0xffffffffu, i < n && key_at(i) >= threshold);
      if (lane == 0) chunk_offsets[r * kSelectWarps + warp] = __popc(taken);
    }
    __syncthreads();
    const int count = threadIdx.x < nr * kSelectWarps ? chunk_offsets[threadIdx.x] : 0;
    const int incl = warp_inclusive_sum(count);
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      const int own = lane < kSelectWarps ? warp_sums[lane] : 0;
      const int total = warp_inclusive_sum(own);
      if (lane < kSelectWarps) warp_sums[lane] = total - own;
      if (lane == 31) chunk_total = total;
    }
    __syncthreads();
    if (threadIdx.x < nr * kSelectWarps) chunk_offsets[threadIdx.x] = base + warp_sums[warp] + incl - count;
    __syncthreads();
#pragma unroll 4
    for (int r = 0; r < nr; ++r) {
      const int i = (r0 + r) * kSelectThreads + threadIdx.x;
      const bool take = i < n && key_at(i) >= threshold;
      const unsigned taken = __ballot_sync(0xffffffffu, take);
      if (take) out[chunk_offsets[r * kSelectWarps + warp] + __popc(taken & lanes_below)] = begin + i;
    }
    base += chunk_total;
    __syncthreads();  // chunk_offsets, warp_sums and chunk_total are reused by the next chunk
  }
  if constexpr (kCtas > 1)
    cg::this_cluster().barrier_wait();  // no CTA exits while another may still read its taken_s
  else if (threadIdx.x == 0)
    *n_blocks_out = base;
}

// Top-k after block_scores_kernel (long sequences): a CTA stages the high words of its share's
// keys in shared memory when it holds at most smem_keys (one read of the keys from global
// memory), and reads them in place from the 64-bit keys otherwise.
constexpr int kTopkSmemKeys = 32768;  // high words staged in shared memory up to this M (128 KB in all)
template <int kCtas>
__global__ void __cluster_dims__(kCtas, 1, 1) __launch_bounds__(kTopkThreads<kCtas>)
    topk_kernel(const int32_t* length, int n_kv_heads, int max_blocks, SparseConfig cfg, const uint64_t* all_keys,
                int32_t* all_blocks, int32_t* n_blocks, int max_selected, int smem_keys) {
  extern __shared__ uint32_t staged_hi[];
  detail::wait_for_previous_grid();  // launched with launch_dependent; no early trigger (device_common.cuh)
  const int kvh = blockIdx.x / kCtas, b = blockIdx.y;
  const TopkShare sh = topk_share<kCtas>(length[b], cfg.block_size);
  const int slot = b * n_kv_heads + kvh;
  // Word 1 of each little-endian 64-bit key, or the staged copy.
  const uint32_t* hi_words = reinterpret_cast<const uint32_t*>(all_keys + static_cast<size_t>(slot) * max_blocks + sh.begin) + 1;
  int hi_stride = 2;
  if ((sh.M + kCtas - 1) / kCtas <= smem_keys) {
#pragma unroll 8
    for (int i = threadIdx.x; i < sh.n; i += kTopkThreads<kCtas>) staged_hi[i] = hi_words[2 * static_cast<size_t>(i)];
    hi_words = staged_hi;
    hi_stride = 1;
  }
  topk_cluster<kCtas>(sh, hi_words, hi_stride, cfg, all_blocks + static_cast<size_t>(slot) * max_selected, n_blocks + slot);
}

// Scores and top-k in one launch (short sequences): each CTA of the cluster scores the blocks of
// its own top-k share (warp w takes blocks begin + w + warps * j, eight per round) and keeps their
// keys' high words in shared memory, so the top-k reads no keys from global memory. Saves a launch
// and a round trip; each warp walks its blocks in rounds, so launch_selection takes it only up to
// kFusedRounds rounds (H200, 12/2 batch 1: 16K, one round, 11.1 us in two launches, 9.8 fused;
// 64K, four rounds, 11.8-12.0 us either way).
constexpr int kFusedRounds = 4;
template <class T, int D, int kCtas>
__global__ void __cluster_dims__(kCtas, 1, 1) __launch_bounds__(kTopkThreads<kCtas>)
    select_fused_kernel(const SelectParams<T> p) {
  constexpr int kWarps = kTopkThreads<kCtas> / 32;
  extern __shared__ uint32_t staged_hi[];
  detail::wait_for_previous_grid();  // launched with launch_dependent; no early trigger (device_common.cuh)
  const int kvh = blockIdx.x / kCtas, b = blockIdx.y;
  const TopkShare sh = topk_share<kCtas>(p.kv.length[b], p.cfg.block_size);
  const int slot = b * p.kv.n_kv_heads + kvh;
  const size_t desc_head = static_cast<size_t>(slot) * p.desc.max_blocks;
  const int end = sh.begin + sh.n;
  float qbar[D / 32];
  for (int first = sh.begin; first < end; first += kWarps * kBlocksPerWarp) {
    WarpBlocks<T, D> blocks;
    blocks.load(p, desc_head, first, kWarps, end);
    if (first == sh.begin) pooled_query<T, D>(p, b, kvh, qbar);  // while the first loads are in flight
    score_and_store<T, D>(p, blocks, qbar, desc_head, sh.M, first, kWarps, end, staged_hi, sh.begin);
  }
  topk_cluster<kCtas>(sh, staged_hi, 1, p.cfg, p.blocks + static_cast<size_t>(slot) * p.max_selected, p.n_blocks + slot);
}

// The scores kernel for the grid at hand: runs of four (or two) rounds per CTA where that grid
// still has at least two waves of the prefetching kernel's CTAs (batch 8 at long lengths), else
// one round per CTA. The grid covers the capacity's blocks (CTAs past a sequence's length leave).
template <class T, int D>
void launch_scores(const SelectParams<T>& p, cudaStream_t stream) {
  const long long heads = static_cast<long long>(p.kv.n_kv_heads) * p.kv.batch;
  const auto runs_per_head = [&](int rounds) {
    return (p.desc.max_blocks + rounds * kBlocksPerCta - 1) / (rounds * kBlocksPerCta);
  };
  const long long two_waves = 2LL * detail::sm_count() * kScorePrefetchCtasPerSm<T>;
  for (const int rounds : {4, 2}) {
    if (heads * runs_per_head(rounds) >= two_waves) {
      detail::launch_dependent(block_scores_prefetch_kernel<T, D>,
                               dim3(runs_per_head(rounds), p.kv.n_kv_heads, p.kv.batch), kScoreThreads, 0, stream,
                               "block_scores_prefetch_kernel", p, rounds);
      return;
    }
  }
  detail::launch_dependent(block_scores_kernel<T, D>, dim3(runs_per_head(1), p.kv.n_kv_heads, p.kv.batch), kScoreThreads,
                           0, stream, "block_scores_kernel", p);
}

// Launches the selection on clusters of kCtas CTAs: the fused kernel when a warp has at most
// kFusedRounds rounds of blocks, else the scores kernel and topk_kernel.
template <class T, int D, int kCtas>
void launch_selection(const SelectParams<T>& p, cudaStream_t stream) {
  const dim3 topk_grid(kCtas * p.kv.n_kv_heads, p.kv.batch);
  const int share = (p.desc.max_blocks + kCtas - 1) / kCtas;  // blocks per CTA at capacity
  if (share <= kFusedRounds * (kTopkThreads<kCtas> / 32) * kBlocksPerWarp) {
    detail::launch_dependent(select_fused_kernel<T, D, kCtas>, topk_grid, kTopkThreads<kCtas>, share * sizeof(uint32_t),
                             stream, "select_fused_kernel", p);  // at most 4 KB of shared memory
    return;
  }
  launch_scores<T, D>(p, stream);
  // A CTA stages up to kTopkSmemKeys / kCtas high words, its share of M (128 KB for one CTA).
  const int smem_keys = std::min(share, kTopkSmemKeys / kCtas);
  static detail::PerDeviceCache configured;  // per instance; the attribute is per function and device
  detail::allow_dynamic_smem(configured, topk_kernel<kCtas>, kTopkSmemKeys / kCtas * sizeof(uint32_t));
  detail::launch_dependent(topk_kernel<kCtas>, topk_grid, kTopkThreads<kCtas>, smem_keys * sizeof(uint32_t), stream,
                           "topk_kernel", p.kv.length, p.kv.n_kv_heads, p.desc.max_blocks, p.cfg, p.keys, p.blocks,
                           p.n_blocks, p.max_selected, smem_keys);
}

template <class T, int D>
void launch_selection(const SelectParams<T>& p, cudaStream_t stream) {
  const int sms = detail::sm_count();
  const long long heads = static_cast<long long>(p.kv.n_kv_heads) * p.kv.batch;
  if (heads * 8 <= sms)
    launch_selection<T, D, 8>(p, stream);
  else if (heads * 4 <= sms)
    launch_selection<T, D, 4>(p, stream);
  else if (heads * 2 <= sms)
    launch_selection<T, D, 2>(p, stream);
  else
    launch_selection<T, D, 1>(p, stream);
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
  if (p.kv.head_dim == 128)
    launch_selection<T, 128>(p, stream);
  else
    launch_selection<T, 64>(p, stream);
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
