// tests/sim/test_qwen2.cpp — the Qwen2 model: logits against a plain fp64 forward of the same
// weights (tied and untied heads, bf16/fp16/fp32 weights, fp16/bf16 KV) with a derived tolerance;
// batch invariance (a token's K/V and logits are the same bits in a prefill chunk and in decode);
// HF checkpoint save/load round trips (single file, sharded; every dtype) and checkpoint errors;
// and the Hugging Face transformers fixture (skips until tests/fixtures/qwen2_tiny exists).
// Run: build/main/tests/sim/resa_sim_tests --gtest_filter='Qwen2*'
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "resa/controller.h"
#include "resa/sim/lockstep.h"
#include "resa/sim/qwen2.h"
#include "sim_test_util.h"

namespace resa::sim {
namespace {

namespace fs = std::filesystem;
using testing::logit_tolerance;
using testing::reference_logits_fp64;
using testing::temp_dir;

Qwen2Config small_config(bool tied) {
  Qwen2Config c;
  c.vocab_size = 96, c.hidden_size = 128, c.intermediate_size = 192, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 64, c.rope_theta = 50000.0;
  c.tie_word_embeddings = tied;
  return c;
}

// All-token logits of a dense prefill through the reference attention engine.
template <class T>
std::vector<float> model_logits(const Qwen2Model& m, const std::vector<int32_t>& tokens) {
  const AttentionShape shape = m.config().attention();
  CpuAttentionEngine<T> e(shape, make_schedule(shape), SparseConfig{}, m.config().num_hidden_layers,
                          static_cast<int>(tokens.size()));
  LayerAttention attn(e, Phase::Prefill, 0, static_cast<int>(tokens.size()));
  ForwardRequest req;
  req.logits = ForwardRequest::Logits::All;
  return m.forward(tokens.data(), 0, static_cast<int>(tokens.size()), attn, req).logits;
}

struct Check {
  double worst = 0, tol = 0;
  size_t at = 0;
};
Check compare(const std::vector<float>& got, const std::vector<double>& ref, double u, int layers) {
  double mx = 0;
  for (double r : ref) mx = std::max(mx, std::fabs(r));
  Check c;
  c.tol = logit_tolerance(u, layers, mx);
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(e <= c.worst)) c.worst = e, c.at = i;
  }
  return c;
}

TEST(Qwen2, MatchesThePlainFp64ForwardWithinTheDerivedTolerance) {
  for (bool tied : {false, true})
    for (WeightDType wd : {WeightDType::BF16, WeightDType::F16,
                           WeightDType::F32}) {
      const Qwen2Config c = small_config(tied);
      auto w = std::make_shared<Qwen2Weights>(make_synthetic_weights(c, 5, wd));
      const Qwen2Model m(w);
      const auto tokens = random_tokens(40, c.vocab_size, 9);
      const auto ref = reference_logits_fp64(*w, tokens);
      const Check f16 = compare(model_logits<fp16>(m, tokens), ref, 1.0 / 2048, c.num_hidden_layers);
      const Check b16 = compare(model_logits<bf16>(m, tokens), ref, 1.0 / 256, c.num_hidden_layers);
      SCOPED_TRACE(std::string(tied ? "tied" : "untied") + " weights " + weight_dtype_name(wd));
      std::printf("  %s %s weights: fp16 KV worst %.2e (tol %.2e), bf16 KV worst %.2e (tol %.2e)\n",
                  tied ? "tied" : "untied", weight_dtype_name(wd), f16.worst, f16.tol, b16.worst, b16.tol);
      EXPECT_LE(f16.worst, f16.tol) << "fp16 KV: worst logit error " << f16.worst << " at " << f16.at;
      EXPECT_LE(b16.worst, b16.tol) << "bf16 KV: worst logit error " << b16.worst << " at " << b16.at;
      EXPECT_GT(f16.worst, 0.0);  // the comparison is not vacuous
      EXPECT_LT(f16.worst, b16.worst * 2 + 1e-12);
    }
}

