// cuda/src/attention.cu — dense decode, chunked causal and block-sparse attention: kernels that
// implement resa::Schedule exactly (reference/src/attention.cpp is the spec):
//
//   attention_split_decode_kernel  grid (split, KV head, sequence), for launches whose query rows
//     fit one 16-row MMA tile (decode, block-sparse decode): one CTA reduces one split of the KV
//     list in 64-key tiles staged by cp.async (two, three or six stages); scores are chains of
//     m16n8k16 MMAs over d in k16 steps, split across four or eight warps (launch_decode picks
//     both by the grid); the online softmax uses the shared exp2; P
//     (rounded to the KV dtype) times V and times a ones column (the row sum l) are chains over
//     the tile's four k16 key groups.
//   attention_split_decode_cluster_kernel  grid (8 x split, KV head, sequence), the same rows for
//     block-sparse grids of one wave and dense grids of a few splits: a cluster of eight CTAs per
//     split, CTA r scoring tile r and owning output columns [D r / 8, D (r + 1) / 8); row maxima
//     and P meet in every CTA through distributed shared memory (st.async, counted by
//     mbarriers), then the P·V chain runs tile after tile as in the kernel above.
//   attention_split_wgmma_kernel  grid (split group x row group, KV head, sequence), for more
//     rows (rectification, prefill chunks; causal keys only): the same arithmetic with Hopper
//     wgmma, up to 256 rows per CTA, over three stages of 64-key tiles in the 128-byte swizzle
//     that the bulk tensor copy engine fills; a CTA reduces interleaved splits (its split group's
//     first, then every split-group-count-th), one partial each, and its warpgroups meet at no
//     barrier per tile. Rows whose causal limit lies before a tile keep their state exactly.
//   attention_merge_kernel  grid (row, KV head, sequence), one warp per 32 columns; folds a row's
//     split partials left to right with the shared merge rule and writes acc / l.
//
// Tested bit for bit against the reference by tests/gpu/test_gpu_kernels.cpp and `resa verify`.
#include <cooperative_groups.h>

#include <algorithm>
#include <string>

#include "device_common.cuh"
#include "launch.cuh"
#include "split_plan.h"
#include "wgmma.cuh"
#include "resa_cuda/api.h"

namespace resa::cuda {

namespace {

namespace cg = cooperative_groups;

using detail::MmaTraits;
using detail::mma_16816;

constexpr int kKeyTile = 64;

// Decode kernel shared memory: kStages stages of K and V, each [64 keys][D] with the 16-byte
// chunks of key k XOR-permuted by k % 8 (chunk c at position c ^ (k % 8); D / 8 >= 8 chunks). The
// eight rows an ldmatrix reads at one chunk column land in eight distinct bank groups, and every
// 32-byte sector of a key row lands whole in one aligned 32-byte unit, so cp.async requests each
// sector of K and V from L2 once. (Rows padded by 16 bytes, the layout this replaced, put every
// odd key's sectors across two 32-byte units, each then requested twice: L2 served 1.5 sectors per
// sector read from DRAM, and the decode kernels took 4-8% longer; PERFORMANCE.md change 39.)
// The stage count is a template argument chosen per launch by the grid's size (launch below):
// more stages mean more of a split's tiles in flight but fewer CTAs per SM, so two stages (three
// CTAs per SM) serve grids of several waves, where three stages measured slower on the H200
// (block-sparse 28/4 batch 8 256K 143 -> 178 us, dense 12/2 batch 1 256K 101 -> 108 us), and more
// stages serve grids that fit the card in one wave at fewer CTAs per SM.
template <int D>
__device__ __forceinline__ int decode_smem_offset(int key, int chunk) {
  static_assert(D / 8 >= 8, "decode_smem_offset: the XOR by key % 8 permutes within eight chunks");
  return key * D + ((chunk ^ (key & 7)) << 3);
}
template <int D>
constexpr size_t decode_stage_bytes() {
  return 2 /*K,V*/ * kKeyTile * D * sizeof(uint16_t);
}

// One K/V stage of the wgmma kernel, in the 128-byte-swizzle layout of wgmma.cuh (sw128_offset)
// that the bulk tensor copy writes: K as D / 64 column blocks of [64 keys][64], then V likewise
// and one more block whose first 8 columns hold ones (the row-sum column; written once, never
// copied over). Each block is 8 KB and 1024-byte aligned. The slow path reads V with ldmatrix.
template <int D>
struct KvStage {
  static constexpr int kKChunks = D / 8;  // Q's core-matrix layout
  static constexpr int kBlocks = D / 64;
  static constexpr int kBlockElems = kKeyTile * 64;
  static constexpr int kK = kBlocks * kBlockElems;
  static constexpr int kElems = kK + (kBlocks + 1) * kBlockElems;
};
// The bulk tensor copy's view of the cache: K and V as [batch * KV heads][capacity][D], boxes of
// 64 keys x 64 columns in the 128-byte swizzle.
struct KvMaps {
  CUtensorMap k, v;
};

// Cache position of key idx of a block-sparse KV list: the list's key idx lies in its entry
// idx / block_size, which holds cache block `block`.
__device__ __forceinline__ int gathered_key_position(int block, int idx, int block_size) {
  return block * block_size + idx % block_size;
}

// Key count of the longest row of (sequence b, KV head kvh).
template <class T>
__device__ __forceinline__ int row_keys_max(const AttentionParams<T>& p, int b, int kvh, int L) {
  if (p.gather == KeyGather::Causal) return L;
  const int slot = b * p.kv.n_kv_heads + kvh;
  const int nb = p.n_blocks[slot];
  const int last = p.blocks[static_cast<size_t>(slot) * p.max_selected + nb - 1];
  return (nb - 1) * p.block_size + (L - last * p.block_size);
}

// The keys one CTA reduces: splits first, first + stride, ... (count of them) of the causal KV
// list of (sequence b, KV head kvh), as 64-key tiles numbered across the splits (split_len / 64
// per split; only the list's last split, the CTA's last if it has it, can have fewer), and the
// loader of one tile into a KvStage. (Gathered keys never reach the wgmma kernel: block-sparse
// attention has n_new = 1 and groups are at most 8, so its rows fit the decode kernel; launch()
// checks.)
template <class T, int D>
struct CtaKeys {
  int first, stride, split_len, n_keys, tiles_per_split, n_tiles, slot;

