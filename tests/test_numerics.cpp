// tests/test_numerics.cpp — the shared numerics header against first principles: conversions
// (exhaustive where possible), exp2 against libm in double, the tensor-core rule on hand-computed
// cases that separate it from an FMA chain, and the softmax merge identities.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "resa/fp_env.h"
#include "resa/numerics.h"
#include "test_util.h"

namespace resa {
namespace {

using testing::bits;

TEST(FpEnvironment, GuardsHold) {
  const FpEnvironmentCheck c = check_fp_environment();
  EXPECT_TRUE(c.subnormal_results_kept) << "FTZ is on";
  EXPECT_TRUE(c.subnormal_inputs_kept) << "DAZ is on";
  EXPECT_TRUE(c.no_contraction) << "a*b+c was contracted";
  EXPECT_NO_THROW(require_fp_environment());
}

// Round-to-nearest-even to a p-bit significand with exponent range [emin, emax], in double.
double round_to_format(double x, int precision, int emin, int emax) {
  if (x == 0 || std::isinf(x)) return x;
  const int e = std::max(std::ilogb(x), emin);
  const double unit = std::ldexp(1.0, e - (precision - 1));
  double r = std::nearbyint(x / unit) * unit;  // exact scaling by powers of two; RNE
  if (std::fabs(r) >= std::ldexp(2.0 - std::ldexp(1.0, -precision), emax))
    return std::copysign(INFINITY, x);
  return r;
}

TEST(Conversion, Bf16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_bits_to_f32(static_cast<uint16_t>(h));
    const uint16_t back = f32_to_bf16_bits(f);
    if (std::isnan(f))
      EXPECT_EQ(back, kCanonicalNanBf16);
    else
      EXPECT_EQ(back, h) << "bf16 pattern " << h;
  }
}

TEST(Conversion, Fp16DecodesEveryPatternExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_bits_to_f32(static_cast<uint16_t>(h));
    const int e = (h >> 10) & 31, m = h & 1023;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 31) {
      EXPECT_TRUE(m ? std::isnan(f) : std::isinf(f));
      continue;
    }
    const double expect = sign * (e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25));
    ASSERT_EQ(static_cast<double>(f), expect) << "fp16 pattern " << h;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0);
    const uint16_t back = f32_to_fp16_bits(f);
    EXPECT_EQ(back, h);
  }
}

TEST(Conversion, RandomFloatsRoundToNearestEven) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 2000000; ++i) {
    const float x = f32_from_bits(any(rng));
    if (std::isnan(x)) {
      ASSERT_EQ(f32_to_bf16_bits(x), kCanonicalNanBf16);
      ASSERT_EQ(f32_to_fp16_bits(x), kCanonicalNanFp16);
      continue;
    }
    const double bf = round_to_format(x, 8, -126, 127);
    const double hf = round_to_format(x, 11, -14, 15);
    ASSERT_EQ(static_cast<double>(bf16_bits_to_f32(f32_to_bf16_bits(x))), bf) << std::hexfloat << x;
    ASSERT_EQ(static_cast<double>(fp16_bits_to_f32(f32_to_fp16_bits(x))), hf) << std::hexfloat << x;
  }
}

