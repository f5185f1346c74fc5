// tests/test_util.h — input generators and comparison helpers shared by the reference tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "resa/attention.h"
#include "resa/kv_cache.h"
#include "resa/numerics.h"

namespace resa::testing {

// Kinds of values: the test tiers of DESIGN.md §3.
enum class Fill {
  Normal,     // N(0, 1)
  Spread,     // N(0, 1) times 2^U(-12, 12): large exponent spread
  Adversarial // Spread plus exact ties (repeated values) and signed zeros
};

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
      if (p == 2) return 0.5f;  // a repeated value: ties in scores and descriptors
      return std::ldexp(n(rng), e(rng) / 2);
    }
  }
  return 0.0f;
}

template <class T>
std::vector<T> random_storage(size_t n, std::mt19937_64& rng, Fill fill, float scale = 1.0f) {
  std::vector<T> out(n);
  for (auto& x : out) x = from_float<T>(scale * draw(rng, fill));
  return out;
}

template <class T>
KvCache<T> random_cache(const AttentionShape& shape, const std::vector<int64_t>& lengths,
                        int capacity, std::mt19937_64& rng, Fill fill) {
  KvCache<T> c(static_cast<int>(lengths.size()), shape.n_kv_heads, capacity, shape.head_dim);
  for (auto& x : c.k) x = from_float<T>(draw(rng, fill));
  for (auto& x : c.v) x = from_float<T>(draw(rng, fill));
  c.length = lengths;
  return c;
}

inline uint32_t bits(float x) { return f32_bits(x); }

// Number of elements whose bit patterns differ; prints the first few.
inline int64_t bit_mismatches(const std::vector<float>& a, const std::vector<float>& b,
                              const std::string& what) {
  int64_t n = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (bits(a[i]) != bits(b[i])) {
      if (n < 5)
        ADD_FAILURE() << what << ": element " << i << " differs: " << a[i] << " (0x" << std::hex
                      << bits(a[i]) << ") vs " << b[i] << " (0x" << bits(b[i]) << std::dec << ")";
      ++n;
    }
  if (a.size() != b.size()) ADD_FAILURE() << what << ": sizes differ";
  return n;
}

}  // namespace resa::testing