  __device__ CtaKeys(const AttentionParams<T>& p, int b, int kvh, int n_keys, int first, int stride, int count)
      : first(first), stride(stride), split_len(p.schedule.split_len), n_keys(n_keys),
        tiles_per_split(split_len / kKeyTile), slot(b * p.kv.n_kv_heads + kvh) {
    const int last = first + (count - 1) * stride;
    n_tiles = (count - 1) * tiles_per_split + (end_of(last) - begin_of(last) + kKeyTile - 1) / kKeyTile;
  }
  __device__ int begin_of(int split) const { return split * split_len; }
  __device__ int end_of(int split) const { return min(begin_of(split) + split_len, n_keys); }
  __device__ int first_key(int tile) const {
    return begin_of(first + tile / tiles_per_split * stride) + tile % tiles_per_split * kKeyTile;
  }
  // The calling thread issues tile `tile` (nothing past the last) into `stage` by the bulk tensor
  // copy engine: K's and V's column blocks, completing on the stage's mbarrier `full`, armed with
  // their bytes. Keys past the cache's capacity read as zeros; keys past the list's end are real
  // cache contents, which the kernel clears from V (K's scores there are masked).
  __device__ void load(const KvMaps& maps, uint16_t* stage, uint32_t full, int tile) const {
    using St = KvStage<D>;
    if (tile >= n_tiles) return;
    const int t0 = first_key(tile);
    detail::mbarrier_arrive_expect_tx(full, 2 * St::kBlocks * St::kBlockElems * 2);
#pragma unroll
    for (int blk = 0; blk < St::kBlocks; ++blk) {
      detail::tma_load_3d(stage + blk * St::kBlockElems, &maps.k, 64 * blk, t0, slot, full);
      detail::tma_load_3d(stage + St::kK + blk * St::kBlockElems, &maps.v, 64 * blk, t0, slot, full);
    }
  }
};

// acc0, acc1 (output n-tiles j, j + 1 of one warp's 16 rows) += P · V over the tile's four k16
// key groups, V read from a KvStage by ldmatrix; rows not `active` (wholly past their causal
// limit) keep their values exactly.
template <class T, int D>
__device__ __forceinline__ void pv_ntile_pair(float (&acc0)[4], float (&acc1)[4], const uint32_t (&pa)[4][4],
                                              const uint16_t* vs, int j, const bool (&active)[2]) {
  const int lane = threadIdx.x % 32, mi = lane / 8, r = lane % 8;
  const float keep0[4] = {acc0[0], acc0[1], acc0[2], acc0[3]};
  const float keep1[4] = {acc1[0], acc1[1], acc1[2], acc1[3]};
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    uint32_t vb[4];
    detail::ldmatrix_x4_trans(vb, vs + detail::sw128_offset(16 * u + 8 * (mi % 2) + r, 8 * (j + mi / 2), kKeyTile));
    mma_16816<T>(acc0, pa[u], vb[0], vb[1]);
    mma_16816<T>(acc1, pa[u], vb[2], vb[3]);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h)
    if (!active[h]) {
      acc0[2 * h] = keep0[2 * h], acc0[2 * h + 1] = keep0[2 * h + 1];
      acc1[2 * h] = keep1[2 * h], acc1[2 * h + 1] = keep1[2 * h + 1];
    }
}
// lf (the row sums, m16n8 C fragment) += P · ones over the four key groups, same keep rule.
template <class T>
__device__ __forceinline__ void row_sums(float (&lf)[4], const uint32_t (&pa)[4][4], const bool (&active)[2]) {
  const float keep[4] = {lf[0], lf[1], lf[2], lf[3]};
#pragma unroll
  for (int u = 0; u < 4; ++u) mma_16816<T>(lf, pa[u], MmaTraits<T>::kOnePair, MmaTraits<T>::kOnePair);
#pragma unroll
  for (int h = 0; h < 2; ++h)
    if (!active[h]) lf[2 * h] = keep[2 * h], lf[2 * h + 1] = keep[2 * h + 1];
}

// One warp's share of a decode tile's scores: s[jj] = the k16 chains of Q against the keys of
// n-tile kScoreTiles * warp + jj (eight keys; K in the decode_smem_offset layout), times
// scale_log2, and -inf for keys at or past each row's limit (t0: the tile's first key); each
// row's maximum over the warp's keys goes to wmax[warp * 16 + row].
template <class T, int D, int kScoreTiles>
__device__ __forceinline__ void decode_tile_scores(float (&s)[kScoreTiles][4], const uint32_t (&qa)[D / 16][4],
                                                   const uint16_t* ks, int t0, const int (&limit)[2],
                                                   float scale_log2, float* wmax) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tq = lane % 4;
#pragma unroll
  for (int jj = 0; jj < kScoreTiles; ++jj) {
    const int j = kScoreTiles * warp + jj;
    s[jj][0] = s[jj][1] = s[jj][2] = s[jj][3] = 0.f;
#pragma unroll
    for (int u = 0; u < D / 16; u += 2) {
      uint32_t kb[4];
      detail::ldmatrix_x4(kb, ks + decode_smem_offset<D>(8 * j + lane % 8, 2 * u + lane / 8));
      mma_16816<T>(s[jj], qa[u], kb[0], kb[1]);
      mma_16816<T>(s[jj], qa[u + 1], kb[2], kb[3]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float x = neg_inf();
#pragma unroll
    for (int jj = 0; jj < kScoreTiles; ++jj)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int idx = t0 + 8 * (kScoreTiles * warp + jj) + 2 * tq + e;
        const float t = idx < limit[h] ? mul_rn(s[jj][2 * h + e], scale_log2) : neg_inf();
        s[jj][2 * h + e] = t;
        x = max_ignore_nan(x, t);
      }
    x = max_ignore_nan(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = max_ignore_nan(x, __shfl_xor_sync(0xffffffffu, x, 2));
    if (tq == 0) wmax[warp * 16 + gid + 8 * h] = x;
  }
}

// The workspace slot of one row's partial of one split: acc[D], then (m, l) in a second array,
// and the slot's word of the split flags (AttentionParams::split_flags; null without them). The
// same row's partial of split s + 1 is rows_per_head slots further in all three.
struct PartialSlot {
  float *acc, *ml;
  uint32_t* flag;
  template <class T>
  __device__ PartialSlot(const AttentionParams<T>& p, int D, int b, int kvh, int split, int max_splits,
                         int rows_per_head, int row) {
    const int hkv = p.kv.n_kv_heads;
    const size_t slot = ((static_cast<size_t>(b) * hkv + kvh) * max_splits + split) * rows_per_head + row;
    acc = p.workspace + slot * D;
    ml = p.workspace + static_cast<size_t>(p.kv.batch) * hkv * max_splits * rows_per_head * D + slot * 2;
    flag = p.split_flags ? p.split_flags + slot : nullptr;
  }
};

// Split flags (AttentionParams::split_flags), set by the decode kernel so that the merge can fold
// each split as soon as it is written (attention_merge_kernel): a split sets the flag of each row
// whose partial it wrote, after the CTA's partial stores (the CTA's threads fence, then meet at a
// barrier: device_common.cuh, flag_release), and split 0 sets every row's flag, whether it wrote
// the row's partial or not (a row without keys: a length below n_new, which the merge then
// writes without folding instead of waiting forever; a sequence without keys, whose split 0
// sets them by split0_flags_without_keys): the merge waits for split 0 before it reads the
// lengths, so that it reads them after the kernels before the split kernel.
template <class T>
__device__ void split0_flags_without_keys(const AttentionParams<T>& p, int b, int kvh, int max_splits,
                                          int rows_per_head) {
  if (p.split_flags && static_cast<int>(threadIdx.x) < rows_per_head)
    detail::flag_release(PartialSlot(p, 0, b, kvh, 0, max_splits, rows_per_head, threadIdx.x).flag, 1u);
}

// Rectification and chunked prefill: all query rows of a KV head (up to four warpgroups of 64)
// in one CTA, so each split's K/V is read once; the CTA reduces up to wgmma_splits_per_cta
// interleaved splits one after the other (the partial of each is what a CTA of its own would
// write), so its prologue is paid once for all of them. Per 64-key tile each warpgroup computes its
// 64x64 scores as eight chained wgmma k16 steps (Q and K from shared memory) and P·[V | 1] as
// four chained 64x(D+8) steps (P from registers; the ones column gives the row sums l), which
// is per element the arithmetic of mma.sync m16n8k16 chains (cuda/lab/wgmma_probe.cu) and so of
// the reference's dot16_tensor_core chains. A tile where some row of the warpgroup lies wholly
// past its causal limit takes the per-warp mma.sync path that keeps those rows' state exactly.
constexpr int kWgRows = 64;
constexpr int kMaxWarpgroups = 4;  // rows of one row group: kMaxWarpgroups * kWgRows
constexpr int kStages = 3;  // K/V tiles in flight per CTA

template <int D>
size_t wgmma_smem_bytes(int warpgroups) {
  return (kStages * KvStage<D>::kElems + static_cast<size_t>(warpgroups) * kWgRows * D) * sizeof(uint16_t) +
         1024;  // the stages start on a 1024-byte boundary
}

// kWarpgroupsBound: the most warpgroups the instance is launched with; it sets the register
// budget (65536 / (128 kWarpgroupsBound) per thread: 128 for four warpgroups, 168 for three, where
// the softmax runs without spills and with more exps in flight).
template <class T, int D, int kWarpgroupsBound>
__global__ void __launch_bounds__(kWarpgroupsBound * 128, 1)
    attention_split_wgmma_kernel(const AttentionParams<T> p, int rows_per_head, int max_splits, int row_groups,
                                 int splits_per_cta, const __grid_constant__ KvMaps maps) {
  using St = KvStage<D>;
  extern __shared__ __align__(1024) uint16_t smem_raw[];
  __shared__ __align__(8) uint64_t stage_full[kStages];  // the copy engine's completion, per stage
  __shared__ uint32_t stage_released[kStages];  // warps done with the stage, counted over the kernel
  detail::allow_dependent_launch();  // launched with launch_dependent: see device_common.cuh
  detail::wait_for_previous_grid();
  uint16_t* smem = smem_raw + (1024 - detail::smem_addr(smem_raw) % 1024) % 1024 / 2;
  uint16_t* stages = smem;                          // kStages x KvStage
  uint16_t* qs = smem + kStages * St::kElems;       // [warpgroups * 64][D], core-matrix layout
  const int split_group = blockIdx.x / row_groups, row_group = blockIdx.x % row_groups;
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int g = p.n_q_heads / p.kv.n_kv_heads;
  const int L = p.kv.length[b];
  const int n_keys = row_keys_max(p, b, kvh, L);
  // Causal limit (keys) of a row; rows are ordered by token, so limits grow with the row.
  auto limit_of = [&](int r) { return L - p.n_new + r / g + 1; };

  const int cta_row0 = row_group * kMaxWarpgroups * kWgRows;
  const int cta_rows = blockDim.x / 128 * kWgRows;
  // The CTA's splits (split_plan.h): split_group, then every gridDim.x / row_groups-th split after
  // it, up to the last one where its last row has keys (limits never exceed n_keys).
  const int split_len = p.schedule.split_len;
  const int split_groups = gridDim.x / row_groups;
  const int n_splits = split_plan::cta_splits(
      (limit_of(min(rows_per_head, cta_row0 + cta_rows) - 1) + split_len - 1) / split_len, max_splits);
  if (split_group >= n_splits) return;
  const int split_count = split_plan::cta_split_count(split_group, split_groups, n_splits, splits_per_cta);
  const CtaKeys<T, D> keys(p, b, kvh, n_keys, split_group, split_groups, split_count);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tq = lane % 4;
  // The warpgroup index broadcast from lane 0: the compiler then knows it is warp-uniform and keeps
  // the matrix descriptors derived from it in uniform registers.
  const int wg = __shfl_sync(0xffffffffu, warp / 4, 0);
  const int wg_row0 = cta_row0 + wg * kWgRows;
  const int wg_rows = min(kWgRows, rows_per_head - wg_row0);  // <= 0 in a last row group's spare warpgroups
  const int wg_first_limit = limit_of(wg_row0);
  const int wg_last_limit = wg_rows > 0 ? limit_of(wg_row0 + wg_rows - 1) : 0;  // 0: no rows, no keys

  // Q rows of the CTA (zeros past the last row), in the first cp.async group. Thread t copies
  // 16-byte part t / 8 % (D / 8) of rows t % 8 + 8 (t / D) + k (blockDim.x / (D / 8)): blockDim.x
  // is a multiple of 128, so its part stays fixed and each step is a whole number of 8-row
  // groups; the row's (token, head) advance by the step's quotient and remainder by g.
  {
    const uint16_t* qbase = reinterpret_cast<const uint16_t*>(p.q);
    const int part = threadIdx.x / 8 % St::kKChunks, step = blockDim.x / St::kKChunks;
    int row = threadIdx.x / (8 * St::kKChunks) * 8 + threadIdx.x % 8;
    int token = (cta_row0 + row) / g, head = (cta_row0 + row) % g;
    const int step_tokens = step / g, step_heads = step % g;
#pragma unroll 1
    for (; row < cta_rows; row += step) {
      const bool valid = token < p.n_new;
      const size_t off =
          valid ? ((static_cast<size_t>(b) * p.n_new + token) * p.n_q_heads + kvh * g + head) * D + part * 8 : 0;
      detail::cp_async_16(qs + detail::core_offset(row, 8 * part, St::kKChunks), qbase + off, valid ? 16 : 0);
      token += step_tokens;
      head += step_heads;
      if (head >= g) head -= g, ++token;
    }
  }
  detail::cp_async_commit();
  // V's ones block (never copied over): in each row of 64 columns, chunk 0 (columns D .. D + 7,
  // the ones) sits at chunk position key % 8 of the 128-byte swizzle and the other chunks are
  // zeros; one 16-byte store per chunk.
  {
    const uint32_t one = detail::MmaTraits<T>::kOnePair;
    const uint4 ones = make_uint4(one, one, one, one), zeros = make_uint4(0, 0, 0, 0);
    constexpr int kChunks = kKeyTile * 8;  // per stage
    for (int i = threadIdx.x; i < kStages * kChunks; i += blockDim.x) {
      const int stage = i / kChunks, key = i / 8 % kKeyTile, position = i % 8;
      *reinterpret_cast<uint4*>(stages + stage * St::kElems + St::kK + St::kBlocks * St::kBlockElems + key * 64 +
                                position * 8) = position == key % 8 ? ones : zeros;
    }
  }
  const uint32_t full0 = detail::smem_addr(&stage_full[0]);
  const uint32_t released0 = detail::smem_addr(&stage_released[0]);
  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st) detail::mbarrier_init(full0 + 8 * st), stage_released[st] = 0;
    detail::fence_mbarrier_init();
    for (int t = 0; t < kStages; ++t) keys.load(maps, stages + t * St::kElems, full0 + 8 * t, t);
  }
  detail::cp_async_wait<0>();  // Q
  // Q and the ones block, written through the generic proxy, before the tensor cores read them;
  // the barrier also publishes the mbarriers' and counters' initialization.
  detail::fence_proxy_async();
  __syncthreads();

