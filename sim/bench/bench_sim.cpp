// bench_sim.cpp — decode-simulator throughput: tokens per second per mode (dense, sparse f=0,
// ReSA f=32 with its rectification cost amortized) on the `tiny` synthetic model and on the
// R1-Distill-Qwen-1.5B attention shape (2 of its 28 layers, to keep the weights small; the
// per-layer cost scales linearly), after a dense prefill of L tokens. Both dot arithmetics.
// Run: build/main/sim/bench_sim   (results recorded in sim/PERFORMANCE.md)
#include <benchmark/benchmark.h>

#include <map>
#include <memory>

#include "resa/sim/lockstep.h"
#include "resa/sim/qwen2.h"

namespace {

using namespace resa;
using namespace resa::sim;

std::shared_ptr<const Qwen2Weights> weights_for(const std::string& shape) {
  static std::map<std::string, std::shared_ptr<const Qwen2Weights>> cache;
  auto& w = cache[shape];
  if (!w) {
    Qwen2Config c = synthetic_shape(shape);
    if (shape != "tiny") c.num_hidden_layers = 2;
    w = std::make_shared<Qwen2Weights>(make_synthetic_weights(c, 1, WeightDType::BF16));
  }
  return w;
}

// args: prompt length L, mode (0 dense, 1 sparse f=0, 2 ReSA f=32), dot (0 tensor-core, 1 fma)
void run(benchmark::State& state, const std::string& shape) {
  const int64_t L = state.range(0);
  const int mode = static_cast<int>(state.range(1));
  const int steps = 64;
  Qwen2Model model(weights_for(shape));
  ScheduleConfig sc;
  sc.arith = state.range(2) == 0 ? DotArithmetic::TensorCoreHopper : DotArithmetic::FmaChain;
  const Schedule sched = make_schedule(model.config().attention(), sc);
  SparseConfig cfg;
  cfg.rectify_every = mode == 2 ? 32 : 0;
  const auto tokens = random_tokens(L + steps + 1, model.config().vocab_size, 7);
  CpuAttentionEngine<bf16> engine(model.config().attention(), sched, cfg, model.config().num_hidden_layers,
                                  static_cast<int>(L + steps));
  ModelCallbacks cb{[&](int64_t p, int n, LayerAttention& a) {
    ForwardRequest req;
    req.logits = a.phase() == Phase::Rectify ? ForwardRequest::Logits::None : ForwardRequest::Logits::Last;
    benchmark::DoNotOptimize(model.forward(tokens.data() + p, p, n, a, req));
  }};
  // Prefill once through a dense engine, then copy (as the simulator does).
  {
    CpuAttentionEngine<bf16> pre(model.config().attention(), sched, cfg, model.config().num_hidden_layers,
                                 static_cast<int>(L + steps));
    ResaController pc(DecodeMode::Dense, cfg, pre, cb);
    pc.prefill(L);
    engine.load_prefix(pre, L);
  }
  ResaController ctrl(mode == 0 ? DecodeMode::Dense : DecodeMode::Resa, cfg, engine, cb);
  ctrl.adopt_prefill(L);
  for (auto _ : state) ctrl.decode_step();
  state.SetItemsProcessed(state.iterations());
  state.counters["L"] = static_cast<double>(L);
  state.SetLabel(std::string(mode == 0 ? "dense" : mode == 1 ? "sparse(f=0)" : "resa(f=32)") +
                 (state.range(2) == 0 ? " tensor-core" : " fma-chain"));
}

void BM_Tiny(benchmark::State& s) { run(s, "tiny"); }
void BM_R1Qwen15BAttn2Layers(benchmark::State& s) { run(s, "r1-qwen-1.5b-attn"); }

BENCHMARK(BM_Tiny)->ArgsProduct({{1024, 4096}, {0, 1, 2}, {0, 1}})->Iterations(64)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_R1Qwen15BAttn2Layers)->ArgsProduct({{1024, 4096}, {0, 1, 2}, {0, 1}})->Iterations(32)->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
