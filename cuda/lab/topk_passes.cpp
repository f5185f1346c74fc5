// cuda/lab/topk_passes.cpp — lab (host only): how many radix passes the top-k of the selection
// needs on the benchmark's data, as the device top-k does it and as three variants would.
//
// The device top-k (cuda/src/selection.cu, topk_cluster) radix-selects the K-th largest 64-bit
// rank key (resa::selection_key: the score's order word, all ones for a forced block, over the
// complemented block index) 8 bits at a time from bit 63, and stops after the pass whose chosen
// bin holds exactly the keys still to place. Each pass costs the cluster a barrier, a
// distributed-shared-memory sum of the histograms and a scan, so at batch 1 the top-k's time is
// about its pass count times that latency (cuda/PERFORMANCE.md, profiles). This tool builds the
// benchmark's keys on the host (its fill of K and Q, cuda/bench/bench_fill.h, the reference's
// descriptors, pooled query and block scores, n_local = 1) and counts the passes of:
//   device    the device's schedule (8-bit digits from bit 63, forced keys among the keys);
//   11-bit    the same with 11-bit digits (11, 11, 10, ... bits);
//   prefix    forced blocks left out of the select (they are always selected: K - n_forced
//             keys are still to place among the others), and the digits starting below the
//             common prefix of the other keys' score words (their minimum and maximum, which
//             the scores kernel could reduce as it writes them), 8- and 11-bit digits.
// Every variant selects the reference's blocks (resa::select_blocks): the tool checks that on
// the benchmark's keys and on 3000 edge cases (NaN, infinities, signed zeros, subnormals, ties,
// one value for every block, forced blocks making up all or most of K) and exits 1 otherwise
// (ctest runs it: topk_passes_select_the_reference_blocks). The prefix variant with 8-bit digits was
// tried in the device top-k and rejected (cuda/PERFORMANCE.md change 38: at batch 1 the
// selection waits for its slowest head, which it spares one pass, not two).
// Result (2026-11-28; 12/2 and 28/4, 4K-256K, every KV head: 24 cases): device 3 passes in 14,
// 4 in 10 (all of 64K-256K but two); 11-bit 2-3; prefix with 8-bit digits 1-3 (2 in 18), with
// 11-bit digits 1-2 (2 in 20). validation/experiments/2026-11-28-topk-passes.txt has the table.
// Build: part of the CMake build (target topk_passes); run: build/<dir>/cuda/topk_passes
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../bench/bench_fill.h"
#include "resa/config.h"
#include "resa/kv_cache.h"
#include "resa/numerics.h"
#include "resa/selection.h"

namespace {

using resa::bf16;

struct Select {
  int passes = 0;
  uint64_t threshold = 0;
};

// MSD radix select of the `remaining`-th largest of `keys` whose bits above `start` equal
// `prefix`, in digits of `width` bits (the last one narrower where `width` does not divide
// `start`), stopping after the pass whose chosen bin holds exactly the keys still to place (then
// the prefix with zero low bits is the threshold).
Select radix_select(const std::vector<uint64_t>& keys, int remaining, int width, int start,
                    uint64_t prefix) {
  Select s;
  uint64_t mask = start == 64 ? 0 : ~((uint64_t{1} << start) - 1);
  for (int shift = start; shift > 0 && remaining > 0;) {
    const int w = std::min(width, shift);
    shift -= w;
    ++s.passes;
    std::vector<int> count(size_t{1} << w, 0);
    for (uint64_t k : keys)
      if ((k & mask) == prefix) ++count[(k >> shift) & ((uint64_t{1} << w) - 1)];
    int above = 0;
    for (int bin = (1 << w) - 1; bin >= 0; --bin) {
      if (above + count[bin] < remaining) {
        above += count[bin];
        continue;
      }
      prefix |= static_cast<uint64_t>(bin) << shift;
      mask |= ((uint64_t{1} << w) - 1) << shift;
      const bool done = above + count[bin] == remaining;
      remaining -= above;
      if (done) remaining = 0;
      break;
    }
  }
  s.threshold = prefix;
  return s;
}

// The blocks a threshold selects, ascending: those whose key is at least the threshold, and the
// forced ones (whose keys lie above every score's).
std::vector<int32_t> selected_by(const std::vector<uint64_t>& keys, uint64_t threshold) {
  std::vector<int32_t> blocks;
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] >= threshold || (keys[i] >> 32) == 0xffffffffu)
      blocks.push_back(static_cast<int32_t>(i));
  return blocks;
}

