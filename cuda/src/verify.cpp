// cuda/src/verify.cpp — the validation matrix: each CUDA kernel and the GPU ReSA step against the
// CPU reference on identical inputs, compared bit for bit (DESIGN.md §3 test tiers 1 and 3):
// lengths 1..600K (including L <= 256 and non-multiples of the block and split lengths), batch 1
// and 3 with different lengths, GQA groups 1,2,4,6,7,8, head dims 64/128, bf16/fp16, normal /
// spread / adversarial values, ratio 1/20, 1/10, 1/5 and 1, rectification chunks f in {1,8,32,64};
// plus ratio 1 = dense, batch invariance, run-to-run repeats and CUDA-graph replay on the GPU.
#include "resa_cuda/verify.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>
#include <sstream>

#include "resa/attention.h"
#include "resa/selection.h"
#include "resa/testdata.h"
#include "resa_cuda/api.h"

namespace resa::cuda {

using testdata::Fill;

uint64_t ulp_distance(uint32_t a, uint32_t b) {
  if (a == b) return 0;
  const bool nan_a = (a & 0x7fffffffu) > 0x7f800000u, nan_b = (b & 0x7fffffffu) > 0x7f800000u;
  if (nan_a || nan_b) return UINT64_MAX;
  auto ordered = [](uint32_t u) -> int64_t {
    return (u & 0x80000000u) ? -static_cast<int64_t>(u & 0x7fffffffu) : static_cast<int64_t>(u);
  };
  const int64_t d = ordered(a) - ordered(b);
  return static_cast<uint64_t>(d < 0 ? -d : d);
}

namespace {

struct Recorder {
  VerifyReport& report;
  const VerifyOptions& opt;

