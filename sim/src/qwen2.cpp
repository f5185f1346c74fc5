// qwen2.cpp — Qwen2 decoder: config, synthetic weights, HF checkpoint load/save, batch-invariant
// forward pass (see qwen2.h for the invariance argument).
#include "resa/sim/qwen2.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "resa/numerics.h"
#include "resa/sim/json.h"

namespace resa::sim {

const char* weight_dtype_name(WeightDType t) {
  switch (t) {
    case WeightDType::F32: return "fp32";
    case WeightDType::F16: return "fp16";
    case WeightDType::BF16: return "bf16";
  }
  return "?";
}
WeightDType parse_weight_dtype(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return WeightDType::F32;
  if (s == "fp16" || s == "f16" || s == "float16") return WeightDType::F16;
  if (s == "bf16" || s == "bfloat16") return WeightDType::BF16;
  throw InvalidArgument("weight dtype \"" + s + "\": unknown (use bf16, fp16 or fp32)");
}

// ------------------------------------------------------------------------------------ config
void Qwen2Config::validate(const std::string& what) const {
  auto positive = [&](int v, const char* name) {
    if (v < 1) throw InvalidArgument(what + ": " + name + " = " + std::to_string(v) + " must be >= 1");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps))
    throw InvalidArgument(what + ": rms_norm_eps must be a positive number");
  if (!(rope_theta > 1) || !std::isfinite(rope_theta))
    throw InvalidArgument(what + ": rope_theta must be a finite number > 1");
  try {
    attention().validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(what + ": attention shape not supported by the reference kernels: " + e.what());
  }
}

Qwen2Config Qwen2Config::from_json(const std::string& text, const std::string& what) {
  const Json j = Json::parse(text, what);
  j.as_object(what);
  Qwen2Config c;
  auto get_int = [&](const char* key, bool required, int def) {
    const Json* v = j.find(key);
    if (!v || v->is_null()) {
      if (required) throw InvalidArgument(what + ": missing \"" + key + "\"");
      return def;
    }
    const int64_t x = v->as_int(what + ": \"" + key + "\"");
    if (x < -(1ll << 31) || x > (1ll << 31) - 1) throw InvalidArgument(what + ": \"" + key + "\" out of range");
    return static_cast<int>(x);
  };
  if (const Json* mt = j.find("model_type"); mt && mt->as_string(what + ": model_type") != "qwen2")
    throw InvalidArgument(what + ": model_type \"" + mt->as_string("") + "\" is not qwen2");
  if (const Json* act = j.find("hidden_act"); act && act->as_string(what + ": hidden_act") != "silu")
    throw InvalidArgument(what + ": hidden_act \"" + act->as_string("") + "\" unsupported (only silu)");
  if (const Json* rs = j.find("rope_scaling"); rs && !rs->is_null())
    throw InvalidArgument(what + ": rope_scaling is not supported (must be null)");
  if (const Json* sw = j.find("use_sliding_window"); sw && sw->as_bool(what + ": use_sliding_window"))
    throw InvalidArgument(what + ": use_sliding_window = true is not supported");
  c.vocab_size = get_int("vocab_size", true, 0);
  c.hidden_size = get_int("hidden_size", true, 0);
  c.intermediate_size = get_int("intermediate_size", true, 0);
  c.num_hidden_layers = get_int("num_hidden_layers", true, 0);
  c.num_attention_heads = get_int("num_attention_heads", true, 0);
  c.num_key_value_heads = get_int("num_key_value_heads", false, c.num_attention_heads);
  if (c.num_attention_heads < 1) throw InvalidArgument(what + ": num_attention_heads must be >= 1");
  c.head_dim = get_int("head_dim", false, c.hidden_size / c.num_attention_heads);
  if (const Json* v = j.find("rms_norm_eps")) c.rms_norm_eps = v->as_double(what + ": rms_norm_eps");
  if (const Json* v = j.find("rope_theta")) c.rope_theta = v->as_double(what + ": rope_theta");
  // transformers >= 5 writes RoPE settings as "rope_parameters": {"rope_type", "rope_theta"}.
  if (const Json* rp = j.find("rope_parameters"); rp && !rp->is_null()) {
    if (!rp->is_object()) throw InvalidArgument(what + ": rope_parameters must be an object");
    if (const Json* t = rp->find("rope_type"); t && t->as_string(what + ": rope_parameters.rope_type") != "default")
      throw InvalidArgument(what + ": rope_parameters.rope_type \"" + t->as_string("") +
                            "\" is not supported (only default)");
    if (const Json* v = rp->find("rope_theta")) {
      const double theta = v->as_double(what + ": rope_parameters.rope_theta");
      if (j.find("rope_theta") && theta != c.rope_theta)
        throw InvalidArgument(what + ": rope_theta and rope_parameters.rope_theta disagree");
      c.rope_theta = theta;
    }
  }
  if (const Json* lt = j.find("layer_types"); lt && !lt->is_null()) {
    const std::vector<Json>& types = lt->as_array(what + ": layer_types");
    for (size_t i = 0; i < types.size(); ++i)
      if (types[i].as_string(what + ": layer_types") != "full_attention")
        throw InvalidArgument(what + ": layer_types[" + std::to_string(i) + "] = \"" + types[i].as_string("") +
                              "\" is not supported (only full_attention)");
  }
  if (const Json* v = j.find("tie_word_embeddings")) c.tie_word_embeddings = v->as_bool(what + ": tie_word_embeddings");
  c.validate(what);
  return c;
}

