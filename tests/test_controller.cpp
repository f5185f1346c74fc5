// tests/test_controller.cpp — the ReSA controller with a toy multi-layer model whose K/V depend on
// earlier layers' attention outputs, so sparse errors reach the cache. Dense is ground truth:
// right after each rectification the ReSA cache equals the dense cache bit for bit; f = 1 keeps it
// equal after every step; ratio = 1 never differs; f = 0 never rectifies.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "resa/controller.h"
#include "resa/selection.h"
#include "test_util.h"

namespace resa {
namespace {

// y = tanh(W x) with a fixed random W; a token's row is the same whatever else is computed.
struct ToyModel {
  AttentionShape shape{4, 2, 64};
  int n_layers = 3;
  int dim;  // hidden = Hq * d
  std::vector<std::vector<float>> wq, wk, wv;
  std::vector<int> tokens;

  explicit ToyModel(uint64_t seed, int n_tokens) {
    dim = shape.n_q_heads * shape.head_dim;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f / std::sqrt(static_cast<float>(dim)));
    auto mat = [&](int rows) {
      std::vector<float> m(static_cast<size_t>(rows) * dim);
      for (auto& x : m) x = 3.0f * n(rng);
      return m;
    };
    for (int l = 0; l < n_layers; ++l) {
      wq.push_back(mat(dim));
      wk.push_back(mat(shape.n_kv_heads * shape.head_dim));
      wv.push_back(mat(shape.n_kv_heads * shape.head_dim));
    }
    std::uniform_int_distribution<int> tok(0, 255);
    for (int i = 0; i < n_tokens; ++i) tokens.push_back(tok(rng));
  }
  static void project(const std::vector<float>& w, const float* x, int dim, float* y, int rows) {
    for (int r = 0; r < rows; ++r) {
      double acc = 0;
      for (int c = 0; c < dim; ++c) acc += static_cast<double>(w[static_cast<size_t>(r) * dim + c]) * x[c];
      y[r] = static_cast<float>(std::tanh(acc));
    }
  }
  void forward(int64_t first_pos, int n, LayerAttention& attn) {
    const int kv = shape.n_kv_heads * shape.head_dim;
    std::vector<float> h(static_cast<size_t>(n) * dim), q(h.size()), k(static_cast<size_t>(n) * kv),
        v(k.size()), out(h.size());
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < dim; ++c)
        h[static_cast<size_t>(i) * dim + c] = std::sin(0.37f * tokens[first_pos + i] + 0.11f * c);
    for (int l = 0; l < n_layers; ++l) {
      for (int i = 0; i < n; ++i) {
        const float* x = h.data() + static_cast<size_t>(i) * dim;
        project(wq[l], x, dim, q.data() + static_cast<size_t>(i) * dim, dim);
        project(wk[l], x, dim, k.data() + static_cast<size_t>(i) * kv, kv);
        project(wv[l], x, dim, v.data() + static_cast<size_t>(i) * kv, kv);
      }
      attn.attend(l, q.data(), k.data(), v.data(), out.data());
      for (size_t i = 0; i < h.size(); ++i) h[i] += out[i];
    }
  }
};

template <class T>
bool caches_equal(const CpuAttentionEngine<T>& a, const CpuAttentionEngine<T>& b, int n_layers, int64_t length) {
  for (int l = 0; l < n_layers; ++l) {
    const KvCache<T>& ca = a.cache(l);
    const KvCache<T>& cb = b.cache(l);
    for (int h = 0; h < ca.n_kv_heads; ++h)
      for (int64_t p = 0; p < length; ++p)
        for (int c = 0; c < ca.head_dim; ++c)
          if (ca.key(0, h, p)[c].bits != cb.key(0, h, p)[c].bits ||
              ca.value(0, h, p)[c].bits != cb.value(0, h, p)[c].bits)
            return false;
  }
  return true;
}

template <class T>
bool descriptors_are_rebuilt(const CpuAttentionEngine<T>& e, int n_layers, int block_size) {
  for (int l = 0; l < n_layers; ++l) {
    BlockDescriptors<T> fresh(e.cache(l), block_size);
    build_descriptors(e.cache(l), fresh);
    const BlockDescriptors<T>& have = e.descriptors(l);
    const int64_t m = num_blocks(e.cache(l).length[0], block_size);
    for (int h = 0; h < have.n_kv_heads; ++h)
      for (int64_t blk = 0; blk < m; ++blk)
        for (int j = 0; j < have.head_dim; ++j) {
          const size_t o = have.offset(0, h, blk) + j;
          if (have.kmin[o].bits != fresh.kmin[o].bits || have.kmax[o].bits != fresh.kmax[o].bits) return false;
        }
  }
  return true;
}