  int row[2], limit[2];
  bool row_valid[2];
  for (int h = 0; h < 2; ++h) {
    row[h] = wg_row0 + (warp % 4) * 16 + gid + 8 * h;
    row_valid[h] = row[h] < rows_per_head;
    limit[h] = limit_of(row_valid[h] ? row[h] : 0);
  }
  float m[2];
  float acc[D / 8 + 1][4];  // output columns, then the row sums l (the ones column)
  // Matrix descriptors: Q of this warpgroup and K, V of stage 0; a k16 step, a 16-key group of V
  // and a stage are constant byte offsets from these.
  constexpr uint32_t k_sbo = St::kKChunks * 128;
  constexpr uint32_t kStageBytes = St::kElems * sizeof(uint16_t);
  constexpr uint32_t kK16Bytes = detail::core_offset(0, 16, St::kKChunks) * sizeof(uint16_t);  // Q
  constexpr uint32_t kVGroupBytes = 16 * 128;  // 16 keys of V's swizzled rows
  // K's k16 step u: column block u / 4, 32 bytes per step inside it.
  auto k_step_bytes = [](int u) { return static_cast<uint32_t>(u / 4 * St::kBlockElems * 2 + u % 4 * 32); };
  const uint64_t q_desc = detail::wgmma_desc(qs + detail::core_offset(wg * kWgRows, 0, St::kKChunks), 128, k_sbo);
  const uint64_t k_desc0 = detail::wgmma_desc_sw128(stages, 16, 1024);
  const uint64_t v_desc0 = detail::wgmma_desc_sw128(stages + St::kK, St::kBlockElems * 2, 1024);

  // No CTA barrier per tile: each warpgroup runs ahead as far as the stages allow, so one
  // warpgroup's softmax can run while another's chains hold the tensor cores. A stage is refilled
  // (tile + kStages) by the last warp to finish reading it, counted in stage_released.
  // The splits' partial states follow each other in the same registers: each split starts empty
  // and ends with its partials written.
  const int n_warps = blockDim.x / 32;
  int split = -1, begin = 0, end = 0;  // the tile's split and its keys [begin, end)
  for (int tile = 0, t0 = 0; tile < keys.n_tiles; ++tile, t0 += kKeyTile) {
    const int stage = tile % kStages;
    if (t0 >= end) {  // the next split: an empty state
      split = split < 0 ? keys.first : split + keys.stride;
      begin = t0 = keys.begin_of(split);
      end = keys.end_of(split);
      m[0] = m[1] = neg_inf();
#pragma unroll
      for (int j = 0; j <= D / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    }
    const bool wg_has_keys = wg_last_limit > begin;
    detail::mbarrier_wait(full0 + 8 * stage, tile / kStages % 2);
    if (t0 + kKeyTile > end) {  // the list's last tile (for every warp): V of the keys past its end is zero
      uint16_t* v_stage = stages + stage * St::kElems + St::kK;
      const int n_past = t0 + kKeyTile - end;
      for (int i = threadIdx.x; i < n_past * D; i += blockDim.x)
        v_stage[detail::sw128_offset(end - t0 + i / D, i % D, kKeyTile)] = 0;
      detail::fence_proxy_async();
      __syncthreads();
    }
    const uint16_t* ks = stages + stage * St::kElems;
    const uint16_t* vs = ks + St::kK;
    if (wg_has_keys) {
      // Scores: 8 n-tiles of 8 keys, each a chain over d in k16 steps.
      float s[8][4];
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      detail::fence_fragments(s);
      detail::wgmma_fence();
#pragma unroll
      for (int u = 0; u < D / 16; ++u)
        detail::wgmma_ss_n64<T>(s, detail::wgmma_desc_advance(q_desc, u * kK16Bytes),
                                detail::wgmma_desc_advance(k_desc0, stage * kStageBytes + k_step_bytes(u)));
      detail::wgmma_commit();
      detail::wgmma_wait_all();
      detail::fence_fragments(s);
      // Online softmax per row. Keys at or past a row's limit score -inf; a tile that lies below
      // every row's limit (all but the last tiles of a causal chunk) takes a loop without the
      // per-key index compares (the test is the same for the whole warpgroup).
      const bool unmasked = t0 + kKeyTile <= wg_first_limit;
      bool active[2];
      float alpha[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        active[h] = t0 < limit[h];
        float mx = m[h];
        if (unmasked) {
          // Four running maxima over consecutive quarters of the thread's 16 keys, combined left
          // to right: the same value as one scan from the left (the leftmost maximum: ties keep
          // the earlier value, NaN scores are ignored, no partial is NaN), with four short
          // dependency chains instead of one long one.
          float part[4] = {mx, neg_inf(), neg_inf(), neg_inf()};
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float t = mul_rn(s[j][2 * h + e], p.schedule.scale_log2);
              s[j][2 * h + e] = t;
              part[j / 2] = max_ignore_nan(part[j / 2], t);
            }
          mx = max_ignore_nan(max_ignore_nan(max_ignore_nan(part[0], part[1]), part[2]), part[3]);
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int idx = t0 + 8 * j + 2 * tq + e;
              const float t = idx < limit[h] ? mul_rn(s[j][2 * h + e], p.schedule.scale_log2) : neg_inf();
              s[j][2 * h + e] = t;
              mx = max_ignore_nan(mx, t);
            }
        }
        mx = max_ignore_nan(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = max_ignore_nan(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        alpha[h] = softmax_rescale_np(m[h], mx);
        m[h] = mx;
      }
      // Rescale first: a factor of exactly 1 (the max did not move) leaves every non-NaN value's
      // bits as they are (x * 1 = x, ±0 and ±Inf included; a NaN stays a NaN and reaches the
      // output only through the canonicalizing normalization), so a warp whose rows all have it
      // skips the multiplies: most tiles after the first few of a long row.
      if (!__all_sync(0xffffffffu, alpha[0] == 1.0f && alpha[1] == 1.0f)) {
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int j = 0; j <= D / 8; ++j) {
            acc[j][2 * h] = mul_rn(acc[j][2 * h], alpha[h]);
            acc[j][2 * h + 1] = mul_rn(acc[j][2 * h + 1], alpha[h]);
          }
      }
      // P in the storage dtype as the A fragment of k16 key group u (keys 16u + 2tq, +8).
      uint32_t pa[4][4];
      auto make_p = [&](int u) {
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float* sv = s[2 * u + half];
            pa[u][2 * half + h] = detail::pack_rn<T>(softmax_prob_np(sv[2 * h], m[h]),
                                                     softmax_prob_np(sv[2 * h + 1], m[h]));
          }
      };
      // P·[V | 1]: one chain over the four key groups in order.
      if (t0 < wg_first_limit) {  // every row of the warpgroup has keys in this tile
        // The first two steps run on the tensor cores while P of the last two is computed.
        make_p(0);
        make_p(1);
        detail::fence_fragments(acc);
        detail::wgmma_fence();
        detail::wgmma_rs_pv<T>(acc, pa[0], detail::wgmma_desc_advance(v_desc0, stage * kStageBytes));
        detail::wgmma_rs_pv<T>(acc, pa[1], detail::wgmma_desc_advance(v_desc0, stage * kStageBytes + kVGroupBytes));
        make_p(2);
        make_p(3);
        detail::wgmma_fence();  // orders the writes of pa[2], pa[3] before the steps that read them
        detail::wgmma_rs_pv<T>(acc, pa[2], detail::wgmma_desc_advance(v_desc0, stage * kStageBytes + 2 * kVGroupBytes));
        detail::wgmma_rs_pv<T>(acc, pa[3], detail::wgmma_desc_advance(v_desc0, stage * kStageBytes + 3 * kVGroupBytes));
        detail::wgmma_commit();
        detail::wgmma_wait_all();
        detail::fence_fragments(acc);
      } else {
        // Rows past their limit keep their state exactly: n-tile pairs of V, then the row sums.
#pragma unroll
        for (int u = 0; u < 4; ++u) make_p(u);
#pragma unroll
        for (int j = 0; j < D / 8; j += 2) pv_ntile_pair<T, D>(acc[j], acc[j + 1], pa, vs, j, active);
        row_sums<T>(acc[D / 8], pa, active);
      }
    }
    // This warp's reads of the stage are done (the chains waited for, the fragments in registers).
    __syncwarp();
    if (lane == 0 && detail::count_arrival_acq_rel(released0 + 4 * stage) == (tile / kStages + 1) * n_warps - 1)
      keys.load(maps, stages + stage * St::kElems, full0 + 8 * stage, tile + kStages);
    if (t0 + kKeyTile >= end) {
      // The split's last tile: partials of the rows that have keys in it.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (!row_valid[h] || limit[h] <= begin) continue;
        const PartialSlot out(p, D, b, kvh, split, max_splits, rows_per_head, row[h]);
#pragma unroll
        for (int j = 0; j < D / 8; ++j)
          *reinterpret_cast<float2*>(out.acc + 8 * j + 2 * tq) = make_float2(acc[j][2 * h], acc[j][2 * h + 1]);
        if (tq == 0) out.ml[0] = m[h], out.ml[1] = acc[D / 8][2 * h];
      }
    }
  }
}

