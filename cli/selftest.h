// cli/selftest.h — `resa selftest`: the reference against the fp64 oracle on a random matrix.
#pragma once

#include <cstdint>
#include <string>

#include "resa/config.h"

namespace resa::cli {

struct SelftestOptions {
  uint64_t seed = 2026;
  bool quick = false;       // fewer and shorter cases (for the CLI smoke test)
  SparseConfig sparse;      // b, ratio, n_min, ... for the sparse rows
};

// Prints one table row per case and a summary; returns the number of failed cases.
int run_selftest(const SelftestOptions& opt);

}  // namespace resa::cli