TEST(Conversion, TiesGoToEven) {
  EXPECT_EQ(f32_to_bf16_bits(1.0f + 0x1p-8f), 0x3f80);          // tie, round down to even
  EXPECT_EQ(f32_to_bf16_bits(1.0f + 3 * 0x1p-8f), 0x3f82);      // tie, round up to even
  EXPECT_EQ(f32_to_fp16_bits(65520.0f), 0x7c00);                 // tie at the top -> Inf
  EXPECT_EQ(f32_to_fp16_bits(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_fp16_bits(0x1p-25f), 0x0000);                 // half the smallest subnormal
  EXPECT_EQ(f32_to_fp16_bits(0x1.8p-25f), 0x0001);
  EXPECT_EQ(f32_to_fp16_bits(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16_bits(FLT_MAX), 0x7f80);                  // rounds up to Inf
}

TEST(Exp2, WithinTwoUlpOfLibmOverTheDomain) {
  double worst = 0;
  float worst_x = 0;
  for (float x = -125.0f; x < 128.0f; x = std::nextafter(x, 200.0f) + 0x1p-9f) {
    const float got = exp2_shared(x);
    const double want = std::exp2(static_cast<double>(x));
    const double ulp = std::ldexp(1.0, std::ilogb(want) - 23);
    const double err = std::fabs(got - want) / ulp;
    if (err > worst) {
      worst = err;
      worst_x = x;
    }
  }
  EXPECT_LE(worst, 2.0) << "worst at x = " << worst_x;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int i = 0; i < 1000000; ++i) {
    const float x = u(rng);
    const double want = std::exp2(static_cast<double>(x));
    ASSERT_LE(std::fabs(exp2_shared(x) - want), 2 * std::ldexp(1.0, std::ilogb(want) - 23)) << x;
  }
}

// exp2_shared finds n = rint(x) with one add of 1.5 * 2^23 instead of a round and a conversion
// (cheaper on the GPU); the rest of its path is the earlier formulation's, so the bits did not move
// if that n is rint(x): every half-integer tie, the floats next to each integer and tie, and a dense
// sweep of the domain.
TEST(Exp2, MagicAddRoundsLikeNearbyint) {
  std::vector<float> xs;
  for (int k = -126; k <= 128; ++k)
    for (float base : {static_cast<float>(k), k + 0.5f})
      for (float x : {std::nextafter(base, -1000.0f), base, std::nextafter(base, 1000.0f)}) xs.push_back(x);
  for (float x = -125.5f; x < 128.5f; x = std::nextafter(x, 200.0f) + 0x1p-13f) xs.push_back(x);
  ASSERT_GT(xs.size(), 2000000u);
  for (float x : xs)
    ASSERT_EQ(exp2_parts(x).ni, static_cast<uint32_t>(static_cast<int32_t>(std::nearbyint(x)))) << "x = " << x;
}

// exp2_nonpositive (the kernels' softmax exp2) gives exp2_shared's bits for every x <= 0 and a NaN
// for a NaN: every tie and its neighbours in [-126, 0], a dense sweep, and the special values. The
// GPU test GpuNumerics.NonpositiveExp2MatchesTheSharedExp2 covers all 2^31 nonpositive patterns.
TEST(Exp2, NonpositiveVariantGivesTheSameBits) {
  std::vector<float> xs = {0.0f, -0.0f, neg_inf(), -FLT_MIN, -FLT_TRUE_MIN, -FLT_MAX, -125.0f, -125.5f,
                           std::nextafter(-125.0f, 0.0f), std::nextafter(-125.0f, -200.0f)};
  for (int k = -127; k <= 0; ++k)
    for (float base : {static_cast<float>(k), k - 0.5f})
      for (float x : {std::nextafter(base, -1000.0f), base, std::nextafter(base, 1000.0f)})
        if (x <= 0.0f) xs.push_back(x);
  for (float x = -127.0f; x < 0.0f; x = std::nextafter(x, 1.0f) + 0x1p-15f) xs.push_back(x);
  ASSERT_GT(xs.size(), 2000000u);
  for (float x : xs) ASSERT_EQ(bits(exp2_nonpositive(x)), bits(exp2_shared(x))) << "x = " << x;
  EXPECT_TRUE(std::isnan(exp2_nonpositive(canonical_nan())));
  EXPECT_TRUE(std::isnan(exp2_nonpositive(-canonical_nan())));
  // The softmax wrappers: the same bits as softmax_prob / softmax_rescale where m >= t.
  EXPECT_EQ(bits(softmax_prob_np(neg_inf(), neg_inf())), bits(softmax_prob(neg_inf(), neg_inf())));
  EXPECT_EQ(bits(softmax_rescale_np(neg_inf(), 3.5f)), bits(softmax_rescale(neg_inf(), 3.5f)));
  EXPECT_EQ(bits(softmax_prob_np(-7.25f, 1.5f)), bits(softmax_prob(-7.25f, 1.5f)));
}

// The scores kernel's block term: block_score_term's bits when that is not NaN, a NaN when it is,
// over every combination of signed zeros, infinities, NaN, subnormals, ties and random values.
TEST(BlockScore, AnyNanVariantGivesTheSameTerms) {
  std::vector<float> vs = {0.0f, -0.0f, pos_inf(), neg_inf(), canonical_nan(), -canonical_nan(), 1.0f, -1.0f,
                           FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MAX, -FLT_MAX, 0.5f, -2.25f, 3.0f};
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  for (int i = 0; i < 30; ++i) vs.push_back(u(rng));
  size_t nan_terms = 0;
  for (float q : vs)
    for (float kmin : vs)
      for (float kmax : vs) {
        const float want = block_score_term(q, kmin, kmax), got = block_score_term_any_nan(q, kmin, kmax);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(got)) << q << " " << kmin << " " << kmax;
          ++nan_terms;
        } else {
          ASSERT_EQ(bits(got), bits(want)) << q << " " << kmin << " " << kmax;
        }
      }
  EXPECT_GT(nan_terms, 1000u);  // the NaN cases were exercised
}

