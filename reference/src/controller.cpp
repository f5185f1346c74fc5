// controller.cpp — ReSA controller state machine and the reference (CPU) attention engine.
#include "resa/controller.h"

#include <algorithm>
#include <string>

#include "resa/selection.h"

namespace resa {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Prefill: return "prefill";
    case Phase::DenseDecode: return "dense-decode";
    case Phase::SparseDecode: return "sparse-decode";
    case Phase::Rectify: return "rectify";
  }
  return "?";
}

ResaController::ResaController(DecodeMode mode, const SparseConfig& cfg, AttentionEngine& engine,
                               ModelCallbacks model)
    : mode_(mode), cfg_(cfg), engine_(engine), model_(std::move(model)) {
  cfg_.validate();
  if (!model_.forward) throw InvalidArgument("ResaController: the model's forward callback is empty");
}

void ResaController::prefill(int64_t n_tokens) {
  if (length_ != 0) throw InvalidArgument("prefill: the sequence already holds tokens");
  if (n_tokens < 1 || n_tokens > (1 << 30))
    throw InvalidArgument("prefill: n_tokens = " + std::to_string(n_tokens) + " must be in [1, 2^30]");
  LayerAttention attn(engine_, Phase::Prefill, 0, static_cast<int>(n_tokens));
  model_.forward(0, static_cast<int>(n_tokens), attn);
  length_ = n_tokens;
}

void ResaController::adopt_prefill(int64_t n_tokens) {
  if (length_ != 0) throw InvalidArgument("adopt_prefill: the sequence already holds tokens");
  if (n_tokens < 1 || n_tokens > (1 << 30))
    throw InvalidArgument("adopt_prefill: n_tokens = " + std::to_string(n_tokens) + " must be in [1, 2^30]");
  length_ = n_tokens;
}

StepReport ResaController::decode_step() {
  if (length_ == 0) throw InvalidArgument("decode_step: prefill first (the cache is empty)");
  StepReport rep;
  rep.pos = length_;
  rep.phase = mode_ == DecodeMode::Dense ? Phase::DenseDecode : Phase::SparseDecode;
  LayerAttention attn(engine_, rep.phase, length_, 1);
  model_.forward(length_, 1, attn);
  ++length_;
  if (mode_ == DecodeMode::Resa) {
    ++since_rectify_;
    const int f = cfg_.rectify_every;
    if (f > 0 && since_rectify_ == f) {
      rep.rectified = true;
      rep.rectify_begin = length_ - f;
      rep.rectify_end = length_;
      LayerAttention rect(engine_, Phase::Rectify, rep.rectify_begin, f);
      model_.forward(rep.rectify_begin, f, rect);
      rep.refresh_begin = rep.rectify_begin / cfg_.block_size;
      rep.refresh_end = (length_ - 1) / cfg_.block_size + 1;
      engine_.refresh_descriptors(rep.refresh_begin, rep.refresh_end);
      since_rectify_ = 0;
      ++rectifications_;
    }
  }
  return rep;
}

template <class T>
CpuAttentionEngine<T>::CpuAttentionEngine(const AttentionShape& shape, const Schedule& schedule,
                                          const SparseConfig& cfg, int n_layers, int capacity)
    : shape_(shape), schedule_(schedule), cfg_(cfg) {
  shape_.validate();
  cfg_.validate();
  check_block_fits_schedule(cfg_.block_size, schedule_);
  if (n_layers < 1) throw InvalidArgument("n_layers = " + std::to_string(n_layers) + ": must be >= 1");
  for (int l = 0; l < n_layers; ++l) {
    caches_.emplace_back(1, shape.n_kv_heads, capacity, shape.head_dim);
    descs_.emplace_back(caches_.back(), cfg_.block_size);
  }
  last_sel_.resize(n_layers);
}

