// resa/fp_env.h — runtime guards of the floating-point environment and a description of the build,
// for `resa info` and the tests (DESIGN.md §3: no FTZ/DAZ, no contraction, no fast-math).
#pragma once

#include <string>
#include <vector>

namespace resa {

struct FpEnvironmentCheck {
  bool subnormal_results_kept;  // FTZ off: FLT_MIN / 2 is not flushed to zero
  bool subnormal_inputs_kept;   // DAZ off: a subnormal operand is not read as zero
  bool no_contraction;          // a*b+c compiled here rounds twice (no FMA contraction)
  bool ok() const { return subnormal_results_kept && subnormal_inputs_kept && no_contraction; }
};
FpEnvironmentCheck check_fp_environment();
// Throws std::runtime_error naming the failed guard.
void require_fp_environment();

// The toolkit's version and the git commit it was configured from (provenance attributes).
const char* version();
const char* git_commit();

// Lines "key: value" describing the build (compiler, flags, guards, features compiled in).
std::vector<std::pair<std::string, std::string>> build_info();

}  // namespace resa
