// cuda/lab/topk_passes.cpp — lab (host only): how many radix passes the top-k of the selection
// needs on the benchmark's data, as the device top-k does it and as three variants would.
//
// The device top-k (cuda/src/selection.cu, topk_cluster) radix-selects the K-th largest 64-bit
// rank key (resa::selection_key: the score's order word, all ones for a forced block, over the
// complemented block index) 8 bits at a time from bit 63, and stops after the pass whose chosen
// bin holds exactly the keys still to place. Each pass costs the cluster a barrier, a
// distributed-shared-memory sum of the histograms and a scan, so at batch 1 the top-k's time is
// about its pass count times that latency (cuda/PERFORMANCE.md, profiles). This tool builds the
// benchmark's keys on the host (its hash fill of K and Q, cuda/bench/bench_gpu.cu, the reference's
// descriptors, pooled query and block scores, n_local = 1) and counts the passes of:
//   device    the device's schedule (8-bit digits from bit 63, forced keys among the keys);
//   11-bit    the same with 11-bit digits (11, 11, 10, ... bits);
//   prefix    forced blocks left out of the select (they are always selected: K - n_forced
//             keys are still to place among the others), and the digits starting below the
//             common prefix of the other keys' score words (their minimum and maximum, which
//             the scores kernel could reduce as it writes them), 8- and 11-bit digits.
// Every variant selects the reference's blocks (resa::select_blocks); the tool checks that and
// exits 1 otherwise (ctest runs it: topk_passes_select_the_reference_blocks).
// Result (2026-11-28; 12/2 and 28/4, 4K-256K, every KV head: 24 cases): device 3 passes in 14,
// 4 in 10 (all of 64K-256K but two); 11-bit 2-3; prefix with 8-bit digits 1-3 (2 in 18), with
// 11-bit digits 1-2 (2 in 20). validation/experiments/2026-11-28-topk-passes.txt has the table.
// Build: part of the CMake build (target topk_passes); run: build/<dir>/cuda/topk_passes
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "resa/config.h"
#include "resa/kv_cache.h"
#include "resa/numerics.h"
#include "resa/selection.h"

namespace {

using resa::bf16;

// The benchmark's fill (cuda/bench/bench_gpu.cu, fill_random_kernel): bf16 values in about
// [-2, 2] from a hash of the element index.
bf16 bench_value(size_t i, uint64_t seed) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  const float u = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
  return resa::from_float<bf16>(4.0f * u - 2.0f);
}

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

}  // namespace

int main() {
  const resa::SparseConfig cfg;  // the benchmark's: b = 16, ratio 1/10, n_min 16, n_local 1
  const int d = 128;
  std::map<std::string, std::map<int, int>> histogram;  // variant -> passes -> (L, head) cases
  std::printf("%-6s %7s %4s %6s %6s | %6s %6s | %6s %6s %6s\n", "shape", "L", "head", "M", "K",
              "device", "11-bit", "prefix", "pre 8", "pre 11");
  for (const auto& [hq, hkv] : std::vector<std::pair<int, int>>{{12, 2}, {28, 4}}) {
    for (const int L : {4096, 16384, 65536, 262144}) {
      resa::KvCache<bf16> cache(1, hkv, L, d);
      for (size_t i = 0; i < cache.k.size(); ++i) cache.k[i] = bench_value(i, 10);
      cache.length[0] = L;
      resa::BlockDescriptors<bf16> desc(cache, cfg.block_size);
      resa::build_descriptors(cache, desc);
      std::vector<bf16> q(static_cast<size_t>(hq) * d);
      for (size_t i = 0; i < q.size(); ++i) q[i] = bench_value(i, 1);
      std::vector<float> qbar(static_cast<size_t>(hkv) * d);
      resa::pooled_query<bf16>({hq, hkv, d}, q.data(), qbar.data());
      const int64_t M = resa::num_blocks(L, cfg.block_size);
      const int K = static_cast<int>(resa::num_selected(L, cfg));
      const int64_t local_begin = std::max<int64_t>(0, M - cfg.n_local),
                    sink_end = std::min<int64_t>(M, cfg.n_sink);
      for (int h = 0; h < hkv; ++h) {
        std::vector<float> scores(M);
        resa::block_scores(desc, 0, h, qbar.data() + static_cast<size_t>(h) * d, M, scores.data());
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
        const int want = std::max(K, n_forced);
        const Select device = radix_select(keys, want, 8, 64, 0);
        const Select wide = radix_select(keys, want, 11, 64, 0);
        // Forced blocks out; digits below the other keys' common prefix (all of them lie
        // between lo and hi, so they share it).
        const int common = rest.empty() || lo == hi ? 32 : __builtin_clz(lo ^ hi);
        const int start = 64 - common;
        const uint64_t prefix =
            start == 64 ? 0 : (static_cast<uint64_t>(lo) << 32) & ~((uint64_t{1} << start) - 1);
        const Select pre8 = radix_select(rest, want - n_forced, 8, start, prefix);
        const Select pre11 = radix_select(rest, want - n_forced, 11, start, prefix);
        // Every variant must select the reference's blocks (resa::select_blocks: the ranking by
        // score, ties to the lower index, forced blocks first).
        const std::vector<int32_t> want_blocks = resa::select_blocks(scores.data(), M, cfg);
        const uint64_t none = ~uint64_t{0};  // selects only the forced blocks
        for (const auto& [name, threshold] :
             {std::pair{"device", device.threshold}, std::pair{"11-bit", wide.threshold},
              std::pair{"prefix 8-bit", want > n_forced ? pre8.threshold : none},
              std::pair{"prefix 11-bit", want > n_forced ? pre11.threshold : none}})
          if (selected_by(keys, threshold) != want_blocks) {
            std::fprintf(stderr,
                         "topk_passes: the %s select differs from resa::select_blocks (%d/%d, L "
                         "%d, head %d)\n",
                         name, hq, hkv, L, h);
            return 1;
          }
        std::printf("%2d/%-3d %7d %4d %6lld %6d | %6d %6d | %6d %6d %6d\n", hq, hkv, L, h,
                    static_cast<long long>(M), want, device.passes, wide.passes, common,
                    pre8.passes, pre11.passes);
        ++histogram["device (8-bit)"][device.passes];
        ++histogram["11-bit"][wide.passes];
        ++histogram["prefix, 8-bit"][pre8.passes];
        ++histogram["prefix, 11-bit"][pre11.passes];
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