TEST(Exp2, SpecialValuesAndDomainEdges) {
  EXPECT_EQ(bits(exp2_shared(0.0f)), bits(1.0f));
  EXPECT_EQ(bits(exp2_shared(-0.0f)), bits(1.0f));
  EXPECT_EQ(exp2_shared(1.0f), 2.0f);
  EXPECT_EQ(exp2_shared(-1.0f), 0.5f);
  EXPECT_EQ(exp2_shared(10.0f), 1024.0f);
  EXPECT_EQ(bits(exp2_shared(neg_inf())), bits(0.0f));
  EXPECT_EQ(bits(exp2_shared(-125.5f)), bits(0.0f));
  EXPECT_EQ(exp2_shared(pos_inf()), pos_inf());
  EXPECT_EQ(exp2_shared(128.0f), pos_inf());
  EXPECT_EQ(bits(exp2_shared(canonical_nan())), kCanonicalNanF32);
  const float top = exp2_shared(std::nextafter(128.0f, 0.0f));
  EXPECT_TRUE(std::isfinite(top));
  EXPECT_GT(top, 0x1.fffp127f);
  EXPECT_TRUE(std::isnormal(exp2_shared(-125.0f)));
}

// ---- Tensor-core rule: hand-computed cases (values chosen exactly representable in bf16).
struct Dot16 {
  float a[16] = {}, b[16] = {};
  void set(int k, float x, float y) {
    a[k] = x;
    b[k] = y;
  }
};

TEST(TensorCoreRule, SmallTermsAlignToTheLargestExponent) {
  // c = 1, sixteen products of 2^-24: FMA chain rounds each 1 + 2^-24 back to 1 (tie to even);
  // the tensor core keeps each term as 2 units of 2^-25 and returns 1 + 2^-20 exactly.
  Dot16 d;
  for (int k = 0; k < 16; ++k) d.set(k, 0x1p-12f, 0x1p-12f);
  EXPECT_EQ(dot16_fma_chain(1.0f, d.a, d.b), 1.0f);
  EXPECT_EQ(dot16_tensor_core(1.0f, d.a, d.b, -126), 1.0f + 0x1p-20f);
}

TEST(TensorCoreRule, TermsBelowTheUnitAreTruncatedAway) {
  // c = 1 and sixteen products of 2^-26 (half a unit of 2^-25): all truncated to 0.
  Dot16 d;
  for (int k = 0; k < 16; ++k) d.set(k, 0x1p-13f, 0x1p-13f);
  EXPECT_EQ(dot16_tensor_core(1.0f, d.a, d.b, -126), 1.0f);
  // Negative terms truncate toward zero too: -(2^-25 + 2^-26) keeps -2^-25 ...
  Dot16 n;
  n.set(0, -0x1.8p-13f, 0x1p-12f);
  // ... and 1 - 2^-25 is then truncated to fp32 toward zero: 1 - 2^-24.
  EXPECT_EQ(dot16_tensor_core(1.0f, n.a, n.b, -126), 1.0f - 0x1p-24f);
}