// Decode variant for launches whose query rows fit one 16-row MMA tile (decode, block-sparse
// decode, chunks with n_new * g <= 16). The kWarps warps (4 or 8) share each key tile instead of
// idling: warp w computes the scores of the tile's n-tiles [w * 8 / kWarps, (w + 1) * 8 / kWarps)
// of eight keys each (the same k16 chains), the row maxima meet in shared memory, P goes through
// shared memory, and warp w accumulates output columns [w*D/kWarps, (w+1)*D/kWarps) over the
// tile's four key groups in order. Every element sees exactly the operations of the reference
// schedule (and of attention_split_wgmma_kernel) whatever kWarps is, so a query's output is the
// same bits in decode and in rectification; the row maxima are the same values in any grouping
// (max_ignore_nan keeps the first of +0 and -0, and either gives the same exp2 and merge factors).
// Eight warps halve each warp's instructions per tile (scores, P·V, loader copies); launch_decode
// picks four or eight by what was measured.
constexpr int kMaxSplitBlocks = 512;  // block-list entries of one split staged in shared memory
// CTAs per SM the register budget must allow (__launch_bounds__'s second argument): three for
// eight warps with two stages (what their shared memory allows; unconstrained they take 94
// registers, which fits two), else 0, which emits no directive (ptxas's own choice: the four-warp
// instances keep the code they were measured with).
template <int kStages, int kWarps>
constexpr int kDecodeMinCtas = kWarps == 8 && kStages == 2 ? 3 : 0;
template <class T, int D, int kStages, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, kDecodeMinCtas<kStages, kWarps>)
    attention_split_decode_kernel(const AttentionParams<T> p, int rows_per_head, int max_splits) {
  extern __shared__ __align__(16) uint16_t smem[];
  // launched with launch_dependent (device_common.cuh); the trigger after the wait, so that a
  // merge following the split flags starts after this kernel's predecessors have completed
  detail::wait_for_previous_grid();
  detail::allow_dependent_launch();
  constexpr int kTileElems = kKeyTile * D;
  constexpr int kPRow = kKeyTile + 8;
  constexpr int kColTiles = D / 8 / kWarps;  // output n-tiles per warp (pairs: pv below)
  constexpr int kScoreTiles = kKeyTile / 8 / kWarps;  // 8-key score n-tiles per warp
  static_assert(kColTiles % 2 == 0 && kScoreTiles >= 1, "attention_split_decode_kernel: warps per tile");
  uint16_t* ps = smem + 2 * kStages * kTileElems;  // P [16][kPRow]
  float* red = reinterpret_cast<float*>(ps + 16 * kPRow);  // [warps][16] row maxima
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int hkv = p.kv.n_kv_heads, g = p.n_q_heads / hkv;
  const int L = p.kv.length[b];
  const int n_keys = row_keys_max(p, b, kvh, L);
  const int S = p.schedule.split_len;
  const int split_begin = split * S;
  if (split_begin >= n_keys) {  // no keys (split 0 still sets its flags)
    if (split == 0) split0_flags_without_keys(p, b, kvh, max_splits, rows_per_head);
    return;
  }
  const int split_end = min(split_begin + S, n_keys);
  const int n_tiles = (split_end - split_begin + kKeyTile - 1) / kKeyTile;
  const bool causal = p.gather == KeyGather::Causal;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tq = lane % 4;

  const size_t head_base = (static_cast<size_t>(b) * hkv + kvh) * p.kv.capacity;
  const uint16_t* kbase = reinterpret_cast<const uint16_t*>(p.kv.k) + head_base * D;
  const uint16_t* vbase = reinterpret_cast<const uint16_t*>(p.kv.v) + head_base * D;
  const int32_t* block_list =
      causal ? nullptr : p.blocks + static_cast<size_t>(b * hkv + kvh) * p.max_selected;
  // Block-sparse: the split's entries of the block list are staged once, so that a tile's copies
  // do not each wait for a dependent global load of their block's index (split_len is a multiple
  // of block_size; a list longer than kMaxSplitBlocks is read in place).
  __shared__ int32_t split_blocks[kMaxSplitBlocks];
  const int first_block = causal ? 0 : split_begin / p.block_size;
  const bool staged = !causal && (split_end - split_begin + p.block_size - 1) / p.block_size <= kMaxSplitBlocks;
  auto key_position = [&](int idx) {
    if (causal) return idx;
    const int blk = idx / p.block_size;
    return gathered_key_position(staged ? split_blocks[blk - first_block] : block_list[blk], idx, p.block_size);
  };
  // Issues tile `tile` into `stage` and commits one cp.async group (an empty one past the last
  // tile, so wait counts stay uniform).
  auto load_tile = [&](int stage, int tile) {
    uint16_t* ks = smem + stage * 2 * kTileElems;
    uint16_t* vs = ks + kTileElems;
    const int t0 = split_begin + tile * kKeyTile;
    constexpr int kChunks = kKeyTile * D / 8;
    for (int c = threadIdx.x; c < (tile < n_tiles ? kChunks : 0); c += blockDim.x) {
      const int key = c / (D / 8), part = c % (D / 8);
      const int idx = t0 + key;
      const bool valid = idx < split_end;
      int pos = 0;
      if (valid) pos = key_position(idx);
      const size_t off = static_cast<size_t>(pos) * D + part * 8;
      detail::cp_async_16(ks + decode_smem_offset<D>(key, part), kbase + off, valid ? 16 : 0);
      detail::cp_async_16(vs + decode_smem_offset<D>(key, part), vbase + off, valid ? 16 : 0);
    }
    detail::cp_async_commit();
  };
  int row[2], limit[2];
  bool row_valid[2];
  for (int h = 0; h < 2; ++h) {
    row[h] = gid + 8 * h;
    row_valid[h] = row[h] < rows_per_head;
    limit[h] = causal ? (L - p.n_new + (row_valid[h] ? row[h] / g : 0) + 1) : n_keys;
  }
  uint32_t qa[D / 16][4];
  for (int h = 0; h < 2; ++h) {
    const uint16_t* qrow = nullptr;
    if (row_valid[h]) {
      const int i = row[h] / g, head = kvh * g + row[h] % g;
      qrow = reinterpret_cast<const uint16_t*>(p.q) +
             ((static_cast<size_t>(b) * p.n_new + i) * p.n_q_heads + head) * D;
    }
#pragma unroll
    for (int u = 0; u < D / 16; ++u) {
      qa[u][h] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + 16 * u + 2 * tq) : 0u;
      qa[u][h + 2] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + 16 * u + 8 + 2 * tq) : 0u;
    }
  }
  float m[2] = {neg_inf(), neg_inf()};
  float lf[4] = {0.f, 0.f, 0.f, 0.f};
  float acc[kColTiles][4];
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  if (staged) {
    const int n = (split_end - split_begin + p.block_size - 1) / p.block_size;
    for (int j = threadIdx.x; j < n; j += blockDim.x) split_blocks[j] = block_list[first_block + j];
    __syncthreads();
  }
  for (int t = 0; t < kStages - 1; ++t) load_tile(t, t);
  for (int tile = 0; tile < n_tiles; ++tile) {
    // The stage refilled here held tile - 1, released by the barrier that ended that iteration.
    load_tile((tile + kStages - 1) % kStages, tile + kStages - 1);
    detail::cp_async_wait<kStages - 1>();
    __syncthreads();
    const uint16_t* ks = smem + tile % kStages * 2 * kTileElems;
    const uint16_t* vs = ks + kTileElems;
    const int t0 = split_begin + tile * kKeyTile;
    // Scores of this warp's keys (n-tiles kScoreTiles * w + jj) and their row maxima.
    float s[kScoreTiles][4];
    decode_tile_scores<T, D, kScoreTiles>(s, qa, ks, t0, limit, p.schedule.scale_log2, red);
    const bool active[2] = {t0 < limit[0], t0 < limit[1]};
    float mx[2];
    __syncthreads();
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float x = m[h];
#pragma unroll
      for (int w = 0; w < kWarps; ++w) x = max_ignore_nan(x, red[w * 16 + gid + 8 * h]);
      mx[h] = x;
      alpha[h] = softmax_rescale_np(m[h], x);
      m[h] = x;
    }
    // P of this warp's keys into shared memory, in the storage dtype.
#pragma unroll
    for (int jj = 0; jj < kScoreTiles; ++jj)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        *reinterpret_cast<uint32_t*>(ps + (gid + 8 * h) * kPRow + 8 * (kScoreTiles * warp + jj) + 2 * tq) =
            detail::pack_rn<T>(softmax_prob_np(s[jj][2 * h], mx[h]), softmax_prob_np(s[jj][2 * h + 1], mx[h]));
      }
    __syncthreads();
    uint32_t pa[4][4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int mi = lane / 8, r = lane % 8;
      detail::ldmatrix_x4(pa[u], ps + (r + 8 * (mi % 2)) * kPRow + 16 * u + 8 * (mi / 2));
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      lf[2 * h] = mul_rn(lf[2 * h], alpha[h]);
      lf[2 * h + 1] = mul_rn(lf[2 * h + 1], alpha[h]);
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) {
        acc[j][2 * h] = mul_rn(acc[j][2 * h], alpha[h]);
        acc[j][2 * h + 1] = mul_rn(acc[j][2 * h + 1], alpha[h]);
      }
    }
    if (warp == 0) {
      const float keep[4] = {lf[0], lf[1], lf[2], lf[3]};
#pragma unroll
      for (int u = 0; u < 4; ++u) mma_16816<T>(lf, pa[u], MmaTraits<T>::kOnePair, MmaTraits<T>::kOnePair);
#pragma unroll
      for (int h = 0; h < 2; ++h)
        if (!active[h]) {
          lf[2 * h] = keep[2 * h];
          lf[2 * h + 1] = keep[2 * h + 1];
        }
    }
#pragma unroll
    for (int jl = 0; jl < kColTiles; jl += 2) {
      const int j = warp * kColTiles + jl;  // global output n-tile
      const float keep0[4] = {acc[jl][0], acc[jl][1], acc[jl][2], acc[jl][3]};
      const float keep1[4] = {acc[jl + 1][0], acc[jl + 1][1], acc[jl + 1][2], acc[jl + 1][3]};
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        uint32_t vb[4];
        const int mi = lane / 8, r = lane % 8;
        detail::ldmatrix_x4_trans(vb, vs + decode_smem_offset<D>(16 * u + 8 * (mi % 2) + r, j + mi / 2));
        mma_16816<T>(acc[jl], pa[u], vb[0], vb[1]);
        mma_16816<T>(acc[jl + 1], pa[u], vb[2], vb[3]);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h)
        if (!active[h]) {
          acc[jl][2 * h] = keep0[2 * h];
          acc[jl][2 * h + 1] = keep0[2 * h + 1];
          acc[jl + 1][2 * h] = keep1[2 * h];
          acc[jl + 1][2 * h + 1] = keep1[2 * h + 1];
        }
    }
    __syncthreads();  // K/V stage, P and the maxima are free again
  }
  detail::cp_async_wait<0>();  // only empty groups are left
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!row_valid[h] || limit[h] <= split_begin) continue;
    const PartialSlot out(p, D, b, kvh, split, max_splits, rows_per_head, row[h]);
#pragma unroll
    for (int jl = 0; jl < kColTiles; ++jl)
      *reinterpret_cast<float2*>(out.acc + 8 * (warp * kColTiles + jl) + 2 * tq) =
          make_float2(acc[jl][2 * h], acc[jl][2 * h + 1]);
    if (warp == 0 && tq == 0) out.ml[0] = m[h], out.ml[1] = lf[2 * h];
  }
  if (p.split_flags) {  // the rows written above (and every row by split 0), once every thread's stores are in
    __threadfence();
    __syncthreads();
    if (warp == 0 && tq == 0)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        if (row_valid[h] && (split == 0 || limit[h] > split_begin))
          detail::flag_release(PartialSlot(p, D, b, kvh, split, max_splits, rows_per_head, row[h]).flag, 1u);
  }
}

