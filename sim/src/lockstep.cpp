// lockstep.cpp — token streams and the lockstep runner (see lockstep.h).
#include "resa/sim/lockstep.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "resa/attention.h"

namespace resa::sim {

std::vector<int32_t> read_token_ids(const std::string& path, int vocab) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument("token file " + path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == ',') {
      ++i;
      continue;
    }
    if (c < '0' || c > '9')
      throw InvalidArgument("token file " + path + ": byte " + std::to_string(i) + ": expected a token id, found '" +
                            std::string(1, c) + "'");
    int64_t v = 0;
    const size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      v = v * 10 + (text[i] - '0');
      if (v >= vocab)
        throw InvalidArgument("token file " + path + ": byte " + std::to_string(start) + ": token id " +
                              text.substr(start, i - start + 1) + "... outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
      ++i;
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

std::vector<int32_t> read_text_bytes(const std::string& path, int vocab) {
  if (vocab < 256)
    throw InvalidArgument("text file " + path + ": byte tokens need a vocabulary of at least 256 (model has " +
                          std::to_string(vocab) + ")");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument("text file " + path + ": cannot open");
  std::vector<int32_t> ids;
  char c;
  while (in.get(c)) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::vector<int32_t> random_tokens(int64_t n, int vocab, uint64_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
  for (auto& t : ids) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    t = static_cast<int32_t>(z % static_cast<uint64_t>(vocab));
  }
  return ids;
}

int32_t argmax_token(const float* logits, int vocab) {
  int32_t best = -1;
  for (int i = 0; i < vocab; ++i)
    if (!is_nan(logits[i]) && (best < 0 || logits[i] > logits[best])) best = i;
  return best < 0 ? 0 : best;
}

const char* kv_dtype_name(KvDType t) { return t == KvDType::BF16 ? "bf16" : "fp16"; }
KvDType parse_kv_dtype(const std::string& s) {
  if (s == "bf16" || s == "bfloat16") return KvDType::BF16;
  if (s == "fp16" || s == "f16" || s == "float16") return KvDType::FP16;
  throw InvalidArgument("KV dtype \"" + s + "\": unknown (use bf16 or fp16)");
}

template <class T>
Lockstep<T>::Lockstep(const Qwen2Model& model, std::vector<RunSpec> runs, int64_t capacity,
                      const ScheduleConfig& sched)
    : model_(model), shape_(model.config().attention()), sched_(make_schedule(model.config().attention(), sched)) {
  if (capacity < 2 || capacity > (1 << 30))
    throw InvalidArgument("lockstep: capacity " + std::to_string(capacity) + " must be in [2, 2^30]");
  RunSpec dense{"dense", DecodeMode::Dense, runs.empty() ? SparseConfig{} : runs[0].sparse};
  runs_.push_back(dense);
  for (auto& r : runs) runs_.push_back(std::move(r));
  const int n_layers = model.config().num_hidden_layers;
  for (size_t r = 0; r < runs_.size(); ++r) {
    runs_[r].sparse.validate();
    engines_.push_back(std::make_unique<CpuAttentionEngine<T>>(shape_, sched_, runs_[r].sparse, n_layers,
                                                               static_cast<int>(capacity)));
    const int ri = static_cast<int>(r);
    ModelCallbacks cb{[this, ri](int64_t first_pos, int n, LayerAttention& attn) {
      ForwardRequest req;
      const bool decode = attn.phase() == Phase::DenseDecode || attn.phase() == Phase::SparseDecode;
      req.logits = decode || attn.phase() == Phase::Prefill ? ForwardRequest::Logits::Last : ForwardRequest::Logits::None;
      req.trace = decode;
      if (decode)
        req.after_attention = [this, ri](int layer, const LayerAttention& a, const float* q) {
          observe_attention(ri, layer, a, q);
        };
      ForwardResult res = model_.forward(tokens_.data() + first_pos, first_pos, n, attn, req);
      if (decode || attn.phase() == Phase::Prefill) {
        StepObservation& o = obs_[ri];
        o.logits = std::move(res.logits);
        o.attn_out = std::move(res.attn_out);
        o.hidden = std::move(res.hidden);
      }
    }};
    ctrls_.push_back(std::make_unique<ResaController>(runs_[r].mode, runs_[r].sparse, *engines_[r], cb));
  }
  obs_.resize(runs_.size());
  active_.assign(runs_.size(), 0);
  active_[0] = 1;
}

template <class T>
std::vector<float> Lockstep<T>::prefill(const std::vector<int32_t>& prompt) {
  if (length_ != 0) throw InvalidArgument("lockstep: prefill twice");
  if (prompt.empty()) throw InvalidArgument("lockstep: empty prompt");
  if (static_cast<int64_t>(prompt.size()) >= engines_[0]->cache(0).capacity)
    throw InvalidArgument("lockstep: prompt of " + std::to_string(prompt.size()) +
                          " tokens leaves no room to decode in a cache of " +
                          std::to_string(engines_[0]->cache(0).capacity));
  const int64_t n = static_cast<int64_t>(prompt.size());
  for (size_t r = 1; r < runs_.size(); ++r)
    if (runs_[r].start != 0 && (runs_[r].start < n || runs_[r].start >= engines_[0]->cache(0).capacity))
      throw InvalidArgument("lockstep: run " + runs_[r].name + " starts at position " + std::to_string(runs_[r].start) +
                            ", outside [prompt length " + std::to_string(n) + ", cache capacity " +
                            std::to_string(engines_[0]->cache(0).capacity) + ")");
  tokens_ = prompt;
  ctrls_[0]->prefill(n);
  for (size_t r = 1; r < runs_.size(); ++r)
    if (runs_[r].start <= n) fork_from_dense(static_cast<int>(r), n);
  length_ = n;
  return obs_[0].logits;
}

template <class T>
void Lockstep<T>::fork_from_dense(int r, int64_t length) {
  engines_[r]->load_prefix(*engines_[0], length);
  ctrls_[r]->adopt_prefill(length);
  active_[static_cast<size_t>(r)] = 1;
}

template <class T>
void Lockstep<T>::step(int32_t token) {
  if (length_ == 0) throw InvalidArgument("lockstep: prefill first");
  if (length_ >= engines_[0]->cache(0).capacity)
    throw InvalidArgument("lockstep: the cache capacity " + std::to_string(engines_[0]->cache(0).capacity) +
                          " is reached");
  tokens_.push_back(token);
  const int n_layers = model_.config().num_hidden_layers;
  const int hq = shape_.n_q_heads, hkv = shape_.n_kv_heads;
  for (size_t r = 1; r < runs_.size(); ++r)
    if (!active_[r] && runs_[r].start == length_) fork_from_dense(static_cast<int>(r), length_);
  for (size_t r = 0; r < runs_.size(); ++r) {
    StepObservation& o = obs_[r];
    if (!active_[r]) {  // dense ran first this step: this run is dense until its start
      o = obs_[0];
      continue;
    }
    o.recall.assign(static_cast<size_t>(n_layers) * hq, 1.0);
    o.top_mass.assign(static_cast<size_t>(n_layers) * hq, 1.0);
    o.selected.assign(static_cast<size_t>(n_layers) * hkv, 0);
    o.bytes_read.assign(static_cast<size_t>(n_layers), 0.0);
    o.report = ctrls_[r]->decode_step();
    if (o.report.rectified) {
      const double cache_bytes = static_cast<double>(hkv) * static_cast<double>(length_ + 1) * 2.0 *
                                 shape_.head_dim * sizeof(T);
      for (auto& b : o.bytes_read) b += cache_bytes;
    }
  }
  ++length_;
}

double top_block_mass(const std::vector<double>& weights, int64_t L, int b) {
  if (L < 1 || b < 1 || static_cast<int64_t>(weights.size()) < L)
    throw InvalidArgument("top_block_mass: needs L >= 1 weights and b >= 1");
  const int64_t M = num_blocks(L, b);
  std::vector<double> mass(static_cast<size_t>(M), 0.0);
  double total = 0;
  for (int64_t p = 0; p < L; ++p) {
    mass[static_cast<size_t>(p / b)] += weights[static_cast<size_t>(p)];
    total += weights[static_cast<size_t>(p)];
  }
  const int64_t k = Fraction{1, 10}.ceil_times(M);  // >= 1 since M >= 1
  std::nth_element(mass.begin(), mass.begin() + (k - 1), mass.end(), std::greater<>());
  double top = 0;
  for (int64_t i = 0; i < k; ++i) top += mass[static_cast<size_t>(i)];
  return top / total;
}

template <class T>
void Lockstep<T>::observe_attention(int run, int layer, const LayerAttention& attn, const float* q) {
  const CpuAttentionEngine<T>& e = *engines_[run];
  const KvCache<T>& cache = e.cache(layer);
  const int64_t L = cache.length[0];
  const int d = shape_.head_dim, hq = shape_.n_q_heads, hkv = shape_.n_kv_heads, g = shape_.group();
  StepObservation& o = obs_[run];
  const int b = runs_[run].sparse.block_size;
  const int64_t M = num_blocks(L, b);
  const double row_bytes = 2.0 * d * sizeof(T);  // one position's K and V of one head
  const bool dense = attn.phase() == Phase::DenseDecode;
  const BlockSelection* sel = dense ? nullptr : &e.last_selection(layer);
  double bytes = dense ? 0.0 : static_cast<double>(hkv) * static_cast<double>(M) * row_bytes;  // kmin/kmax
  std::vector<double> qf(d), weight(static_cast<size_t>(L));
  std::vector<char> in_sel(static_cast<size_t>(L), 1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int kh = 0; kh < hkv; ++kh) {
    const int n = dense ? static_cast<int>(M) : sel->n(0, kh);
    o.selected[static_cast<size_t>(layer) * hkv + kh] = n;
    if (dense) {
      bytes += static_cast<double>(L) * row_bytes;
    } else {
      std::fill(in_sel.begin(), in_sel.end(), 0);
      for (const KeySegment& s : block_segments(sel->list(0, kh), n, b, L)) {
        bytes += static_cast<double>(s.end - s.begin) * row_bytes;
        for (int64_t p = s.begin; p < s.end; ++p) in_sel[static_cast<size_t>(p)] = 1;
      }
    }
    // The run's full attention in fp64 (q and K as the kernel reads them): recall of the selection
    // (exactly 1 when every block is attended) and the share of the top 10% of blocks.
    const T* kbase = cache.key(0, kh, 0);
    for (int hh = kh * g; hh < (kh + 1) * g; ++hh) {
      for (int j = 0; j < d; ++j) qf[j] = to_float(from_float<T>(q[static_cast<size_t>(hh) * d + j]));
      double mx = -INFINITY;
      for (int64_t p = 0; p < L; ++p) {
        const T* kr = kbase + static_cast<size_t>(p) * d;
        double s = 0;
        for (int j = 0; j < d; ++j) s += qf[j] * static_cast<double>(to_float(kr[j]));
        weight[static_cast<size_t>(p)] = s * scale;
        mx = std::max(mx, weight[static_cast<size_t>(p)]);
      }
      double total = 0, inside = 0;
      for (int64_t p = 0; p < L; ++p) {
        const double w = std::exp(weight[static_cast<size_t>(p)] - mx);
        weight[static_cast<size_t>(p)] = w;
        total += w;
        if (in_sel[static_cast<size_t>(p)]) inside += w;
      }
      const size_t i = static_cast<size_t>(layer) * hq + hh;
      o.recall[i] = n == M ? 1.0 : inside / total;
      o.top_mass[i] = top_block_mass(weight, L, b);
    }
  }
  o.bytes_read[layer] += bytes;
}

template class Lockstep<bf16>;
template class Lockstep<fp16>;

}  // namespace resa::sim
