// cuda/src/split_plan.h — which KV splits each CTA of the rectification (wgmma) kernel reduces,
// and how many splits per CTA its launch picks: the device assignment and the host rule in one
// place, compiled for both, so that the CPU test (tests/test_split_plan.cpp, in CI) checks the
// very functions attention_split_wgmma_kernel and launch() call (cuda/src/attention.cu); and the
// host rule for which one-CTA decode launches give their merge split flags.
// A launch for max_keys keys has max_splits = ceil(max_keys / split_len) splits per (row group,
// KV head, sequence), spread over split_groups(max_splits, splits_per_cta) CTAs; the CTA of split
// group j reduces splits j, j + groups, j + 2 groups, ... (interleaved, so that a sequence
// shorter than max_keys spreads its splits over as many CTAs as with one split per CTA).
#pragma once

#include <algorithm>

#include "resa/numerics.h"  // RESA_HD

namespace resa::cuda::split_plan {

// CTAs per (row group, KV head, sequence).
RESA_HD int split_groups(int max_splits, int splits_per_cta) { return (max_splits + splits_per_cta - 1) / splits_per_cta; }

// The splits a CTA works through when its rows' keys need `n_splits`: never more than the
// launch's max_splits (a row whose keys need more is written as NaN by the merge kernel, see
// kRowPastMaxKeysBits), so no partial lands past its head's slots.
RESA_HD int cta_splits(int n_splits, int max_splits) { return n_splits < max_splits ? n_splits : max_splits; }

// How many of them the CTA of split group `group` reduces, for group < n (cta_splits; a CTA with
// group >= n has nothing to do): group, group + groups, ... below n, at most splits_per_cta.
RESA_HD int cta_split_count(int group, int groups, int n, int splits_per_cta) {
  const int count = (n - 1 - group) / groups + 1;
  return count < splits_per_cta ? count : splits_per_cta;
}

// Splits per CTA (host): each CTA pays its prologue (Q, the ones block, the first tiles' latency)
// once for all its splits, against the last wave's idle SMs when the grid gets short. Picks the
// count in 1..8 that minimizes waves x (the most splits a CTA gets + the prologue, counted as a
// quarter of a split), ties to fewer, where a CTA whose only split is the list's last one, under
// half a split of keys, is not counted: max_keys (the cache's capacity from rectify() without
// max_length, L + 33 in bench_gpu) often ends just past a split boundary, and counting that sliver
// as a wave of its own took two splits per CTA at batch 8 4K for a one-wave grid (12/2
// rectification 68 -> 88 us, PERFORMANCE.md change 55). `ctas_per_split` is the grid's other
// dimensions (row groups x KV heads x sequences), `sms` the card's.
inline int wgmma_splits_per_cta(int max_keys, int split_len, int ctas_per_split, int sms) {
  const int n = (max_keys + split_len - 1) / split_len;  // splits of the longest list
  const bool last_under_half = 2 * (max_keys - (n - 1) * split_len) < split_len;
  int best = 1;
  double best_cost = 0;
  for (int s = 1; s <= std::min(8, n); ++s) {
    const int groups = split_groups(n, s);
    const int most = (n + groups - 1) / groups;
    const int counted = groups - (n - 1 < groups && last_under_half ? 1 : 0);
    const long long ctas = static_cast<long long>(counted) * ctas_per_split;
    const double cost = static_cast<double>((ctas + sms - 1) / sms) * (most + 0.25);
    if (s == 1 || cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

// Split flags (AttentionParams::split_flags, PERFORMANCE.md change 58): a one-CTA decode launch
// may let its merge fold each split as soon as it is written instead of after the whole grid.
// What that saves is on the grid's last row (sequence, KV head; its splits are the grid's last
// max_splits CTAs), the one whose merge ends the launch: its splits that finish before the
// grid's last wave (slots: the CTAs the card runs at once), folded behind that wave at about
// 0.02 us per split on the H200, where the merge used to start after the whole grid. Counted
// here as if the grid ran in whole waves.
inline long long last_row_splits_before_last_wave(int max_splits, long long ctas, long long slots) {
  const long long waves = (ctas + slots - 1) / slots;
  return (waves - 1) * slots - (ctas - max_splits);
}
// What the flags cost: each CTA's fence and barrier at its end, about 0.4 us per wave, and a
// chunk more in the merge (~2 us). So they go where the last row has at least 20 splits per
// wave + 100 finished before the last wave. Same-run A/B (H200, change 58): batch 1 256K 2.8-3.3%
// faster (279 and 441 such splits), 128K 1-2% slower with flags (7 and 21), one-wave grids 2-8%
// slower with flags (none), batch 8 256K 0.8-1.7% slower with flags (21-42 waves, 225-333).
inline bool merge_follows_flags(int max_splits, long long ctas, long long slots) {
  const long long waves = (ctas + slots - 1) / slots;
  return waves > 1 && last_row_splits_before_last_wave(max_splits, ctas, slots) >= 20 * waves + 100;
}

}  // namespace resa::cuda::split_plan