// Decode kernel for grids that leave most SMs idle (launch_decode gives it the block-sparse grids
// of one wave of clusters, e.g. batch 1 up to 128K at 12/2, and dense grids of at most 26
// clusters, e.g. batch 1 up to 6K at 12/2): a cluster of eight CTAs per split, so a
// split's loads and its serial work spread over eight SMs instead of one CTA reading all of its
// 256 KB (D = 128) and running its tiles one after another. CTA r of the cluster copies and
// scores tile r of the split (its 64 keys, warp w on n-tiles 2w, 2w + 1: the same k16 chains)
// and copies V's columns of its output n-tiles [kCols r, kCols (r + 1)) for all the split's
// keys. The tiles' row maxima go to every CTA of the cluster (st.async into its shared memory,
// counted by an mbarrier there); their running values, tile by tile from the left, are the
// running maxima of attention_split_decode_kernel (the same values: max_ignore_nan in another
// grouping), and CTA r sends tile r's P against the running maximum after it to every CTA (a
// second mbarrier). Then only the P·V chain is serial: the other kernel's per-tile step (scale by
// alpha, the four k16 key groups) tile after tile, warp w < kCols on output n-tile kCols r + w
// and warp kCols on the row sums (CTA 0 writes them). Every element sees the same operations in
// the same order as in attention_split_decode_kernel, so the bits are the same. Two relaxed
// cluster barriers remain: the mbarriers armed before the first remote store, and no CTA leaving
// while a peer's stores into it may be in flight. Needs split_len <= kClusterCtas * 64
// (launch_decode checks).
constexpr int kClusterCtas = 8;       // CTAs of a split: one 64-key tile each
constexpr int kClusterWarps = 4;
template <int D>
struct ClusterDecodeLayout {
  static constexpr int kCols = D / 8 / kClusterCtas;  // output n-tiles per CTA
  static constexpr int kSplitKeys = kClusterCtas * kKeyTile;
  static constexpr int kPRow = kSplitKeys + 8;  // P [16][kPRow]: rows 16 bytes past a bank cycle
  static constexpr int kKElems = kKeyTile * D;  // K of the CTA's tile, decode_smem_offset layout
  static constexpr int kVElems = kSplitKeys * kCols * 8;  // V's columns of the CTA: [key][kCols * 8]
  static constexpr size_t kSmem = (kKElems + kVElems + 16 * kPRow) * sizeof(uint16_t) +
                                  (kClusterCtas + kClusterWarps) * 16 * sizeof(float);
  static_assert(kCols >= 1 && kCols < kClusterWarps && kKeyTile / 8 % kClusterWarps == 0,
                "ClusterDecodeLayout: warps and columns");
  // Element offset of 16-byte chunk c of key k in the V columns: two chunks per key are
  // XOR-permuted by bit 2 of the key, so the eight keys an ldmatrix reads hit distinct banks.
  static __device__ __forceinline__ int v_offset(int k, int c) {
    return k * kCols * 8 + ((kCols == 2 ? c ^ ((k >> 2) & 1) : c) << 3);
  }
};
template <class T, int D>
__global__ void __cluster_dims__(kClusterCtas, 1, 1) __launch_bounds__(kClusterWarps * 32)
    attention_split_decode_cluster_kernel(const AttentionParams<T> p, int rows_per_head, int max_splits) {
  using Lay = ClusterDecodeLayout<D>;
  constexpr int kCols = Lay::kCols, kScoreTiles = kKeyTile / 8 / kClusterWarps;
  extern __shared__ __align__(16) uint16_t smem[];
  __shared__ int32_t split_blocks[kClusterCtas * kKeyTile];  // the split's block-list entries, staged
  __shared__ __align__(8) uint64_t exchange[2];  // mbarriers: the tiles' row maxima, then P, received
  // Launched with launch_dependent (device_common.cuh), but the next kernel is let in only at the
  // end: early merge CTAs cost this kernel 3-12% (PERFORMANCE.md change 48).
  detail::wait_for_previous_grid();
  uint16_t* ks = smem;                       // K of tile `rank`
  uint16_t* vs = ks + Lay::kKElems;          // V's columns of this CTA, all the split's keys
  uint16_t* ps = vs + Lay::kVElems;          // P [16][kPRow], tile t at column 64 t
  float* red = reinterpret_cast<float*>(ps + 16 * Lay::kPRow);  // [tile][16] the tiles' row maxima
  float* wmax = red + kClusterCtas * 16;                         // [warp][16] this tile's, per warp
  const int rank = static_cast<int>(cg::this_cluster().block_rank());
  const int split = blockIdx.x / kClusterCtas, kvh = blockIdx.y, b = blockIdx.z;
  const int hkv = p.kv.n_kv_heads, g = p.n_q_heads / hkv;
  const int L = p.kv.length[b];
  const int n_keys = row_keys_max(p, b, kvh, L);
  const int split_begin = split * p.schedule.split_len;
  const bool causal = p.gather == KeyGather::Causal;
  // A split no row has keys in: the whole cluster leaves before any cluster barrier.
  if (split_begin >= n_keys || (causal && L - p.n_new + (rows_per_head - 1) / g + 1 <= split_begin)) return;
  const int split_end = min(split_begin + p.schedule.split_len, n_keys);
  const int n_tiles = (split_end - split_begin + kKeyTile - 1) / kKeyTile;
  const uint32_t bar_max = detail::smem_addr(&exchange[0]), bar_p = detail::smem_addr(&exchange[1]);
  if (threadIdx.x == 0) {  // each tile's CTA sends 16 maxima and 16 x 64 P values
    detail::mbarrier_init(bar_max);
    detail::mbarrier_init(bar_p);
    detail::fence_mbarrier_init();
    detail::mbarrier_arrive_expect_tx(bar_max, n_tiles * 16 * 4);
    detail::mbarrier_arrive_expect_tx(bar_p, n_tiles * 16 * kKeyTile * 2);
  }
  detail::cluster_arrive_relaxed();  // the mbarriers are armed: waited for before the first remote store
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tq = lane % 4;
  const size_t head_base = (static_cast<size_t>(b) * hkv + kvh) * p.kv.capacity;
  const uint16_t* kbase = reinterpret_cast<const uint16_t*>(p.kv.k) + head_base * D;
  const uint16_t* vbase = reinterpret_cast<const uint16_t*>(p.kv.v) + head_base * D;
  const int first_block = causal ? 0 : split_begin / p.block_size;
  if (!causal) {
    const int32_t* list = p.blocks + static_cast<size_t>(b * hkv + kvh) * p.max_selected + first_block;
    const int n = (split_end - split_begin + p.block_size - 1) / p.block_size;  // <= kSplitKeys / block_size
    for (int j = threadIdx.x; j < n; j += blockDim.x) split_blocks[j] = list[j];
    __syncthreads();
  }
  // Cache position of the split's key k (< split_end - split_begin).
  auto position = [&](int k) {
    const int idx = split_begin + k;
    return causal ? idx : gathered_key_position(split_blocks[idx / p.block_size - first_block], idx, p.block_size);
  };
  // cp.async groups: 0 K of tile `rank` (zeros past the split's end), 1 V's columns of this CTA.
  if (rank < n_tiles) {
    for (int c = threadIdx.x; c < kKeyTile * D / 8; c += blockDim.x) {
      const int key = c / (D / 8), part = c % (D / 8), k = rank * kKeyTile + key;
      const bool valid = split_begin + k < split_end;
      const size_t off = static_cast<size_t>(valid ? position(k) : 0) * D + part * 8;
      detail::cp_async_16(ks + decode_smem_offset<D>(key, part), kbase + off, valid ? 16 : 0);
    }
  }
  detail::cp_async_commit();
  for (int c = threadIdx.x; c < n_tiles * kKeyTile * kCols; c += blockDim.x) {
    const int k = c / kCols, part = c % kCols;
    const bool valid = split_begin + k < split_end;
    const size_t off = static_cast<size_t>(valid ? position(k) : 0) * D + (rank * kCols + part) * 8;
    detail::cp_async_16(vs + Lay::v_offset(k, part), vbase + off, valid ? 16 : 0);
  }
  detail::cp_async_commit();

  int row[2], limit[2];
  bool row_valid[2];
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row[h] = gid + 8 * h;
    row_valid[h] = row[h] < rows_per_head;
    limit[h] = causal ? (L - p.n_new + (row_valid[h] ? row[h] / g : 0) + 1) : n_keys;
    const uint16_t* qrow = nullptr;
    if (row_valid[h])
      qrow = reinterpret_cast<const uint16_t*>(p.q) +
             ((static_cast<size_t>(b) * p.n_new + row[h] / g) * p.n_q_heads + kvh * g + row[h] % g) * D;
#pragma unroll
    for (int u = 0; u < D / 16; ++u) {
      qa[u][h] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + 16 * u + 2 * tq) : 0u;
      qa[u][h + 2] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + 16 * u + 8 + 2 * tq) : 0u;
    }
  }
  // Scores of tile `rank` (this warp's n-tiles) and the tile's row maxima, to every CTA.
  const int t0_own = split_begin + rank * kKeyTile;
  float s[kScoreTiles][4];
  detail::cp_async_wait<1>();
  __syncthreads();  // K of the tile
  if (rank < n_tiles) decode_tile_scores<T, D, kScoreTiles>(s, qa, ks, t0_own, limit, p.schedule.scale_log2, wmax);
  __syncthreads();
  detail::cluster_wait();  // every CTA of the cluster has armed its mbarriers
  if (rank < n_tiles && threadIdx.x < 16 * kClusterCtas) {
    const int r = threadIdx.x % 16, dst = threadIdx.x / 16;
    float x = neg_inf();
#pragma unroll
    for (int w = 0; w < kClusterWarps; ++w) x = max_ignore_nan(x, wmax[w * 16 + r]);
    detail::st_async_u32(detail::cluster_map(detail::smem_addr(red + rank * 16 + r), dst), __float_as_uint(x), detail::cluster_map(bar_max, dst));
  }
  detail::mbarrier_wait_cluster(bar_max, 0);  // the tiles' row maxima
  // P of tile `rank` against the running maximum after it, in the storage dtype, to every CTA.
  if (rank < n_tiles) {
    float mx[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float y = neg_inf();
      for (int u = 0; u <= rank; ++u) y = max_ignore_nan(y, red[u * 16 + gid + 8 * h]);
      mx[h] = y;
    }
#pragma unroll
    for (int jj = 0; jj < kScoreTiles; ++jj)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t pk = detail::pack_rn<T>(softmax_prob_np(s[jj][2 * h], mx[h]), softmax_prob_np(s[jj][2 * h + 1], mx[h]));
        const uint32_t at = detail::smem_addr(ps + (gid + 8 * h) * Lay::kPRow + rank * kKeyTile +
                                              8 * (kScoreTiles * warp + jj) + 2 * tq);
#pragma unroll
        for (int dst = 0; dst < kClusterCtas; ++dst) detail::st_async_u32(detail::cluster_map(at, dst), pk, detail::cluster_map(bar_p, dst));
      }
  }
  detail::cp_async_wait<0>();  // V's columns
  __syncthreads();             // ... within the CTA
  detail::mbarrier_wait_cluster(bar_p, 0);  // P of every tile
  detail::cluster_arrive_relaxed();  // this CTA's remote stores are issued: its peers may leave after the chain
  // The P·V chain, tile after tile: warp w < kCols on output n-tile kCols rank + w, warp kCols on
  // the row sums; rows wholly past their causal limit keep their scaled state exactly.
  if (warp > kCols) {
    detail::allow_dependent_launch();
    detail::cluster_wait();
    return;
  }
  float m[2] = {neg_inf(), neg_inf()};
  float acc[4] = {0.f, 0.f, 0.f, 0.f};  // the n-tile's, or the row sums (warp kCols)
  const int mi = lane / 8, r8 = lane % 8;