// The passes of every variant on one (sequence, KV head)'s scores, each variant's selection
// checked against resa::select_blocks (the ranking by score, ties to the lower index, NaN last,
// forced blocks first). `ok` is false, with `error` naming the variant, on any difference.
struct Passes {
  int M = 0, K = 0, device = 0, wide = 0, common = 0, pre8 = 0, pre11 = 0;
  bool ok = true;
  std::string error;
};
Passes run_variants(const std::vector<float>& scores, const resa::SparseConfig& cfg) {
  Passes r;
  const int64_t M = static_cast<int64_t>(scores.size());
  r.M = static_cast<int>(M);
  const int64_t local_begin = std::max<int64_t>(0, M - cfg.n_local),
                sink_end = std::min<int64_t>(M, cfg.n_sink);
  std::vector<uint64_t> keys(M), rest;
  int n_forced = 0;
  uint32_t lo = 0xffffffffu, hi = 0;
  for (int64_t i = 0; i < M; ++i) {
    const bool forced = i >= local_begin || i < sink_end;
    keys[i] = resa::selection_key(scores[i], static_cast<uint32_t>(i), forced);
    if (forced) {
      ++n_forced;
    } else {
      rest.push_back(keys[i]);
      lo = std::min(lo, static_cast<uint32_t>(keys[i] >> 32));
      hi = std::max(hi, static_cast<uint32_t>(keys[i] >> 32));
    }
  }
  // n_sel of a cache of M full blocks (resa::num_selected counts the blocks of a length).
  r.K = std::max(static_cast<int>(resa::num_selected(M * cfg.block_size, cfg)), n_forced);
  const Select device = radix_select(keys, r.K, 8, 64, 0);
  const Select wide = radix_select(keys, r.K, 11, 64, 0);
  // Forced blocks out; digits below the other keys' common prefix (all of them lie between lo
  // and hi, so they share it; no other key, or one value: 32 common bits).
  r.common = lo >= hi ? 32 : __builtin_clz(lo ^ hi);
  const int start = 64 - r.common;
  const uint64_t prefix =
      start == 64 ? 0 : (static_cast<uint64_t>(lo) << 32) & ~((uint64_t{1} << start) - 1);
  const Select pre8 = radix_select(rest, r.K - n_forced, 8, start, prefix);
  const Select pre11 = radix_select(rest, r.K - n_forced, 11, start, prefix);
  const std::vector<int32_t> want = resa::select_blocks(scores.data(), M, cfg);
  const uint64_t forced_only = 0xffffffff00000000ull;  // selects the forced blocks alone
  for (const auto& [name, threshold] :
       {std::pair{"device", device.threshold}, std::pair{"11-bit", wide.threshold},
        std::pair{"prefix 8-bit", r.K > n_forced ? pre8.threshold : forced_only},
        std::pair{"prefix 11-bit", r.K > n_forced ? pre11.threshold : forced_only}})
    if (selected_by(keys, threshold) != want) {
      r.ok = false;
      r.error = std::string("the ") + name + " select differs from resa::select_blocks";
    }
  r.device = device.passes, r.wide = wide.passes, r.pre8 = pre8.passes, r.pre11 = pre11.passes;
  return r;
}

