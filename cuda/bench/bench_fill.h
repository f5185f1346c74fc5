// cuda/bench/bench_fill.h — the benchmark's input values: pseudo-random bf16 in about [-2, 2]
// from a hash of the element index and a seed. One definition for the device fill of
// cuda/bench/bench_gpu.cu and for host tools that rebuild the benchmark's data
// (cuda/lab/topk_passes.cpp), so the two cannot drift apart.
#pragma once

#include <cstddef>
#include <cstdint>

#include "resa/numerics.h"

namespace resa::bench {

RESA_HD bf16 fill_value(size_t i, uint64_t seed) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  const float u = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  return from_float<bf16>(4.0f * u - 2.0f);
}

}  // namespace resa::bench