#pragma unroll
  for (int t = 0; t < kClusterCtas; ++t) {
    if (t >= n_tiles) break;
    const int t0 = split_begin + t * kKeyTile;
    float alpha[2];
    bool active[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float y = max_ignore_nan(m[h], red[t * 16 + gid + 8 * h]);
      alpha[h] = softmax_rescale_np(m[h], y);
      m[h] = y;
      active[h] = t0 < limit[h];
    }
    uint32_t pa[4][4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      detail::ldmatrix_x4(pa[u], ps + (r8 + 8 * (mi % 2)) * Lay::kPRow + t * kKeyTile + 16 * u + 8 * (mi / 2));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      acc[2 * h] = mul_rn(acc[2 * h], alpha[h]);
      acc[2 * h + 1] = mul_rn(acc[2 * h + 1], alpha[h]);
    }
    if (warp == kCols) {
      row_sums<T>(acc, pa, active);
    } else {
      const float keep[4] = {acc[0], acc[1], acc[2], acc[3]};
#pragma unroll
      for (int u = 0; u < 4; u += 2) {
        uint32_t vb[4];  // k16 groups u and u + 1 of the n-tile
        detail::ldmatrix_x4_trans(vb, vs + Lay::v_offset(t * kKeyTile + 16 * u + 8 * mi + r8, warp));
        mma_16816<T>(acc, pa[u], vb[0], vb[1]);
        mma_16816<T>(acc, pa[u + 1], vb[2], vb[3]);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h)
        if (!active[h]) acc[2 * h] = keep[2 * h], acc[2 * h + 1] = keep[2 * h + 1];
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!row_valid[h] || limit[h] <= split_begin) continue;
    const PartialSlot out(p, D, b, kvh, split, max_splits, rows_per_head, row[h]);
    if (warp < kCols)
      *reinterpret_cast<float2*>(out.acc + 8 * (rank * kCols + warp) + 2 * tq) = make_float2(acc[2 * h], acc[2 * h + 1]);
    else if (rank == 0 && tq == 0)
      out.ml[0] = m[h], out.ml[1] = acc[2 * h];
  }
  detail::allow_dependent_launch();
  detail::cluster_wait();  // no CTA leaves while a peer's stores into it may be in flight
}

// One CTA per (row, KV head, sequence), one warp per 32 output columns: folds the row's split
// partials left to right with the shared merge rule and writes acc / l. The rule's factors (sa,
// sb) depend only on the running max, the same for every column, so the CTA computes them once
// per split for all its warps. Per chunk of up to kMergeChunk splits: the splits' (m, l) pairs are
// staged in shared memory by one group of copies; thread t takes a run of consecutive splits; a
// scan of the runs' maxima over the CTA (within each warp by shuffles, then across the warps'
// totals) gives each run its incoming running max (the scan combines a left run with a right one
// as max_ignore_nan(left, right), which keeps the leftmost maximum exactly like the sequential
// fold, so every running max has the fold's bits); the thread computes its splits' merge_factors
// in order and stages each split's (sa, sb, l) as one 16-byte record. Then each warp folds its
// columns (one lane per column, and l in every lane) with a multiply and an FMA per split and
// value, over acc partials streamed through a ring of cp.async stages of its own. The first split
// is folded like the others, from the state (acc, l) = (-0, -0) with factors (0, 1):
// fma(x, 1, -0 * 0) is x bit for bit (-0 + -0 = -0, +0 + -0 = +0), as the reference takes the
// first split as it is.
// The fold is one dependent chain per column (a multiply and an FMA per split), so the kernel's
// time is latency, not bandwidth; PERFORMANCE.md change 41 has what this form gained over one
// warp per 32 columns with the factor pass in each, and what did not help (a leaner loader, the
// multiplies skipped where every sa of a stage is 1).
// With follow_flags (the split kernel sets split flags: split_plan::merge_follows_flags) the merge starts
// while the split grid runs: it waits for split 0's flag instead of the grid (griddepcontrol.wait),
// takes as a chunk the splits whose flags are set (kMergeMinChunk at least), and clears the row's
// flags at its end; the chunks' boundaries move, the fold's order and arithmetic do not.
constexpr int kMergeCols = 32;         // output columns per warp: one lane per column
constexpr int kMergeChunk = 512;       // splits whose factors are staged at a time
constexpr int kMergeStageSplits = 16;  // splits per ring stage (16 x 32 floats = 2 KB)
constexpr int kMergeRing = 10;         // ring stages per warp (9 in flight while one is folded)
constexpr int kMergeMinChunk = 128;    // following split flags: the fewest splits a chunk waits for
struct MergeSmem {                     // dynamic shared memory of attention_merge_kernel, then
  float4 factors[kMergeChunk];         // per split of the chunk: sa, sb, its l, unused
  float2 ml[kMergeChunk];              // the splits' (m, l), staged by one cp.async group
  float warp_max[4];                   // the scan's warp totals (D / kMergeCols <= 4 warps)
};
using MergeRing = float[kMergeRing][kMergeStageSplits][kMergeCols];  // one per warp, after MergeSmem
static_assert(sizeof(MergeSmem) % 16 == 0, "MergeSmem: the rings are 16-byte aligned");
constexpr size_t merge_smem_bytes(int d) { return sizeof(MergeSmem) + d / kMergeCols * sizeof(MergeRing); }
template <class T, int D>
__global__ void __launch_bounds__(D)
    attention_merge_kernel(const AttentionParams<T> p, int rows_per_head, int max_splits, bool follow_flags) {
  static_assert(D % kMergeCols == 0 && kMergeChunk % D == 0, "attention_merge_kernel: column groups and runs");
  static_assert(D / kMergeCols <= sizeof(MergeSmem::warp_max) / sizeof(float), "attention_merge_kernel: warp totals");
  extern __shared__ __align__(16) unsigned char merge_smem_raw[];
  MergeSmem& sm = *reinterpret_cast<MergeSmem*>(merge_smem_raw);
  __shared__ int ready_splits;  // following the flags: the splits of this chunk whose partials are in
  constexpr int kWarps = D / kMergeCols;
  const int r = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int t = threadIdx.x, warp = t / 32, lane = t % 32, col = warp * kMergeCols + lane;
  const PartialSlot first_split(p, D, b, kvh, 0, max_splits, rows_per_head, r);
  const unsigned split_stride = static_cast<unsigned>(rows_per_head) * D;  // floats from split s to s + 1
  auto split_flag = [&](int split) { return first_split.flag + static_cast<size_t>(split) * rows_per_head; };
  detail::allow_dependent_launch();  // launched with launch_dependent: see device_common.cuh
  if (follow_flags) {  // split 0's flag: the split kernel has passed its wait, the lengths are in
    if (t == 0)
      while (!detail::flag_acquire(split_flag(0))) detail::flag_spin_pause();
    __syncthreads();
  } else {
    detail::wait_for_previous_grid();
  }
  const int hkv = p.kv.n_kv_heads, g = p.n_q_heads / hkv;
  const int L = p.kv.length[b];
  const int i = r / g, head = kvh * g + r % g;
  const int n_keys = p.gather == KeyGather::Causal ? L - p.n_new + i + 1 : row_keys_max(p, b, kvh, L);
  const int S = p.schedule.split_len;
  const int ns = (n_keys + S - 1) / S;
  if (ns > max_splits) {  // keys past the launch's splits (a max_keys too small): kRowPastMaxKeysBits
    if (follow_flags)  // every split of the launch sets this row's flag: wait for it, then clear it
      for (int k = t; k < max_splits; k += D) {
        while (!detail::flag_acquire(split_flag(k))) detail::flag_spin_pause();
        *split_flag(k) = 0;
      }
    p.out[((static_cast<size_t>(b) * p.n_new + i) * p.n_q_heads + head) * D + col] = __uint_as_float(kRowPastMaxKeysBits);
    if (follow_flags) detail::wait_for_previous_grid();  // see the kernel's end
    return;
  }
  MergeRing& ring = reinterpret_cast<MergeRing*>(merge_smem_raw + sizeof(MergeSmem))[warp];

  // Ring stage `stage` <- this warp's columns of the acc partials of splits [first, first +
  // kMergeStageSplits) (zeros past `end`): 128 16-byte pieces, four per lane; one cp.async group
  // per call. Lane l copies columns 4 (l % 8) .. + 3 of splits first + l / 8 + 4k, k = 0..3.
  constexpr int kLanesPerSplit = kMergeCols / 4, kSplitsPerRound = 32 / kLanesPerSplit;
  constexpr int kRounds = kMergeStageSplits / kSplitsPerRound;
  const int lane_split = lane / kLanesPerSplit;
  const float* lane_src = first_split.acc + warp * kMergeCols + lane % kLanesPerSplit * 4;
  const uint32_t lane_dst = detail::smem_addr(&ring[0][lane_split][lane % kLanesPerSplit * 4]);
  auto load_stage = [&](int stage, int first, int end) {
    const uint32_t dst = lane_dst + stage * static_cast<uint32_t>(sizeof(ring[0]));
    const unsigned split0 = first + lane_split;
#pragma unroll
    for (int k = 0; k < kRounds; ++k) {
      const bool valid = static_cast<int>(split0) + kSplitsPerRound * k < end;
      const float* src = lane_src + static_cast<size_t>(split0 + kSplitsPerRound * k) * split_stride;
      detail::cp_async_16(dst + k * kSplitsPerRound * kMergeCols * sizeof(float), valid ? src : lane_src,
                          valid ? 16 : 0);
    }
    detail::cp_async_commit();
  };

  // The fold's state after the splits so far; (-0, -0) before the first (see above).
  float m = neg_inf(), l = -0.f, acc = -0.f;
  for (int chunk = 0; chunk < ns;) {
    int n = min(kMergeChunk, ns - chunk);
    if (follow_flags) {
      // The chunk: the splits from `chunk` on whose flags are set, once there are at least
      // kMergeMinChunk of them (or all the row has left): each chunk costs a few microseconds of
      // latency (flags, (m, l), the ring's first stages) whatever its size.
      const int need = min(n, kMergeMinChunk);
      int wait_for = need - 1;  // the split whose flag thread 0 waits for before the scan
      for (;;) {
        if (t == 0) {
          while (!detail::flag_acquire(split_flag(chunk + wait_for))) detail::flag_spin_pause();
          ready_splits = n;
        }
        __syncthreads();
        int missing = n;
        for (int k = t; k < n; k += D)
          if (!detail::flag_acquire(split_flag(chunk + k))) {
            missing = k;
            break;
          }
        if (missing < n) atomicMin(&ready_splits, missing);
        __syncthreads();
        const int ready = ready_splits;
        __syncthreads();  // read by every thread before thread 0 writes it again
        if (ready >= need) {
          n = ready;
          break;
        }
        wait_for = ready;  // the first split still missing
      }
    }
    const int n_stages = (n + kMergeStageSplits - 1) / kMergeStageSplits;
    // (m, l) of the chunk's splits, all copies in flight at once, then the ring's first stages.
    for (int k = t; k < n; k += D)
      detail::cp_async_8(&sm.ml[k], first_split.ml + static_cast<size_t>(chunk + k) * rows_per_head * 2);
    detail::cp_async_commit();
    for (int st = 0; st < kMergeRing - 1; ++st)
      load_stage(st, chunk + st * kMergeStageSplits, st < n_stages ? chunk + n : 0);
    detail::cp_async_wait<kMergeRing - 1>();  // the (m, l) group, committed before the ring's
    __syncthreads();
    // Factors: thread t takes splits [t * run, (t + 1) * run) of the chunk.
    const int run = (n + D - 1) / D, k0 = min(n, t * run), k1 = min(n, k0 + run);
    float run_max = neg_inf();
    for (int k = k0; k < k1; ++k) run_max = max_ignore_nan(run_max, sm.ml[k].x);
    float before = run_max;  // inclusive scan over the warp's lanes, left operand the earlier run
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const float left = __shfl_up_sync(0xffffffffu, before, o);
      if (lane >= o) before = max_ignore_nan(left, before);
    }
    if (lane == 31) sm.warp_max[warp] = before;
    before = __shfl_up_sync(0xffffffffu, before, 1);  // exclusive: the runs to the left in the warp
    __syncthreads();
    float left_warps = m, chunk_max = m;  // the running max before this warp's runs; after the chunk
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (w == warp) left_warps = chunk_max;
      chunk_max = max_ignore_nan(chunk_max, sm.warp_max[w]);
    }
    float mm = lane == 0 ? left_warps : max_ignore_nan(left_warps, before);  // running max before split k0
    for (int k = k0; k < k1; ++k) {
      const float2 split_ml = sm.ml[k];
      if (chunk + k == 0) {  // the first split starts the fold: taken as it is
        sm.factors[k] = make_float4(0.f, 1.f, split_ml.y, 0.f);
        mm = split_ml.x;
        continue;
      }
      const MergeFactors f = merge_factors(mm, split_ml.x);
      sm.factors[k] = make_float4(f.sa, f.sb, split_ml.y, 0.f);
      mm = f.m;
    }
    m = chunk_max;
    __syncthreads();
    // Fold: lane = column col; l is folded by every lane alike.
    for (int st = 0; st < n_stages; ++st) {
      detail::cp_async_wait<kMergeRing - 2>();
      __syncwarp();
      const int k_first = st * kMergeStageSplits, k_end = min(n, k_first + kMergeStageSplits);
      const float(&stage)[kMergeStageSplits][kMergeCols] = ring[st % kMergeRing];
      auto fold = [&](int k) {
        const float4 f = sm.factors[k];
        const MergeFactors factors{0.f, f.x, f.y};
        l = merge_value(l, f.z, factors);
        acc = merge_value(acc, stage[k - k_first][lane], factors);
      };
      if (k_end - k_first == kMergeStageSplits) {
        // A whole stage: its shared-memory reads first, then the chain of multiplies and FMAs,
        // which runs at the arithmetic's latency.
        float4 f[kMergeStageSplits];
        float a[kMergeStageSplits];
#pragma unroll
        for (int j = 0; j < kMergeStageSplits; ++j) f[j] = sm.factors[k_first + j], a[j] = stage[j][lane];
#pragma unroll
        for (int j = 0; j < kMergeStageSplits; ++j) {
          const MergeFactors factors{0.f, f[j].x, f[j].y};
          l = merge_value(l, f[j].z, factors);
          acc = merge_value(acc, a[j], factors);
        }
      } else {
        for (int k = k_first; k < k_end; ++k) fold(k);
      }
      __syncwarp();  // the stage is read: the load below may refill it
      const int next = st + kMergeRing - 1;
      load_stage(next % kMergeRing, chunk + next * kMergeStageSplits, next < n_stages ? chunk + n : 0);
    }
    detail::cp_async_wait<0>();
    __syncthreads();  // factors, ml, the rings and ready_splits are reused by the next chunk
    chunk += n;
  }
  if (follow_flags)  // every flag this row's splits set, cleared for the next launch (seen set above)
    for (int k = t; k < max(ns, 1); k += D) *split_flag(k) = 0;
  p.out[((static_cast<size_t>(b) * p.n_new + i) * p.n_q_heads + head) * D + col] = softmax_normalize(acc, l);
  // Following the flags, the merge still completes only after the split grid (whose CTAs without
  // keys set no flag and may not have read the lengths yet), so that the next kernel, which
  // waits for this one only, finds every kernel before it completed (device_common.cuh). Every
  // CTA that sets a flag is done by now; this costs the last row nothing.
  if (follow_flags) detail::wait_for_previous_grid();
}

