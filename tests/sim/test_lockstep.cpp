// tests/sim/test_lockstep.cpp — the lockstep runner and the metrics on the `tiny` synthetic model:
// exact properties at the bit level (ratio = 1 equals dense in every metric; ReSA's cache equals
// dense's right after every rectification; f = 1 keeps the whole cache equal; a shared prefill
// equals a separate one) and the expected behaviour (sparse misalignment grows, ReSA's stays
// bounded by its first-period value). Relations are asserted, not fixed numbers.
// Run: build/main/tests/sim/resa_sim_tests --gtest_filter='Lockstep*'
#include <gtest/gtest.h>

#include <numeric>

#include "resa/analysis/metrics.h"
#include "resa/selection.h"
#include "resa/sim/lockstep.h"

namespace resa::sim {
namespace {

using analysis::StepMetrics;

const Qwen2Model& tiny() {
  static const Qwen2Model m(std::make_shared<Qwen2Weights>(make_synthetic_weights(synthetic_shape("tiny"), 0, WeightDType::BF16)));
  return m;
}

SparseConfig cfg(Fraction ratio, int f) {
  SparseConfig c;
  c.block_size = 16, c.ratio = ratio, c.n_min = 2, c.n_local = 1, c.rectify_every = f;
  return c;
}

// Runs dense + the given runs for `steps` greedy steps; returns metrics [run][step] (run 0 = dense).
std::vector<std::vector<StepMetrics>> simulate(const std::vector<RunSpec>& runs, int prompt, int steps) {
  const Qwen2Model& m = tiny();
  ScheduleConfig sc;
  sc.arith = DotArithmetic::FmaChain;
  Lockstep<bf16> ls(m, runs, prompt + steps, sc);
  const auto first = ls.prefill(random_tokens(prompt, m.config().vocab_size, 3));
  int32_t token = argmax_token(first.data(), m.config().vocab_size);
  std::vector<std::vector<StepMetrics>> out(static_cast<size_t>(ls.n_runs()));
  for (int s = 0; s < steps; ++s) {
    ls.step(token);
    const int32_t next = argmax_token(ls.observation(0).logits.data(), m.config().vocab_size);
    for (int r = 0; r < ls.n_runs(); ++r) out[static_cast<size_t>(r)].push_back(analysis::step_metrics(ls, r, token, next));
    token = next;
  }
  return out;
}

double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }
double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
bool all_zero(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return x == 0.0; });
}

TEST(Lockstep, SharedPrefillEqualsASeparatePrefill) {
  const Qwen2Model& m = tiny();
  const AttentionShape shape = m.config().attention();
  const Schedule s = make_schedule(shape);
  const auto tokens = random_tokens(100, m.config().vocab_size, 1);
  ModelCallbacks cb{[&](int64_t p, int n, LayerAttention& a) { m.forward(tokens.data() + p, p, n, a); }};
  SparseConfig b8 = cfg(Fraction{1, 4}, 4);
  b8.block_size = 8;
  CpuAttentionEngine<bf16> src(shape, s, cfg(Fraction{1, 4}, 4), 4, 120), own(shape, s, b8, 4, 120), copy(shape, s, b8, 4, 120);
  ResaController(DecodeMode::Dense, cfg(Fraction{1, 4}, 4), src, cb).prefill(100);
  ResaController(DecodeMode::Resa, b8, own, cb).prefill(100);
  copy.load_prefix(src, 100);
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(own.cache(l).length, copy.cache(l).length);
    for (size_t i = 0; i < own.cache(l).k.size(); ++i) ASSERT_EQ(own.cache(l).k[i].bits, copy.cache(l).k[i].bits);
    for (size_t i = 0; i < own.cache(l).v.size(); ++i) ASSERT_EQ(own.cache(l).v[i].bits, copy.cache(l).v[i].bits);
    for (size_t i = 0; i < own.descriptors(l).kmin.size(); ++i) {
      ASSERT_EQ(own.descriptors(l).kmin[i].bits, copy.descriptors(l).kmin[i].bits);
      ASSERT_EQ(own.descriptors(l).kmax[i].bits, copy.descriptors(l).kmax[i].bits);
    }
  }
  ResaController adopted(DecodeMode::Resa, b8, copy, cb);
  adopted.adopt_prefill(100);
  EXPECT_EQ(adopted.length(), 100);
  EXPECT_THROW(adopted.adopt_prefill(100), InvalidArgument);
  EXPECT_THROW(copy.load_prefix(src, 101), InvalidArgument);
}