TEST(Qwen2, LinearAndNormAreBatchInvariant) {
  std::vector<float> w(37 * 53), x(7 * 53), b(37);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37f * static_cast<float>(i)) * 0.3f;
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.11f * static_cast<float>(i)) * 2.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.01f * static_cast<float>(i);
  std::vector<float> all(7 * 37), one(37);
  linear(x.data(), 7, 53, w.data(), b.data(), 37, all.data());
  for (int t = 0; t < 7; ++t) {
    linear(x.data() + t * 53, 1, 53, w.data(), b.data(), 37, one.data());
    for (int r = 0; r < 37; ++r) EXPECT_EQ(f32_bits(one[r]), f32_bits(all[t * 37 + r]));
  }
  std::vector<float> nw(53, 1.5f), na(7 * 53), n1(53);
  rms_norm(x.data(), 7, 53, nw.data(), 1e-6f, na.data());
  rms_norm(x.data() + 3 * 53, 1, 53, nw.data(), 1e-6f, n1.data());
  for (int i = 0; i < 53; ++i) EXPECT_EQ(f32_bits(n1[i]), f32_bits(na[3 * 53 + i]));
}

TEST(Qwen2, PrefillChunkAndTokenByTokenDecodeGiveTheSameBits) {
  const Qwen2Config c = synthetic_shape("tiny");
  const Qwen2Model m(std::make_shared<Qwen2Weights>(make_synthetic_weights(c, 2, WeightDType::BF16)));
  const int n = 70;
  const auto tokens = random_tokens(n, c.vocab_size, 4);
  const AttentionShape shape = c.attention();
  const Schedule s = make_schedule(shape);
  CpuAttentionEngine<bf16> chunk(shape, s, SparseConfig{}, c.num_hidden_layers, n), step(shape, s, SparseConfig{}, c.num_hidden_layers, n);
  LayerAttention attn(chunk, Phase::Prefill, 0, n);
  ForwardRequest all;
  all.logits = ForwardRequest::Logits::All;
  const auto logits_chunk = m.forward(tokens.data(), 0, n, attn, all).logits;
  std::vector<float> last;
  ModelCallbacks cb{[&](int64_t p, int k, LayerAttention& a) { last = m.forward(tokens.data() + p, p, k, a).logits; }};
  ResaController ctrl(DecodeMode::Dense, SparseConfig{}, step, cb);
  ctrl.prefill(1);
  int mismatches = 0;
  for (int t = 1; t < n; ++t) {
    ctrl.decode_step();
    for (int v = 0; v < c.vocab_size; ++v)
      mismatches += f32_bits(last[static_cast<size_t>(v)]) != f32_bits(logits_chunk[static_cast<size_t>(t) * c.vocab_size + v]);
  }
  EXPECT_EQ(mismatches, 0);
  for (int l = 0; l < c.num_hidden_layers; ++l)
    for (size_t i = 0; i < chunk.cache(l).k.size(); ++i) {
      ASSERT_EQ(chunk.cache(l).k[i].bits, step.cache(l).k[i].bits) << "layer " << l << " K element " << i;
      ASSERT_EQ(chunk.cache(l).v[i].bits, step.cache(l).v[i].bits) << "layer " << l << " V element " << i;
    }
}