TEST(TensorCoreRule, FinalSumIsTruncatedNotRounded) {
  // Exact sum 1 + 3 * 2^-25. Round-to-nearest gives 1 + 2^-23; the tensor core truncates to 1.
  // The FMA chain over the same k-order (small terms first) rounds to 1 + 2^-23.
  Dot16 d;
  d.set(0, 0x1p-13f, 0x1p-12f);  // 2^-25
  d.set(1, 0x1p-12f, 0x1p-12f);  // 2^-24
  d.set(2, 1.0f, 1.0f);
  EXPECT_EQ(dot16_tensor_core(0.0f, d.a, d.b, -126), 1.0f);
  EXPECT_EQ(dot16_fma_chain(0.0f, d.a, d.b), 1.0f + 0x1p-23f);
}

TEST(TensorCoreRule, ResultDoesNotDependOnOrderInsideOneInstruction) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    Dot16 d;
    for (int k = 0; k < 16; ++k)
      d.set(k, round_through<bf16>(testing::draw(rng, testing::Fill::Spread)),
            round_through<bf16>(testing::draw(rng, testing::Fill::Spread)));
    const float c = testing::draw(rng, testing::Fill::Spread);
    const float ref = dot16_tensor_core(c, d.a, d.b, -126);
    std::vector<int> perm(16);
    for (int k = 0; k < 16; ++k) perm[k] = k;
    std::shuffle(perm.begin(), perm.end(), rng);
    Dot16 p;
    for (int k = 0; k < 16; ++k) p.set(k, d.a[perm[k]], d.b[perm[k]]);
    ASSERT_EQ(bits(dot16_tensor_core(c, p.a, p.b, -126)), bits(ref));
  }
}

TEST(TensorCoreRule, ResultDependsOnWhichTermsShareAnInstruction) {
  // 32 terms: one 1.0 and sixteen 2^-26 (plus zeros). Grouped with the 1.0, the small terms are
  // truncated away; grouped together first, they sum exactly to 2^-22 and survive.
  Dot16 small, big_with_small, big_alone, rest;
  for (int k = 0; k < 16; ++k) small.set(k, 0x1p-13f, 0x1p-13f);
  big_alone.set(0, 1.0f, 1.0f);
  const float together_first =
      dot16_tensor_core(dot16_tensor_core(0.0f, small.a, small.b, -126), big_alone.a, big_alone.b, -126);
  EXPECT_EQ(together_first, 1.0f + 0x1p-22f);
  for (int k = 0; k < 8; ++k) big_with_small.set(k, 0x1p-13f, 0x1p-13f);
  big_with_small.set(8, 1.0f, 1.0f);
  for (int k = 0; k < 8; ++k) rest.set(k, 0x1p-13f, 0x1p-13f);
  const float mixed = dot16_tensor_core(dot16_tensor_core(0.0f, big_with_small.a, big_with_small.b, -126),
                                        rest.a, rest.b, -126);
  EXPECT_EQ(mixed, 1.0f);
}

TEST(TensorCoreRule, ProductExponentIsTheSumOfFactorExponents) {
  // 1.5 * 1.5 = 2.25 counts with exponent 0 + 0 = 0, so the unit is 2^-25 (not 2^-24): fifteen
  // products of 2^-25 survive (15 * 2^-25 = 1.875 * 2^-22) and the fp32 truncation keeps 2^-22.
  Dot16 d;
  d.set(0, 1.5f, 1.5f);
  for (int k = 1; k < 16; ++k) d.set(k, 0x1p-13f, 0x1p-12f);
  EXPECT_EQ(dot16_tensor_core(0.0f, d.a, d.b, -126), 2.25f + 0x1p-22f);
}

TEST(TensorCoreRule, ZerosInfinitiesAndNan) {
  Dot16 z;
  EXPECT_EQ(bits(dot16_tensor_core(-0.0f, z.a, z.b, -126)), bits(0.0f));  // -0 + nothing = +0
  Dot16 cancel;
  cancel.set(0, 1.0f, 1.0f);
  cancel.set(1, -1.0f, 1.0f);
  EXPECT_EQ(bits(dot16_tensor_core(0.0f, cancel.a, cancel.b, -126)), bits(0.0f));
  Dot16 inf;
  inf.set(3, pos_inf(), 2.0f);
  EXPECT_EQ(dot16_tensor_core(1.0f, inf.a, inf.b, -126), pos_inf());
  inf.set(4, neg_inf(), 2.0f);
  EXPECT_EQ(bits(dot16_tensor_core(1.0f, inf.a, inf.b, -126)), kTensorCoreNanF32);
  Dot16 nan;
  nan.set(0, canonical_nan(), 1.0f);
  EXPECT_EQ(bits(dot16_tensor_core(0.0f, nan.a, nan.b, -126)), kTensorCoreNanF32);
  Dot16 inf_zero;
  inf_zero.set(0, pos_inf(), 0.0f);
  EXPECT_EQ(bits(dot16_tensor_core(0.0f, inf_zero.a, inf_zero.b, -126)), kTensorCoreNanF32);
}