TEST(Lockstep, RatioOneEqualsDenseInEveryMetric) {
  const auto r = simulate({RunSpec{"ratio1", DecodeMode::Resa, cfg(Fraction{1, 1}, 0)}}, 200, 40);
  for (size_t s = 0; s < r[1].size(); ++s) {
    const StepMetrics& m = r[1][s];
    SCOPED_TRACE("step " + std::to_string(s));
    EXPECT_TRUE(all_zero(m.k_err) && all_zero(m.v_err) && all_zero(m.k_new_err) && all_zero(m.v_new_err));
    EXPECT_TRUE(all_zero(m.attn_err) && all_zero(m.hidden_err));
    EXPECT_EQ(m.kl, 0.0);
    EXPECT_EQ(m.top1_agree, 1);
    EXPECT_EQ(m.nll, r[0][s].nll);
    EXPECT_TRUE(std::all_of(m.recall.begin(), m.recall.end(), [](double x) { return x == 1.0; }));
  }
}

TEST(Lockstep, RectificationRestoresTheDenseCacheExactlyAndFOneKeepsItDense) {
  const int f = 16;
  const auto r = simulate({RunSpec{"resa", DecodeMode::Resa, cfg(Fraction{1, 8}, f)},
                           RunSpec{"f1", DecodeMode::Resa, cfg(Fraction{1, 8}, 1)}}, 300, 64);
  int rectified = 0, differing = 0, f1_attn_differs = 0;
  for (size_t s = 0; s < r[1].size(); ++s) {
    const StepMetrics& m = r[1][s];
    if (m.rectified) {
      ++rectified;
      EXPECT_TRUE(all_zero(m.k_err) && all_zero(m.v_err)) << "step " << s;
    } else {
      differing += !all_zero(m.k_err);
    }
    EXPECT_TRUE(all_zero(r[2][s].k_err) && all_zero(r[2][s].v_err)) << "f=1, step " << s;
    EXPECT_EQ(r[2][s].rectified, 1);
    f1_attn_differs += !all_zero(r[2][s].attn_err);
  }
  EXPECT_EQ(rectified, 64 / f);
  EXPECT_GT(differing, 64 / 2) << "sparse steps never changed the cache: the test would be vacuous";
  EXPECT_GT(f1_attn_differs, 0) << "with f = 1 the current token is still attended sparsely";
}

TEST(Lockstep, SparseMisalignmentGrowsWhileResaStaysBounded) {
  const int f = 16, steps = 128;
  const auto r = simulate({RunSpec{"sparse", DecodeMode::Resa, cfg(Fraction{1, 8}, 0)},
                           RunSpec{"resa", DecodeMode::Resa, cfg(Fraction{1, 8}, f)}}, 300, steps);
  std::vector<double> sparse, resa;
  for (int s = 0; s < steps; ++s) sparse.push_back(mean(r[1][s].k_err)), resa.push_back(mean(r[2][s].k_err));
  const std::vector<double> first(sparse.begin(), sparse.begin() + steps / 4), last(sparse.end() - steps / 4, sparse.end());
  EXPECT_GT(mean(last), 1.5 * mean(first)) << "sparse misalignment does not grow";
  EXPECT_GT(sparse.back(), sparse[f - 1]);
  const double first_period = max_of(std::vector<double>(resa.begin(), resa.begin() + f));
  EXPECT_GT(first_period, 0.0);
  EXPECT_LE(max_of(resa), 1.5 * first_period) << "ReSA misalignment not bounded by its first-period value";
  EXPECT_LT(max_of(resa), 0.5 * sparse.back());
  for (int s = 0; s < f - 1; ++s) EXPECT_EQ(resa[s], sparse[s]) << "step " << s << ": identical until the first rectification";
}