TEST(Qwen2, CheckpointRoundTripsSingleAndSharded) {
  struct Case {
    WeightDType wd;
    StDType st;
    int shards;
    bool tied;
  };
  for (const Case& k : {Case{WeightDType::BF16, StDType::BF16, 1, false}, Case{WeightDType::F16, StDType::F16, 3, true},
                        Case{WeightDType::BF16, StDType::F32, 4, false}, Case{WeightDType::F32, StDType::F32, 1, true}}) {
    const Qwen2Config c = small_config(k.tied);
    const Qwen2Weights w = make_synthetic_weights(c, 8, k.wd);
    const fs::path dir = temp_dir("ckpt_" + std::to_string(static_cast<int>(k.st)) + "_" + std::to_string(k.shards));
    save_hf_checkpoint(w, dir.string(), k.st, k.shards);
    EXPECT_EQ(fs::exists(dir / "model.safetensors.index.json"), k.shards > 1);
    const Qwen2Weights r = load_hf_checkpoint(dir.string());
    EXPECT_EQ(r.cfg, c);
    EXPECT_EQ(r.embed, w.embed);
    EXPECT_EQ(r.lm_head, w.lm_head);
    EXPECT_EQ(r.final_norm, w.final_norm);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      EXPECT_EQ(r.layers[l].wq, w.layers[l].wq);
      EXPECT_EQ(r.layers[l].bk, w.layers[l].bk);
      EXPECT_EQ(r.layers[l].w_down, w.layers[l].w_down);
    }
  }
}

