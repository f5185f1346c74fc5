// cuda/bench/bench_gpu.cu — GPU benchmark of the ReSA kernels, with the card's copy bandwidth
// measured in the same run. For the Qwen2-1.5B (12/2) and -7B (28/4) attention shapes, d = 128,
// bf16, batch 1 and 8, L in {4K, 16K, 64K, 128K, 256K}: dense decode, selection, block-sparse
// decode, the sparse step (update + select + sparse attention), rectification of f = 32 tokens and
// the amortized ReSA step (sparse step + rectification / f) — time, bytes that must move, and the
// fraction of the measured copy bandwidth. Inputs rotate over enough copies to defeat the L2.
// Run: build/gpu/cuda/bench_gpu [--json FILE] [--quick] [--length L]... [--batch B] [--shape HQ/HKV]
//                               [--capacity C [--bounded]] [--no-split-flags]
// (--length, --batch and --shape keep only the cases named; the default is the whole table. The
// cache holds L + 33 tokens unless --capacity C sizes every case's cache at C tokens, as a server
// sizes it for its longest sequence: then each kernel is launched for C keys (max_keys) while the
// sequences hold L, the case of a short sequence in a long cache; with --bounded the attention
// launches are sized by L + 33 as SparseStepParams::max_length sizes them, the selection still
// by the capacity. Every attention launch gets split flags, AttentionParams::split_flags, unless
// --no-split-flags: then each merge waits for its whole split grid, as before change 58.)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_fill.h"
#include "resa_cuda/api.h"

namespace rc = resa::cuda;
using resa::bf16;

namespace {

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    RESA_CUDA_CHECK(cudaEventCreate(&a));
    RESA_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // Median over `reps` runs of the mean time of `iters` calls of fn(i), in microseconds.
  template <class F>
  double median_us(F&& fn, int iters, int reps = 5) {
    for (int i = 0; i < 3; ++i) fn(i);  // warm-up
    RESA_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      RESA_CUDA_CHECK(cudaEventRecord(a));
      for (int i = 0; i < iters; ++i) fn(r * iters + i);
      RESA_CUDA_CHECK(cudaEventRecord(b));
      RESA_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      RESA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(1000.0 * ms / iters);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

double copy_bandwidth_gbs() {
  const size_t bytes = size_t{2} << 30;
  rc::DeviceBuffer<char> src(bytes), dst(bytes);
  src.fill_bytes(1);
  Timer t;
  const double us = t.median_us([&](int) { RESA_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice)); }, 5, 7);
  return 2.0 * bytes / (us * 1e-6) / 1e9;  // bytes read + bytes written
}

// The benchmark's values (bench_fill.h), generated on the device.
__global__ void fill_random_kernel(bf16* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = resa::bench::fill_value(i, seed);
}
void fill_random(bf16* p, size_t n, uint64_t seed) {
  fill_random_kernel<<<1024, 256>>>(p, n, seed);
  RESA_CUDA_CHECK_LAUNCH("fill_random_kernel");
}

struct Row {
  std::string kernel, shape;
  int batch;
  long L;
  double us, bytes, frac_bw, speedup;
};

constexpr int kRectChunk = 32;  // f, the tokens a rectification rewrites

struct Case {
  int hq, hkv;
  int batch;
  int L;
  int capacity;  // tokens the cache holds; 0: L + f + 1 (room for the rectified chunk and one more)
  bool bounded;  // attention launched for L + f + 1 keys (a host-known length bound), not the capacity
  bool split_flags;  // AttentionParams::split_flags given to every attention launch
};