// Scores the benchmark's keys do not have: NaN, infinities, signed zeros, ties, one value for
// every block, subnormals, and configurations where the forced blocks are all or most of K.
int check_edge_cases() {
  std::mt19937 rng(5);
  const float specials[] = {resa::canonical_nan(),
                            resa::pos_inf(),
                            resa::neg_inf(),
                            0.0f,
                            -0.0f,
                            1e-40f,
                            -1e-40f,
                            1.0f,
                            -1.0f,
                            3.5f,
                            3.5f,
                            3.5f};
  std::uniform_int_distribution<int> pick(0, 11), length(1, 700), small(0, 40);
  std::uniform_real_distribution<float> value(-50.0f, 50.0f);
  int cases = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    resa::SparseConfig cfg;
    cfg.ratio = {1 + trial % 3, 10 + trial % 7};
    cfg.n_min = trial % 5 == 0 ? small(rng) : 16;
    cfg.n_local = small(rng) % (trial % 4 == 0 ? 41 : 3);
    cfg.n_sink = small(rng) % (trial % 6 == 0 ? 41 : 2);
    std::vector<float> scores(length(rng));
    const int mode = trial % 4;  // specials mixed in; all equal; specials only; plain values
    const float one = value(rng);
    for (float& x : scores)
      x = mode == 0   ? (pick(rng) < 4 ? specials[pick(rng)] : value(rng))
          : mode == 1 ? one
          : mode == 2 ? specials[pick(rng)]
                      : value(rng);
    const Passes r = run_variants(scores, cfg);
    if (!r.ok) {
      std::fprintf(stderr, "topk_passes: edge case %d (M %d, K %d, %s): %s\n", trial, r.M, r.K,
                   cfg.str().c_str(), r.error.c_str());
      return 1;
    }
    ++cases;
  }
  std::printf("edge cases: every variant selects resa::select_blocks' blocks in %d cases\n", cases);
  return 0;
}

}  // namespace

int main() {
  if (check_edge_cases() != 0) return 1;
  const resa::SparseConfig cfg;  // the benchmark's: b = 16, ratio 1/10, n_min 16, n_local 1
  const int d = 128;
  std::map<std::string, std::map<int, int>> histogram;  // variant -> passes -> (L, head) cases
  std::printf("\n%-6s %7s %4s %6s %6s | %6s %6s | %6s %6s %6s\n", "shape", "L", "head", "M", "K",
              "device", "11-bit", "prefix", "pre 8", "pre 11");
  for (const auto& [hq, hkv] : std::vector<std::pair<int, int>>{{12, 2}, {28, 4}}) {
    for (const int L : {4096, 16384, 65536, 262144}) {
      resa::KvCache<bf16> cache(1, hkv, L, d);
      for (size_t i = 0; i < cache.k.size(); ++i) cache.k[i] = resa::bench::fill_value(i, 10);
      cache.length[0] = L;
      resa::BlockDescriptors<bf16> desc(cache, cfg.block_size);
      resa::build_descriptors(cache, desc);
      std::vector<bf16> q(static_cast<size_t>(hq) * d);
      for (size_t i = 0; i < q.size(); ++i) q[i] = resa::bench::fill_value(i, 1);
      std::vector<float> qbar(static_cast<size_t>(hkv) * d);
      resa::pooled_query<bf16>({hq, hkv, d}, q.data(), qbar.data());
      const int64_t M = resa::num_blocks(L, cfg.block_size);
      for (int h = 0; h < hkv; ++h) {
        std::vector<float> scores(M);
        resa::block_scores(desc, 0, h, qbar.data() + static_cast<size_t>(h) * d, M, scores.data());
        const Passes r = run_variants(scores, cfg);
        if (!r.ok) {
          std::fprintf(stderr, "topk_passes: %d/%d, L %d, head %d: %s\n", hq, hkv, L, h,
                       r.error.c_str());
          return 1;
        }
        std::printf("%2d/%-3d %7d %4d %6d %6d | %6d %6d | %6d %6d %6d\n", hq, hkv, L, h, r.M, r.K,
                    r.device, r.wide, r.common, r.pre8, r.pre11);
        ++histogram["device (8-bit)"][r.device];
        ++histogram["11-bit"][r.wide];
        ++histogram["prefix, 8-bit"][r.pre8];
        ++histogram["prefix, 11-bit"][r.pre11];
      }
    }
  }
  std::printf("\npasses over all (shape, L, head) cases:\n");
  for (const auto& [variant, counts] : histogram) {
    std::printf("  %-16s", variant.c_str());
    for (const auto& [passes, n] : counts) std::printf("  %d passes: %d", passes, n);
    std::printf("\n");
  }
  return 0;
}
