// tests/test_selection.cpp — descriptors (incremental = rebuild, refresh = rebuild, exact min/max),
// block scores against the fp64 oracle (and the scores kernel's reduce-scatter order emulated
// against the reference butterfly), and selection against its brute-force definition with
// ties, NaN scores, partial last blocks, sink and local blocks.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <random>

#include "resa/oracle.h"
#include "resa/selection.h"
#include "test_util.h"

namespace resa {
namespace {

using testing::Fill;

template <class T>
void expect_same_descriptors(const BlockDescriptors<T>& a, const BlockDescriptors<T>& b, int seq,
                             int64_t n_blocks, const std::string& what) {
  for (int h = 0; h < a.n_kv_heads; ++h)
    for (int64_t blk = 0; blk < n_blocks; ++blk)
      for (int j = 0; j < a.head_dim; ++j) {
        const size_t o = a.offset(seq, h, blk) + j;
        ASSERT_EQ(a.kmin[o].bits, b.kmin[o].bits) << what << " kmin head " << h << " block " << blk << " dim " << j;
        ASSERT_EQ(a.kmax[o].bits, b.kmax[o].bits) << what << " kmax head " << h << " block " << blk << " dim " << j;
      }
}

template <class T>
void incremental_equals_rebuild(int b, uint64_t seed) {
  const AttentionShape shape{4, 2, 64};
  std::mt19937_64 rng(seed);
  KvCache<T> cache = testing::random_cache<T>(shape, {1}, 300, rng, Fill::Adversarial);
  BlockDescriptors<T> inc(cache, b), rebuilt(cache, b);
  update_descriptors(cache, inc, 0, 0);
  for (int64_t L = 2; L <= 300; ++L) {
    cache.length = {L};
    update_descriptors(cache, inc, 0, L - 1);
    if (L % 37 == 0 || L == 300) {
      build_descriptors(cache, rebuilt);
      expect_same_descriptors(inc, rebuilt, 0, num_blocks(L, b), "L=" + std::to_string(L));
    }
  }
  // The descriptors are the exact element-wise min and max (fp64 check).
  for (int h = 0; h < 2; ++h)
    for (int64_t blk = 0; blk < num_blocks(300, b); ++blk)
      for (int j = 0; j < 64; ++j) {
        double lo = INFINITY, hi = -INFINITY;
        for (int64_t p = blk * b; p < std::min<int64_t>(300, (blk + 1) * b); ++p) {
          lo = std::min<double>(lo, to_float(cache.key(0, h, p)[j]));
          hi = std::max<double>(hi, to_float(cache.key(0, h, p)[j]));
        }
        ASSERT_EQ(to_float(inc.kmin[inc.offset(0, h, blk) + j]), lo);
        ASSERT_EQ(to_float(inc.kmax[inc.offset(0, h, blk) + j]), hi);
      }
}

TEST(Descriptors, IncrementalUpdatesEqualARebuild) {
  for (int b : {1, 16, 64}) {
    incremental_equals_rebuild<bf16>(b, 10 + b);
    incremental_equals_rebuild<fp16>(b, 20 + b);
  }
}

TEST(Descriptors, RangeRefreshEqualsARebuild) {
  const AttentionShape shape{12, 2, 128};
  std::mt19937_64 rng(3);
  KvCache<bf16> cache = testing::random_cache<bf16>(shape, {1000, 517}, 1024, rng, Fill::Spread);
  BlockDescriptors<bf16> desc(cache, 16), rebuilt(cache, 16);
  build_descriptors(cache, desc);
  // Overwrite positions 960..991 of sequence 0 (what a rectification of f = 32 does) ...
  for (int h = 0; h < 2; ++h)
    for (int64_t p = 960; p < 992; ++p)
      for (int c = 0; c < 128; ++c) cache.key(0, h, p)[c] = from_float<bf16>(testing::draw(rng, Fill::Spread));
  // ... refresh only the ceil(f/b)+1 = 3 blocks around them (here exactly 2 are touched).
  refresh_descriptors(cache, desc, 0, 960 / 16, 991 / 16 + 1);
  build_descriptors(cache, rebuilt);
  expect_same_descriptors(desc, rebuilt, 0, num_blocks(1000, 16), "refresh");
  expect_same_descriptors(desc, rebuilt, 1, num_blocks(517, 16), "untouched sequence");
  EXPECT_THROW(refresh_descriptors(cache, desc, 0, 60, 64), InvalidArgument);  // M = 63
  EXPECT_THROW(update_descriptors(cache, desc, 1, 517), InvalidArgument);      // beyond length
  EXPECT_THROW(refresh_descriptors(cache, desc, 2, 0, 1), InvalidArgument);    // no such sequence
}

TEST(Descriptors, SignedZeroAndNanDoNotDependOnOrder) {
  KvCache<bf16> cache(1, 1, 4, 64);
  cache.length = {4};
  for (int c = 0; c < 64; ++c) {
    cache.key(0, 0, 0)[c] = from_float<bf16>(c % 2 ? 0.0f : -0.0f);
    cache.key(0, 0, 1)[c] = from_float<bf16>(c % 2 ? -0.0f : 0.0f);
    cache.key(0, 0, 2)[c] = from_float<bf16>(c == 5 ? NAN : 0.0f);
    cache.key(0, 0, 3)[c] = from_float<bf16>(-0.0f);
  }
  BlockDescriptors<bf16> desc(cache, 4);
  build_descriptors(cache, desc);
  for (int c = 0; c < 64; ++c) {
    if (c == 5) {
      EXPECT_EQ(desc.kmin[c].bits, kCanonicalNanBf16);
      EXPECT_EQ(desc.kmax[c].bits, kCanonicalNanBf16);
    } else {
      EXPECT_EQ(desc.kmin[c].bits, 0x8000) << c;  // -0
      EXPECT_EQ(desc.kmax[c].bits, 0x0000) << c;  // +0
    }
  }
}

TEST(Scores, CloseToTheFp64Oracle) {
  std::mt19937_64 rng(8);
  for (int d : {64, 128})
    for (int g : {1, 4, 7}) {
      const AttentionShape shape{g, 1, d};
      const auto q = testing::random_storage<bf16>(static_cast<size_t>(g) * d, rng, Fill::Normal);
      const auto kmin = testing::random_storage<bf16>(d, rng, Fill::Normal);
      const auto kmax = testing::random_storage<bf16>(d, rng, Fill::Normal);
      std::vector<float> qbar(d);
      pooled_query<bf16>(shape, q.data(), qbar.data());
      const float got = block_score<bf16>(d, qbar.data(), kmin.data(), kmax.data());
      const double want = oracle::block_score<bf16>(d, q.data(), g, kmin.data(), kmax.data());
      double mag = 0;  // error bound: pooled-query rounding (g adds + 1 division) and d products
      for (int j = 0; j < d; ++j)  //  and d additions, each 2^-24 of the running magnitude
        mag += std::fabs(qbar[j]) * std::max(std::fabs(to_float(kmin[j])), std::fabs(to_float(kmax[j])));
      EXPECT_NEAR(got, want, (g + 2 + d) * std::ldexp(mag, -23)) << "d=" << d << " g=" << g;
    }
}

TEST(Scores, FollowTheWarpSummationOrder) {
  // d = 64: lane l sums terms 2l and 2l+1, then the XOR butterfly (16, 8, 4, 2, 1). Terms
  // t0 = 2^24 (lane 0), t2 = 1 (lane 1), t6 = 1 (lane 3): lanes 1 and 3 meet first (1 + 1 = 2),
  // then 2^24 + 2 is exact. A sequential sum would round 2^24 + 1 back to 2^24 twice.
  const int d = 64;
  std::vector<float> qbar(d, 1.0f);
  std::vector<bf16> kmin(d), kmax(d);
  for (int j = 0; j < d; ++j) kmin[j] = kmax[j] = from_float<bf16>(0.0f);
  kmax[0] = kmin[0] = from_float<bf16>(0x1p24f);
  kmax[2] = kmin[2] = from_float<bf16>(1.0f);
  kmax[6] = kmin[6] = from_float<bf16>(1.0f);
  EXPECT_EQ(block_score<bf16>(d, qbar.data(), kmin.data(), kmax.data()), 0x1p24f + 2.0f);
  float sequential = 0.0f;
  for (int j = 0; j < d; ++j) sequential += to_float(kmax[j]);
  EXPECT_EQ(sequential, 0x1p24f);
}

// The scores kernel (cuda/src/selection.cu, WarpBlocks::score) runs the butterfly as a
// reduce-scatter over a warp's eight blocks: at XOR offsets 16, 8 and 4 a lane keeps half of its
// blocks and adds its partner's partial of them, then offsets 2 and 1 finish lane quad j's block
// j. Emulated here on lane partials chosen freely (d = 32 with unit descriptors makes lane l's
// partial qbar[l]), every lane of quad j must hold block_score's bits for block j. The same
// emulation with the offsets in another order must fail, so the test can tell the trees apart.
std::vector<float> reduce_scatter(std::vector<std::array<float, 8>> part, const int (&offsets)[3]) {
  for (int step = 0, n = 8; step < 3; ++step, n /= 2) {
    const int off = offsets[step];
    auto next = part;
    for (int l = 0; l < 32; ++l) {
      const bool upper = l & off;
      for (int k = 0; k < n / 2; ++k) {
        const float keep = upper ? part[l][k + n / 2] : part[l][k];
        const float recv = upper ? part[l ^ off][k + n / 2] : part[l ^ off][k];  // what the partner sends
        next[l][k] = add_rn(keep, recv);
      }
    }
    part = next;
  }
  std::vector<float> lane(32);
  for (int l = 0; l < 32; ++l) lane[l] = part[l][0];
  for (int off = 2; off >= 1; off /= 2) {
    std::vector<float> next(32);
    for (int l = 0; l < 32; ++l) next[l] = add_rn(lane[l], lane[l ^ off]);
    lane = next;
  }
  for (auto& x : lane) x = canonicalize_nan(x);
  return lane;
}

TEST(Scores, ReduceScatterOfTheDeviceEqualsTheButterfly) {
  std::mt19937_64 rng(31);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> exponent(-30, 30), pick(0, 15);
  const std::vector<bf16> ones(32, from_float<bf16>(1.0f));
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 0x1p24f, 1.0f, -0x1p-20f};
  int mismatches = 0, reordered_differs = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::array<float, 8>> part(32);
    std::vector<std::vector<float>> qbar(8, std::vector<float>(32));
    for (int j = 0; j < 8; ++j)
      for (int l = 0; l < 32; ++l) {
        const int p = pick(rng);
        float x = std::ldexp(normal(rng), exponent(rng));
        if (trial % 4 == 0 && p < 8) x = specials[p];  // signed zeros, infinities, NaN in some trials
        qbar[j][l] = x;
        part[l][j] = x;
      }
    const std::vector<float> got = reduce_scatter(part, {16, 8, 4});
    const std::vector<float> other = reduce_scatter(part, {4, 8, 16});
    for (int l = 0; l < 32; ++l) {
      const int j = l / 4;
      const float want = block_score<bf16>(32, qbar[j].data(), ones.data(), ones.data());
      mismatches += f32_bits(got[l]) != f32_bits(want);
      reordered_differs += f32_bits(other[l]) != f32_bits(want);
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_GT(reordered_differs, 1000) << "the data cannot tell the summation trees apart";
}

SparseConfig config(int b, const char* ratio, int n_min, int n_local, int n_sink) {
  SparseConfig c;
  c.block_size = b;
  c.ratio = Fraction::parse(ratio);
  c.n_min = n_min;
  c.n_local = n_local;
  c.n_sink = n_sink;
  return c;
}

TEST(Selection, MatchesTheBruteForceDefinition) {
  std::mt19937_64 rng(12);
  std::uniform_int_distribution<int> coarse(-3, 3), kind(0, 9);
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t m = 1 + trial % 97;
    std::vector<float> scores(m);
    for (auto& s : scores) {
      const int k = kind(rng);  // many exact ties, some NaN, signed zeros
      s = k == 0 ? NAN : k == 1 ? -0.0f : k == 2 ? 0.0f : static_cast<float>(coarse(rng));
    }
    const SparseConfig cfg = config(16, trial % 3 ? "1/10" : "1/5", trial % 5, 1 + trial % 3, trial % 4 == 0 ? 2 : 0);
    const std::vector<int32_t> got = select_blocks(scores.data(), m, cfg);
    const std::vector<int32_t> want = oracle::select_blocks_by_definition(scores, cfg);
    ASSERT_EQ(got, want) << "trial " << trial << " M=" << m;
    ASSERT_TRUE(std::is_sorted(got.begin(), got.end()));
    int64_t forced = 0;
    for (int64_t i = 0; i < m; ++i) forced += (i >= m - cfg.n_local || i < cfg.n_sink) ? 1 : 0;
    ASSERT_EQ(static_cast<int64_t>(got.size()), std::max(num_selected(m * 16, cfg), forced));
  }
}

TEST(Selection, TiesBreakTowardTheLowerIndexAndNanRanksLast) {
  const SparseConfig cfg = config(16, "1", 0, 1, 0);  // ratio 1 would take all; use explicit n
  std::vector<float> s = {1.0f, NAN, 3.0f, 3.0f, -0.0f, 0.0f, 3.0f, 2.0f};
  // ratio 3/8 of 8 blocks = 3: local block 7, then the best two of the rest: blocks 2 and 3
  // (score 3, lower indices win against block 6).
  SparseConfig c = cfg;
  c.ratio = Fraction{3, 8};
  EXPECT_EQ(select_blocks(s.data(), 8, c), (std::vector<int32_t>{2, 3, 7}));
  c.ratio = Fraction{5, 8};  // 5: + block 6 (3.0) and block 0 (1.0)
  EXPECT_EQ(select_blocks(s.data(), 8, c), (std::vector<int32_t>{0, 2, 3, 6, 7}));
  c.ratio = Fraction{7, 8};  // 7: + -0 and +0 tie: block 4 first, then 5; NaN (block 1) last
  EXPECT_EQ(select_blocks(s.data(), 8, c), (std::vector<int32_t>{0, 2, 3, 4, 5, 6, 7}));
  c.ratio = Fraction{1, 1};
  EXPECT_EQ(select_blocks(s.data(), 8, c).size(), 8u);
}

TEST(Selection, LocalAndSinkBlocksAreAlwaysKept) {
  std::vector<float> s(40, 0.0f);
  for (int i = 0; i < 40; ++i) s[i] = static_cast<float>(i % 7);
  s[0] = s[1] = -100.0f;    // sinks score worst
  s[38] = s[39] = -100.0f;  // local blocks score worst
  const SparseConfig c = config(16, "1/10", 0, 2, 2);
  const auto got = select_blocks(s.data(), 40, c);
  EXPECT_EQ(got.size(), 4u);  // ceil(40/10) = 4 = the forced ones
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 38, 39}));
  const SparseConfig c2 = config(16, "1/5", 0, 1, 1);  // 8: forced 0 and 39 + six best
  const auto got2 = select_blocks(s.data(), 40, c2);
  EXPECT_EQ(got2.size(), 8u);
  EXPECT_EQ(got2.front(), 0);
  EXPECT_EQ(got2.back(), 39);
  // More forced blocks than n_sel: all forced ones are kept.
  const SparseConfig c3 = config(16, "1/20", 0, 3, 3);
  EXPECT_EQ(select_blocks(s.data(), 40, c3).size(), 6u);
}