// The language-modelling protocol's runs: a run that decodes only its last x steps follows dense
// before (its own cache untouched, dense's logits) and from then on is bit-identical to the same run
// started from a dense prefill of the first P + S - x tokens.
TEST(Lockstep, RunFollowingDenseThenForkedEqualsARunFromALongerPrefill) {
  const Qwen2Model& m = tiny();
  ScheduleConfig sc;
  sc.arith = DotArithmetic::FmaChain;
  const int P = 70, S = 40, x = 15, V = m.config().vocab_size;
  const auto tokens = random_tokens(P + S + 1, V, 9);
  RunSpec sparse{"sparse", DecodeMode::Resa, cfg({1, 4}, 0)}, resa{"resa", DecodeMode::Resa, cfg({1, 4}, 4)};
  sparse.start = resa.start = P + S - x;
  Lockstep<bf16> late(m, {sparse, resa}, P + S, sc);
  late.prefill(std::vector<int32_t>(tokens.begin(), tokens.begin() + P));
  sparse.start = resa.start = 0;
  Lockstep<bf16> early(m, {sparse, resa}, P + S, sc);
  early.prefill(std::vector<int32_t>(tokens.begin(), tokens.begin() + (P + S - x)));
  for (int s = 0; s < S; ++s) {
    const int32_t tok = tokens[static_cast<size_t>(P + s)], target = tokens[static_cast<size_t>(P + s + 1)];
    late.step(tok);
    const bool before = s < S - x;
    if (!before) early.step(tok);
    for (int r = 1; r <= 2; ++r) {
      SCOPED_TRACE("step " + std::to_string(s) + " run " + std::to_string(r));
      EXPECT_EQ(late.follows_dense(r), before);
      const StepMetrics ml = analysis::step_metrics(late, r, tok, target);
      if (before) {  // no work of its own yet: an empty cache, and dense's observation
        EXPECT_EQ(late.engine(r).cache(0).length[0], 0);
        EXPECT_EQ(late.observation(r).logits, late.observation(0).logits);
        continue;
      }
      EXPECT_EQ(late.engine(r).cache(0).length[0], late.length());  // forked from dense's cache, then decoded
      const StepMetrics me = analysis::step_metrics(early, r, tok, target);
      EXPECT_EQ(late.observation(r).logits, early.observation(r).logits);
      EXPECT_EQ(ml.k_err, me.k_err);
      EXPECT_EQ(ml.recall, me.recall);
      EXPECT_EQ(ml.top_mass, me.top_mass);
      EXPECT_EQ(ml.nll, me.nll);
      EXPECT_EQ(ml.top3_hit, me.top3_hit);
      EXPECT_EQ(late.observation(r).report.rectified, early.observation(r).report.rectified);
    }
  }
  // A start inside the prompt or beyond the cache is refused, naming the run.
  sparse.start = 10;
  Lockstep<bf16> bad(m, {sparse}, P + S, sc);
  try {
    bad.prefill(std::vector<int32_t>(tokens.begin(), tokens.begin() + P));
    ADD_FAILURE() << "start inside the prompt accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("run sparse starts at position 10"), std::string::npos) << e.what();
  }
}

TEST(Metrics, TopBlockMassOfKnownWeights) {
  // 10 blocks of 16: uniform weights put exactly 1/10 of the mass in the top block.
  EXPECT_DOUBLE_EQ(top_block_mass(std::vector<double>(160, 1.0), 160, 16), 0.1);
  // All mass in one position: the top block holds all of it.
  std::vector<double> w(160, 0.0);
  w[77] = 3.0;
  EXPECT_DOUBLE_EQ(top_block_mass(w, 160, 16), 1.0);
  // 11 blocks (the last one partial): the top ceil(1.1) = 2 blocks; blocks 0 and 10 carry 2 and 1.
  std::vector<double> v(161, 0.0);
  v[0] = 2.0, v[160] = 1.0, v[40] = 0.5;
  EXPECT_DOUBLE_EQ(top_block_mass(v, 161, 16), 3.0 / 3.5);
  EXPECT_THROW(top_block_mass(v, 200, 16), InvalidArgument);  // fewer weights than positions
  // 30 blocks: exactly 3 of them (exact integers, no float rounding of 0.1 * 30).
  std::vector<double> u(480, 0.0);
  for (int blk = 0; blk < 4; ++blk) u[static_cast<size_t>(blk) * 16] = 1.0;
  EXPECT_DOUBLE_EQ(top_block_mass(u, 480, 16), 0.75);
}

TEST(Metrics, TopKHitCountsTiesForTheTargetAndNeverNaN) {
  const std::vector<float> l{5, 4, 4, 4, 1, std::nanf("")};
  EXPECT_TRUE(analysis::in_top_k(l.data(), 6, 0, 1));
  EXPECT_FALSE(analysis::in_top_k(l.data(), 6, 1, 1));
  EXPECT_TRUE(analysis::in_top_k(l.data(), 6, 3, 2));  // tied with two others: only one is larger
  EXPECT_FALSE(analysis::in_top_k(l.data(), 6, 4, 3));
  EXPECT_FALSE(analysis::in_top_k(l.data(), 6, 5, 6));  // a NaN logit is never a hit
}

TEST(Metrics, ZeroForIdenticalInputsAndCorrectOtherwise) {
  const std::vector<float> a{1, 2, 3}, b{1, 2, 3.5f};
  EXPECT_EQ(analysis::relative_error(a.data(), a.data(), 3), 0.0);
  EXPECT_NEAR(analysis::relative_error(b.data(), a.data(), 3), 0.5 / std::sqrt(14.0), 1e-12);
  EXPECT_EQ(analysis::kl_divergence(a.data(), a.data(), 3), 0.0);
  EXPECT_GT(analysis::kl_divergence(a.data(), b.data(), 3), 0.0);
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(analysis::nll(a.data(), 3, 0), lse - 1.0, 1e-12);
  const std::vector<float> z{0, 0};
  const std::vector<float> nz{0, 1};
  EXPECT_TRUE(std::isinf(analysis::relative_error(nz.data(), z.data(), 2)));
}

}  // namespace
}  // namespace resa::sim