std::string Qwen2Config::to_json() const {
  std::ostringstream os;
  os.precision(17);
  os << "{\n  \"architectures\": [\"Qwen2ForCausalLM\"],\n  \"model_type\": \"qwen2\",\n"
     << "  \"hidden_act\": \"silu\",\n  \"vocab_size\": " << vocab_size << ",\n  \"hidden_size\": " << hidden_size
     << ",\n  \"intermediate_size\": " << intermediate_size << ",\n  \"num_hidden_layers\": " << num_hidden_layers
     << ",\n  \"num_attention_heads\": " << num_attention_heads << ",\n  \"num_key_value_heads\": "
     << num_key_value_heads << ",\n  \"head_dim\": " << head_dim << ",\n  \"rms_norm_eps\": " << rms_norm_eps
     << ",\n  \"rope_theta\": " << rope_theta << ",\n  \"rope_scaling\": null,\n  \"use_sliding_window\": false,\n"
     << "  \"max_position_embeddings\": 32768,\n  \"tie_word_embeddings\": " << (tie_word_embeddings ? "true" : "false")
     << "\n}\n";
  return os.str();
}

std::string Qwen2Config::str() const {
  std::ostringstream os;
  os << "layers=" << num_hidden_layers << " hidden=" << hidden_size << " mlp=" << intermediate_size
     << " vocab=" << vocab_size << " " << attention().str() << " rope_theta=" << rope_theta
     << (tie_word_embeddings ? " tied" : " untied");
  return os.str();
}

std::vector<std::string> synthetic_shape_names() { return {"tiny", "r1-qwen-1.5b-attn", "r1-qwen-7b-attn"}; }
bool is_synthetic_shape(const std::string& name) {
  for (const auto& n : synthetic_shape_names())
    if (n == name) return true;
  return false;
}
Qwen2Config synthetic_shape(const std::string& name) {
  Qwen2Config c;
  if (name == "tiny") {
    c.vocab_size = 256, c.hidden_size = 256, c.intermediate_size = 512, c.num_hidden_layers = 4;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 64;
  } else if (name == "r1-qwen-1.5b-attn") {
    c.vocab_size = 256, c.hidden_size = 1536, c.intermediate_size = 1536, c.num_hidden_layers = 28;
    c.num_attention_heads = 12, c.num_key_value_heads = 2, c.head_dim = 128;
  } else if (name == "r1-qwen-7b-attn") {
    c.vocab_size = 256, c.hidden_size = 3584, c.intermediate_size = 3584, c.num_hidden_layers = 28;
    c.num_attention_heads = 28, c.num_key_value_heads = 4, c.head_dim = 128;
  } else {
    std::string names;
    for (const auto& n : synthetic_shape_names()) names += (names.empty() ? "" : ", ") + n;
    throw InvalidArgument("model \"" + name + "\": not a synthetic shape (" + names +
                          ") and not a checkpoint folder");
  }
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-6;
  return c;
}