TEST(Selection, EndToEndOnACacheWithPartialLastBlock) {
  const AttentionShape shape{12, 2, 128};
  std::mt19937_64 rng(21);
  for (int64_t L : {1, 255, 256, 257, 3001}) {
    const KvCache<bf16> cache = testing::random_cache<bf16>(shape, {L}, 3001, rng, Fill::Normal);
    BlockDescriptors<bf16> desc(cache, 16);
    build_descriptors(cache, desc);
    const auto q = testing::random_storage<bf16>(12 * 128, rng, Fill::Normal);
    const SparseConfig cfg;  // defaults
    const BlockSelection sel = select_for_decode<bf16>(shape, cfg, cache, desc, q.data());
    const int64_t m = num_blocks(L, 16);
    for (int h = 0; h < 2; ++h) {
      ASSERT_EQ(sel.n(0, h), num_selected(L, cfg)) << "L=" << L;
      if (L <= 256) {
        ASSERT_EQ(sel.n(0, h), m);  // dense while L <= n_min * b
      }
      ASSERT_EQ(sel.list(0, h)[sel.n(0, h) - 1], m - 1);  // the current token's block
      std::vector<float> qbar(2 * 128), scores(m);
      pooled_query<bf16>(shape, q.data(), qbar.data());
      block_scores(desc, 0, h, qbar.data() + h * 128, m, scores.data());
      const auto want = oracle::select_blocks_by_definition(scores, cfg);
      ASSERT_EQ(std::vector<int32_t>(sel.list(0, h), sel.list(0, h) + sel.n(0, h)), want);
    }
  }
}

}  // namespace
}  // namespace resa

namespace resa {
namespace {

// The device's 64-bit rank key orders blocks exactly as ranks_before does (forced blocks first).
TEST(Selection, RankKeyOrderEqualsRanksBefore) {
  std::mt19937_64 rng(31);
  std::uniform_int_distribution<int> kind(0, 9), coarse(-3, 3);
  std::uniform_int_distribution<uint32_t> idx(0, 20000);
  auto draw = [&] {
    const int k = kind(rng);
    return k == 0 ? NAN : k == 1 ? -0.0f : k == 2 ? 0.0f : k == 3 ? INFINITY : k == 4 ? -INFINITY
                                                                              : static_cast<float>(coarse(rng));
  };
  for (int i = 0; i < 200000; ++i) {
    const float sa = draw(), sb = draw();
    uint32_t a = idx(rng), b = idx(rng);
    if (a == b) b = a + 1;
    ASSERT_EQ(selection_key(sa, a, false) > selection_key(sb, b, false), ranks_before(sa, a, sb, b))
        << sa << "@" << a << " vs " << sb << "@" << b;
    ASSERT_GT(selection_key(sb, b, true), selection_key(sa, a, false));  // forced beats any score
  }
}

}  // namespace
}  // namespace resa
