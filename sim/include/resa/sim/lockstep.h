// resa/sim/lockstep.h — token streams and the lockstep runner: one Qwen2 model decoded in dense
// mode (ground truth, run 0) and any number of sparse / ReSA configurations beside it, on the
// same tokens, one decode step at a time. The prefill is computed once, densely, and copied to
// every run (CpuAttentionEngine::load_prefix), so all runs start from the same bits.
//
// At each decode step every run records what the metrics need at the moment attention runs
// (before a rectification rewrites the cache): logits, per-layer attention outputs and residual
// stream of the current token, the selection size, attention recall and bytes read.
// Tested by tests/sim/test_lockstep.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "resa/controller.h"
#include "resa/sim/qwen2.h"

namespace resa::sim {

// ------------------------------------------------------------------------------ tokens
// Whitespace- or comma-separated decimal token ids; every id must be in [0, vocab).
std::vector<int32_t> read_token_ids(const std::string& path, int vocab);
// The raw bytes of a file as token ids 0..255 (byte-level models; needs vocab >= 256).
std::vector<int32_t> read_text_bytes(const std::string& path, int vocab);
// n ids uniform in [0, vocab) from a seed (portable generator).
std::vector<int32_t> random_tokens(int64_t n, int vocab, uint64_t seed);
// Greedy choice: the first index of the largest logit (NaN never wins).
int32_t argmax_token(const float* logits, int vocab);

enum class KvDType { BF16, FP16 };
const char* kv_dtype_name(KvDType t);
KvDType parse_kv_dtype(const std::string& s);

// One non-dense configuration of a study.
struct RunSpec {
  std::string name;
  DecodeMode mode = DecodeMode::Resa;
  SparseConfig sparse;
  // Cache position of the first token this run decodes itself (0 = from the end of the prompt).
  // Until then the run follows dense: it computes nothing and reports dense's observations; at
  // `start` its cache is forked from dense's (positions [0, start)), as after a prefill. This is
  // the language-modelling protocol of the paper (§3.3): the first L - x tokens dense, the last x
  // sparse, with one dense pass shared by every x.
  int64_t start = 0;
  friend bool operator==(const RunSpec&, const RunSpec&) = default;
};

// Of the top ceil(M / 10) blocks of b tokens (exact integers) by attention mass, their share of
// the whole mass. weights: softmax weights (need not be normalized) of [0, L).
double top_block_mass(const std::vector<double>& weights, int64_t L, int b);

// What one run observed at one decode step.
struct StepObservation {
  StepReport report;
  std::vector<float> logits;       // [vocab], prediction of the next token
  std::vector<float> attn_out;     // [layers][Hq*d], current token
  std::vector<float> hidden;       // [layers][hidden], residual stream after each layer
  std::vector<double> recall;      // [layers][Hq]: share of the attention mass (softmax over the
                                   // whole cache of this run, fp64, q and K as the kernel reads
                                   // them) inside the blocks this run attended; 1 when dense
  std::vector<double> top_mass;    // [layers][Hq]: share of that same full attention mass held by
                                   // the top 10% of blocks (top_block_mass, b of this run)
  std::vector<int32_t> selected;   // [layers][Hkv]: blocks attended (M when dense)
  std::vector<double> bytes_read;  // [layers]: K/V + descriptor bytes read by attention this step,
                                   // plus the whole cache once when a rectification ran
};

template <class T>
class Lockstep {
 public:
  // runs: the non-dense configurations; run 0 of this object is dense. capacity = cache length.
  Lockstep(const Qwen2Model& model, std::vector<RunSpec> runs, int64_t capacity, const ScheduleConfig& sched);

  int n_runs() const { return static_cast<int>(runs_.size()); }  // dense included
  const RunSpec& spec(int r) const { return runs_[r]; }
  int64_t length() const { return length_; }

  // Dense prefill of the prompt (positions [0, n)), once, copied to every run. Returns the
  // logits of the last prompt token.
  std::vector<float> prefill(const std::vector<int32_t>& prompt);
  // One decode step of every run on `token` at position length(): dense first, then the others
  // (a run whose start lies ahead reports dense's observation).
  void step(int32_t token);
  // Run r has not reached its start yet: at the last step it reported dense's observation and its
  // own engine holds nothing.
  bool follows_dense(int r) const { return !active_[static_cast<size_t>(r)]; }
  const StepObservation& observation(int r) const { return obs_[r]; }
  const CpuAttentionEngine<T>& engine(int r) const { return *engines_[r]; }

 private:
  const Qwen2Model& model_;
  std::vector<RunSpec> runs_;
  AttentionShape shape_;
  Schedule sched_;
  std::vector<std::unique_ptr<CpuAttentionEngine<T>>> engines_;
  std::vector<std::unique_ptr<ResaController>> ctrls_;
  std::vector<StepObservation> obs_;
  std::vector<int32_t> tokens_;  // every token fed so far, by position
  std::vector<char> active_;     // per run: decoding on its own (its start reached)
  int current_run_ = 0;
  bool want_trace_ = false;
  int64_t length_ = 0;

  void observe_attention(int run, int layer, const LayerAttention& attn, const float* q);
  void fork_from_dense(int run, int64_t length);
};

extern template class Lockstep<bf16>;
extern template class Lockstep<fp16>;

}  // namespace resa::sim