TEST(TensorCoreRule, CloseToExactOnRandomInputs) {
  // Error of one instruction is below 17 units of 2^(M-25) plus one fp32 truncation.
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 20000; ++trial) {
    Dot16 d;
    double exact = 0, biggest = 0;
    const float c = testing::draw(rng, testing::Fill::Spread);
    exact = c;
    biggest = std::fabs(c);
    for (int k = 0; k < 16; ++k) {
      d.set(k, round_through<bf16>(testing::draw(rng, testing::Fill::Spread)),
            round_through<bf16>(testing::draw(rng, testing::Fill::Spread)));
      exact += static_cast<double>(d.a[k]) * d.b[k];
      biggest = std::max(biggest, std::fabs(static_cast<double>(d.a[k]) * d.b[k]));
    }
    const double got = dot16_tensor_core(c, d.a, d.b, -126);
    const double bound = 17 * std::ldexp(biggest, -24) + std::ldexp(std::fabs(exact), -22);
    ASSERT_LE(std::fabs(got - exact), bound) << "trial " << trial;
  }
}

// ---- Online softmax merge.
TEST(SoftmaxMerge, EmptyStateIsTheIdentityOnBothSides) {
  const float m = 3.25f, l = 7.5f, acc = -1.125f;
  const MergeFactors left = merge_factors(neg_inf(), m);
  EXPECT_EQ(left.m, m);
  EXPECT_EQ(bits(merge_value(0.0f, l, left)), bits(l));
  EXPECT_EQ(bits(merge_value(0.0f, acc, left)), bits(acc));
  const MergeFactors right = merge_factors(m, neg_inf());
  EXPECT_EQ(bits(merge_value(l, 0.0f, right)), bits(l));
  EXPECT_EQ(bits(merge_value(acc, 0.0f, right)), bits(acc));
}

TEST(SoftmaxMerge, MatchesExactCombinationOfTwoHalves) {
  // Two states over disjoint key sets merge to (close to) the state over their union.
  const double ma = 2.0, mb = 5.0, la = 3.0, lb = 1.5, aa = 0.75, ab = -2.0;
  const MergeFactors f = merge_factors(static_cast<float>(ma), static_cast<float>(mb));
  const double want_l = la * std::exp2(ma - mb) + lb;
  const double want_acc = aa * std::exp2(ma - mb) + ab;
  EXPECT_NEAR(merge_value(la, lb, f), want_l, 1e-6 * want_l);
  EXPECT_NEAR(merge_value(aa, ab, f), want_acc, 1e-6 * std::fabs(want_acc));
  EXPECT_EQ(softmax_rescale(neg_inf(), neg_inf()), 0.0f);  // empty stays empty, no NaN
  EXPECT_EQ(softmax_prob(neg_inf(), neg_inf()), 0.0f);
}

TEST(MinMaxTotal, OrderIndependentOnSignedZeroAndNan) {
  EXPECT_EQ(bits(max_total(0.0f, -0.0f)), bits(0.0f));
  EXPECT_EQ(bits(max_total(-0.0f, 0.0f)), bits(0.0f));
  EXPECT_EQ(bits(min_total(0.0f, -0.0f)), bits(-0.0f));
  EXPECT_EQ(bits(min_total(-0.0f, 0.0f)), bits(-0.0f));
  EXPECT_EQ(bits(max_total(1.0f, canonical_nan())), kCanonicalNanF32);
  EXPECT_EQ(bits(min_total(canonical_nan(), 1.0f)), kCanonicalNanF32);
  EXPECT_EQ(max_total(-3.0f, 2.0f), 2.0f);
  EXPECT_EQ(min_total(-3.0f, 2.0f), -3.0f);
}