struct LockstepResult {
  int rectified_steps = 0, equal_after_rectify = 0, differing_steps = 0, steps = 0;
  int equal_steps = 0;
  bool descriptors_ok = true;
};

template <class T>
LockstepResult lockstep(const SparseConfig& cfg, int prefill, int steps) {
  ToyModel model(42, prefill + steps);
  const Schedule sched = make_schedule(model.shape);
  const int cap = prefill + steps;
  CpuAttentionEngine<T> dense_engine(model.shape, sched, cfg, model.n_layers, cap);
  CpuAttentionEngine<T> resa_engine(model.shape, sched, cfg, model.n_layers, cap);
  ModelCallbacks cb{[&](int64_t p, int n, LayerAttention& a) { model.forward(p, n, a); }};
  ResaController dense(DecodeMode::Dense, cfg, dense_engine, cb);
  ResaController resa(DecodeMode::Resa, cfg, resa_engine, cb);
  dense.prefill(prefill);
  resa.prefill(prefill);
  LockstepResult r;
  for (int s = 0; s < steps; ++s) {
    dense.decode_step();
    const StepReport rep = resa.decode_step();
    ++r.steps;
    const bool equal = caches_equal(dense_engine, resa_engine, model.n_layers, resa.length());
    r.equal_steps += equal;
    r.differing_steps += !equal;
    if (rep.rectified) {
      ++r.rectified_steps;
      r.equal_after_rectify += equal;
      EXPECT_EQ(rep.rectify_end - rep.rectify_begin, cfg.rectify_every);
      EXPECT_EQ(rep.rectify_end, resa.length());
      EXPECT_LE(rep.refresh_end - rep.refresh_begin,
                (cfg.rectify_every + cfg.block_size - 1) / cfg.block_size + 1);
      r.descriptors_ok &= descriptors_are_rebuilt(resa_engine, model.n_layers, cfg.block_size);
    }
  }
  return r;
}

SparseConfig small_config(int f, Fraction ratio) {
  SparseConfig c;
  c.block_size = 4;
  c.ratio = ratio;
  c.n_min = 2;
  c.n_local = 1;
  c.rectify_every = f;
  return c;
}

TEST(Controller, RectificationRestoresTheDenseCacheBitForBit) {
  const LockstepResult r = lockstep<bf16>(small_config(8, Fraction{1, 8}), 48, 40);
  EXPECT_EQ(r.rectified_steps, 5);
  EXPECT_EQ(r.equal_after_rectify, r.rectified_steps);
  EXPECT_GT(r.differing_steps, 0) << "sparse decoding never changed the cache: the test is vacuous";
  EXPECT_TRUE(r.descriptors_ok);
}

TEST(Controller, RectifyEveryStepKeepsTheCacheDense) {
  const LockstepResult r = lockstep<fp16>(small_config(1, Fraction{1, 8}), 40, 25);
  EXPECT_EQ(r.rectified_steps, 25);
  EXPECT_EQ(r.equal_steps, r.steps);
  EXPECT_TRUE(r.descriptors_ok);
}

TEST(Controller, RatioOneNeverDiffersFromDense) {
  const LockstepResult r = lockstep<bf16>(small_config(0, Fraction{1, 1}), 30, 30);
  EXPECT_EQ(r.rectified_steps, 0);
  EXPECT_EQ(r.equal_steps, r.steps);
}

TEST(Controller, NoRectificationLetsTheCacheDrift) {
  const LockstepResult r = lockstep<bf16>(small_config(0, Fraction{1, 8}), 48, 30);
  EXPECT_EQ(r.rectified_steps, 0);
  EXPECT_GT(r.differing_steps, 20);
}

TEST(Controller, MisuseIsReportedClearly) {
  ToyModel model(1, 10);
  const SparseConfig cfg = small_config(4, Fraction{1, 4});
  CpuAttentionEngine<bf16> engine(model.shape, make_schedule(model.shape), cfg, model.n_layers, 10);
  ModelCallbacks cb{[&](int64_t p, int n, LayerAttention& a) { model.forward(p, n, a); }};
  ResaController c(DecodeMode::Resa, cfg, engine, cb);
  EXPECT_THROW(c.decode_step(), InvalidArgument);  // no prefill yet
  EXPECT_THROW(c.prefill(0), InvalidArgument);
  c.prefill(10);
  EXPECT_THROW(c.prefill(3), InvalidArgument);     // already prefilled
  EXPECT_THROW(c.decode_step(), InvalidArgument);  // cache full: capacity 10
  EXPECT_THROW(ResaController(DecodeMode::Resa, cfg, engine, ModelCallbacks{}), InvalidArgument);
}

}  // namespace
}  // namespace resa
