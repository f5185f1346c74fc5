// reference/bench/bench_reference.cpp — Google Benchmark of the CPU reference kernels, with
// bytes/s counters (1000-based) of the KV bytes each call must read, so a CPU sweep's cost can be
// planned. Run: build/default/reference/bench_reference [--benchmark_filter=Dense]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "resa/attention.h"
#include "resa/selection.h"

namespace {

using resa::bf16;

struct Fixture {
  resa::AttentionShape shape{12, 2, 128};
  resa::Schedule sched = resa::make_schedule(shape);
  resa::KvCache<bf16> cache;
  std::vector<bf16> q;
  explicit Fixture(int64_t L, int rows = 1) : cache(1, 2, static_cast<int>(L), 128) {
    std::mt19937_64 rng(L);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (auto& x : cache.k) x = resa::from_float<bf16>(n(rng));
    for (auto& x : cache.v) x = resa::from_float<bf16>(n(rng));
    cache.length = {L};
    q.resize(static_cast<size_t>(rows) * 12 * 128);
    for (auto& x : q) x = resa::from_float<bf16>(n(rng));
  }
  double kv_bytes(int64_t keys) const { return static_cast<double>(keys) * 2 /*K,V*/ * 2 * 128 * 2 /*bytes*/; }
};

void set_bytes(benchmark::State& st, double bytes) {
  st.counters["bytes"] = bytes;
  st.counters["bytes_per_second"] =
      benchmark::Counter(bytes * st.iterations(), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void BM_DenseDecode(benchmark::State& st) {
  Fixture f(st.range(0));
  std::vector<float> out(f.q.size());
  for (auto _ : st) {
    resa::dense_decode<bf16>(f.shape, f.sched, f.cache, f.q.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(st, f.kv_bytes(st.range(0)));
}
BENCHMARK(BM_DenseDecode)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond);

void BM_ChunkedRectify32(benchmark::State& st) {
  Fixture f(st.range(0), 32);
  std::vector<float> out(f.q.size());
  for (auto _ : st) {
    resa::chunked_attention<bf16>(f.shape, f.sched, f.cache, 32, f.q.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(st, f.kv_bytes(st.range(0)));
}
BENCHMARK(BM_ChunkedRectify32)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);

void BM_SelectAndSparseDecode(benchmark::State& st) {
  Fixture f(st.range(0));
  resa::SparseConfig cfg;
  resa::BlockDescriptors<bf16> desc(f.cache, cfg.block_size);
  resa::build_descriptors(f.cache, desc);
  std::vector<float> out(f.q.size());
  int64_t selected = 0;
  for (auto _ : st) {
    const resa::BlockSelection sel = resa::select_for_decode<bf16>(f.shape, cfg, f.cache, desc, f.q.data());
    resa::block_sparse_decode<bf16>(f.shape, f.sched, f.cache, cfg.block_size, sel, f.q.data(), out.data());
    selected = sel.n(0, 0);
    benchmark::DoNotOptimize(out.data());
  }
  const double desc_bytes = static_cast<double>(resa::num_blocks(st.range(0), 16)) * 2 * 2 * 128 * 2;
  set_bytes(st, desc_bytes + f.kv_bytes(selected * cfg.block_size));
}
BENCHMARK(BM_SelectAndSparseDecode)->Arg(4096)->Arg(16384)->Arg(65536)->Unit(benchmark::kMillisecond);

void BM_DescriptorBuild(benchmark::State& st) {
  Fixture f(st.range(0));
  resa::BlockDescriptors<bf16> desc(f.cache, 16);
  for (auto _ : st) {
    resa::build_descriptors(f.cache, desc);
    benchmark::DoNotOptimize(desc.kmin.data());
  }
  set_bytes(st, f.kv_bytes(st.range(0)) / 2);
}
BENCHMARK(BM_DescriptorBuild)->Arg(16384)->Unit(benchmark::kMillisecond);

void BM_Dot16TensorCoreModel(benchmark::State& st) {
  float a[16], b[16], c = 0.5f;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int k = 0; k < 16; ++k) {
    a[k] = resa::round_through<bf16>(n(rng));
    b[k] = resa::round_through<bf16>(n(rng));
  }
  for (auto _ : st) {
    c = resa::dot16_tensor_core(c, a, b, -126);
    benchmark::DoNotOptimize(c);
  }
}
BENCHMARK(BM_Dot16TensorCoreModel);

void BM_Exp2Shared(benchmark::State& st) {
  float x = -3.7f, acc = 0;
  for (auto _ : st) {
    acc += resa::exp2_shared(x);
    x = x < -100.f ? -3.7f : x - 0.001f;
    benchmark::DoNotOptimize(acc);
  }
}
BENCHMARK(BM_Exp2Shared);

}  // namespace

BENCHMARK_MAIN();
