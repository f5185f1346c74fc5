// resa/testdata.h — seeded random inputs in the test tiers of DESIGN.md §3, shared by the tests,
// `resa selftest` and the GPU validation matrix (`resa verify`).
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "resa/kv_cache.h"
#include "resa/numerics.h"
#include "resa/schedule.h"

namespace resa::testdata {

enum class Fill {
  Normal,      // N(0, 1)
  Spread,      // N(0, 1) times 2^U(-12, 12): large exponent spread
  Adversarial  // ties (a repeated value), signed zeros, moderate spread
};
inline const char* fill_name(Fill f) {
  return f == Fill::Normal ? "normal" : f == Fill::Spread ? "spread" : "adversarial";
}

inline float draw(std::mt19937_64& rng, Fill fill) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_int_distribution<int> e(-12, 12), pick(0, 15);
  switch (fill) {
    case Fill::Normal: return n(rng);
    case Fill::Spread: return std::ldexp(n(rng), e(rng));
    case Fill::Adversarial: {
      const int p = pick(rng);
      if (p == 0) return 0.0f;
      if (p == 1) return -0.0f;
      if (p == 2) return 0.5f;
      return std::ldexp(n(rng), e(rng) / 2);
    }
  }
  return 0.0f;
}

template <class T>
std::vector<T> random_storage(size_t n, std::mt19937_64& rng, Fill fill) {
  std::vector<T> out(n);
  for (auto& x : out) x = from_float<T>(draw(rng, fill));
  return out;
}

template <class T>
KvCache<T> random_cache(const AttentionShape& shape, const std::vector<int64_t>& lengths, int capacity,
                        std::mt19937_64& rng, Fill fill) {
  KvCache<T> c(static_cast<int>(lengths.size()), shape.n_kv_heads, capacity, shape.head_dim);
  for (auto& x : c.k) x = from_float<T>(draw(rng, fill));
  for (auto& x : c.v) x = from_float<T>(draw(rng, fill));
  c.length = lengths;
  return c;
}

}  // namespace resa::testdata