// ---------------------------------------------------------------------------- synthetic
namespace {
struct Gaussian {  // splitmix64 + Box-Muller: the same numbers on every platform
  uint64_t s;
  bool have = false;
  double spare = 0;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double operator()() {
    if (have) {
      have = false;
      return spare;
    }
    const double u = uniform(), v = uniform();
    const double r = std::sqrt(-2.0 * std::log(u)), t = 6.283185307179586 * v;
    spare = r * std::sin(t);
    have = true;
    return r * std::cos(t);
  }
};
float round_weight(double x, WeightDType t) {
  const float f = static_cast<float>(x);
  switch (t) {
    case WeightDType::F32: return f;
    case WeightDType::F16: return round_through<fp16>(f);
    case WeightDType::BF16: return round_through<bf16>(f);
  }
  return f;
}
}  // namespace

Qwen2Weights make_synthetic_weights(const Qwen2Config& cfg, uint64_t seed, WeightDType dtype) {
  cfg.validate("synthetic model");
  Qwen2Weights w;
  w.cfg = cfg;
  w.dtype = dtype;
  w.source = "synthetic seed=" + std::to_string(seed) + " " + weight_dtype_name(dtype);
  Gaussian g{seed * 0x2545f4914f6cdd1dull + 1};
  auto fill = [&](size_t n, double mean, double std) {
    std::vector<float> v(n);
    for (auto& x : v) x = round_weight(mean + std * g(), dtype);
    return v;
  };
  const size_t H = static_cast<size_t>(cfg.hidden_size), I = static_cast<size_t>(cfg.intermediate_size);
  const size_t Q = static_cast<size_t>(cfg.q_dim()), KV = static_cast<size_t>(cfg.kv_dim());
  const double sh = 1.0 / std::sqrt(static_cast<double>(H));
  w.embed = fill(static_cast<size_t>(cfg.vocab_size) * H, 0.0, 1.0);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    Qwen2Layer L;
    L.input_norm = fill(H, 1.0, 0.1);
    L.wq = fill(Q * H, 0.0, 1.5 * sh);
    L.bq = fill(Q, 0.0, 0.3);
    L.wk = fill(KV * H, 0.0, 1.5 * sh);
    L.bk = fill(KV, 0.0, 0.5);
    L.wv = fill(KV * H, 0.0, sh);
    L.bv = fill(KV, 0.0, 0.1);
    L.wo = fill(H * Q, 0.0, 0.5 / std::sqrt(static_cast<double>(Q)));
    L.post_norm = fill(H, 1.0, 0.1);
    L.w_gate = fill(I * H, 0.0, sh);
    L.w_up = fill(I * H, 0.0, sh);
    L.w_down = fill(H * I, 0.0, 0.5 / std::sqrt(static_cast<double>(I)));
    w.layers.push_back(std::move(L));
  }
  w.final_norm = fill(H, 1.0, 0.1);
  if (!cfg.tie_word_embeddings) w.lm_head = fill(static_cast<size_t>(cfg.vocab_size) * H, 0.0, 2.0 * sh);
  return w;
}

// --------------------------------------------------------------------------- checkpoints
namespace {
std::string layer_name(int l, const char* rest) { return "model.layers." + std::to_string(l) + "." + rest; }
}  // namespace

