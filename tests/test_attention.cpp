// tests/test_attention.cpp — reference attention against the fp64 oracle (test tiers 0-2) and
// its exact properties (tier 3): chunk rows equal decode, batch invariance, ratio 1 sparse equals
// dense, masked cache padding is never read into a result.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>

#include "resa/attention.h"
#include "resa/oracle.h"
#include "resa/selection.h"
#include "test_util.h"

namespace resa {
namespace {

using testing::Fill;

// Every output row against the oracle (derived tolerance) and the FlashAttention rule.
template <class T>
void expect_matches_oracle(const AttentionShape& shape, const Schedule& s, const KvCache<T>& cache,
                           const std::vector<T>& q, const std::vector<float>& out,
                           const oracle::RowKeys& keys, int n_new, const std::string& what) {
  const oracle::AttentionCheck c = oracle::check_attention<T>(shape, s, cache, q, out, keys, n_new);
  EXPECT_EQ(c.cmp.failures, 0) << what << ": " << c.str();
  EXPECT_TRUE(c.fa_rule_ok()) << what << ": " << c.str();
}

template <class T>
std::vector<T> random_q(const AttentionShape& shape, int rows, std::mt19937_64& rng, Fill fill) {
  return testing::random_storage<T>(static_cast<size_t>(rows) * shape.n_q_heads * shape.head_dim, rng, fill);
}

// ---------------------------------------------------------------- tier 0
template <class T>
void exact_mean_case(int64_t length, DotArithmetic arith) {
  const AttentionShape shape{4, 2, 64};
  Schedule s = make_schedule(shape, {512, 64, arith});
  KvCache<T> cache(1, 2, static_cast<int>(length) + 8, 64);
  cache.length = {length};
  std::mt19937_64 rng(length);
  std::uniform_int_distribution<int> small(-8, 8);
  std::vector<double> sum(2 * 64, 0.0);
  for (int h = 0; h < 2; ++h)
    for (int64_t p = 0; p < length; ++p)
      for (int c = 0; c < 64; ++c) {
        cache.key(0, h, p)[c] = from_float<T>(0.25f);  // every key equal: all weights exactly 1
        const int v = small(rng);
        cache.value(0, h, p)[c] = from_float<T>(static_cast<float>(v));
        sum[h * 64 + c] += v;
      }
  std::vector<T> q = random_q<T>(shape, 1, rng, Fill::Normal);
  std::vector<float> out(4 * 64);
  dense_decode<T>(shape, s, cache, q.data(), out.data());
  for (int h = 0; h < 4; ++h)
    for (int c = 0; c < 64; ++c) {
      const float want = static_cast<float>(sum[(h / 2) * 64 + c]) / static_cast<float>(length);
      ASSERT_EQ(f32_bits(out[h * 64 + c]), f32_bits(want))
          << "L=" << length << " head " << h << " col " << c;
    }
}

TEST(AttentionTier0, UniformWeightsGiveTheExactMean) {
  for (int64_t L : {1, 2, 16, 64, 100, 512, 513, 1500})
    for (DotArithmetic a : {DotArithmetic::TensorCoreHopper, DotArithmetic::FmaChain}) {
      exact_mean_case<bf16>(L, a);
      exact_mean_case<fp16>(L, a);
    }
}

TEST(AttentionTier0, OneKeyReturnsItsValue) {
  const AttentionShape shape{8, 1, 128};
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(1);
  KvCache<bf16> cache = testing::random_cache<bf16>(shape, {1}, 4, rng, Fill::Spread);
  std::vector<bf16> q = random_q<bf16>(shape, 1, rng, Fill::Spread);
  std::vector<float> out(8 * 128);
  dense_decode<bf16>(shape, s, cache, q.data(), out.data());
  for (int h = 0; h < 8; ++h)
    for (int c = 0; c < 128; ++c) ASSERT_EQ(out[h * 128 + c], to_float(cache.value(0, 0, 0)[c]));
}

// ---------------------------------------------------------------- tiers 1-2
struct OracleCase {
  int hq, hkv, d;
  std::vector<int64_t> lengths;
  Fill fill;
  DotArithmetic arith;
};

std::string case_name(const OracleCase& c, const char* dtype) {
  std::ostringstream os;
  os << dtype << " Hq=" << c.hq << " Hkv=" << c.hkv << " d=" << c.d << " fill=" << testdata::fill_name(c.fill)
     << (c.arith == DotArithmetic::TensorCoreHopper ? " tc" : " fma") << " L=";
  for (auto L : c.lengths) os << L << ",";
  return os.str();
}

std::vector<OracleCase> oracle_cases() {
  std::vector<OracleCase> cases;
  const std::vector<std::vector<int64_t>> lengths = {
      {1, 15, 16, 17}, {255, 256, 257}, {511, 512, 513}, {1000, 64}, {2049}};
  const int groups[] = {1, 2, 4, 6, 7, 8};
  int i = 0;
  for (Fill fill : {Fill::Normal, Fill::Spread, Fill::Adversarial})
    for (int d : {64, 128})
      for (int g : groups) {
        const int hkv = (i % 2) + 1;
        cases.push_back({g * hkv, hkv, d, lengths[i % lengths.size()], fill,
                         i % 3 == 2 ? DotArithmetic::FmaChain : DotArithmetic::TensorCoreHopper});
        ++i;
      }
  return cases;
}

template <class T>
void run_decode_and_chunk_oracle(const OracleCase& c, uint64_t seed) {
  const AttentionShape shape{c.hq, c.hkv, c.d};
  const Schedule s = make_schedule(shape, {512, 64, c.arith});
  std::mt19937_64 rng(seed);
  int64_t cap = 0;
  for (auto L : c.lengths) cap = std::max(cap, L);
  const KvCache<T> cache = testing::random_cache<T>(shape, c.lengths, static_cast<int>(cap) + 3, rng, c.fill);
  const int batch = cache.batch;
  const std::string name = case_name(c, Storage<T>::name);
  {  // decode
    std::vector<T> q = random_q<T>(shape, batch, rng, c.fill);
    std::vector<float> out(q.size());
    dense_decode<T>(shape, s, cache, q.data(), out.data());
    expect_matches_oracle<T>(shape, s, cache, q, out,
        [&](int b, int, int) { return std::vector<KeySegment>{{0, cache.length[b]}}; }, 1,
        "decode " + name);
  }
  {  // chunk of the last n positions
    int64_t min_len = cap;
    for (auto L : c.lengths) min_len = std::min(min_len, L);
    const int n = static_cast<int>(std::min<int64_t>(min_len, 7));
    std::vector<T> q = random_q<T>(shape, batch * n, rng, c.fill);
    std::vector<float> out(q.size());
    chunked_attention<T>(shape, s, cache, n, q.data(), out.data());
    expect_matches_oracle<T>(shape, s, cache, q, out,
        [&](int b, int i, int) { return std::vector<KeySegment>{{0, cache.length[b] - n + i + 1}}; },
        n, "chunk " + name);
  }
}

TEST(AttentionOracle, DecodeAndChunkBf16) {
  uint64_t seed = 100;
  for (const OracleCase& c : oracle_cases()) run_decode_and_chunk_oracle<bf16>(c, seed++);
}
TEST(AttentionOracle, DecodeAndChunkFp16) {
  uint64_t seed = 200;
  for (const OracleCase& c : oracle_cases()) run_decode_and_chunk_oracle<fp16>(c, seed++);
}

TEST(AttentionOracle, LongContextAcrossManySplits) {
  const AttentionShape shape{12, 2, 128};
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(77);
  const KvCache<bf16> cache = testing::random_cache<bf16>(shape, {20000}, 20001, rng, Fill::Normal);
  std::vector<bf16> q = random_q<bf16>(shape, 1, rng, Fill::Normal);
  std::vector<float> out(q.size());
  dense_decode<bf16>(shape, s, cache, q.data(), out.data());
  expect_matches_oracle<bf16>(shape, s, cache, q, out,
      [&](int, int, int) { return std::vector<KeySegment>{{0, 20000}}; }, 1, "decode L=20000");
}

template <class T>
void run_sparse_oracle(uint64_t seed, Fill fill, int b, const char* ratio, int d, int g) {
  const AttentionShape shape{2 * g, 2, d};
  const Schedule s = make_schedule(shape);
  SparseConfig cfg;
  cfg.block_size = b;
  cfg.ratio = Fraction::parse(ratio);
  cfg.n_min = 2;
  cfg.n_sink = seed % 2;
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> lengths = {1000, 777, 33};
  const KvCache<T> cache = testing::random_cache<T>(shape, lengths, 1024, rng, fill);
  BlockDescriptors<T> desc(cache, b);
  build_descriptors(cache, desc);
  std::vector<T> q = random_q<T>(shape, 3, rng, fill);
  const BlockSelection sel = select_for_decode<T>(shape, cfg, cache, desc, q.data());
  std::vector<float> out(q.size());
  block_sparse_decode<T>(shape, s, cache, b, sel, q.data(), out.data());
  expect_matches_oracle<T>(shape, s, cache, q, out,
      [&](int bb, int, int kvh) {
        return block_segments(sel.list(bb, kvh), sel.n(bb, kvh), b, cache.length[bb]);
      },
      1, std::string("sparse ") + Storage<T>::name + " b=" + std::to_string(b) + " ratio=" + ratio);
}

TEST(AttentionOracle, BlockSparseOverSelectedBlocks) {
  uint64_t seed = 300;
  for (Fill fill : {Fill::Normal, Fill::Spread, Fill::Adversarial})
    for (int b : {16, 64})
      for (const char* ratio : {"1/20", "1/10", "1/5"}) {
        run_sparse_oracle<bf16>(seed++, fill, b, ratio, 128, 6);
        run_sparse_oracle<fp16>(seed++, fill, b, ratio, 64, 7);
      }
}

// ---------------------------------------------------------------- tier 3: exact properties
template <class T>
void chunk_rows_equal_decode(const AttentionShape& shape, int64_t L, int n, uint64_t seed) {
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(seed);
  KvCache<T> cache = testing::random_cache<T>(shape, {L}, static_cast<int>(L), rng, Fill::Spread);
  std::vector<T> q = random_q<T>(shape, n, rng, Fill::Spread);
  std::vector<float> chunk(q.size());
  chunked_attention<T>(shape, s, cache, n, q.data(), chunk.data());
  const size_t row = static_cast<size_t>(shape.n_q_heads) * shape.head_dim;
  for (int i = 0; i < n; ++i) {
    cache.length = {L - n + i + 1};
    std::vector<T> qi(q.begin() + i * row, q.begin() + (i + 1) * row);
    std::vector<float> dec(row);
    dense_decode<T>(shape, s, cache, qi.data(), dec.data());
    std::vector<float> part(chunk.begin() + i * row, chunk.begin() + (i + 1) * row);
    ASSERT_EQ(testing::bit_mismatches(dec, part, "chunk row " + std::to_string(i)), 0);
  }
}

TEST(AttentionExact, ChunkRowsEqualDecodeBitForBit) {
  chunk_rows_equal_decode<bf16>({12, 2, 128}, 1100, 32, 1);  // crosses split boundaries 512, 1024
  chunk_rows_equal_decode<fp16>({7, 1, 64}, 530, 40, 2);
  chunk_rows_equal_decode<bf16>({8, 8, 64}, 65, 65, 3);  // the whole prefill as one chunk
}

TEST(AttentionExact, BatchInvariance) {
  const AttentionShape shape{12, 2, 128};
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(9);
  const KvCache<bf16> big = testing::random_cache<bf16>(shape, {700, 1300, 5}, 1300, rng, Fill::Normal);
  std::vector<bf16> q = random_q<bf16>(shape, 3, rng, Fill::Normal);
  std::vector<float> out(q.size());
  dense_decode<bf16>(shape, s, big, q.data(), out.data());
  const size_t row = static_cast<size_t>(12) * 128;
  for (int b = 0; b < 3; ++b) {
    KvCache<bf16> one(1, 2, 1300, 128);
    for (int h = 0; h < 2; ++h)
      for (int64_t p = 0; p < big.length[b]; ++p)
        for (int c = 0; c < 128; ++c) {
          one.key(0, h, p)[c] = big.key(b, h, p)[c];
          one.value(0, h, p)[c] = big.value(b, h, p)[c];
        }
    one.length = {big.length[b]};
    std::vector<bf16> qb(q.begin() + b * row, q.begin() + (b + 1) * row);
    std::vector<float> ob(row);
    dense_decode<bf16>(shape, s, one, qb.data(), ob.data());
    std::vector<float> part(out.begin() + b * row, out.begin() + (b + 1) * row);
    EXPECT_EQ(testing::bit_mismatches(ob, part, "batch sequence " + std::to_string(b)), 0);
  }
}

TEST(AttentionExact, RatioOneSparseEqualsDense) {
  for (int b : {16, 32, 128, 512})
    for (int64_t L : {1, 16, 17, 255, 256, 700, 1025}) {
      const AttentionShape shape{12, 2, 128};
      const Schedule s = make_schedule(shape);
      SparseConfig cfg;
      cfg.block_size = b;
      cfg.ratio = Fraction{1, 1};
      std::mt19937_64 rng(L * 31 + b);
      const KvCache<bf16> cache = testing::random_cache<bf16>(shape, {L}, static_cast<int>(L), rng, Fill::Adversarial);
      BlockDescriptors<bf16> desc(cache, b);
      build_descriptors(cache, desc);
      std::vector<bf16> q = random_q<bf16>(shape, 1, rng, Fill::Adversarial);
      const BlockSelection sel = select_for_decode<bf16>(shape, cfg, cache, desc, q.data());
      ASSERT_EQ(sel.n(0, 0), num_blocks(L, b));
      std::vector<float> dense(q.size()), sparse(q.size());
      dense_decode<bf16>(shape, s, cache, q.data(), dense.data());
      block_sparse_decode<bf16>(shape, s, cache, b, sel, q.data(), sparse.data());
      ASSERT_EQ(testing::bit_mismatches(dense, sparse, "b=" + std::to_string(b) + " L=" + std::to_string(L)), 0);
    }
}

TEST(AttentionExact, CachePaddingBeyondTheLengthIsNeverRead) {
  const AttentionShape shape{6, 1, 64};
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(4);
  KvCache<fp16> cache = testing::random_cache<fp16>(shape, {100}, 200, rng, Fill::Normal);
  std::vector<fp16> q = random_q<fp16>(shape, 1, rng, Fill::Normal);
  std::vector<float> clean(q.size()), poisoned(q.size());
  dense_decode<fp16>(shape, s, cache, q.data(), clean.data());
  for (int64_t p = 100; p < 200; ++p)
    for (int c = 0; c < 64; ++c) {
      cache.key(0, 0, p)[c] = fp16{kCanonicalNanFp16};
      cache.value(0, 0, p)[c] = fp16{0x7c00};  // +Inf
    }
  dense_decode<fp16>(shape, s, cache, q.data(), poisoned.data());
  EXPECT_EQ(testing::bit_mismatches(clean, poisoned, "poisoned padding"), 0);
}

TEST(AttentionNonFinite, NanKeyPoisonsTheRowAsCanonicalNan) {
  const AttentionShape shape{2, 1, 64};
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(5);
  KvCache<bf16> cache = testing::random_cache<bf16>(shape, {300}, 300, rng, Fill::Normal);
  cache.key(0, 0, 123)[7] = bf16{kCanonicalNanBf16};
  std::vector<bf16> q = random_q<bf16>(shape, 1, rng, Fill::Normal);
  std::vector<float> out(q.size());
  dense_decode<bf16>(shape, s, cache, q.data(), out.data());
  for (float x : out) ASSERT_EQ(f32_bits(x), kCanonicalNanF32);
}

// A non-finite V at a later position of a chunk reaches the earlier rows whose last 64-key tile
// holds it (the kernels share the tile: 0 * NaN = NaN), and no other row; a decode of the same
// position, which never sees that key, stays finite.
TEST(AttentionNonFinite, LaterChunkPositionsShareTheTile) {
  const AttentionShape shape{2, 1, 64};
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(8);
  KvCache<bf16> cache = testing::random_cache<bf16>(shape, {130}, 130, rng, Fill::Normal);
  cache.value(0, 0, 129)[5] = bf16{kCanonicalNanBf16};  // position 129: tile [128, 192)
  const int n = 4;                                      // rows at positions 126..129
  std::vector<bf16> q = testing::random_storage<bf16>(static_cast<size_t>(n) * 2 * 64, rng, Fill::Normal);
  std::vector<float> out(q.size());
  chunked_attention<bf16>(shape, s, cache, n, q.data(), out.data());
  // Only V's column 5 holds the NaN, so only output column 5 (of both query heads) can be NaN.
  auto row_nan = [&](int i) {
    bool col5 = true, others = false;
    for (int c = 0; c < 2 * 64; ++c) {
      const bool nan = std::isnan(out[i * 128 + c]);
      if (c % 64 == 5) col5 &= nan && f32_bits(out[i * 128 + c]) == kCanonicalNanF32;
      else others |= nan;
    }
    EXPECT_FALSE(others) << "row " << i;
    return std::pair<bool, bool>{col5, col5};
  };
  EXPECT_FALSE(row_nan(0).first);  // limit 127: last tile [64, 128)
  EXPECT_FALSE(row_nan(1).first);  // limit 128: last tile [64, 128)
  EXPECT_TRUE(row_nan(2).first);   // limit 129: tile [128, 192) holds the masked NaN
  EXPECT_TRUE(row_nan(3).first);   // limit 130: attends position 129 itself
  cache.length = {129};             // the same position as a decode step: finite
  std::vector<bf16> q2(q.begin() + 2 * 128, q.begin() + 3 * 128);
  std::vector<float> dec(128);
  dense_decode<bf16>(shape, s, cache, q2.data(), dec.data());
  for (float x : dec) EXPECT_FALSE(std::isnan(x));
  // With the FMA-chain arithmetic masked keys keep V = 0 (no kernel shares its tiles).
  cache.length = {130};
  const Schedule fma = make_schedule(shape, {512, 64, DotArithmetic::FmaChain});
  chunked_attention<bf16>(shape, fma, cache, n, q.data(), out.data());
  EXPECT_FALSE(row_nan(2).first);
}

TEST(AttentionErrors, BadInputsAreRejectedWithContext) {
  const AttentionShape shape{12, 2, 128};
  const Schedule s = make_schedule(shape);
  std::mt19937_64 rng(6);
  KvCache<bf16> cache = testing::random_cache<bf16>(shape, {10}, 16, rng, Fill::Normal);
  std::vector<bf16> q = random_q<bf16>(shape, 20, rng, Fill::Normal);
  std::vector<float> out(q.size());
  EXPECT_THROW(chunked_attention<bf16>(shape, s, cache, 11, q.data(), out.data()), InvalidArgument);
  EXPECT_THROW(chunked_attention<bf16>(shape, s, cache, 0, q.data(), out.data()), InvalidArgument);
  EXPECT_THROW(dense_decode<bf16>({12, 2, 64}, s, cache, q.data(), out.data()), InvalidArgument);
  cache.length = {17};
  try {
    dense_decode<bf16>(shape, s, cache, q.data(), out.data());
    ADD_FAILURE() << "length beyond capacity accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos) << e.what();
  }
  cache.length = {10};
  BlockSelection sel(1, 2, 2);
  sel.list(0, 0)[0] = 0;
  sel.count = {1, 1};
  sel.list(0, 1)[0] = 5;  // block 5 does not exist for L = 10, b = 16
  EXPECT_THROW(block_sparse_decode<bf16>(shape, s, cache, 16, sel, q.data(), out.data()), InvalidArgument);
}

}  // namespace
}  // namespace resa
