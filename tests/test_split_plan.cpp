// tests/test_split_plan.cpp — the rectification kernel's split assignment and its launch rule
// (cuda/src/split_plan.h, the functions attention.cu calls), on the CPU: every split a launch's
// rows need is reduced by exactly one CTA, none past the launch's max_splits (the merge writes
// those rows as NaN), no CTA takes more than its splits per CTA; and the rule's picks at the
// benchmark's rows, which PERFORMANCE.md (changes 54 and 55) reports and measured; and the rule
// for which decode launches give their merge split flags (change 58), at the benchmark's rows.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "split_plan.h"

namespace resa::cuda::split_plan {
namespace {

constexpr int kSplitLen = 512;  // make_schedule's split_len

// Which CTA (split group) reduces each split of a (row group, KV head, sequence) whose rows need
// `needed` splits, by the kernel's arithmetic; -1: none. Fails the test on a split past
// max_splits, a split reduced twice or a CTA over its count.
std::vector<int> owners(int max_splits, int splits_per_cta, int needed) {
  const int groups = split_groups(max_splits, splits_per_cta);
  std::vector<int> owner(max_splits, -1);
  const int n = cta_splits(needed, max_splits);
  for (int g = 0; g < groups; ++g) {
    if (g >= n) continue;  // the kernel's early return
    const int count = cta_split_count(g, groups, n, splits_per_cta);
    EXPECT_GE(count, 1);
    EXPECT_LE(count, splits_per_cta);
    for (int k = 0; k < count; ++k) {
      const int split = g + k * groups;
      if (split >= max_splits) {
        ADD_FAILURE() << "group " << g << " reaches split " << split << " of " << max_splits;
        continue;
      }
      EXPECT_EQ(owner[split], -1) << "split " << split << " reduced twice";
      owner[split] = g;
    }
  }
  return owner;
}

TEST(SplitPlan, EverySplitOnceAndNonePastTheLaunch) {
  for (const int sms : {132, 114, 78})
    for (const int ctas_per_split : {1, 2, 4, 16, 24, 32, 64})
      for (int max_keys = 1; max_keys <= 300 * kSplitLen; max_keys += 197) {
        const int max_splits = (max_keys + kSplitLen - 1) / kSplitLen;
        const int s = wgmma_splits_per_cta(max_keys, kSplitLen, ctas_per_split, sms);
        ASSERT_GE(s, 1);
        ASSERT_LE(s, std::min(8, max_splits));
        // Rows needing every count up to the launch's, and more (a max_keys too small).
        for (const int needed : {1, max_splits / 3 + 1, max_splits - 1, max_splits, max_splits + 1, 2 * max_splits + 7}) {
          if (needed < 1) continue;
          const std::vector<int> owner = owners(max_splits, s, needed);
          for (int split = 0; split < max_splits; ++split)
            EXPECT_EQ(owner[split] >= 0, split < needed)
                << "max_keys " << max_keys << ", " << s << " per CTA, rows needing " << needed << ": split " << split;
        }
      }
}

TEST(SplitPlan, ShortListsSpreadOverAsManyCtas) {
  // 28/4 batch 8 at L = 4K in a 262177-token cache: 513 splits, 7 per CTA, 74 split groups; the
  // sequence's 9 splits go to 9 CTAs of one split each (consecutive splits put them in 2 CTAs).
  const int s = wgmma_splits_per_cta(262177, kSplitLen, 32, 132);
  EXPECT_EQ(s, 7);
  const std::vector<int> owner = owners(513, s, 9);
  for (int split = 0; split < 9; ++split) EXPECT_EQ(owner[split], split);
}

TEST(SplitPlan, RulePicksAtTheBenchmarkRows) {
  // bench_gpu's rows (capacity L + 33, H200's 132 SMs): {shape's ctas per split at batch 1 and 8
  // = KV heads x batch, one row group}, L -> splits per CTA. Batch 8 4K keeps one split per CTA
  // (change 55: the 33-key sliver of a ninth split is not a wave); the rest as change 54 picked.
  struct Row {
    int ctas_per_split, length, expected;
  };
  const Row rows[] = {{2, 4096, 1},    {2, 16384, 1},   {2, 65536, 2},  {2, 131072, 4},  {2, 262144, 8},
                      {16, 4096, 1},   {16, 16384, 1},  {16, 65536, 4}, {16, 131072, 8}, {16, 262144, 7},
                      {4, 4096, 1},    {4, 16384, 1},   {4, 65536, 4},  {4, 131072, 8},  {4, 262144, 8},
                      {32, 4096, 1},   {32, 16384, 3},  {32, 65536, 4}, {32, 131072, 7}, {32, 262144, 7}};
  for (const Row& r : rows)
    EXPECT_EQ(wgmma_splits_per_cta(r.length + 33, kSplitLen, r.ctas_per_split, 132), r.expected)
        << r.ctas_per_split << " CTAs per split, L = " << r.length;
}

TEST(SplitPlan, ValidationMatrixCasesHaveTheirComments) {
  // cuda/src/verify.cpp's multi-split cases (132 SMs): 6 splits in CTAs of 2 (3 groups); 40 in
  // CTAs of 8 (5 groups); 41 in CTAs of 4 (11 groups, so groups 8-10 would reach splits 41-43).
  EXPECT_EQ(wgmma_splits_per_cta(2605, kSplitLen, 32, 132), 2);
  EXPECT_EQ(wgmma_splits_per_cta(20005, kSplitLen, 24, 132), 8);
  EXPECT_EQ(split_groups(40, 8), 5);
  EXPECT_EQ(wgmma_splits_per_cta(20600, kSplitLen, 24, 132), 4);
  EXPECT_EQ(split_groups(41, 4), 11);
  EXPECT_EQ(cta_split_count(8, 11, cta_splits(59, 41), 4), 3);  // 8, 19, 30; not 41
}

TEST(SplitFlagRule, PicksAtTheBenchmarkRows) {
  // Dense decode at bench_gpu's rows (max_keys L + 33, so 513 splits at 256K; H200: 132 SMs,
  // three CTAs per SM of the two-stage instance, two of the three-stage one, launch_decode's
  // picks): the last row's splits before the last wave, and the rule's answer, as change 58
  // measured them (flags faster at batch 1 256K, slower at 128K, at batch 8 and in one wave).
  struct Row {
    const char* what;
    int max_splits;
    long long ctas, slots, early;
    bool flags;
  };
  const Row rows[] = {{"12/2 batch 1 256K", 513, 1026, 396, 279, true},
                      {"28/4 batch 1 256K", 513, 2052, 396, 441, true},
                      {"12/2 batch 1 128K", 257, 514, 264, 7, false},
                      {"28/4 batch 1 128K", 257, 1028, 396, 21, false},
                      {"28/4 batch 1 64K", 129, 516, 264, -123, false},
                      {"12/2 batch 8 256K", 513, 8208, 396, 225, false},
                      {"28/4 batch 8 256K", 513, 16416, 396, 333, false}};
  for (const Row& r : rows) {
    EXPECT_EQ(last_row_splits_before_last_wave(r.max_splits, r.ctas, r.slots), r.early) << r.what;
    EXPECT_EQ(merge_follows_flags(r.max_splits, r.ctas, r.slots), r.flags) << r.what;
  }
  // One wave never: every split finishes in it (12/2 batch 1 64K: 258 CTAs, 264 slots).
  EXPECT_FALSE(merge_follows_flags(129, 258, 264));
  EXPECT_FALSE(merge_follows_flags(100000, 264, 264));
  // The threshold itself: two waves of 396 need 140 of the last row's splits in the first.
  EXPECT_TRUE(merge_follows_flags(400, 396 + 140, 396));   // 396 - 136 = 260 >= 140
  EXPECT_FALSE(merge_follows_flags(395, 396 + 396, 396));  // 396 - 397 < 0
  EXPECT_TRUE(merge_follows_flags(396, 396 + 256, 396));   // 396 - 256 = 140
  EXPECT_FALSE(merge_follows_flags(395, 396 + 256, 396));  // 396 - 257 = 139
}

}  // namespace
}  // namespace resa::cuda::split_plan