Qwen2Weights load_hf_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InvalidArgument("model \"" + dir + "\": no such checkpoint folder");
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  std::ifstream in(cfg_path);
  if (!in) throw InvalidArgument(cfg_path + ": missing (a checkpoint folder needs config.json)");
  std::stringstream ss;
  ss << in.rdbuf();
  Qwen2Weights w;
  w.cfg = Qwen2Config::from_json(ss.str(), cfg_path);
  w.source = dir;
  const Checkpoint ck = Checkpoint::open(dir);
  const Qwen2Config& c = w.cfg;
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim(), V = c.vocab_size;
  const TensorInfo& e = ck.info("model.embed_tokens.weight");
  switch (e.dtype) {
    case StDType::F32: w.dtype = WeightDType::F32; break;
    case StDType::F16: w.dtype = WeightDType::F16; break;
    case StDType::BF16: w.dtype = WeightDType::BF16; break;
    default: throw InvalidArgument(dir + ": embedding dtype " + std::string(st_dtype_name(e.dtype)) +
                                   " unsupported (bf16, fp16 or fp32)");
  }
  w.embed = ck.read_f32("model.embed_tokens.weight", {V, H});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    Qwen2Layer L;
    L.input_norm = ck.read_f32(layer_name(l, "input_layernorm.weight"), {H});
    L.wq = ck.read_f32(layer_name(l, "self_attn.q_proj.weight"), {Q, H});
    L.bq = ck.read_f32(layer_name(l, "self_attn.q_proj.bias"), {Q});
    L.wk = ck.read_f32(layer_name(l, "self_attn.k_proj.weight"), {KV, H});
    L.bk = ck.read_f32(layer_name(l, "self_attn.k_proj.bias"), {KV});
    L.wv = ck.read_f32(layer_name(l, "self_attn.v_proj.weight"), {KV, H});
    L.bv = ck.read_f32(layer_name(l, "self_attn.v_proj.bias"), {KV});
    L.wo = ck.read_f32(layer_name(l, "self_attn.o_proj.weight"), {H, Q});
    L.post_norm = ck.read_f32(layer_name(l, "post_attention_layernorm.weight"), {H});
    L.w_gate = ck.read_f32(layer_name(l, "mlp.gate_proj.weight"), {I, H});
    L.w_up = ck.read_f32(layer_name(l, "mlp.up_proj.weight"), {I, H});
    L.w_down = ck.read_f32(layer_name(l, "mlp.down_proj.weight"), {H, I});
    w.layers.push_back(std::move(L));
  }
  w.final_norm = ck.read_f32("model.norm.weight", {H});
  if (!c.tie_word_embeddings) {
    if (!ck.has("lm_head.weight"))
      throw InvalidArgument(dir + ": tie_word_embeddings is false but the checkpoint has no lm_head.weight");
    w.lm_head = ck.read_f32("lm_head.weight", {V, H});
  }
  return w;
}

void save_hf_checkpoint(const Qwen2Weights& w, const std::string& dir, StDType dtype, int n_shards) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const Qwen2Config& c = w.cfg;
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim(), V = c.vocab_size;
  std::vector<TensorData> t;
  t.push_back(make_tensor("model.embed_tokens.weight", dtype, {V, H}, w.embed));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const Qwen2Layer& L = w.layers[l];
    t.push_back(make_tensor(layer_name(l, "input_layernorm.weight"), dtype, {H}, L.input_norm));
    t.push_back(make_tensor(layer_name(l, "self_attn.q_proj.weight"), dtype, {Q, H}, L.wq));
    t.push_back(make_tensor(layer_name(l, "self_attn.q_proj.bias"), dtype, {Q}, L.bq));
    t.push_back(make_tensor(layer_name(l, "self_attn.k_proj.weight"), dtype, {KV, H}, L.wk));
    t.push_back(make_tensor(layer_name(l, "self_attn.k_proj.bias"), dtype, {KV}, L.bk));
    t.push_back(make_tensor(layer_name(l, "self_attn.v_proj.weight"), dtype, {KV, H}, L.wv));
    t.push_back(make_tensor(layer_name(l, "self_attn.v_proj.bias"), dtype, {KV}, L.bv));
    t.push_back(make_tensor(layer_name(l, "self_attn.o_proj.weight"), dtype, {H, Q}, L.wo));
    t.push_back(make_tensor(layer_name(l, "post_attention_layernorm.weight"), dtype, {H}, L.post_norm));
    t.push_back(make_tensor(layer_name(l, "mlp.gate_proj.weight"), dtype, {I, H}, L.w_gate));
    t.push_back(make_tensor(layer_name(l, "mlp.up_proj.weight"), dtype, {I, H}, L.w_up));
    t.push_back(make_tensor(layer_name(l, "mlp.down_proj.weight"), dtype, {H, I}, L.w_down));
  }
  t.push_back(make_tensor("model.norm.weight", dtype, {H}, w.final_norm));
  if (!c.tie_word_embeddings) t.push_back(make_tensor("lm_head.weight", dtype, {V, H}, w.lm_head));
  {
    std::ofstream cfg((fs::path(dir) / "config.json").string());
    cfg << c.to_json();
    if (!cfg) throw std::runtime_error(dir + "/config.json: write error");
  }
  const std::map<std::string, std::string> meta{{"format", "pt"}};
  if (n_shards <= 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), t, meta);
    return;
  }
  std::string index = "{\n  \"metadata\": {},\n  \"weight_map\": {";
  const size_t per = (t.size() + static_cast<size_t>(n_shards) - 1) / static_cast<size_t>(n_shards);
  for (int s = 0; s < n_shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
    std::vector<TensorData> part;
    for (size_t i = s * per; i < std::min(t.size(), (s + 1) * per); ++i) {
      index += std::string(index.back() == '{' ? "" : ",") + "\n    " + json_quote(t[i].name) + ": " + json_quote(name);
      part.push_back(t[i]);
    }
    write_safetensors((fs::path(dir) / name).string(), part, meta);
  }
  index += "\n  }\n}\n";
  std::ofstream idx((fs::path(dir) / "model.safetensors.index.json").string());
  idx << index;
  if (!idx) throw std::runtime_error(dir + "/model.safetensors.index.json: write error");
}