// The rectification kernel's running max of a row over a tile (cuda/src/attention.cu): four
// partial maxima over consecutive quarters of a thread's 16 keys, the first starting from the
// row's previous max, the others from -inf, combined left to right. It must equal one scan from
// the left bit for bit, signed zeros and ignored NaNs included: 200k random rows drawn from a
// small value set (so ties, -0/+0, NaN and infinities are common).
TEST(SoftmaxMax, QuarterMaximaCombinedLeftToRightEqualOneScan) {
  const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.5f, -2.5f, neg_inf(), pos_inf(), canonical_nan(), 1e-40f};
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> pick(0, 9);
  for (int trial = 0; trial < 200000; ++trial) {
    float x[16];
    for (float& v : x) v = pool[pick(rng)];
    float m = pool[pick(rng)];
    if (std::isnan(m)) m = neg_inf();  // a row's running max is never NaN
    float scan = m;
    for (float v : x) scan = max_ignore_nan(scan, v);
    float part[4] = {m, neg_inf(), neg_inf(), neg_inf()};
    for (int k = 0; k < 16; ++k) part[k / 4] = max_ignore_nan(part[k / 4], x[k]);
    const float quarters = max_ignore_nan(max_ignore_nan(max_ignore_nan(part[0], part[1]), part[2]), part[3]);
    ASSERT_EQ(bits(quarters), bits(scan)) << "trial " << trial;
  }
}