template <class T>
void CpuAttentionEngine<T>::attend(Phase phase, int layer, int64_t first_pos, int n, const float* q,
                                   const float* k, const float* v, float* out) {
  if (layer < 0 || layer >= static_cast<int>(caches_.size()))
    throw InvalidArgument("attend: layer " + std::to_string(layer) + " outside [0, " +
                          std::to_string(caches_.size()) + ")");
  KvCache<T>& cache = caches_[layer];
  BlockDescriptors<T>& desc = descs_[layer];
  if (n < 1 || first_pos < 0 || first_pos + n > cache.capacity)
    throw InvalidArgument("attend: positions [" + std::to_string(first_pos) + ", " +
                          std::to_string(first_pos + n) + ") exceed the cache capacity " +
                          std::to_string(cache.capacity));
  if (first_pos > cache.length[0])
    throw InvalidArgument("attend: position " + std::to_string(first_pos) +
                          " leaves a gap after the cache length " + std::to_string(cache.length[0]));
  if ((phase == Phase::DenseDecode || phase == Phase::SparseDecode) && n != 1)
    throw InvalidArgument(std::string("attend: ") + phase_name(phase) + " takes one token");
  const int d = shape_.head_dim, hkv = shape_.n_kv_heads, hq = shape_.n_q_heads;
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < hkv; ++h) {
      T* kd = cache.key(0, h, first_pos + i);
      T* vd = cache.value(0, h, first_pos + i);
      for (int j = 0; j < d; ++j) {
        kd[j] = from_float<T>(k[(static_cast<size_t>(i) * hkv + h) * d + j]);
        vd[j] = from_float<T>(v[(static_cast<size_t>(i) * hkv + h) * d + j]);
      }
    }
  const int64_t new_len = first_pos + n;
  std::vector<T> qs(static_cast<size_t>(n) * hq * d);
  for (size_t i = 0; i < qs.size(); ++i) qs[i] = from_float<T>(q[i]);

  // Attention sees exactly the cache [0, new_len): a rectification chunk attends as of its own
  // positions even though the cache already holds later tokens' K/V.
  const int64_t old_len = cache.length[0];
  cache.length[0] = new_len;
  switch (phase) {
    case Phase::Prefill:
    case Phase::Rectify:
    case Phase::DenseDecode:
      chunked_attention<T>(shape_, schedule_, cache, n, qs.data(), out);
      break;
    case Phase::SparseDecode: {
      update_descriptors<T>(cache, desc, 0, first_pos);
      last_sel_[layer] = select_for_decode<T>(shape_, cfg_, cache, desc, qs.data());
      block_sparse_decode<T>(shape_, schedule_, cache, cfg_.block_size, last_sel_[layer], qs.data(), out);
      break;
    }
  }
  cache.length[0] = std::max(old_len, new_len);
  if (phase == Phase::Prefill) resa::refresh_descriptors<T>(cache, desc, 0, first_pos / cfg_.block_size,
                                                     num_blocks(new_len, cfg_.block_size));
  else if (phase == Phase::DenseDecode) update_descriptors<T>(cache, desc, 0, first_pos);
}

template <class T>
void CpuAttentionEngine<T>::refresh_descriptors(int64_t block_begin, int64_t block_end) {
  for (size_t l = 0; l < caches_.size(); ++l)
    resa::refresh_descriptors<T>(caches_[l], descs_[l], 0, block_begin, block_end);
}

template <class T>
void CpuAttentionEngine<T>::load_prefix(const CpuAttentionEngine& other, int64_t length) {
  if (other.caches_.size() != caches_.size() || !(other.shape_ == shape_) ||
      other.caches_[0].capacity != caches_[0].capacity)
    throw InvalidArgument("load_prefix: the engines differ in shape, layer count or capacity");
  if (length < 1 || length > other.caches_[0].length[0])
    throw InvalidArgument("load_prefix: length " + std::to_string(length) + " outside [1, source length " +
                          std::to_string(other.caches_[0].length[0]) + "]");
  for (size_t l = 0; l < caches_.size(); ++l) {
    KvCache<T>& dst = caches_[l];
    const KvCache<T>& src = other.caches_[l];
    for (int h = 0; h < dst.n_kv_heads; ++h) {
      std::copy_n(src.key(0, h, 0), static_cast<size_t>(length) * dst.head_dim, dst.key(0, h, 0));
      std::copy_n(src.value(0, h, 0), static_cast<size_t>(length) * dst.head_dim, dst.value(0, h, 0));
    }
    dst.length[0] = length;
    resa::refresh_descriptors<T>(dst, descs_[l], 0, 0, num_blocks(length, cfg_.block_size));
  }
}

template class CpuAttentionEngine<bf16>;
template class CpuAttentionEngine<fp16>;

}  // namespace resa