int max_splits_for(int max_keys, const Schedule& s) { return (max_keys + s.split_len - 1) / s.split_len; }

// One instance of the decode kernel: its shared memory, how many of its CTAs an SM holds (the
// shared-memory attribute is set on first use), and its launch.
template <class T, int D, int kStages, int kWarps>
struct DecodeInstance {
  static constexpr size_t kSmem =
      kStages * decode_stage_bytes<D>() + 16 * (kKeyTile + 8) * sizeof(uint16_t) + kWarps * 16 * sizeof(float);
  static int ctas_per_sm() {  // of the current device
    static detail::PerDeviceCache cache, smem_set;
    return detail::once_per_device(cache, [] {
      detail::allow_dynamic_smem(smem_set, attention_split_decode_kernel<T, D, kStages, kWarps>, kSmem);
      int ctas = 0;
      RESA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &ctas, attention_split_decode_kernel<T, D, kStages, kWarps>, kWarps * 32, kSmem));
      return ctas;
    });
  }
  // Returns whether the launch sets split flags (split_plan::merge_follows_flags).
  static bool launch(AttentionParams<T> p, dim3 grid, int rows, int max_splits, long long ctas, int sms,
                     cudaStream_t stream) {
    const long long slots = static_cast<long long>(sms) * ctas_per_sm();  // (sets the shared-memory attribute)
    if (p.split_flag_use == SplitFlagUse::Auto && !split_plan::merge_follows_flags(max_splits, ctas, slots))
      p.split_flags = nullptr;
    detail::launch_dependent(attention_split_decode_kernel<T, D, kStages, kWarps>, grid, kWarps * 32, kSmem, stream,
                             "attention_split_decode_kernel", p, rows, max_splits);
    return p.split_flags != nullptr;
  }
};

// The decode kernel of kWarps warps with six stages when the grid fits the card in one wave at
// one CTA per SM, three (two CTAs per SM) when it fits in two waves at that occupancy, else two
// (three CTAs per SM); the stage count never changes the arithmetic. Two waves of three stages
// beat 1.0-1.3 waves of two at 265-528 CTAs (H200, A/B in one run: 12/2 batch 8 16K 52.0 -> 46.9
// us, batch 1 128K 55.8 -> 50.6, 28/4 batch 1 64K 53.3 -> 48.7); beyond that two stages win
// (three at 12/2 batch 1 256K: 90.0 -> 91.6, block-sparse 28/4 batch 8 256K: 145 -> 161).
template <class T, int D, int kWarps>
bool launch_decode_stages(const AttentionParams<T>& p, dim3 grid, int rows, int max_splits, long long ctas, int sms,
                          cudaStream_t stream) {
  if (ctas <= static_cast<long long>(sms) * DecodeInstance<T, D, 6, kWarps>::ctas_per_sm())
    return DecodeInstance<T, D, 6, kWarps>::launch(p, grid, rows, max_splits, ctas, sms, stream);
  if (ctas <= 2LL * sms * DecodeInstance<T, D, 3, kWarps>::ctas_per_sm())
    return DecodeInstance<T, D, 3, kWarps>::launch(p, grid, rows, max_splits, ctas, sms, stream);
  return DecodeInstance<T, D, 2, kWarps>::launch(p, grid, rows, max_splits, ctas, sms, stream);
}

// The clusters of attention_split_decode_cluster_kernel the current device runs at once (its
// shared-memory attribute is set on first use), and the largest dense grid, in clusters, that
// launch_decode gives it.
template <class T, int D>
int decode_cluster_slots() {
  static detail::PerDeviceCache cache, smem_set;
  return detail::once_per_device(cache, [] {
    const auto kernel = attention_split_decode_cluster_kernel<T, D>;
    constexpr size_t kSmem = ClusterDecodeLayout<D>::kSmem;
    detail::allow_dynamic_smem(smem_set, kernel, kSmem);
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(kClusterCtas, 1, 1);
    config.blockDim = dim3(kClusterWarps * 32, 1, 1);
    config.dynamicSmemBytes = kSmem;
    int clusters = 0;
    RESA_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
    return clusters;
  });
}
constexpr long long kDenseClusterGridMax = 26;

