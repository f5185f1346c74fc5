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
#include "resa/testdata.h"

namespace resa::testing {

using testdata::draw;
using testdata::Fill;
using testdata::random_cache;
using testdata::random_storage;

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
