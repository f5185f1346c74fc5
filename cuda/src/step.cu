// cuda/src/step.cu — the ReSA step on the GPU: one call per layer per decode step (append K/V →
// update the newest block's descriptors → select → block-sparse attention, or dense attention),
// and the rectification call (overwrite the chunk's K/V → dense causal attention → refresh the
// touched blocks' descriptors). Host code only enqueues kernels: no synchronization, no counts
// travel to the host, so a whole decode step can be captured in a CUDA graph and replayed.
#include <algorithm>
#include <string>

#include "resa/selection.h"
#include "resa_cuda/api.h"

namespace resa::cuda {

namespace {
template <class T>
AttentionParams<T> attention_params(const SparseStepParams<T>& p) {
  AttentionParams<T> a;
  a.kv = p.kv;
  a.n_q_heads = p.n_q_heads;
  a.schedule = p.schedule;
  a.workspace = p.workspace;
  a.workspace_floats = p.workspace_floats;
  a.split_flags = p.split_flags;
  a.split_flag_words = p.split_flag_words;
  a.split_flag_use = p.split_flag_use;
  return a;
}
// The length bound that sizes a step's attention launch: max_length, or the capacity when it is
// 0. Checked before anything is enqueued.
template <class T>
int length_bound(const SparseStepParams<T>& p, const char* who) {
  if (p.max_length < 0 || p.max_length > p.kv.capacity)
    throw InvalidArgument(std::string(who) + ": max_length = " + std::to_string(p.max_length) +
                          " outside [0, capacity = " + std::to_string(p.kv.capacity) + "] (0: the capacity)");
  return p.max_length ? p.max_length : p.kv.capacity;
}
}  // namespace

int sparse_attention_max_keys(int length_bound, const SparseConfig& cfg, int max_selected) {
  // max_selected_blocks grows with the length; the block list holds max_selected.
  return static_cast<int>(std::min<int64_t>({length_bound, max_selected_blocks(length_bound, cfg) * cfg.block_size,
                                             int64_t{max_selected} * cfg.block_size}));
}

StepBufferSizes sparse_step_buffer_sizes(int batch, int n_kv_heads, int n_q_heads, int head_dim,
                                         int capacity, const SparseConfig& cfg, const Schedule& s,
                                         int max_chunk) {
  cfg.validate();
  StepBufferSizes z;
  const int max_blocks = static_cast<int>(num_blocks(capacity, cfg.block_size));
  z.max_selected = static_cast<int>(max_selected_blocks(capacity, cfg));
  z.scores = z.keys = static_cast<size_t>(batch) * n_kv_heads * max_blocks;
  z.blocks = static_cast<size_t>(batch) * n_kv_heads * z.max_selected;
  z.n_blocks = static_cast<size_t>(batch) * n_kv_heads;
  // The workspace grows with the rows per launch: the largest chunk (or one decode row) bounds it.
  z.workspace_floats =
      attention_workspace_floats(batch, n_kv_heads, n_q_heads, std::max(1, max_chunk), head_dim, capacity, s);
  z.split_flag_words = attention_split_flag_words(batch, n_kv_heads, n_q_heads, std::max(1, max_chunk), capacity, s);
  return z;
}

template <class T>
void sparse_decode_step(const SparseStepParams<T>& p, cudaStream_t stream) {
  check_block_fits_schedule(p.cfg.block_size, p.schedule);
  const int bound = length_bound(p, "cuda::sparse_decode_step");
  append_kv<T>(p.kv, p.k_new, p.v_new, stream);
  descriptors_update_last<T>(p.kv, p.desc, stream);
  SelectParams<T> sp;
  sp.q = p.q;
  sp.kv = p.kv;
  sp.desc = p.desc;
  sp.n_q_heads = p.n_q_heads;
  sp.cfg = p.cfg;
  sp.scores = p.scores;
  sp.keys = p.keys;
  sp.blocks = p.blocks;
  sp.n_blocks = p.n_blocks;
  sp.max_selected = p.max_selected;
  select_blocks<T>(sp, stream);
  AttentionParams<T> a = attention_params(p);
  a.q = p.q;
  a.n_new = 1;
  a.gather = KeyGather::Blocks;
  a.blocks = p.blocks;
  a.n_blocks = p.n_blocks;
  a.max_selected = p.max_selected;
  a.block_size = p.cfg.block_size;
  a.max_keys = sparse_attention_max_keys(bound, p.cfg, p.max_selected);
  a.out = p.out;
  attention<T>(a, stream);
}

template <class T>
void dense_decode_step(const SparseStepParams<T>& p, cudaStream_t stream) {
  const int bound = length_bound(p, "cuda::dense_decode_step");
  append_kv<T>(p.kv, p.k_new, p.v_new, stream);
  descriptors_update_last<T>(p.kv, p.desc, stream);
  AttentionParams<T> a = attention_params(p);
  a.q = p.q;
  a.n_new = 1;
  a.max_keys = bound;
  a.out = p.out;
  attention<T>(a, stream);
}

template <class T>
void rectify(const SparseStepParams<T>& p, int f, const T* q_chunk, const T* k_chunk, const T* v_chunk,
             int block_begin, int block_end, float* out_chunk, cudaStream_t stream) {
  if (f < 1) throw InvalidArgument("cuda::rectify: f = " + std::to_string(f) + " < 1");
  const int bound = length_bound(p, "cuda::rectify");
  write_kv_chunk<T>(p.kv, f, k_chunk, v_chunk, stream);
  AttentionParams<T> a = attention_params(p);
  a.q = q_chunk;
  a.n_new = f;
  a.max_keys = bound;
  a.out = out_chunk;
  attention<T>(a, stream);
  descriptors_refresh<T>(p.kv, p.desc, block_begin, block_end, stream);
}

#define RESA_INSTANTIATE(T)                                                                        \
  template void sparse_decode_step<T>(const SparseStepParams<T>&, cudaStream_t);                  \
  template void dense_decode_step<T>(const SparseStepParams<T>&, cudaStream_t);                   \
  template void rectify<T>(const SparseStepParams<T>&, int, const T*, const T*, const T*, int, int, \
                           float*, cudaStream_t);
RESA_INSTANTIATE(bf16)
RESA_INSTANTIATE(fp16)
#undef RESA_INSTANTIATE

}  // namespace resa::cuda
