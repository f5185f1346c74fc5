// cli/verify.cpp — `resa verify`: run the GPU validation matrix (cuda/src/verify.cpp) on the
// present card and print, per kernel, cases run, elements compared, mismatching bit patterns
// (must be 0) and the worst ulp distance. Exits non-zero on any mismatch, and when there is no
// GPU (or the build has no CUDA) it says so and exits non-zero.
#include <cstdio>
#include <memory>

#include "commands.h"

#if defined(RESA_HAVE_CUDA)
#include "resa_cuda/api.h"
#include "resa_cuda/verify.h"
#endif

namespace resa::cli {

void add_verify_command(CLI::App& app) {
  struct Options {
    bool quick = false, no_long = false, verbose = false;
    uint64_t seed = 2026;
  };
  auto opt = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("verify",
                                 "Check every CUDA kernel against the CPU reference, bit for bit, on the present GPU");
  cmd->add_flag("--quick", opt->quick, "A small representative subset (for sanitizer runs)");
  cmd->add_flag("--no-long-context", opt->no_long, "Skip the 128K-600K cases (the CPU reference is slow there)");
  cmd->add_flag("-v,--verbose", opt->verbose, "Print one line per case");
  cmd->add_option("--seed", opt->seed, "Random seed")->capture_default_str();
  cmd->callback([opt] {
#if defined(RESA_HAVE_CUDA)
    const cuda::DeviceInfo dev = cuda::device_info();
    if (!dev.present) {
      std::fprintf(stderr, "resa verify: no GPU to verify on: %s\n", dev.why_absent.c_str());
      throw CLI::RuntimeError(3);
    }
    std::printf("resa verify on %s\n", dev.str().c_str());
    cuda::VerifyOptions vo;
    vo.quick = opt->quick;
    vo.long_context = !opt->no_long;
    vo.seed = opt->seed;
    if (opt->verbose) vo.progress = [](const std::string& line) { std::printf("  %s\n", line.c_str()); std::fflush(stdout); };
    const cuda::VerifyReport r = cuda::run_validation_matrix(vo);
    std::printf("\n%-40s %7s %12s %10s %10s\n", "kernel", "cases", "elements", "mismatch", "worst ulp");
    for (const auto& [name, t] : r.kernels)
      std::printf("%-40s %7lld %12lld %10lld %10s\n", name.c_str(), static_cast<long long>(t.cases),
                  static_cast<long long>(t.elements), static_cast<long long>(t.mismatches),
                  t.mismatches ? std::to_string(t.worst_ulp).c_str() : "-");
    for (const auto& [name, t] : r.kernels)
      if (!t.first_failure.empty()) std::printf("  first failure in %s: %s\n", name.c_str(), t.first_failure.c_str());
    const long long bad = r.total_mismatches();
    int failed_kernels = 0;
    for (const auto& [name, t] : r.kernels) failed_kernels += t.mismatches != 0;
    std::printf("\nverify: %d passed, %d failed (kernels; %lld mismatching elements) on %s\n",
                static_cast<int>(r.kernels.size()) - failed_kernels, failed_kernels, bad, dev.name.c_str());
    if (bad) throw CLI::RuntimeError(1);
#else
    (void)opt;
    std::fprintf(stderr, "resa verify: this build has no CUDA kernels (nvcc was not found at configure time, or "
                         "RESA_ENABLE_CUDA=OFF); nothing to verify\n");
    throw CLI::RuntimeError(3);
#endif
  });
}

}  // namespace resa::cli