void run_case(const Case& c, double bw_gbs, std::vector<Row>& rows) {
  const int d = 128, f = kRectChunk;
  const resa::AttentionShape shape{c.hq, c.hkv, d};
  const resa::Schedule s = resa::make_schedule(shape);
  resa::SparseConfig cfg;  // b=16, ratio 1/10, n_min 16, f 32
  const int cap = c.capacity ? c.capacity : c.L + f + 1;
  const int bound = c.bounded ? c.L + f + 1 : cap;  // the longest sequence the launches are sized for
  const size_t kv_elems = static_cast<size_t>(c.batch) * c.hkv * cap * d;
  // Enough copies that the keys the kernels read (L per head) outgrow the L2, as many as fit in
  // 48 GB when the capacity is far above L.
  const double kv_bytes_one = static_cast<double>(kv_elems) * 2 * sizeof(bf16);
  const double kv_bytes_read = static_cast<double>(c.batch) * c.hkv * c.L * d * 2 * sizeof(bf16);
  const int copies = std::max(1, std::min({8, static_cast<int>(std::ceil(400e6 / kv_bytes_read)),
                                           static_cast<int>(48e9 / kv_bytes_one)}));
  std::vector<rc::DeviceBuffer<bf16>> K, V, KMIN, KMAX;
  std::vector<rc::DeviceBuffer<int32_t>> LEN;
  const int max_blocks = static_cast<int>(resa::num_blocks(cap, cfg.block_size));
  for (int i = 0; i < copies; ++i) {
    K.emplace_back(kv_elems);
    V.emplace_back(kv_elems);
    fill_random(K.back().get(), kv_elems, 10 + i);
    fill_random(V.back().get(), kv_elems, 20 + i);
    KMIN.emplace_back(static_cast<size_t>(c.batch) * c.hkv * max_blocks * d);
    KMAX.emplace_back(static_cast<size_t>(c.batch) * c.hkv * max_blocks * d);
    LEN.emplace_back(std::vector<int32_t>(c.batch, c.L));
  }
  auto kv = [&](int i) {
    const int j = i % copies;
    return rc::DeviceKv<bf16>{K[j].get(), V[j].get(), LEN[j].get(), c.batch, c.hkv, cap, d};
  };
  auto desc = [&](int i) {
    const int j = i % copies;
    return rc::DeviceDescriptors<bf16>{KMIN[j].get(), KMAX[j].get(), max_blocks, cfg.block_size};
  };
  for (int i = 0; i < copies; ++i) rc::descriptors_refresh<bf16>(kv(i), desc(i), 0, max_blocks, nullptr);
  const rc::StepBufferSizes z = rc::sparse_step_buffer_sizes(c.batch, c.hkv, c.hq, d, cap, cfg, s, f);
  rc::DeviceBuffer<float> scores(z.scores), ws(z.workspace_floats), out(static_cast<size_t>(c.batch) * f * c.hq * d);
  rc::DeviceBuffer<uint32_t> split_flags(c.split_flags ? z.split_flag_words : 0);
  split_flags.fill_bytes(0);  // zero before the first call; every call leaves them zero
  rc::DeviceBuffer<uint64_t> keys(z.keys);
  rc::DeviceBuffer<int32_t> blocks(z.blocks), counts(z.n_blocks);
  rc::DeviceBuffer<bf16> q(static_cast<size_t>(c.batch) * f * c.hq * d), kc(static_cast<size_t>(c.batch) * f * c.hkv * d),
      vc(static_cast<size_t>(c.batch) * f * c.hkv * d);
  fill_random(q.get(), q.size(), 1);
  fill_random(kc.get(), kc.size(), 2);
  fill_random(vc.get(), vc.size(), 3);
  const std::string sh = std::to_string(c.hq) + "/" + std::to_string(c.hkv);
  Timer t;
  const int iters = c.L >= 65536 ? 20 : 50;

  auto attention_params = [&](int i, int n_new) {
    rc::AttentionParams<bf16> p;
    p.q = q.get();
    p.kv = kv(i);
    p.n_q_heads = c.hq;
    p.n_new = n_new;
    p.schedule = s;
    p.max_keys = bound;
    p.workspace = ws.get();
    p.workspace_floats = ws.size();
    p.split_flags = split_flags.get();
    p.split_flag_words = split_flags.size();
    p.out = out.get();
    return p;
  };
  // Dense decode.
  const double dense_bytes = static_cast<double>(c.batch) * c.hkv * c.L * d * 2 * sizeof(bf16);
  const double dense_us = t.median_us([&](int i) { rc::attention<bf16>(attention_params(i, 1), nullptr); }, iters);
  rows.push_back({"dense decode", sh, c.batch, c.L, dense_us, dense_bytes, dense_bytes / (dense_us * 1e-6) / (bw_gbs * 1e9), 1.0});
  // Selection.
  auto select_params = [&](int i) {
    rc::SelectParams<bf16> p;
    p.q = q.get();
    p.kv = kv(i);
    p.desc = desc(i);
    p.n_q_heads = c.hq;
    p.cfg = cfg;
    p.scores = scores.get();
    p.keys = keys.get();
    p.blocks = blocks.get();
    p.n_blocks = counts.get();
    p.max_selected = z.max_selected;
    return p;
  };
  const double m = static_cast<double>(resa::num_blocks(c.L, cfg.block_size));
  const double desc_bytes = c.batch * c.hkv * m * d * 2 * sizeof(bf16);
  const double sel_us = t.median_us([&](int i) { rc::select_blocks<bf16>(select_params(i), nullptr); }, iters);
  rows.push_back({"selection", sh, c.batch, c.L, sel_us, desc_bytes, desc_bytes / (sel_us * 1e-6) / (bw_gbs * 1e9), 0});
  // Block-sparse attention over the selection.
  const double n_sel = static_cast<double>(resa::num_selected(c.L, cfg));
  const double sparse_bytes = static_cast<double>(c.batch) * c.hkv * n_sel * cfg.block_size * d * 2 * sizeof(bf16);
  auto sparse_params = [&](int i) {
    rc::AttentionParams<bf16> p = attention_params(i, 1);
    p.gather = rc::KeyGather::Blocks;
    p.blocks = blocks.get();
    p.n_blocks = counts.get();
    p.max_selected = z.max_selected;
    p.block_size = cfg.block_size;
    p.max_keys = rc::sparse_attention_max_keys(bound, cfg, z.max_selected);
    return p;
  };
  for (int i = 0; i < copies; ++i) rc::select_blocks<bf16>(select_params(i), nullptr);
  const double sparse_us = t.median_us([&](int i) { rc::attention<bf16>(sparse_params(i), nullptr); }, iters);
  rows.push_back({"block-sparse attention", sh, c.batch, c.L, sparse_us, sparse_bytes,
                  sparse_bytes / (sparse_us * 1e-6) / (bw_gbs * 1e9), dense_us / sparse_us});
  // Whole sparse step: update the newest block's descriptors + select + sparse attention (the
  // K/V append is one token and leaves the length unchanged here, so repeats are identical).
  const double step_us = t.median_us(
      [&](int i) {
        rc::descriptors_update_last<bf16>(kv(i), desc(i), nullptr);
        rc::select_blocks<bf16>(select_params(i), nullptr);
        rc::attention<bf16>(sparse_params(i), nullptr);
      },
      iters);
  rows.push_back({"sparse step (update+select+attend)", sh, c.batch, c.L, step_us, desc_bytes + sparse_bytes,
                  (desc_bytes + sparse_bytes) / (step_us * 1e-6) / (bw_gbs * 1e9), dense_us / step_us});
  // Rectification of f tokens: overwrite their K/V, causal attention of f queries, refresh.
  const int b0 = (c.L - f) / cfg.block_size, b1 = (c.L - 1) / cfg.block_size + 1;
  const double rect_us = t.median_us(
      [&](int i) {
        rc::write_kv_chunk<bf16>(kv(i), f, kc.get(), vc.get(), nullptr);
        rc::attention<bf16>(attention_params(i, f), nullptr);
        rc::descriptors_refresh<bf16>(kv(i), desc(i), b0, b1, nullptr);
      },
      std::max(5, iters / 4));
  rows.push_back({"rectification f=32", sh, c.batch, c.L, rect_us, dense_bytes,
                  dense_bytes / (rect_us * 1e-6) / (bw_gbs * 1e9), dense_us / rect_us});
  const double amortized = step_us + rect_us / f;
  const double am_bytes = desc_bytes + sparse_bytes + dense_bytes / f;
  rows.push_back({"amortized ReSA step", sh, c.batch, c.L, amortized, am_bytes,
                  am_bytes / (amortized * 1e-6) / (bw_gbs * 1e9), dense_us / amortized});
  RESA_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace

int main(int argc, char** argv) {
  std::string json;
  bool quick = false;
  std::vector<int> only_lengths;
  int only_batch = 0;
  std::string only_shape;
  int capacity = 0;
  bool bounded = false;
  bool split_flags = true;
  const char* usage =
      "usage: bench_gpu [--json FILE] [--quick] [--length L]... [--batch B] [--shape HQ/HKV] [--capacity C [--bounded]] [--no-split-flags]\n";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--length") && i + 1 < argc && std::atoi(argv[i + 1]) > 0) only_lengths.push_back(std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc && std::atoi(argv[i + 1]) > 0) only_batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--shape") && i + 1 < argc) only_shape = argv[++i];
    else if (!std::strcmp(argv[i], "--capacity") && i + 1 < argc && std::atoi(argv[i + 1]) > 0) capacity = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--bounded")) bounded = true;
    else if (!std::strcmp(argv[i], "--no-split-flags")) split_flags = false;
    else {
      std::fprintf(stderr, "%s", usage);
      return 2;
    }
  }
  std::vector<int> lengths = quick ? std::vector<int>{4096, 65536} : std::vector<int>{4096, 16384, 65536, 131072, 262144};
  if (!only_lengths.empty()) lengths = only_lengths;
  for (int L : lengths)
    if (capacity && capacity < L + kRectChunk + 1) {
      std::fprintf(stderr, "bench_gpu: --capacity %d is below length %d + %d (the rectified chunk and one more token)\n%s",
                   capacity, L, kRectChunk + 1, usage);
      return 2;
    }
  if (bounded && !capacity) {
    std::fprintf(stderr, "bench_gpu: --bounded needs --capacity (without it the launches are sized by L + %d already)\n%s",
                 kRectChunk + 1, usage);
    return 2;
  }
  try {
    const rc::DeviceInfo dev = rc::device_info();
    if (!dev.present) {
      std::fprintf(stderr, "bench_gpu: no CUDA device: %s\n", dev.why_absent.c_str());
      return 3;
    }
    const double bw = copy_bandwidth_gbs();
    std::printf("device: %s\ncopy bandwidth (device-to-device, read+write): %.0f GB/s\n\n", dev.str().c_str(), bw);
    std::vector<Row> rows;
    if (capacity)
      std::printf("cache capacity: %d tokens for every length; attention launched for %s\n\n", capacity,
                  bounded ? "L + 33 keys (a host-known bound)" : "the capacity");
    if (!split_flags) std::printf("attention launched without split flags (each merge waits for its split grid)\n\n");
    for (const auto& [hq, hkv] : std::vector<std::pair<int, int>>{{12, 2}, {28, 4}})
      for (int batch : {1, 8})
        for (int L : lengths) {
          if ((only_batch && batch != only_batch) || (!only_shape.empty() && only_shape != std::to_string(hq) + "/" + std::to_string(hkv)))
            continue;
          run_case({hq, hkv, batch, L, capacity, bounded, split_flags}, bw, rows);
        }
    std::printf("%-36s %-5s %5s %7s %10s %10s %7s %8s\n", "kernel", "Hq/Hkv", "batch", "L", "time us", "MB", "%BW", "x dense");
    for (const Row& r : rows)
      std::printf("%-36s %-5s %5d %7ld %10.1f %10.2f %6.1f%% %8.2f\n", r.kernel.c_str(), r.shape.c_str(), r.batch, r.L,
                  r.us, r.bytes / 1e6, 100 * r.frac_bw, r.speedup);
    if (!json.empty()) {
      FILE* fj = std::fopen(json.c_str(), "w");
      if (!fj) throw std::runtime_error("cannot write " + json);
      std::fprintf(fj, "{\"device\": \"%s\", \"copy_bandwidth_gbs\": %.1f, \"capacity\": %d, \"bounded\": %s, \"rows\": [\n",
                   dev.name.c_str(), bw, capacity, bounded ? "true" : "false");
      for (size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        std::fprintf(fj, "  {\"kernel\": \"%s\", \"shape\": \"%s\", \"batch\": %d, \"L\": %ld, \"us\": %.3f, \"bytes\": %.0f, "
                         "\"frac_bw\": %.4f, \"speedup_vs_dense\": %.3f}%s\n",
                     r.kernel.c_str(), r.shape.c_str(), r.batch, r.L, r.us, r.bytes, r.frac_bw, r.speedup,
                     i + 1 < rows.size() ? "," : "");
      }
      std::fprintf(fj, "]}\n");
      std::fclose(fj);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
