// resa/sim/qwen2.h — a Qwen2-architecture decoder on the CPU for the decode simulator.
//
// Per layer: RMSNorm -> Q/K/V projections with bias -> RoPE (GPT-NeoX halves, rope_theta) -> GQA
// attention through resa::LayerAttention (the reference kernels, DESIGN.md §3) -> output
// projection -> residual -> RMSNorm -> SwiGLU MLP -> residual; final RMSNorm and LM head (tied to
// the embedding or not). Activations are fp32; weights are stored as fp32 values that are exact
// copies of the checkpoint's bf16/fp16/fp32 numbers.
//
// Batch invariance: every linear output element is one dot product in a fixed order (8 lanes,
// fixed pairwise fold) that depends only on the input length, and every norm reduces one token
// row in a fixed order; OpenMP splits only independent outputs. A token's activations are
// therefore the same bits whether it runs alone (decode), in a rectification chunk or in a
// prefill — the property that lets rectification restore the dense cache exactly.
// Tested by tests/sim/test_qwen2.cpp (fp64 reference forward, batch invariance, checkpoints, HF
// transformers fixture).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "resa/controller.h"
#include "resa/schedule.h"
#include "resa/sim/safetensors.h"

namespace resa::sim {

enum class WeightDType { F32, F16, BF16 };
const char* weight_dtype_name(WeightDType t);
WeightDType parse_weight_dtype(const std::string& s);  // "fp32"/"f32"/"float32", "fp16", "bf16"

struct Qwen2Config {
  int vocab_size = 256;
  int hidden_size = 256;
  int intermediate_size = 512;
  int num_hidden_layers = 4;
  int num_attention_heads = 4;
  int num_key_value_heads = 2;
  int head_dim = 64;  // hidden_size / num_attention_heads unless config.json says otherwise
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;

  AttentionShape attention() const { return {num_attention_heads, num_key_value_heads, head_dim}; }
  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }
  // Throws InvalidArgument naming `what` and the field (sizes >= 1, supported attention shape).
  void validate(const std::string& what) const;
  // HF config.json: reads the Qwen2 fields (model_type must be "qwen2" when present); rejects
  // rope_scaling and sliding-window attention that this model does not implement.
  static Qwen2Config from_json(const std::string& text, const std::string& what);
  std::string to_json() const;  // a config.json transformers accepts
  std::string str() const;      // one line for logs
  friend bool operator==(const Qwen2Config&, const Qwen2Config&) = default;
};

// Named synthetic shapes: "tiny" (tests, default study), "r1-qwen-1.5b-attn" and
// "r1-qwen-7b-attn" (the attention shapes and depth of DeepSeek-R1-Distill-Qwen-1.5B / -7B with a
// narrow MLP and a 256-token byte vocabulary, so synthetic weights stay small).
std::vector<std::string> synthetic_shape_names();
bool is_synthetic_shape(const std::string& name);
Qwen2Config synthetic_shape(const std::string& name);  // throws InvalidArgument listing the names

struct Qwen2Layer {
  std::vector<float> input_norm;              // [hidden]
  std::vector<float> wq, bq, wk, bk, wv, bv;  // [out][hidden], [out]
  std::vector<float> wo;                      // [hidden][Hq*d]
  std::vector<float> post_norm;               // [hidden]
  std::vector<float> w_gate, w_up;            // [intermediate][hidden]
  std::vector<float> w_down;                  // [hidden][intermediate]
};

struct Qwen2Weights {
  Qwen2Config cfg;
  WeightDType dtype = WeightDType::BF16;
  std::string source;          // "synthetic:tiny seed=0 bf16" or the checkpoint folder
  std::vector<float> embed;    // [vocab][hidden]
  std::vector<float> final_norm;
  std::vector<float> lm_head;  // [vocab][hidden]; empty when tied
  std::vector<Qwen2Layer> layers;
  const float* head() const { return lm_head.empty() ? embed.data() : lm_head.data(); }
};

// Deterministic synthetic weights (portable generator: splitmix64 + Box-Muller), rounded to dtype.
// Scales are chosen so attention is peaked (q.k/sqrt(d) std ~2) and the residual stream stays O(1).
Qwen2Weights make_synthetic_weights(const Qwen2Config& cfg, uint64_t seed, WeightDType dtype);
// A Hugging Face checkpoint folder: config.json + model.safetensors or a sharded index.
// Every tensor is checked for presence, dtype and shape; errors name the file and tensor.
Qwen2Weights load_hf_checkpoint(const std::string& dir);
// Writes config.json and the weights in HF names (n_shards > 1: sharded with an index).
void save_hf_checkpoint(const Qwen2Weights& w, const std::string& dir, StDType dtype, int n_shards = 1);

// What a forward pass reports besides writing the cache.
struct ForwardRequest {
  // Logits: none, the last token's, or every token's ([n][vocab]).
  enum class Logits { None, Last, All } logits = Logits::Last;
  // Per-layer traces of the last token of the chunk: attention output [layers][Hq*d], residual
  // stream after the layer [layers][hidden], post-RoPE query [layers][Hq*d].
  bool trace = false;
  // Called right after each layer's attention (before anything else runs): q [n][Hq][d].
  std::function<void(int layer, const LayerAttention& attn, const float* q)> after_attention;
};
struct ForwardResult {
  std::vector<float> logits;
  std::vector<float> attn_out, hidden, q;
};

class Qwen2Model {
 public:
  explicit Qwen2Model(std::shared_ptr<const Qwen2Weights> w);
  const Qwen2Config& config() const { return w_->cfg; }
  const Qwen2Weights& weights() const { return *w_; }
  // Runs token ids tokens[0..n) at positions [first_pos, first_pos + n) through every layer; in
  // a Rectify phase the last layer stops after its attention (only K/V are needed) and no logits
  // are computed.
  ForwardResult forward(const int32_t* tokens, int64_t first_pos, int n, LayerAttention& attn,
                        const ForwardRequest& req = {}) const;

 private:
  std::shared_ptr<const Qwen2Weights> w_;
  std::vector<float> inv_freq_;  // [d/2], fp32 as transformers computes it
};

// Building blocks, exposed for the tests. y[t][r] = dot(W[r], x[t]) (+ b[r]); x [n][in], W [out][in].
void linear(const float* x, int n, int in, const float* w, const float* bias, int out, float* y);
// One fixed-order fp32 dot product (8 lanes, fixed pairwise fold): the only reduction used.
float dot_fixed(const float* a, const float* b, int n);
void rms_norm(const float* x, int n, int dim, const float* weight, float eps, float* y);

}  // namespace resa::sim