// The merge kernel's schedule (cuda/src/attention.cu, attention_merge_kernel), emulated on the
// host: per chunk of splits, thread t of the CTA's 64 or 128 takes a run of consecutive splits; an
// inclusive scan of the runs' maxima within each warp (Hillis-Steele, the earlier run always the
// left operand of max_ignore_nan), shifted by one lane, and the warps' totals to its left give
// each run its incoming running max; each thread computes its splits' merge_factors in order, the
// first split of the row getting (sa, sb) = (0, 1); the fold then applies the factors from the
// state (acc, l) = (-0, -0). It must give the sequential merge's bits (reference/src/
// attention.cpp, which takes the first split as it is): the leftmost maximum is associative, so
// the scan's running maxima equal the fold's, signed zeros included, and fma(x, 1, -0 * 0) = x
// for every x, ±0 included. Split maxima are drawn from a small pool (ties, -0/+0, -inf for splits
// without a finite score), values sometimes ±0 (the first split's too), chunks of 8 to 512
// splits, 1 to 1100 splits.
// (A running max's zero sign does not change a factor: x - (+0) and x - (-0) differ only for
// x = ±0, where exp2 gives 1 either way; the test checks the running max's bits too.)
TEST(MergeFold, ScanOfRunMaximaGivesTheSequentialFold) {
  // Odd trials draw from the first six values only, so that a +0/-0 tie is often the maximum and
  // lies across runs: combining runs in the other order changes the sign of the running max.
  const float pool[] = {0.0f, -0.0f, -1.0f, -2.5f, -130.0f, neg_inf(), 1.0f, 2.5f, 30.0f, 1e-40f};
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int> pick_all(0, 9), pick_low(0, 5), n_pick(1, 1100);
  std::uniform_real_distribution<float> u(0.0f, 3.0f);
  for (int trial = 0; trial < 400; ++trial) {
    const int ns = trial < 8 ? 1 + trial : n_pick(rng), chunk_len = 8 << (trial % 7);  // 8 .. 512
    const int threads = trial % 3 == 0 ? 64 : 128, warps = threads / 32;  // D = 64 or 128
    std::vector<float> ms(ns), ls(ns), as(ns);
    for (int s = 0; s < ns; ++s) {
      ms[s] = pool[trial % 2 ? pick_low(rng) : pick_all(rng)], ls[s] = u(rng), as[s] = u(rng) - 1.5f;
      if (trial % 4 == 1 && s % 3 == 0) as[s] = s % 2 ? -0.0f : 0.0f;  // signed zeros, the first split's included
    }
    if (trial % 8 == 5) as[0] = -0.0f, ls[0] = 0.0f;
    if (trial < 8 && trial % 2 == 0) std::fill(as.begin(), as.end(), -0.0f);  // the fold stays -0 only if exact
    // The sequential fold (reference).
    float want_m = ms[0], want_l = ls[0], want_a = as[0];
    for (int s = 1; s < ns; ++s) {
      const MergeFactors f = merge_factors(want_m, ms[s]);
      want_l = merge_value(want_l, ls[s], f);
      want_a = merge_value(want_a, as[s], f);
      want_m = f.m;
    }
    // The kernel's schedule.
    float m = neg_inf(), l = -0.0f, a = -0.0f;
    for (int chunk = 0; chunk < ns; chunk += chunk_len) {
      const int n = std::min(chunk_len, ns - chunk), run = (n + threads - 1) / threads;
      const auto first = [&](int t) { return std::min(n, t * run); };
      const auto last = [&](int t) { return std::min(n, t * run + run); };
      std::vector<float> incl(threads);
      for (int t = 0; t < threads; ++t) {
        incl[t] = neg_inf();
        for (int k = first(t); k < last(t); ++k) incl[t] = max_ignore_nan(incl[t], ms[chunk + k]);
      }
      for (int o = 1; o < 32; o *= 2) {  // within each warp
        std::vector<float> next(incl);
        for (int t = 0; t < threads; ++t)
          if (t % 32 >= o) next[t] = max_ignore_nan(incl[t - o], incl[t]);
        incl = next;
      }
      std::vector<float> left_warps(warps);
      float chunk_max = m;
      for (int w = 0; w < warps; ++w) {
        left_warps[w] = chunk_max;
        chunk_max = max_ignore_nan(chunk_max, incl[32 * w + 31]);
      }
      std::vector<float> sa(n), sb(n);
      for (int t = 0; t < threads; ++t) {
        float mm = t % 32 == 0 ? left_warps[t / 32] : max_ignore_nan(left_warps[t / 32], incl[t - 1]);
        for (int k = first(t); k < last(t); ++k) {
          if (chunk + k == 0) {
            sa[k] = 0.0f, sb[k] = 1.0f, mm = ms[0];
            continue;
          }
          const MergeFactors f = merge_factors(mm, ms[chunk + k]);
          sa[k] = f.sa, sb[k] = f.sb, mm = f.m;
        }
      }
      m = chunk_max;
      for (int k = 0; k < n; ++k) {
        const MergeFactors f{0.0f, sa[k], sb[k]};
        l = merge_value(l, ls[chunk + k], f);
        a = merge_value(a, as[chunk + k], f);
      }
    }
    ASSERT_EQ(bits(m), bits(want_m)) << "trial " << trial << ", " << ns << " splits";  // the running max
    ASSERT_EQ(bits(l), bits(want_l)) << "trial " << trial << ", " << ns << " splits";
    ASSERT_EQ(bits(a), bits(want_a)) << "trial " << trial << ", " << ns << " splits";
    ASSERT_EQ(bits(softmax_normalize(a, l)), bits(softmax_normalize(want_a, want_l))) << "trial " << trial;
  }
}

// The identity the merge kernel's first split rests on: from (-0) with factors (0, 1), one merge
// step returns the split's value bit for bit, for every float but NaN (a NaN stays a NaN; outputs
// canonicalize it).
TEST(MergeFold, FirstSplitFromNegativeZeroIsExact) {
  const MergeFactors first{0.0f, 0.0f, 1.0f};
  std::mt19937 rng(5);
  std::vector<uint32_t> patterns = {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007fffffu, 0x7f7fffffu,
                                    0xff7fffffu, 0x7f800000u, 0xff800000u, 0x3f800000u, 0xbf800000u};
  for (int i = 0; i < 200000; ++i) patterns.push_back(static_cast<uint32_t>(rng()));
  for (const uint32_t p : patterns) {
    float x;
    std::memcpy(&x, &p, sizeof x);
    const float y = merge_value(-0.0f, x, first);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(y));
    } else {
      ASSERT_EQ(bits(y), p) << std::hex << p;
    }
  }
}

}  // namespace
}  // namespace resa
