// resa_cuda/verify.h — the validation matrix: every CUDA kernel against the CPU reference on the
// same inputs, compared as bit patterns. Used by `resa verify` and tests/gpu/.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace resa::cuda {

struct KernelTally {
  int64_t cases = 0;
  int64_t elements = 0;
  int64_t mismatches = 0;       // elements whose bit patterns differ
  uint64_t worst_ulp = 0;       // largest distance in units of the last place among mismatches
  std::string first_failure;    // description of the first mismatching case
};

struct VerifyOptions {
  bool quick = false;       // a small representative subset (sanitizer runs)
  bool long_context = true; // include lengths up to 300K (slow on the CPU reference side)
  uint64_t seed = 2026;
  std::function<void(const std::string&)> progress;  // one line per case, optional
};

struct VerifyReport {
  std::map<std::string, KernelTally> kernels;  // keyed by kernel name
  int64_t total_mismatches() const {
    int64_t n = 0;
    for (const auto& [k, t] : kernels) n += t.mismatches;
    return n;
  }
};

// Runs the matrix on device 0. Throws CudaError when no device is usable.
VerifyReport run_validation_matrix(const VerifyOptions& opt);

// Units in the last place between two fp32 bit patterns (0 when equal, max when NaN vs number).
uint64_t ulp_distance(uint32_t a, uint32_t b);

}  // namespace resa::cuda
