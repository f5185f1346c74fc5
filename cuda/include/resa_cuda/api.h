// resa_cuda/api.h — host API of the CUDA kernels (sm_90a): plain Params structs of device
// pointers, launchers that check every CUDA call and report errors with context, and RAII device
// buffers. Every kernel reproduces the CPU reference (reference/) bit for bit under the same
// resa::Schedule; tests/gpu/ proves it and `resa verify` runs the validation matrix.
//
// Device data layouts equal the reference's: KV cache [batch][Hkv][capacity][d] (T = resa::bf16 or
// resa::fp16 bit patterns), descriptors [batch][Hkv][max_blocks][d], queries [batch][n][Hq][d] in T,
// outputs [batch][n][Hq][d] fp32. Cache lengths live in device memory (int32 per sequence), so a
// decode step reads them there and is capturable in a CUDA graph: grids are sized from capacities,
// never from data, and no count ever travels to the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "resa/config.h"
#include "resa/numerics.h"
#include "resa/schedule.h"

namespace resa::cuda {

// A CUDA call failed: the message names the call, the file:line and the device.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
void check(cudaError_t err, const char* what, const char* file, int line);
#define RESA_CUDA_CHECK(call) ::resa::cuda::check((call), #call, __FILE__, __LINE__)
#define RESA_CUDA_CHECK_LAUNCH(name) ::resa::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)

// The present device, or why there is none.
struct DeviceInfo {
  bool present = false;
  std::string why_absent;  // set when !present
  std::string name;        // "NVIDIA H100 80GB HBM3"
  int sm_major = 0, sm_minor = 0, multiprocessors = 0;
  int driver_version = 0, runtime_version = 0;
  size_t global_memory = 0;
  std::string str() const;
};
DeviceInfo device_info();

// Owning device allocation (cudaMalloc), moved not copied.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n) RESA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    if (host.size() != n_) throw std::invalid_argument("DeviceBuffer::upload: size mismatch");
    if (n_) RESA_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_) RESA_CUDA_CHECK(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  // Fill with a byte pattern (tests poison outputs with 0xff to catch unwritten elements).
  void fill_bytes(int byte) {
    if (n_) RESA_CUDA_CHECK(cudaMemset(p_, byte, n_ * sizeof(T)));
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// One layer's KV cache on the device (same layout as resa::KvCache).
template <class T>
struct DeviceKv {
  T* k = nullptr;
  T* v = nullptr;
  int32_t* length = nullptr;  // [batch], device
  int batch = 0, n_kv_heads = 0, capacity = 0, head_dim = 0;
};

template <class T>
struct DeviceDescriptors {
  T* kmin = nullptr;
  T* kmax = nullptr;
  int max_blocks = 0, block_size = 0;
};

// Which keys a query row sees.
enum class KeyGather : int {
  Causal = 0,  // row i of n_new: positions [0, length - n_new + i + 1)
  Blocks = 1,  // the selected blocks (ascending), the last one cut at the length
};

// Which one-CTA decode launches given split flags (AttentionParams::split_flags) use them: Auto,
// those where the launch rule predicts a gain (multi-wave grids whose last row has many splits
// finished before the last wave, PERFORMANCE.md change 58); Always, every one (what `resa verify`
// runs, so that the flags are checked on every grid).
enum class SplitFlagUse : int { Auto = 0, Always = 1 };

// Attention of n_new query rows per (sequence, query head): the split kernel writes one partial
// (m, l, acc) per (sequence, KV head, split, row), the merge kernel folds them left to right.
template <class T>
struct AttentionParams {
  const T* q = nullptr;       // [batch][n_new][Hq][d]
  DeviceKv<T> kv;             // lengths already include the n_new rows
  int n_q_heads = 0, n_new = 1;
  KeyGather gather = KeyGather::Causal;
  const int32_t* blocks = nullptr;    // Blocks: [batch][Hkv][max_selected]
  const int32_t* n_blocks = nullptr;  // Blocks: [batch][Hkv]
  int max_selected = 0, block_size = 0;
  Schedule schedule;          // split_len, key_tile (64), scale_log2, arith (tensor core)
  int max_keys = 0;           // upper bound of any row's key count: sizes the grid in whole
                              // splits, ceil(max_keys / split_len); see kRowPastMaxKeysBits
  float* workspace = nullptr; // attention_workspace_floats(...) floats
  size_t workspace_floats = 0;  // its size; a launch that needs more is refused
  // Optional split flags: attention_split_flag_words(...) 32-bit words, all zero before the first
  // call and left zero by every call, so allocate them zero-filled once and give them to nothing
  // else (calls that may run at the same time need flags of their own, as they need workspaces
  // of their own). With them, the merge of a launch on the one-CTA decode kernel folds each
  // split's partial as soon as its flag is set, behind the rest of the split grid, instead of
  // starting after the whole grid (PERFORMANCE.md change 58); null: it waits for the grid. The
  // outputs' bits are the same either way. After a call that threw, or a device error, zero them
  // again before the next call (a split kernel may have set some that no merge cleared).
  uint32_t* split_flags = nullptr;
  size_t split_flag_words = 0;  // their count; a launch that needs more is refused
  SplitFlagUse split_flag_use = SplitFlagUse::Auto;
  float* out = nullptr;       // [batch][n_new][Hq][d]
};
// The bits of every output element of a row whose keys need more splits than the launch has,
// ceil(max_keys / split_len) (a bound the caller got wrong: the kernels cannot report it without
// a host synchronization): a quiet NaN with a payload of its own, so it cannot pass for a
// result; no partial past the workspace is read or written. A row with more than max_keys keys
// that still fit those splits is computed in full, exactly.
constexpr uint32_t kRowPastMaxKeysBits = 0x7fd00000u;
// Workspace size for a launch with these bounds.
size_t attention_workspace_floats(int batch, int n_kv_heads, int n_q_heads, int n_new, int head_dim,
                                  int max_keys, const Schedule& s);
// Split-flag words for a launch with these bounds (one per partial: sequence, KV head, split, row).
size_t attention_split_flag_words(int batch, int n_kv_heads, int n_q_heads, int n_new, int max_keys,
                                  const Schedule& s);
template <class T>
void attention(const AttentionParams<T>& p, cudaStream_t stream);

// Descriptors of blocks [block_begin, block_end) of every sequence (positions < length); a block
// range past a sequence's last block is skipped on the device.
template <class T>
void descriptors_refresh(const DeviceKv<T>& kv, const DeviceDescriptors<T>& desc, int block_begin,
                         int block_end, cudaStream_t stream);
// Incremental update for the newest token of every sequence (position length - 1).
template <class T>
void descriptors_update_last(const DeviceKv<T>& kv, const DeviceDescriptors<T>& desc,
                             cudaStream_t stream);

// Block selection fused on the device: pooled query, scores, n_sel, local/sink blocks, top-k by
// rank (ties toward the lower index, NaN last), ascending output and its count.
template <class T>
struct SelectParams {
  const T* q = nullptr;  // [batch][Hq][d]
  DeviceKv<T> kv;
  DeviceDescriptors<T> desc;
  int n_q_heads = 0;
  SparseConfig cfg;
  float* scores = nullptr;     // scratch [batch][Hkv][max_blocks]
  uint64_t* keys = nullptr;    // scratch [batch][Hkv][max_blocks]
  int32_t* blocks = nullptr;   // out [batch][Hkv][max_selected]
  int32_t* n_blocks = nullptr; // out [batch][Hkv]
  int max_selected = 0;
};
template <class T>
void select_blocks(const SelectParams<T>& p, cudaStream_t stream);

// Append one token's K/V ([batch][Hkv][d] in T) at position length and advance length by one.
// A sequence already at capacity is left unchanged (the token is dropped: the kernels cannot
// report it without a host synchronization), so size the capacity for prompt + decode steps:
// the caller knows every length (each step adds one) and must not step a full sequence.
template <class T>
void append_kv(const DeviceKv<T>& kv, const T* k_new, const T* v_new, cudaStream_t stream);
// Overwrite K/V of positions [length - n, length) with k/v [batch][n][Hkv][d] (rectification).
template <class T>
void write_kv_chunk(const DeviceKv<T>& kv, int n, const T* k, const T* v, cudaStream_t stream);

// One ReSA layer-step on the GPU: append K/V, update the newest block's descriptors, select, and
// block-sparse attention — no host synchronization, capturable in a CUDA graph.
template <class T>
struct SparseStepParams {
  DeviceKv<T> kv;
  DeviceDescriptors<T> desc;
  const T* q = nullptr;      // [batch][Hq][d]
  const T* k_new = nullptr;  // [batch][Hkv][d]
  const T* v_new = nullptr;
  int n_q_heads = 0;
  SparseConfig cfg;
  Schedule schedule;
  // scratch: see SparseStepBuffers
  float* scores = nullptr;
  uint64_t* keys = nullptr;
  int32_t* blocks = nullptr;
  int32_t* n_blocks = nullptr;
  int max_selected = 0;
  float* workspace = nullptr;
  size_t workspace_floats = 0;  // from sparse_step_buffer_sizes; a launch needing more is refused
  // Optional split flags (AttentionParams::split_flags: zero-filled once, left zero by every
  // call; a launch needing more is refused), for every attention launch of the steps.
  uint32_t* split_flags = nullptr;
  size_t split_flag_words = 0;
  SplitFlagUse split_flag_use = SplitFlagUse::Auto;
  float* out = nullptr;  // [batch][Hq][d]
  // Optional: a bound, known to the host, on every sequence's length after the call (0: the
  // capacity). The attention launches are sized by it instead of the capacity, which matters when
  // the sequences are much shorter than their cache (PERFORMANCE.md, short sequences in long
  // caches); a CUDA graph captured with it is valid while the lengths stay within it. A sequence
  // longer than the bound gets kRowPastMaxKeysBits outputs where its keys outgrow the launch's
  // splits and exact ones where they still fit (so a NaN check does not catch every wrong bound).
  // The selection is still launched for the capacity.
  int max_length = 0;
};
template <class T>
void sparse_decode_step(const SparseStepParams<T>& p, cudaStream_t stream);
// Dense decode step: append, update the newest block's descriptors, dense attention.
template <class T>
void dense_decode_step(const SparseStepParams<T>& p, cudaStream_t stream);
// Rectification of the last f tokens: overwrite their K/V, dense causal attention of their queries
// q [batch][f][Hq][d] (the model needs it for the next layer), refresh the descriptors of the
// blocks they touch (block_begin/end from the host, who knows the positions).
template <class T>
void rectify(const SparseStepParams<T>& p, int f, const T* q_chunk, const T* k_chunk,
             const T* v_chunk, int block_begin, int block_end, float* out_chunk, cudaStream_t stream);

// Sizes of the scratch a sparse step needs for caches of `capacity`.
struct StepBufferSizes {
  size_t scores = 0, keys = 0, blocks = 0, n_blocks = 0, workspace_floats = 0, split_flag_words = 0;
  int max_selected = 0;
};
// max_keys of the block-sparse attention after a selection, for sequences of at most
// `length_bound` tokens: the keys of the blocks such a sequence selects, within the block list's
// max_selected (what sparse_decode_step launches with).
int sparse_attention_max_keys(int length_bound, const SparseConfig& cfg, int max_selected);

StepBufferSizes sparse_step_buffer_sizes(int batch, int n_kv_heads, int n_q_heads, int head_dim,
                                         int capacity, const SparseConfig& cfg, const Schedule& s,
                                         int max_chunk);

}  // namespace resa::cuda