TEST(Qwen2, BadCheckpointsAreReportedByFileAndTensor) {
  const Qwen2Config c = small_config(false);
  const fs::path dir = temp_dir("bad_ckpt");
  save_hf_checkpoint(make_synthetic_weights(c, 1, WeightDType::BF16), dir.string(), StDType::BF16);
  auto msg = [&] {
    try {
      load_hf_checkpoint(dir.string());
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(msg(), "");
  const std::string good_cfg = c.to_json();
  auto with_cfg = [&](const std::string& text) { std::ofstream(dir / "config.json") << text; };
  with_cfg("{\"hidden_size\": 128");
  EXPECT_NE(msg().find("config.json"), std::string::npos);
  with_cfg(R"({"model_type":"llama","vocab_size":96,"hidden_size":128,"intermediate_size":192,"num_hidden_layers":2,"num_attention_heads":4})");
  EXPECT_NE(msg().find("not qwen2"), std::string::npos);
  with_cfg(R"({"vocab_size":96,"hidden_size":128,"intermediate_size":192,"num_hidden_layers":2,"num_attention_heads":4,"head_dim":48})");
  EXPECT_NE(msg().find("head_dim"), std::string::npos);
  with_cfg(R"({"vocab_size":96,"intermediate_size":192,"num_hidden_layers":2,"num_attention_heads":4})");
  EXPECT_NE(msg().find("missing \"hidden_size\""), std::string::npos);
  Qwen2Config wide = c;
  wide.intermediate_size = 200;  // the stored tensors are 192 wide
  with_cfg(wide.to_json());
  const std::string m = msg();
  EXPECT_NE(m.find("mlp.gate_proj.weight"), std::string::npos) << m;
  EXPECT_NE(m.find("expected [200, 128]"), std::string::npos) << m;
  with_cfg(good_cfg);
  fs::remove(dir / "model.safetensors");
  EXPECT_NE(msg().find("no model.safetensors"), std::string::npos);
  fs::remove(dir / "config.json");
  EXPECT_NE(msg().find("config.json"), std::string::npos);
  EXPECT_THROW(load_hf_checkpoint((dir / "absent").string()), InvalidArgument);
}

// A checkpoint folder against logits that transformers computed in float64 (eager attention) from
// the same bf16 weights, stored as logits_fp64 [n][vocab] in `logits_file`: our plain fp64 forward
// within fp32 rounding of theirs, the simulator's fp16/bf16-KV forward within the derived
// tolerance. Returns the simulator's bf16-KV logits [n][vocab].
std::vector<float> check_against_transformers(const fs::path& dir, const std::shared_ptr<Qwen2Weights>& w,
                                              const std::vector<int32_t>& tokens, const fs::path& logits_file) {
  const Qwen2Model m(w);
  const SafetensorsFile ref_file = SafetensorsFile::open(logits_file.string());
  const auto ref32 = ref_file.read_f32("logits_fp64",
                                       {static_cast<int64_t>(tokens.size()), static_cast<int64_t>(w->cfg.vocab_size)});
  const std::vector<double> ref(ref32.begin(), ref32.end());
  const auto ours64 = reference_logits_fp64(*w, tokens);
  double worst64 = 0, mx = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    worst64 = std::max(worst64, std::fabs(ours64[i] - ref[i])), mx = std::max(mx, std::fabs(ref[i]));
  EXPECT_LE(worst64, 1e-5 * (mx + 1)) << "plain fp64 forward vs transformers fp64 (fp32-rounded reference)";
  const Check f16 = compare(model_logits<fp16>(m, tokens), ref, 1.0 / 2048, w->cfg.num_hidden_layers);
  std::vector<float> logits_b16 = model_logits<bf16>(m, tokens);
  const Check b16 = compare(logits_b16, ref, 1.0 / 256, w->cfg.num_hidden_layers);
  std::printf("%s: fp64 forward vs transformers %.3g (limit %.3g); fp16 KV %.3g (tol %.3g); bf16 KV %.3g (tol %.3g)\n",
              dir.string().c_str(), worst64, 1e-5 * (mx + 1), f16.worst, f16.tol, b16.worst, b16.tol);
  EXPECT_LE(f16.worst, f16.tol) << "fp16 KV: worst " << f16.worst << " at " << f16.at;
  EXPECT_LE(b16.worst, b16.tol) << "bf16 KV: worst " << b16.worst << " at " << b16.at;
  return logits_b16;
}

// The transformers fixture (scripts/make_qwen2_fixture.py): per variant folder, config.json,
// model.safetensors (bf16 weights), input_ids.txt and reference_logits.safetensors.
TEST(Qwen2, MatchesTransformersFixture) {
  const fs::path root = RESA_QWEN2_FIXTURE_DIR;
  if (!fs::exists(root / "config.json"))
    GTEST_SKIP() << "fixture " << root.string() << " not present: run `python3 scripts/make_qwen2_fixture.py "
                 << "tests/fixtures/qwen2_tiny` on a machine with torch and transformers and commit its output";
  int variants = 0;
  for (const fs::path& dir : {root, root / "tied"}) {
    if (!fs::exists(dir / "config.json")) continue;
    ++variants;
    SCOPED_TRACE(dir.string());
    auto w = std::make_shared<Qwen2Weights>(load_hf_checkpoint(dir.string()));
    check_against_transformers(dir, w, read_token_ids((dir / "input_ids.txt").string(), w->cfg.vocab_size),
                               dir / "reference_logits.safetensors");
  }
  EXPECT_GT(variants, 0);
}

// The project's own trained model (models/resa-byte-qwen2, scripts/train_model.py): loaded with no
// conversion, checked as the fixture on the first 512 bytes of a held-out document, with the
// logits the training script recorded from transformers.
TEST(Qwen2, ProjectModelMatchesTransformers) {
  const fs::path dir = RESA_PROJECT_MODEL_DIR;
  ASSERT_TRUE(fs::exists(dir / "model.safetensors")) << dir.string() << " is part of the repository";
  auto w = std::make_shared<Qwen2Weights>(load_hf_checkpoint(dir.string()));
  const Qwen2Config& c = w->cfg;
  EXPECT_EQ(c.vocab_size, 257);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_GE(c.num_attention_heads / c.num_key_value_heads, 4);
  EXPECT_TRUE(c.tie_word_embeddings);
  const auto tokens = read_token_ids((dir / "reference_input_ids.txt").string(), c.vocab_size);
  ASSERT_EQ(tokens.size(), 512u);
  // A trained model, not noise: our simulator's greedy next byte (bf16 KV cache, as the main job
  // runs it) is right most of the time on this text.
  const std::vector<float> ours = check_against_transformers(dir, w, tokens, dir / "reference_logits.safetensors");
  int hits = 0;
  for (size_t t = 0; t + 1 < tokens.size(); ++t) {
    const float* row = ours.data() + t * c.vocab_size;
    hits += std::max_element(row, row + c.vocab_size) - row == tokens[t + 1];
  }
  EXPECT_GT(hits, 0.5 * static_cast<double>(tokens.size()));
}

}  // namespace
}  // namespace resa::sim
