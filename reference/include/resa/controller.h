// resa/controller.h — the ReSA controller: prefill, sparse decode steps, rectification every f
// steps and descriptor refresh, independent of any model (DESIGN.md §2).
//
// The model supplies two callbacks that run its layers; at each layer it calls
// LayerAttention::attend(layer, q, k, v, out) and the controller decides how attention runs
// (dense prefill, dense or sparse decode, dense rectification). The attention itself lives behind
// AttentionEngine: CpuAttentionEngine (reference kernels) here, a CUDA engine in cuda/.
// Tested by tests/test_controller.cpp with a toy model whose K/V depend on attention outputs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "resa/attention.h"
#include "resa/config.h"
#include "resa/kv_cache.h"
#include "resa/schedule.h"

namespace resa {

enum class Phase {
  Prefill,       // dense causal attention of a chunk of new tokens
  DenseDecode,   // one token, whole cache
  SparseDecode,  // one token, update descriptors, select, block-sparse attention
  Rectify,       // dense recomputation of the last f tokens' K/V, overwriting the cache
};
const char* phase_name(Phase p);

// Per-layer KV store and attention kernels of one sequence. All tensors are fp32 rows that the
// engine rounds to its KV dtype: q [n][Hq][d], k/v [n][Hkv][d], out [n][Hq][d].
class AttentionEngine {
 public:
  virtual ~AttentionEngine() = default;
  // Write K/V of positions [first_pos, first_pos + n) of `layer`, then attend those n queries
  // causally as `phase` says. Sets the cache length to first_pos + n if it grows.
  virtual void attend(Phase phase, int layer, int64_t first_pos, int n, const float* q,
                      const float* k, const float* v, float* out) = 0;
  // Rebuild descriptors of blocks [block_begin, block_end) in every layer.
  virtual void refresh_descriptors(int64_t block_begin, int64_t block_end) = 0;
};

// Handed to the model's callbacks: routes a layer's attention to the engine in the current phase.
class LayerAttention {
 public:
  LayerAttention(AttentionEngine& engine, Phase phase, int64_t first_pos, int n)
      : engine_(engine), phase_(phase), first_pos_(first_pos), n_(n) {}
  void attend(int layer, const float* q, const float* k, const float* v, float* out) {
    engine_.attend(phase_, layer, first_pos_, n_, q, k, v, out);
  }
  Phase phase() const { return phase_; }
  int64_t first_pos() const { return first_pos_; }
  int n_tokens() const { return n_; }

 private:
  AttentionEngine& engine_;
  Phase phase_;
  int64_t first_pos_;
  int n_;
};

// The model side. forward(first_pos, n, attn): run tokens [first_pos, first_pos + n) (their ids
// are the model's business) through all layers, calling attn.attend at each layer. During
// rectification the model may skip what only the last layer's output needs (DESIGN.md §2).
struct ModelCallbacks {
  std::function<void(int64_t first_pos, int n, LayerAttention& attn)> forward;
};

enum class DecodeMode { Dense, Resa };

struct StepReport {
  int64_t pos = 0;
  Phase phase = Phase::DenseDecode;
  bool rectified = false;          // a rectification ran after this step
  int64_t rectify_begin = 0, rectify_end = 0;
  int64_t refresh_begin = 0, refresh_end = 0;  // descriptor blocks refreshed
};

// Drives one sequence: prefill (dense), then one decode step at a time. In Resa mode every decode
// step is sparse (selection makes it dense while M <= n_min); after every f sparse steps the K/V
// of those f tokens are recomputed densely through all layers and the descriptors of the
// ceil(f/b)+1 blocks they touch are refreshed. f = 0 never rectifies.
class ResaController {
 public:
  ResaController(DecodeMode mode, const SparseConfig& cfg, AttentionEngine& engine,
                 ModelCallbacks model);
  void prefill(int64_t n_tokens);  // positions [0, n_tokens), dense
  // Take over an engine that already holds the dense prefill of positions [0, n_tokens) (copied
  // from another engine with CpuAttentionEngine::load_prefix), instead of running it again.
  void adopt_prefill(int64_t n_tokens);
  StepReport decode_step();        // the token at position length()
  int64_t length() const { return length_; }
  int64_t sparse_steps_since_rectify() const { return since_rectify_; }
  int64_t rectifications() const { return rectifications_; }

 private:
  DecodeMode mode_;
  SparseConfig cfg_;
  AttentionEngine& engine_;
  ModelCallbacks model_;
  int64_t length_ = 0, since_rectify_ = 0, rectifications_ = 0;
};

// Reference engine: per-layer KvCache + BlockDescriptors for one sequence, reference kernels.
template <class T>
class CpuAttentionEngine : public AttentionEngine {
 public:
  CpuAttentionEngine(const AttentionShape& shape, const Schedule& schedule, const SparseConfig& cfg,
                     int n_layers, int capacity);
  void attend(Phase phase, int layer, int64_t first_pos, int n, const float* q, const float* k,
              const float* v, float* out) override;
  void refresh_descriptors(int64_t block_begin, int64_t block_end) override;

  const KvCache<T>& cache(int layer) const { return caches_.at(layer); }
  const BlockDescriptors<T>& descriptors(int layer) const { return descs_.at(layer); }
  // Selection of the last sparse step of `layer` (for recall and cost metrics).
  const BlockSelection& last_selection(int layer) const { return last_sel_.at(layer); }
  // Copy K/V of positions [0, length) of every layer from `other` (same shape, layer count and
  // capacity; its block size may differ) and rebuild this engine's descriptors of those blocks:
  // the state a dense prefill of those positions leaves. Lets several runs share one prefill.
  void load_prefix(const CpuAttentionEngine& other, int64_t length);

 private:
  AttentionShape shape_;
  Schedule schedule_;
  SparseConfig cfg_;
  std::vector<KvCache<T>> caches_;
  std::vector<BlockDescriptors<T>> descs_;
  std::vector<BlockSelection> last_sel_;
};

}  // namespace resa