// The warp count, where D has the columns for eight (D = 128), by what the H200 measured
// (PERFORMANCE.md, changes 31 and 33): eight warps everywhere but dense grids of one wave larger
// than half the SMs. Block-sparse gathers gain most (batch 1: 3-4 us less, the loader's
// block-list lookups shared by twice the threads; batch 8: 12/2 256K 87.1 -> 77.0 us, 28/4 64K
// 56.2 -> 53.4, though 28/4 256K 151.1 -> 155.4); dense grids of a few CTAs gain 1 us at 4K and
// dense multi-wave grids hold or gain (28/4 batch 1 256K 161.4 -> 155.8); dense one-wave grids
// of 67-264 CTAs measured slower with eight (12/2 batch 8 4K 21.0 -> 22.8 us, batch 1 64K 29.9
// -> 31.0).
//
// Returns whether the launch sets split flags (only the one-CTA kernel does, where
// split_plan::merge_follows_flags says so).
template <class T, int D>
bool launch_decode(const AttentionParams<T>& p, dim3 grid, int rows, int max_splits, cudaStream_t stream) {
  constexpr int kWideWarps = D / 8 / 8 >= 2 ? 8 : 4;
  const int sms = detail::sm_count();
  const long long ctas = static_cast<long long>(grid.x) * grid.y * grid.z;
  // The cluster kernel takes block-sparse grids of one wave of clusters (PERFORMANCE.md change
  // 47: 12/2 batch 1 4K-16K 16.0-18.4 -> 11.4-13.1 us) and dense grids of at most
  // kDenseClusterGridMax clusters (change 49). Its time grows by about 0.2 us per cluster where a
  // split's one-CTA time does not (dense batch 1, H200, one run: 10 clusters 9.7 us against 14.0,
  // 18: 11.8 / 14.2, 20: 13.0 / 14.2, 26: 13.7 / 14.1, 34: 15.5 / 14.2, 36: 16.0 / 14.4, 52: 17.7
  // / 14.3); block-sparse splits, whose one-CTA loads wait on block-list lookups, gain up to one
  // wave (28/4 batch 1 64K, 52 clusters: 19.0 -> 17.8). Bigger grids keep the one-CTA kernels
  // (four waves of clusters: 12/2 batch 1 256K 20.3 -> 32.2 us).
  if (p.schedule.split_len <= kClusterCtas * kKeyTile && ctas <= decode_cluster_slots<T, D>() &&
      (p.gather == KeyGather::Blocks || ctas <= kDenseClusterGridMax)) {
    detail::launch_dependent(attention_split_decode_cluster_kernel<T, D>, dim3(grid.x * kClusterCtas, grid.y, grid.z),
                             kClusterWarps * 32, ClusterDecodeLayout<D>::kSmem, stream,
                             "attention_split_decode_cluster_kernel", p, rows, max_splits);
    return false;
  }
  const bool dense_one_wave = p.gather == KeyGather::Causal && 2 * ctas > sms &&
                              ctas <= static_cast<long long>(sms) * DecodeInstance<T, D, 3, 4>::ctas_per_sm();
  if (dense_one_wave) return launch_decode_stages<T, D, 4>(p, grid, rows, max_splits, ctas, sms, stream);
  return launch_decode_stages<T, D, kWideWarps>(p, grid, rows, max_splits, ctas, sms, stream);
}

// The tensor map of a K or V cache for the wgmma kernel's loader (KvMaps): [batch * hkv][capacity][D].
template <class T, class Kv>
CUtensorMap kv_tile_map(const T* base, const Kv& kv) {
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(kv.head_dim), static_cast<cuuint64_t>(kv.capacity),
                              static_cast<cuuint64_t>(kv.batch) * kv.n_kv_heads};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(kv.head_dim) * sizeof(T),
                                 static_cast<cuuint64_t>(kv.capacity) * kv.head_dim * sizeof(T)};
  return detail::sw128_tensor_map<3>(base, dims, strides, kKeyTile, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                     "cuda::attention (the KV cache's tensor map)");
}

template <class T, int D>
void launch(const AttentionParams<T>& p, cudaStream_t stream) {
  const int hkv = p.kv.n_kv_heads, g = p.n_q_heads / hkv;
  const int rows = p.n_new * g;
  const int max_splits = max_splits_for(p.max_keys, p.schedule);
  // The merge's shared-memory attribute before the split kernel is enqueued: nothing that can
  // throw comes between a split kernel that sets flags and the merge that clears them.
  static detail::PerDeviceCache merge_configured;
  detail::allow_dynamic_smem(merge_configured, attention_merge_kernel<T, D>, merge_smem_bytes(D));
  bool flags_set = false;  // the split kernel sets the split flags: the merge follows them
  if (rows <= 16) {
    flags_set = launch_decode<T, D>(p, dim3(max_splits, hkv, p.kv.batch), rows, max_splits, stream);
  } else {
    // The wgmma kernel reads causal keys only (its tiles are contiguous in the cache): block-sparse
    // attention, validated to n_new = 1 with groups of at most 8, never has more than 16 rows.
    if (p.gather != KeyGather::Causal)
      throw InvalidArgument("cuda::attention: block-sparse attention with " + std::to_string(rows) +
                            " rows per KV head (at most 16 are supported)");
    const int warpgroups = std::min(kMaxWarpgroups, (rows + kWgRows - 1) / kWgRows);
    const int row_groups = (rows + kMaxWarpgroups * kWgRows - 1) / (kMaxWarpgroups * kWgRows);
    const int splits_per_cta = split_plan::wgmma_splits_per_cta(p.max_keys, p.schedule.split_len,
                                                                row_groups * hkv * p.kv.batch, detail::sm_count());
    const dim3 grid(split_plan::split_groups(max_splits, splits_per_cta) * row_groups, hkv, p.kv.batch);
    const size_t smem = wgmma_smem_bytes<D>(warpgroups);
    // Three warpgroups or fewer: one row group of up to 192 rows (Qwen2-1.5B's 12/2 rectification).
    // The shared-memory attribute is set for the instance launched only, once per device.
    const bool three = warpgroups <= 3;
    const auto kernel = three ? attention_split_wgmma_kernel<T, D, 3> : attention_split_wgmma_kernel<T, D, kMaxWarpgroups>;
    static detail::PerDeviceCache configured[2];  // per instance: the attribute is per function and device
    detail::allow_dynamic_smem(configured[three], kernel, wgmma_smem_bytes<D>(three ? 3 : kMaxWarpgroups));
    const KvMaps maps{kv_tile_map(p.kv.k, p.kv), kv_tile_map(p.kv.v, p.kv)};
    detail::launch_dependent(kernel, grid, warpgroups * 128, smem, stream, "attention_split_wgmma_kernel", p, rows,
                             max_splits, row_groups, splits_per_cta, maps);
  }
  detail::launch_dependent(attention_merge_kernel<T, D>, dim3(rows, hkv, p.kv.batch), D, merge_smem_bytes(D), stream,
                           "attention_merge_kernel", p, rows, max_splits, flags_set);
}

// Partial slots of a launch (PartialSlot): one per (sequence, KV head, split, row); each holds
// head_dim + 2 workspace floats and one split-flag word.
size_t partial_slots(int batch, int n_kv_heads, int n_q_heads, int n_new, int max_keys, const Schedule& s) {
  const size_t rows = static_cast<size_t>(n_new) * (n_q_heads / n_kv_heads);
  return static_cast<size_t>(batch) * n_kv_heads * max_splits_for(max_keys, s) * rows;
}

}  // namespace

size_t attention_workspace_floats(int batch, int n_kv_heads, int n_q_heads, int n_new, int head_dim,
                                  int max_keys, const Schedule& s) {
  return partial_slots(batch, n_kv_heads, n_q_heads, n_new, max_keys, s) * (head_dim + 2);
}
size_t attention_split_flag_words(int batch, int n_kv_heads, int n_q_heads, int n_new, int max_keys,
                                  const Schedule& s) {
  return partial_slots(batch, n_kv_heads, n_q_heads, n_new, max_keys, s);
}

template <class T>
void attention(const AttentionParams<T>& p, cudaStream_t stream) {
  const AttentionShape shape{p.n_q_heads, p.kv.n_kv_heads, p.kv.head_dim};
  shape.validate();
  if (p.schedule.key_tile != kKeyTile || p.schedule.arith != DotArithmetic::TensorCoreHopper)
    throw InvalidArgument("cuda::attention: the kernels implement key_tile = 64 with the tensor-core "
                          "arithmetic; schedule is " + p.schedule.str());
  if (p.n_new < 1 || p.max_keys < 1 || p.max_keys > p.kv.capacity)
    throw InvalidArgument("cuda::attention: n_new = " + std::to_string(p.n_new) + ", max_keys = " +
                          std::to_string(p.max_keys) + " (capacity " + std::to_string(p.kv.capacity) + ")");
  if (p.gather == KeyGather::Blocks && (p.n_new != 1 || !p.blocks || !p.n_blocks || p.block_size < 1 ||
                                        p.schedule.split_len % p.block_size != 0))
    throw InvalidArgument("cuda::attention: block-sparse attention needs n_new = 1, a block list and a "
                          "block size dividing split_len");
  if (!p.q || !p.kv.k || !p.kv.v || !p.kv.length || !p.workspace || !p.out)
    throw InvalidArgument("cuda::attention: a device pointer is null");
  const size_t need = attention_workspace_floats(p.kv.batch, p.kv.n_kv_heads, p.n_q_heads, p.n_new, p.kv.head_dim,
                                                 p.max_keys, p.schedule);
  if (p.workspace_floats < need)
    throw InvalidArgument("cuda::attention: workspace of " + std::to_string(p.workspace_floats) + " floats, " +
                          std::to_string(need) + " needed for n_new = " + std::to_string(p.n_new) +
                          " and max_keys = " + std::to_string(p.max_keys));
  if (p.split_flags) {
    const size_t words = attention_split_flag_words(p.kv.batch, p.kv.n_kv_heads, p.n_q_heads, p.n_new, p.max_keys,
                                                    p.schedule);
    if (p.split_flag_words < words)
      throw InvalidArgument("cuda::attention: split flags of " + std::to_string(p.split_flag_words) + " words, " +
                            std::to_string(words) + " needed for n_new = " + std::to_string(p.n_new) +
                            " and max_keys = " + std::to_string(p.max_keys));
  }
  if (p.kv.head_dim == 128)
    launch<T, 128>(p, stream);
  else
    launch<T, 64>(p, stream);
}

template void attention<bf16>(const AttentionParams<bf16>&, cudaStream_t);
template void attention<fp16>(const AttentionParams<fp16>&, cudaStream_t);

}  // namespace resa::cuda
