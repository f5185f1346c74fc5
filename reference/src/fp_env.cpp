// fp_env.cpp — runtime floating-point guards and build description.
#include "resa/fp_env.h"

#include <cfloat>
#include <stdexcept>

#include "resa/numerics.h"
#include "resa_git_commit.h"  // RESA_GIT_COMMIT, written at build time by cmake/git_commit.cmake

#ifndef RESA_VERSION
#define RESA_VERSION "0.0.0"
#endif

namespace resa {

FpEnvironmentCheck check_fp_environment() {
  volatile float tiny = FLT_MIN;
  volatile float two = 2.0f;
  const float half_tiny = tiny / two;                         // FTZ would give 0
  volatile float sub = half_tiny;
  const float back = sub * two;                               // DAZ would read sub as 0
  volatile float a = 1.0f + 0x1p-12f, b = 1.0f + 0x1p-12f, c = -(1.0f + 0x1p-11f);
  const float contracted = a * b + c;  // exact FMA: 2^-24; product rounded first: 0
  return {half_tiny != 0.0f, back == FLT_MIN, contracted == 0.0f};
}

void require_fp_environment() {
  const FpEnvironmentCheck c = check_fp_environment();
  if (!c.subnormal_results_kept)
    throw std::runtime_error("floating-point environment: flush-to-zero (FTZ) is on; resa needs it off");
  if (!c.subnormal_inputs_kept)
    throw std::runtime_error("floating-point environment: denormals-are-zero (DAZ) is on; resa needs it off");
  if (!c.no_contraction)
    throw std::runtime_error("floating-point environment: a*b+c was contracted into an FMA; build with -ffp-contract=off");
}

const char* version() { return RESA_VERSION; }
const char* git_commit() { return RESA_GIT_COMMIT; }

std::vector<std::pair<std::string, std::string>> build_info() {
  std::vector<std::pair<std::string, std::string>> info;
  info.emplace_back("version", RESA_VERSION);
  info.emplace_back("git commit", RESA_GIT_COMMIT);
#if defined(__clang__)
  info.emplace_back("compiler", std::string("clang ") + __clang_version__);
#elif defined(__GNUC__)
  info.emplace_back("compiler", std::string("g++ ") + __VERSION__);
#endif
  info.emplace_back("FLT_EVAL_METHOD", std::to_string(FLT_EVAL_METHOD));
#if defined(__FAST_MATH__)
  info.emplace_back("fast-math", "ON (not allowed)");
#else
  info.emplace_back("fast-math", "off");
#endif
  const FpEnvironmentCheck c = check_fp_environment();
  info.emplace_back("FTZ (flush to zero)", c.subnormal_results_kept ? "off" : "ON (not allowed)");
  info.emplace_back("DAZ (denormals are zero)", c.subnormal_inputs_kept ? "off" : "ON (not allowed)");
  info.emplace_back("FMA contraction", c.no_contraction ? "off (-ffp-contract=off)" : "ON (not allowed)");
#if defined(_OPENMP)
  info.emplace_back("OpenMP", std::to_string(_OPENMP));
#else
  info.emplace_back("OpenMP", "not compiled in");
#endif
  return info;
}

}  // namespace resa