  void floats(const std::string& kernel, const std::string& what, const std::vector<float>& gpu,
              const std::vector<float>& ref) {
    KernelTally& t = report.kernels[kernel];
    ++t.cases;
    int64_t bad = 0;
    uint64_t worst = 0;
    size_t first = SIZE_MAX;
    for (size_t i = 0; i < ref.size(); ++i) {
      const uint32_t a = f32_bits(gpu[i]), b = f32_bits(ref[i]);
      if (a != b) {
        ++bad;
        worst = std::max(worst, ulp_distance(a, b));
        first = std::min(first, i);
      }
    }
    if (gpu.size() != ref.size()) ++bad;
    t.elements += static_cast<int64_t>(ref.size());
    t.mismatches += bad;
    t.worst_ulp = std::max(t.worst_ulp, worst);
    if (bad && t.first_failure.empty()) {
      std::ostringstream os;
      os.precision(9);
      os << what << ": " << bad << " mismatches, first at [" << first << "] gpu "
         << (first < gpu.size() ? gpu[first] : 0.f) << " ref " << ref[first];
      t.first_failure = os.str();
    }
    say(kernel, what, bad);
  }
  template <class U>
  void exact(const std::string& kernel, const std::string& what, const std::vector<U>& gpu,
             const std::vector<U>& ref) {
    KernelTally& t = report.kernels[kernel];
    ++t.cases;
    int64_t bad = gpu.size() == ref.size() ? 0 : 1;
    for (size_t i = 0; i < std::min(gpu.size(), ref.size()); ++i)
      bad += std::memcmp(&gpu[i], &ref[i], sizeof(U)) != 0;
    t.elements += static_cast<int64_t>(ref.size());
    t.mismatches += bad;
    if (bad && t.first_failure.empty()) t.first_failure = what + ": " + std::to_string(bad) + " mismatches";
    say(kernel, what, bad);
  }
  void say(const std::string& kernel, const std::string& what, int64_t bad) {
    if (opt.progress) opt.progress(kernel + "  " + what + (bad ? "  MISMATCH " + std::to_string(bad) : "  ok"));
  }
};

template <class T>
struct DeviceState {
  DeviceBuffer<T> k, v, kmin, kmax;
  DeviceBuffer<int32_t> len;
  DeviceKv<T> kv;
  DeviceDescriptors<T> desc;
  DeviceState(const KvCache<T>& c, const BlockDescriptors<T>* d, int block_size)
      : k(c.k), v(c.v), len(lengths32(c)) {
    kv = {k.get(), v.get(), len.get(), c.batch, c.n_kv_heads, c.capacity, c.head_dim};
    const BlockDescriptors<T> empty(c, block_size);
    kmin = DeviceBuffer<T>(d ? d->kmin : empty.kmin);
    kmax = DeviceBuffer<T>(d ? d->kmax : empty.kmax);
    desc = {kmin.get(), kmax.get(), empty.max_blocks, block_size};
  }
  static std::vector<int32_t> lengths32(const KvCache<T>& c) {
    std::vector<int32_t> l(c.length.begin(), c.length.end());
    return l;
  }
};

// One attention call on the device, its outputs downloaded. With split_flags (the default) the
// call gets zero-filled split flags, used by every one-CTA decode launch (SplitFlagUse::Always),
// and rec checks that it left every word zero (AttentionParams::split_flags), under "split flags
// left zero".
template <class T>
std::vector<float> gpu_attention(Recorder& rec, const AttentionShape& shape, const Schedule& s, DeviceState<T>& st,
                                 const std::vector<T>& q, int n_new, KeyGather gather,
                                 const BlockSelection* sel, int block_size, int max_keys = 0,
                                 bool split_flags = true) {
  DeviceBuffer<T> dq(q);
  DeviceBuffer<int32_t> blocks, counts;
  AttentionParams<T> p;
  p.q = dq.get();
  p.kv = st.kv;
  p.n_q_heads = shape.n_q_heads;
  p.n_new = n_new;
  p.gather = gather;
  p.schedule = s;
  p.max_keys = st.kv.capacity;
  if (gather == KeyGather::Blocks) {
    blocks = DeviceBuffer<int32_t>(sel->blocks);
    counts = DeviceBuffer<int32_t>(sel->count);
    p.blocks = blocks.get();
    p.n_blocks = counts.get();
    p.max_selected = sel->max_selected;
    p.block_size = block_size;
    p.max_keys = std::min(st.kv.capacity, sel->max_selected * block_size);
  }
  if (max_keys) p.max_keys = max_keys;  // a bound of the caller's (verify_rows_past_max_keys)
  DeviceBuffer<float> ws(attention_workspace_floats(st.kv.batch, shape.n_kv_heads, shape.n_q_heads, n_new,
                                                    shape.head_dim, p.max_keys, s));
  DeviceBuffer<float> out(q.size());
  out.fill_bytes(0xff);  // poison: every element must be written
  p.workspace = ws.get();
  p.workspace_floats = ws.size();
  DeviceBuffer<uint32_t> flags(split_flags ? attention_split_flag_words(st.kv.batch, shape.n_kv_heads, shape.n_q_heads,
                                                                       n_new, p.max_keys, s)
                                           : 0);
  flags.fill_bytes(0);
  p.split_flags = flags.get();
  p.split_flag_words = flags.size();
  p.split_flag_use = SplitFlagUse::Always;
  p.out = out.get();
  attention<T>(p, nullptr);
  RESA_CUDA_CHECK(cudaDeviceSynchronize());
  if (split_flags)
    rec.exact("split flags left zero",
              std::string(Storage<T>::name) + " " + shape.str() + " batch=" + std::to_string(st.kv.batch) +
                  " n_new=" + std::to_string(n_new) + " max_keys=" + std::to_string(p.max_keys) +
                  (gather == KeyGather::Blocks ? " block-sparse" : " causal"),
              flags.download(), std::vector<uint32_t>(flags.size(), 0u));
  return out.download();
}

std::string describe(const char* dtype, const AttentionShape& shape, const std::vector<int64_t>& lengths,
                     Fill fill, const std::string& extra = "") {
  std::ostringstream os;
  os << dtype << " " << shape.str() << " " << testdata::fill_name(fill) << " L=";
  for (size_t i = 0; i < lengths.size(); ++i) os << (i ? "," : "") << lengths[i];
  if (!extra.empty()) os << " " << extra;
  return os.str();
}

// Dense decode and chunked causal attention (chunk = rectification of f tokens or a prefill).
template <class T>
void verify_dense_and_chunk(Recorder& rec, const AttentionShape& shape, const std::vector<int64_t>& lengths,
                            Fill fill, int chunk, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Schedule s = make_schedule(shape);
  int64_t cap = 1;
  for (auto L : lengths) cap = std::max(cap, L);
  KvCache<T> cache = testdata::random_cache<T>(shape, lengths, static_cast<int>(cap) + 5, rng, fill);
  const std::string name = describe(Storage<T>::name, shape, lengths, fill);
  DeviceState<T> st(cache, nullptr, 16);
  {
    const auto q = testdata::random_storage<T>(lengths.size() * shape.n_q_heads * shape.head_dim, rng, fill);
    std::vector<float> ref(q.size());
    dense_decode<T>(shape, s, cache, q.data(), ref.data());
    rec.floats("dense decode", name, gpu_attention<T>(rec, shape, s, st, q, 1, KeyGather::Causal, nullptr, 0), ref);
    rec.floats("dense decode, no split flags", name,
               gpu_attention<T>(rec, shape, s, st, q, 1, KeyGather::Causal, nullptr, 0, 0, false), ref);
  }
  int64_t min_len = cap;
  for (auto L : lengths) min_len = std::min(min_len, L);
  const int n = static_cast<int>(std::min<int64_t>(chunk, min_len));
  if (n >= 1) {
    const auto q = testdata::random_storage<T>(lengths.size() * n * shape.n_q_heads * shape.head_dim, rng, fill);
    std::vector<float> ref(q.size());
    chunked_attention<T>(shape, s, cache, n, q.data(), ref.data());
    rec.floats("chunked attention", name + " n=" + std::to_string(n),
               gpu_attention<T>(rec, shape, s, st, q, n, KeyGather::Causal, nullptr, 0), ref);
  }
}

// A max_keys below some rows' keys (a caller's bound got wrong): every row whose keys need more
// splits than the launch has, ceil(max_keys / split_len), comes out as kRowPastMaxKeysBits in
// every element, every other row bit for bit as the reference's, and nothing is read or written
// past the workspace sized for max_keys (the sanitizers run it). `chunks`: the rows per sequence
// of each launch (1: decode).
template <class T>
void verify_rows_past_max_keys(Recorder& rec, const AttentionShape& shape, const std::vector<int64_t>& lengths,
                               int max_keys, const std::vector<int>& chunks, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Schedule s = make_schedule(shape);
  int64_t cap = 1;
  for (auto L : lengths) cap = std::max(cap, L);
  KvCache<T> cache = testdata::random_cache<T>(shape, lengths, static_cast<int>(cap) + 5, rng, Fill::Normal);
  DeviceState<T> st(cache, nullptr, 16);
  const int64_t max_splits = (max_keys + s.split_len - 1) / s.split_len;
  const size_t row_elems = static_cast<size_t>(shape.n_q_heads) * shape.head_dim;  // a token's heads
  for (const int n : chunks) {
    const auto q = testdata::random_storage<T>(lengths.size() * n * row_elems, rng, Fill::Normal);
    std::vector<float> expect(q.size());
    if (n == 1)
      dense_decode<T>(shape, s, cache, q.data(), expect.data());
    else
      chunked_attention<T>(shape, s, cache, n, q.data(), expect.data());
    for (size_t b = 0; b < lengths.size(); ++b)
      for (int i = 0; i < n; ++i) {
        const int64_t keys = lengths[b] - n + i + 1;  // token i's causal keys
        if ((keys + s.split_len - 1) / s.split_len > max_splits)
          std::fill_n(expect.begin() + (b * n + i) * row_elems, row_elems, std::bit_cast<float>(kRowPastMaxKeysBits));
      }
    rec.floats(n == 1 ? "dense decode" : "chunked attention",
               describe(Storage<T>::name, shape, lengths, Fill::Normal,
                        "n=" + std::to_string(n) + " max_keys=" + std::to_string(max_keys)),
               gpu_attention<T>(rec, shape, s, st, q, n, KeyGather::Causal, nullptr, 0, max_keys), expect);
  }
}

// Descriptors (GPU build and incremental update), selection, and block-sparse attention.
template <class T>
void verify_sparse(Recorder& rec, const AttentionShape& shape, const std::vector<int64_t>& lengths, Fill fill,
                   const SparseConfig& cfg, uint64_t seed, bool nan_key) {
  std::mt19937_64 rng(seed);
  const Schedule s = make_schedule(shape);
  int64_t cap = 1;
  for (auto L : lengths) cap = std::max(cap, L);
  KvCache<T> cache = testdata::random_cache<T>(shape, lengths, static_cast<int>(cap) + 3, rng, fill);
  if (nan_key) cache.key(0, 0, lengths[0] / 2)[3] = from_float<T>(NAN);  // a NaN score (ranks last)
  const std::string name = describe(Storage<T>::name, shape, lengths, fill,
                                    "b=" + std::to_string(cfg.block_size) + " ratio=" + cfg.ratio.str() +
                                        (nan_key ? " nan-key" : ""));
  BlockDescriptors<T> desc(cache, cfg.block_size);
  build_descriptors(cache, desc);
  DeviceState<T> st(cache, nullptr, cfg.block_size);
  descriptors_refresh<T>(st.kv, st.desc, 0, st.desc.max_blocks, nullptr);
  RESA_CUDA_CHECK(cudaDeviceSynchronize());
  {
    // Compare blocks [0, M) of each sequence (the rest is never written).
    const auto gmin = st.kmin.download(), gmax = st.kmax.download();
    std::vector<uint16_t> a, b;
    for (int sq = 0; sq < cache.batch; ++sq)
      for (int h = 0; h < shape.n_kv_heads; ++h)
        for (int64_t blk = 0; blk < num_blocks(cache.length[sq], cfg.block_size); ++blk)
          for (int j = 0; j < shape.head_dim; ++j) {
            const size_t o = desc.offset(sq, h, blk) + j;
            a.push_back(gmin[o].bits);
            a.push_back(gmax[o].bits);
            b.push_back(desc.kmin[o].bits);
            b.push_back(desc.kmax[o].bits);
          }
    rec.exact("descriptors build", name, a, b);
  }
  const auto q = testdata::random_storage<T>(lengths.size() * shape.n_q_heads * shape.head_dim, rng, fill);
  const BlockSelection ref_sel = select_for_decode<T>(shape, cfg, cache, desc, q.data());
  {
    const int max_blocks = st.desc.max_blocks;
    const int max_sel = static_cast<int>(std::max<int64_t>(ref_sel.max_selected, max_selected_blocks(cache.capacity, cfg)));
    DeviceBuffer<T> dq(q);
    DeviceBuffer<float> scores(static_cast<size_t>(cache.batch) * shape.n_kv_heads * max_blocks);
    DeviceBuffer<uint64_t> keys(scores.size());
    DeviceBuffer<int32_t> blocks(static_cast<size_t>(cache.batch) * shape.n_kv_heads * max_sel);
    DeviceBuffer<int32_t> counts(static_cast<size_t>(cache.batch) * shape.n_kv_heads);
    blocks.fill_bytes(0xff);
    // Past a sequence's last block the scratch is never written: poisoned, so that the whole
    // buffer can be downloaded (only each sequence's blocks are compared).
    scores.fill_bytes(0xff);
    keys.fill_bytes(0xff);
    SelectParams<T> sp;
    sp.q = dq.get();
    sp.kv = st.kv;
    sp.desc = st.desc;
    sp.n_q_heads = shape.n_q_heads;
    sp.cfg = cfg;
    sp.scores = scores.get();
    sp.keys = keys.get();
    sp.blocks = blocks.get();
    sp.n_blocks = counts.get();
    sp.max_selected = max_sel;
    select_blocks<T>(sp, nullptr);
    RESA_CUDA_CHECK(cudaDeviceSynchronize());
    const auto gb = blocks.download(), gc = counts.download();
    std::vector<int32_t> got, want;
    for (int sq = 0; sq < cache.batch; ++sq)
      for (int h = 0; h < shape.n_kv_heads; ++h) {
        got.push_back(gc[sq * shape.n_kv_heads + h]);
        want.push_back(ref_sel.n(sq, h));
        for (int i = 0; i < ref_sel.n(sq, h); ++i) {
          got.push_back(gb[static_cast<size_t>(sq * shape.n_kv_heads + h) * max_sel + i]);
          want.push_back(ref_sel.list(sq, h)[i]);
        }
      }
    rec.exact("block selection", name, got, want);
    // Scores too (fp32 bits), for the blocks of each sequence.
    const auto gs = scores.download();
    std::vector<float> sg, sr;
    std::vector<float> qbar(static_cast<size_t>(shape.n_kv_heads) * shape.head_dim);
    for (int sq = 0; sq < cache.batch; ++sq) {
      pooled_query<T>(shape, q.data() + static_cast<size_t>(sq) * shape.n_q_heads * shape.head_dim, qbar.data());
      const int64_t m = num_blocks(cache.length[sq], cfg.block_size);
      std::vector<float> sc(m);
      for (int h = 0; h < shape.n_kv_heads; ++h) {
        block_scores(desc, sq, h, qbar.data() + h * shape.head_dim, m, sc.data());
        for (int64_t i = 0; i < m; ++i) {
          sg.push_back(gs[static_cast<size_t>(sq * shape.n_kv_heads + h) * max_blocks + i]);
          sr.push_back(sc[i]);
        }
      }
    }
    rec.floats("block scores", name, sg, sr);
  }
  {
    std::vector<float> ref(q.size());
    block_sparse_decode<T>(shape, s, cache, cfg.block_size, ref_sel, q.data(), ref.data());
    rec.floats("block-sparse decode", name,
               gpu_attention<T>(rec, shape, s, st, q, 1, KeyGather::Blocks, &ref_sel, cfg.block_size), ref);
  }
  if (cfg.ratio == Fraction{1, 1}) {  // ratio 1 sparse equals dense on the GPU
    const auto dense = gpu_attention<T>(rec, shape, s, st, q, 1, KeyGather::Causal, nullptr, 0);
    rec.floats("ratio=1 sparse == dense (GPU)", name,
               gpu_attention<T>(rec, shape, s, st, q, 1, KeyGather::Blocks, &ref_sel, cfg.block_size), dense);
  }
}

// The GPU ReSA step and rectification against the reference's step, several steps in a row:
// append, incremental descriptor update, selection, sparse attention; then rectify f tokens.
template <class T>
void verify_resa_steps(Recorder& rec, const AttentionShape& shape, int64_t prefill, int steps,
                       const SparseConfig& cfg, uint64_t seed, bool use_graph, int spare_capacity = 0) {
  std::mt19937_64 rng(seed);
  const Schedule s = make_schedule(shape);
  const int batch = 2, cap = static_cast<int>(prefill) + steps + 8 + spare_capacity;
  const int d = shape.head_dim, hq = shape.n_q_heads, hkv = shape.n_kv_heads;
  KvCache<T> cache = testdata::random_cache<T>(shape, {prefill, prefill + 7}, cap, rng, Fill::Normal);
  BlockDescriptors<T> desc(cache, cfg.block_size);
  build_descriptors(cache, desc);
  DeviceState<T> st(cache, &desc, cfg.block_size);
  const StepBufferSizes z = sparse_step_buffer_sizes(batch, hkv, hq, d, cap, cfg, s, cfg.rectify_every);
  DeviceBuffer<float> scores(z.scores), ws(z.workspace_floats), out(static_cast<size_t>(batch) * hq * d);
  DeviceBuffer<uint64_t> keys(z.keys);
  DeviceBuffer<int32_t> blocks(z.blocks), counts(z.n_blocks);
  DeviceBuffer<T> dq(static_cast<size_t>(batch) * hq * d), dk(static_cast<size_t>(batch) * hkv * d),
      dv(static_cast<size_t>(batch) * hkv * d);
  SparseStepParams<T> p;
  p.kv = st.kv;
  p.desc = st.desc;
  p.q = dq.get();
  p.k_new = dk.get();
  p.v_new = dv.get();
  p.n_q_heads = hq;
  p.cfg = cfg;
  p.schedule = s;
  p.scores = scores.get();
  p.keys = keys.get();
  p.blocks = blocks.get();
  p.n_blocks = counts.get();
  p.max_selected = z.max_selected;
  p.workspace = ws.get();
  p.workspace_floats = ws.size();
  DeviceBuffer<uint32_t> flags(z.split_flag_words);  // one set for every call of the run
  flags.fill_bytes(0);
  p.split_flags = flags.get();
  p.split_flag_words = flags.size();
  p.split_flag_use = SplitFlagUse::Always;
  p.out = out.get();
  // With spare capacity, the launches are sized by SparseStepParams::max_length: the longest
  // length of the run (a graph is captured once) or, eager, the longest after each call.
  const int64_t longest_end = prefill + 7 + steps;
  auto bound = [&](int64_t after_call) { return spare_capacity ? static_cast<int>(use_graph ? longest_end : after_call) : 0; };
  p.max_length = bound(longest_end);
  cudaStream_t stream;
  RESA_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaGraphExec_t graph_exec = nullptr;
  if (use_graph) {  // capture one step; replays read lengths from device memory
    cudaGraph_t graph;
    RESA_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    sparse_decode_step<T>(p, stream);
    RESA_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    RESA_CUDA_CHECK(cudaGraphInstantiate(&graph_exec, graph, 0));
    RESA_CUDA_CHECK(cudaGraphDestroy(graph));
  }
  const std::string tag = std::string(Storage<T>::name) + " " + shape.str() + " prefill=" + std::to_string(prefill) +
                          " " + cfg.str() + (use_graph ? " graph" : " eager") +
                          (spare_capacity ? " capacity=" + std::to_string(cap) + " max_length" : "");
  int since = 0;
  for (int step = 0; step < steps; ++step) {
    const auto q = testdata::random_storage<T>(static_cast<size_t>(batch) * hq * d, rng, Fill::Normal);
    const auto k = testdata::random_storage<T>(static_cast<size_t>(batch) * hkv * d, rng, Fill::Normal);
    const auto v = testdata::random_storage<T>(static_cast<size_t>(batch) * hkv * d, rng, Fill::Normal);
    dq.upload(q);
    dk.upload(k);
    dv.upload(v);
    out.fill_bytes(0xff);
    if (use_graph) {
      RESA_CUDA_CHECK(cudaGraphLaunch(graph_exec, stream));
    } else {
      p.max_length = bound(std::max(cache.length[0], cache.length[1]) + 1);
      sparse_decode_step<T>(p, stream);
    }
    // Reference step.
    for (int b = 0; b < batch; ++b) {
      const int64_t pos = cache.length[b];
      for (int h = 0; h < hkv; ++h)
        for (int j = 0; j < d; ++j) {
          cache.key(b, h, pos)[j] = k[(static_cast<size_t>(b) * hkv + h) * d + j];
          cache.value(b, h, pos)[j] = v[(static_cast<size_t>(b) * hkv + h) * d + j];
        }
      cache.length[b] = pos + 1;
      update_descriptors(cache, desc, b, pos);
    }
    const BlockSelection sel = select_for_decode<T>(shape, cfg, cache, desc, q.data());
    std::vector<float> ref(q.size());
    block_sparse_decode<T>(shape, s, cache, cfg.block_size, sel, q.data(), ref.data());
    RESA_CUDA_CHECK(cudaStreamSynchronize(stream));
    rec.floats("ReSA sparse step", tag + " step " + std::to_string(step), out.download(), ref);
    ++since;
    if (cfg.rectify_every > 0 && since == cfg.rectify_every) {
      since = 0;
      const int f = cfg.rectify_every;
      const auto qc = testdata::random_storage<T>(static_cast<size_t>(batch) * f * hq * d, rng, Fill::Normal);
      const auto kc = testdata::random_storage<T>(static_cast<size_t>(batch) * f * hkv * d, rng, Fill::Normal);
      const auto vc = testdata::random_storage<T>(static_cast<size_t>(batch) * f * hkv * d, rng, Fill::Normal);
      int64_t min_begin = cap, max_end = 0;
      for (int b = 0; b < batch; ++b) {
        for (int i = 0; i < f; ++i)
          for (int h = 0; h < hkv; ++h)
            for (int j = 0; j < d; ++j) {
              const size_t src = ((static_cast<size_t>(b) * f + i) * hkv + h) * d + j;
              cache.key(b, h, cache.length[b] - f + i)[j] = kc[src];
              cache.value(b, h, cache.length[b] - f + i)[j] = vc[src];
            }
        const int64_t b0 = (cache.length[b] - f) / cfg.block_size, b1 = (cache.length[b] - 1) / cfg.block_size + 1;
        refresh_descriptors(cache, desc, b, b0, b1);
        min_begin = std::min(min_begin, b0);
        max_end = std::max(max_end, b1);
      }
      std::vector<float> ref_chunk(qc.size());
      chunked_attention<T>(shape, s, cache, f, qc.data(), ref_chunk.data());
      DeviceBuffer<T> dqc(qc), dkc(kc), dvc(vc);
      DeviceBuffer<float> out_chunk(qc.size());
      out_chunk.fill_bytes(0xff);
      p.max_length = bound(std::max(cache.length[0], cache.length[1]));
      rectify<T>(p, f, dqc.get(), dkc.get(), dvc.get(), static_cast<int>(min_begin), static_cast<int>(max_end),
                 out_chunk.get(), stream);
      RESA_CUDA_CHECK(cudaStreamSynchronize(stream));
      rec.floats("rectification", tag + " after step " + std::to_string(step), out_chunk.download(), ref_chunk);
    }
  }
  // The whole state at the end: cache, lengths and descriptors.
  {
    std::vector<uint16_t> a, b;
    const auto gk = st.k.download(), gv = st.v.download(), gmin = st.kmin.download(), gmax = st.kmax.download();
    for (size_t i = 0; i < gk.size(); ++i) {
      a.push_back(gk[i].bits);
      a.push_back(gv[i].bits);
      b.push_back(cache.k[i].bits);
      b.push_back(cache.v[i].bits);
    }
    for (int sq = 0; sq < batch; ++sq)
      for (int h = 0; h < hkv; ++h)
        for (int64_t blk = 0; blk < num_blocks(cache.length[sq], cfg.block_size); ++blk)
          for (int j = 0; j < d; ++j) {
            const size_t o = desc.offset(sq, h, blk) + j;
            a.push_back(gmin[o].bits);
            a.push_back(gmax[o].bits);
            b.push_back(desc.kmin[o].bits);
            b.push_back(desc.kmax[o].bits);
          }
    const auto gl = st.len.download();
    for (int sq = 0; sq < batch; ++sq) {
      a.push_back(static_cast<uint16_t>(gl[sq]));
      b.push_back(static_cast<uint16_t>(cache.length[sq]));
    }
    rec.exact("ReSA step state (cache, descriptors)", tag, a, b);
  }
  rec.exact("split flags left zero", tag + " after every step", flags.download(), std::vector<uint32_t>(flags.size(), 0u));
  if (graph_exec) RESA_CUDA_CHECK(cudaGraphExecDestroy(graph_exec));
  RESA_CUDA_CHECK(cudaStreamDestroy(stream));
}

// A query's output is the same alone, inside a batch, and run twice (GPU only).
template <class T>
void verify_invariance(Recorder& rec, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const AttentionShape shape{12, 2, 128};
  const Schedule s = make_schedule(shape);
  const std::vector<int64_t> lengths = {5000, 1234, 77};
  KvCache<T> big = testdata::random_cache<T>(shape, lengths, 5000, rng, Fill::Normal);
  const auto q = testdata::random_storage<T>(3 * 12 * 128, rng, Fill::Normal);
  DeviceState<T> st(big, nullptr, 16);
  const auto batched = gpu_attention<T>(rec, shape, s, st, q, 1, KeyGather::Causal, nullptr, 0);
  const auto again = gpu_attention<T>(rec, shape, s, st, q, 1, KeyGather::Causal, nullptr, 0);
  rec.floats("run-to-run (GPU)", std::string(Storage<T>::name) + " dense decode repeated", again, batched);
  const size_t row = 12 * 128;
  for (int b = 0; b < 3; ++b) {
    KvCache<T> one(1, 2, 5000, 128);
    for (int h = 0; h < 2; ++h)
      for (int64_t p = 0; p < lengths[b]; ++p)
        for (int c = 0; c < 128; ++c) {
          one.key(0, h, p)[c] = big.key(b, h, p)[c];
          one.value(0, h, p)[c] = big.value(b, h, p)[c];
        }
    one.length = {lengths[b]};
    DeviceState<T> single(one, nullptr, 16);
    std::vector<T> qb(q.begin() + b * row, q.begin() + (b + 1) * row);
    const auto alone = gpu_attention<T>(rec, shape, s, single, qb, 1, KeyGather::Causal, nullptr, 0);
    rec.floats("batch invariance (GPU)", std::string(Storage<T>::name) + " sequence " + std::to_string(b) + " of 3",
               alone, std::vector<float>(batched.begin() + b * row, batched.begin() + (b + 1) * row));
  }
}

// Edge cases: non-finite K/V (in the chunk's own later positions too, and in the cache padding
// beyond the length, which must never be read into a result), a sequence filling the whole
// capacity, chunks of 17-31 rows (just past one MMA tile), and block sizes 1, 2, 4 and 512.
template <class T>
void verify_edge_cases(Recorder& rec, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const AttentionShape shape{6, 1, 64};
  const Schedule s = make_schedule(shape);
  const std::vector<int64_t> lengths = {200, 130, 1100};
  KvCache<T> cache = testdata::random_cache<T>(shape, lengths, 1100, rng, Fill::Normal);  // seq 2: L == capacity
  const T nan = from_float<T>(NAN), inf = from_float<T>(INFINITY);
  cache.value(0, 0, 197)[3] = nan;  // inside the chunk of sequence 0 (rows 196..199)
  cache.value(1, 0, 129)[7] = inf;  // last chunk position of sequence 1
  cache.key(1, 0, 127)[9] = nan;    // a NaN score inside the chunk
  cache.value(2, 0, 500)[1] = inf;  // far from the chunk of sequence 2
  for (int b = 0; b < 2; ++b)       // poisoned padding beyond the length
    for (int64_t p = lengths[b]; p < cache.capacity; ++p)
      for (int c = 0; c < 64; ++c) {
        cache.key(b, 0, p)[c] = nan;
        cache.value(b, 0, p)[c] = inf;
      }
  DeviceState<T> st(cache, nullptr, 16);
  const std::string name = std::string(Storage<T>::name) + " " + shape.str() + " non-finite K/V, poisoned padding, L=capacity";
  for (int n : {1, 4, 5}) {  // 4 x g 6 = 24 rows, 5 x 6 = 30 rows: two MMA tiles
    const auto q = testdata::random_storage<T>(lengths.size() * n * 6 * 64, rng, Fill::Normal);
    std::vector<float> ref(q.size());
    chunked_attention<T>(shape, s, cache, n, q.data(), ref.data());
    rec.floats(n == 1 ? "dense decode" : "chunked attention", name + " n=" + std::to_string(n),
               gpu_attention<T>(rec, shape, s, st, q, n, KeyGather::Causal, nullptr, 0), ref);
  }
  for (int b : {1, 2, 4, 512}) {
    KvCache<T> clean = testdata::random_cache<T>(shape, {1100, 37}, 1100, rng, Fill::Adversarial);
    SparseConfig cfg;
    cfg.block_size = b;
    cfg.ratio = Fraction{1, 5};
    cfg.n_min = 2;
    cfg.n_sink = b == 512 ? 1 : 0;
    BlockDescriptors<T> desc(clean, b);
    build_descriptors(clean, desc);
    DeviceState<T> cs(clean, &desc, b);
    const auto q = testdata::random_storage<T>(2 * 6 * 64, rng, Fill::Normal);
    const BlockSelection sel = select_for_decode<T>(shape, cfg, clean, desc, q.data());
    std::vector<float> ref(q.size());
    block_sparse_decode<T>(shape, s, clean, b, sel, q.data(), ref.data());
    rec.floats("block-sparse decode", std::string(Storage<T>::name) + " b=" + std::to_string(b) + " L=1100,37",
               gpu_attention<T>(rec, shape, s, cs, q, 1, KeyGather::Blocks, &sel, b), ref);
  }
}

SparseConfig sparse_config(int b, Fraction ratio, int n_min, int n_sink, int f) {
  SparseConfig c;
  c.block_size = b;
  c.ratio = ratio;
  c.n_min = n_min;
  c.n_sink = n_sink;
  c.rectify_every = f;
  return c;
}

// Calls f(i, d, g) for head dims 64 and 128 and every group size, i counting the calls; in quick
// mode only the groups in quick_groups.
template <class F>
void for_each_head_shape(bool quick, std::initializer_list<int> quick_groups, F&& f) {
  int i = 0;
  for (int d : {64, 128})
    for (int g : {1, 2, 4, 6, 7, 8}) {
      if (quick && std::find(quick_groups.begin(), quick_groups.end(), g) == quick_groups.end()) continue;
      f(i++, d, g);
    }
}

}  // namespace

VerifyReport run_validation_matrix(const VerifyOptions& opt) {
  const DeviceInfo dev = device_info();
  if (!dev.present) throw CudaError("resa verify needs a CUDA device: " + dev.why_absent);
  VerifyReport report;
  Recorder rec{report, opt};
  uint64_t seed = opt.seed;
  const Fill fills[] = {Fill::Normal, Fill::Spread, Fill::Adversarial};
  const int chunks[] = {1, 8, 32, 64};
  // Dense decode and chunked attention over the shape matrix.
  std::vector<std::vector<int64_t>> length_sets = {{1}, {255, 256, 17}, {513, 1000, 64}, {4097}};
  if (opt.quick) length_sets = {{255, 17}, {1000}};
  for_each_head_shape(opt.quick, {1, 6, 8}, [&](int i, int d, int g) {
    const auto& ls = length_sets[i % length_sets.size()];
    const int hkv = 1 + i % 2;
    verify_dense_and_chunk<bf16>(rec, {g * hkv, hkv, d}, ls, fills[i % 3], chunks[i % 4], seed++);
    verify_dense_and_chunk<fp16>(rec, {g * hkv, hkv, d}, ls, fills[(i + 1) % 3], chunks[(i + 2) % 4], seed++);
  });
  // The wgmma kernel's CTAs of several interleaved splits (wgmma_splits_per_cta, grid sizes for a
  // 132-SM card), 32-row chunks of one warpgroup. 16 KV heads x 2 sequences: 6 splits in 3 split
  // groups (D = 128; the CTA of splits 2 and 5 ends on the short last one, the 2100-key
  // sequence's CTAs have 2, 2 and 1). 8 KV heads x 3 sequences: 40 splits in 5 groups of 8 (D =
  // 64); the sequences of 3000 and 40 keys, shorter than the grid's max_keys, have 6 splits over
  // the five CTAs and one split in the first CTA, the others returning at once.
  verify_dense_and_chunk<bf16>(rec, {16, 16, 128}, {2600, 2100}, Fill::Normal, 32, seed++);
  verify_dense_and_chunk<bf16>(rec, {8, 8, 64}, {20000, 3000, 40}, Fill::Spread, 32, seed++);
  // Every instance of the decode kernel (cuda/src/attention.cu, launch_decode; grid sizes for a
  // 132-SM card). Clusters of eight CTAs per split: dense grids of up to 26 splits (the matrix
  // above), block-sparse grids up to the card's cluster slots (33-65 at 132 SMs: the sparse
  // matrix below). D = 128, dense: 27-66 CTAs six stages of eight warps (40 CTAs), four warps
  // with six stages (98) and three (137), eight warps with three (274) and two (547).
  // Block-sparse (ratio 1, every block selected): eight warps with six stages (112 CTAs), three
  // (160) and two (552). The sanitizers run the quick matrix, so it has them all in bf16; the
  // full run repeats them in fp16. D = 64 (four warps; by shared memory two CTAs per SM at six
  // stages, four at three): six stages up to 264 CTAs (69 dense, the sparse matrix), three at 274
  // and 552 (dense, block-sparse), two at 2188 and 1096; full run.
  const auto every_decode_instance = [&](auto type_tag) {
    using T = decltype(type_tag);
    for (const int64_t L : {20000, 50000, 70000, 140000, 280000})
      verify_dense_and_chunk<T>(rec, {8, 1, 128}, {L}, Fill::Normal, 1, seed++);
    for (const int64_t L : {7000, 10000, 35000})
      verify_sparse<T>(rec, {8, 8, 128}, {L}, Fill::Normal, sparse_config(16, {1, 1}, 16, 0, 32), seed++, false);
  };
  every_decode_instance(bf16{});
  if (!opt.quick) {
    every_decode_instance(fp16{});
    const auto every_d64_instance = [&](auto type_tag) {
      using T = decltype(type_tag);
      for (const int64_t L : {35000, 140000})
        verify_dense_and_chunk<T>(rec, {8, 1, 64}, {L}, Fill::Normal, 1, seed++);
      verify_dense_and_chunk<T>(rec, {8, 4, 64}, {280000}, Fill::Normal, 1, seed++);
      for (const int64_t L : {35000, 70000})
        verify_sparse<T>(rec, {8, 8, 64}, {L}, Fill::Normal, sparse_config(16, {1, 1}, 16, 0, 32), seed++, false);
    };
    every_d64_instance(bf16{});
    every_d64_instance(fp16{});
    // The two model shapes at longer lengths, rectification-sized chunks.
    verify_dense_and_chunk<bf16>(rec, {12, 2, 128}, {16384, 9999, 3}, Fill::Normal, 32, seed++);
    verify_dense_and_chunk<bf16>(rec, {28, 4, 128}, {65536 + 7}, Fill::Normal, 64, seed++);
    verify_dense_and_chunk<fp16>(rec, {8, 1, 128}, {2048}, Fill::Normal, 128, seed++);  // n = 128 rows x g 8
    if (opt.long_context) {
      verify_dense_and_chunk<bf16>(rec, {12, 2, 128}, {300000}, Fill::Normal, 8, seed++);
      verify_dense_and_chunk<fp16>(rec, {28, 4, 128}, {131072 + 100}, Fill::Normal, 1, seed++);
    }
  }
  // Descriptors, selection and block-sparse attention.
  const Fraction ratios[] = {{1, 20}, {1, 10}, {1, 5}, {1, 1}};
  for_each_head_shape(opt.quick, {4, 7}, [&](int i, int d, int g) {
    const Fraction r = ratios[i % 4];
    const int b = (i % 3 == 2) ? 64 : 16;
    const std::vector<int64_t> ls = opt.quick ? std::vector<int64_t>{3000}
                                              : (i % 2 ? std::vector<int64_t>{5000, 256, 4099} : std::vector<int64_t>{12345});
    const int hkv = 1 + (i + 1) % 2;
    verify_sparse<bf16>(rec, {g * hkv, hkv, d}, ls, fills[i % 3], sparse_config(b, r, 16, i % 4 == 3 ? 2 : 0, 32),
                        seed++, i % 5 == 1);
    verify_sparse<fp16>(rec, {g * hkv, hkv, d}, ls, fills[(i + 2) % 3], sparse_config(b, r, 4, 0, 32), seed++, false);
  });
  // Every form of the selection launch (cuda/src/selection.cu, launch_selection and launch_scores;
  // cluster sizes and scores rounds by heads x batch on a 132-SM card): clusters of 8 fused
  // (above) and separate (long sequences), of 2 fused (36 heads), of 1 fused and separate (72
  // heads; the separate one with two rounds per scores CTA), of 4 separate (32 heads, full run),
  // and four rounds per scores CTA (72 heads of 3126 blocks, full run). The sanitizers run the
  // quick matrix, so it has all but the full run's.
  const std::vector<int64_t> nine_short = {3000, 1, 17, 256, 4099, 777, 2048, 1500, 100};
  const std::vector<int64_t> nine_long = {25000, 5, 9999, 300, 16, 4097, 12345, 700, 25001};
  verify_sparse<bf16>(rec, {4, 1, 64}, {66000, 70001}, Fill::Normal, sparse_config(16, {1, 10}, 16, 0, 32), seed++,
                      false);
  verify_sparse<bf16>(rec, {8, 4, 64}, nine_short, Fill::Normal, sparse_config(16, {1, 10}, 4, 0, 32), seed++, false);
  verify_sparse<fp16>(rec, {16, 8, 64}, nine_short, Fill::Spread, sparse_config(16, {1, 5}, 16, 1, 32), seed++, true);
  verify_sparse<bf16>(rec, {16, 8, 64}, nine_long, Fill::Normal, sparse_config(16, {1, 10}, 16, 0, 32), seed++, false);
  if (!opt.quick) {
    verify_sparse<bf16>(rec, {28, 4, 128}, {66000, 1000, 3, 40000, 65536, 17, 5000, 12345}, Fill::Normal,
                        sparse_config(16, {1, 10}, 16, 0, 32), seed++, false);
    verify_sparse<bf16>(rec, {16, 8, 64}, {50000, 5, 9999, 300, 16, 4097, 12345, 700, 50001}, Fill::Normal,
                        sparse_config(16, {1, 10}, 16, 0, 32), seed++, false);
  }
  if (!opt.quick && opt.long_context) {
    verify_sparse<bf16>(rec, {12, 2, 128}, {300000}, Fill::Normal, sparse_config(16, {1, 10}, 16, 0, 32), seed++, false);
    verify_sparse<bf16>(rec, {28, 4, 128}, {262144 + 9}, Fill::Normal, sparse_config(16, {1, 20}, 16, 0, 32), seed++, false);
    verify_sparse<fp16>(rec, {12, 2, 128}, {131072}, Fill::Normal, sparse_config(16, {1, 1}, 16, 0, 32), seed++, false);
    // More blocks than the top-k stages in shared memory (32768): it reads the keys in place.
    verify_sparse<bf16>(rec, {8, 1, 64}, {600000, 524288}, Fill::Normal, sparse_config(16, {1, 10}, 16, 0, 32), seed++,
                        true);
  }
  // The GPU ReSA step with rectification, eager and replayed from a CUDA graph.
  // And in caches far longer than the sequences, with the launches sized by max_length.
  verify_resa_steps<bf16>(rec, {12, 2, 128}, 600, 10, sparse_config(16, {1, 10}, 4, 0, 8), seed++, false, 20000);
  verify_resa_steps<bf16>(rec, {12, 2, 128}, 700, 10, sparse_config(16, {1, 10}, 4, 0, 8), seed++, true, 20000);
  // Ratio 1 over 40K keys: the block-sparse launches take the one-CTA kernel (79 splits x 2 KV
  // heads x 2 sequences), whose merge follows the split flags, replayed from a graph on one set
  // of flags.
  verify_resa_steps<bf16>(rec, {12, 2, 128}, 40000, 10, sparse_config(16, {1, 1}, 4, 0, 8), seed++, true);
  if (opt.quick) {
    verify_resa_steps<bf16>(rec, {12, 2, 128}, 600, 10, sparse_config(16, {1, 10}, 4, 0, 8), seed++, true);
  } else {
    for (int f : chunks) {
      verify_resa_steps<bf16>(rec, {12, 2, 128}, 900, 2 * f + 3 > 70 ? 70 : 2 * f + 3,
                              sparse_config(16, {1, 10}, 4, 0, f), seed++, false);
    }
    verify_resa_steps<fp16>(rec, {28, 4, 128}, 2500, 40, sparse_config(16, {1, 20}, 16, 1, 32), seed++, true);
    verify_resa_steps<bf16>(rec, {7, 1, 64}, 300, 20, sparse_config(32, {1, 5}, 2, 0, 8), seed++, true);
  }
  // Rows past max_keys (grid sizes for a 132-SM card). 1024 keys, two splits: the 3000-key
  // sequence's rows are NaN; decode on the cluster kernel, a chunk of 8 tokens x 4 heads on the
  // wgmma kernel with one split per CTA. 20600 keys, 41 splits: 32-token chunks over 8 KV heads x
  // 3 sequences take CTAs of 4 interleaved splits in 11 split groups, so groups 8-10 would reach
  // splits 41-43 of the 30000-key sequence but for the kernel's cap (their partials would land
  // on the next head's).
  verify_rows_past_max_keys<bf16>(rec, {8, 2, 128}, {3000, 700}, 1024, {1, 8}, seed++);
  verify_rows_past_max_keys<bf16>(rec, {8, 8, 64}, {30000, 3000, 40}, 20600, {32}, seed++);
  // 30000 keys, 59 splits x 2 KV heads x 2 sequences: decode on the one-CTA kernel with split
  // flags; the merge of the 50000-key sequence's rows waits for its flags and clears them
  // without folding.
  verify_rows_past_max_keys<bf16>(rec, {8, 2, 128}, {50000, 3000}, 30000, {1}, seed++);
  verify_invariance<bf16>(rec, seed++);
  if (!opt.quick) verify_invariance<fp16>(rec, seed++);
  verify_edge_cases<bf16>(rec, seed++);
  verify_edge_cases<fp16>(rec, seed++);
  return report;
}

}  // namespace resa::cuda