// ------------------------------------------------------------------------------- forward
float dot_fixed(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int c = 0;
  for (; c + 8 <= n; c += 8)
    for (int j = 0; j < 8; ++j) acc[j] = acc[j] + a[c + j] * b[c + j];
  for (int j = 0; c + j < n; ++j) acc[j] = acc[j] + a[c + j] * b[c + j];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

void linear(const float* x, int n, int in, const float* w, const float* bias, int out, float* y) {
  const bool par = static_cast<int64_t>(n) * out * in > (1 << 20);  // threads only pay off on big products
#pragma omp parallel for schedule(static) if (par)
  for (int r = 0; r < out; ++r) {
    const float* wr = w + static_cast<size_t>(r) * in;
    for (int t = 0; t < n; ++t) {
      const float s = dot_fixed(wr, x + static_cast<size_t>(t) * in, in);
      y[static_cast<size_t>(t) * out + r] = bias ? s + bias[r] : s;
    }
  }
}

void rms_norm(const float* x, int n, int dim, const float* weight, float eps, float* y) {
  for (int t = 0; t < n; ++t) {
    const float* xr = x + static_cast<size_t>(t) * dim;
    float* yr = y + static_cast<size_t>(t) * dim;
    const float var = dot_fixed(xr, xr, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int c = 0; c < dim; ++c) yr[c] = weight[c] * (xr[c] * inv);
  }
}

Qwen2Model::Qwen2Model(std::shared_ptr<const Qwen2Weights> w) : w_(std::move(w)) {
  if (!w_) throw InvalidArgument("Qwen2Model: no weights");
  w_->cfg.validate("Qwen2Model");
  const int d = w_->cfg.head_dim;
  // transformers: inv_freq = 1 / (theta ** (arange(0, d, 2).float() / d)) in fp32.
  for (int i = 0; i < d / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(d);
    const float p = static_cast<float>(std::pow(w_->cfg.rope_theta, static_cast<double>(e)));
    inv_freq_.push_back(1.0f / p);
  }
}

ForwardResult Qwen2Model::forward(const int32_t* tokens, int64_t first_pos, int n, LayerAttention& attn,
                                  const ForwardRequest& req) const {
  const Qwen2Config& c = w_->cfg;
  const int H = c.hidden_size, I = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim(), d = c.head_dim;
  const int hq = c.num_attention_heads, hkv = c.num_key_value_heads, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const bool rectify = attn.phase() == Phase::Rectify;
  const size_t N = static_cast<size_t>(n);
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw InvalidArgument("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(first_pos + i) +
                            " outside the vocabulary [0, " + std::to_string(V) + ")");
  std::vector<float> h(N * H), x(N * H), q(N * Q), k(N * KV), v(N * KV), o(N * Q), proj(N * H);
  std::vector<float> gate(N * I), up(N * I);
  for (int i = 0; i < n; ++i)
    std::copy_n(w_->embed.data() + static_cast<size_t>(tokens[i]) * H, H, h.data() + static_cast<size_t>(i) * H);
  // RoPE tables [n][d/2]: angle = fp32(pos * inv_freq), as transformers computes it.
  std::vector<float> cosv(N * (d / 2)), sinv(N * (d / 2));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d / 2; ++j) {
      const float ang = static_cast<float>(first_pos + i) * inv_freq_[j];
      cosv[static_cast<size_t>(i) * (d / 2) + j] = static_cast<float>(std::cos(static_cast<double>(ang)));
      sinv[static_cast<size_t>(i) * (d / 2) + j] = static_cast<float>(std::sin(static_cast<double>(ang)));
    }
  auto rope = [&](float* rows, int heads) {
    for (int i = 0; i < n; ++i)
      for (int hh = 0; hh < heads; ++hh) {
        float* r = rows + (static_cast<size_t>(i) * heads + hh) * d;
        const float* cs = cosv.data() + static_cast<size_t>(i) * (d / 2);
        const float* sn = sinv.data() + static_cast<size_t>(i) * (d / 2);
        for (int j = 0; j < d / 2; ++j) {
          const float a = r[j], b = r[j + d / 2];
          r[j] = a * cs[j] - b * sn[j];
          r[j + d / 2] = b * cs[j] + a * sn[j];
        }
      }
  };
  ForwardResult res;
  if (req.trace) {
    res.attn_out.assign(static_cast<size_t>(c.num_hidden_layers) * Q, 0.0f);
    res.q.assign(static_cast<size_t>(c.num_hidden_layers) * Q, 0.0f);
    res.hidden.assign(static_cast<size_t>(c.num_hidden_layers) * H, 0.0f);
  }
  const size_t last = N - 1;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const Qwen2Layer& L = w_->layers[l];
    rms_norm(h.data(), n, H, L.input_norm.data(), eps, x.data());
    linear(x.data(), n, H, L.wq.data(), L.bq.data(), Q, q.data());
    linear(x.data(), n, H, L.wk.data(), L.bk.data(), KV, k.data());
    linear(x.data(), n, H, L.wv.data(), L.bv.data(), KV, v.data());
    rope(q.data(), hq);
    rope(k.data(), hkv);
    attn.attend(l, q.data(), k.data(), v.data(), o.data());
    if (req.after_attention) req.after_attention(l, attn, q.data());
    if (req.trace) {
      std::copy_n(o.data() + last * Q, Q, res.attn_out.data() + static_cast<size_t>(l) * Q);
      std::copy_n(q.data() + last * Q, Q, res.q.data() + static_cast<size_t>(l) * Q);
    }
    if (rectify && l == c.num_hidden_layers - 1) return res;  // only K/V are consumed later
    linear(o.data(), n, Q, L.wo.data(), nullptr, H, proj.data());
    for (size_t i = 0; i < h.size(); ++i) h[i] = h[i] + proj[i];
    rms_norm(h.data(), n, H, L.post_norm.data(), eps, x.data());
    linear(x.data(), n, H, L.w_gate.data(), nullptr, I, gate.data());
    linear(x.data(), n, H, L.w_up.data(), nullptr, I, up.data());
    for (size_t i = 0; i < gate.size(); ++i) {
      const float g = gate[i];
      gate[i] = (g / (1.0f + std::exp(-g))) * up[i];
    }
    linear(gate.data(), n, I, L.w_down.data(), nullptr, H, proj.data());
    for (size_t i = 0; i < h.size(); ++i) h[i] = h[i] + proj[i];
    if (req.trace) std::copy_n(h.data() + last * H, H, res.hidden.data() + static_cast<size_t>(l) * H);
  }
  if (rectify || req.logits == ForwardRequest::Logits::None) return res;
  const bool all = req.logits == ForwardRequest::Logits::All;
  const int rows = all ? n : 1;
  const float* src = h.data() + (all ? 0 : last * H);
  std::vector<float> xn(static_cast<size_t>(rows) * H);
  rms_norm(src, rows, H, w_->final_norm.data(), eps, xn.data());
  res.logits.assign(static_cast<size_t>(rows) * V, 0.0f);
  linear(xn.data(), rows, H, w_->head(), nullptr, V, res.logits.data());
  (void)d;
  return res;
}

}  // namespace resa::sim
