// cli/main.cpp — the `resa` command line: main() and `resa info`. Each other subcommand lives in
// its own file and registers itself (commands.h). Library errors arrive as exceptions; main()
// turns them into a message and a non-zero exit.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

#include "commands.h"
#include "resa/config.h"
#include "resa/fp_env.h"
#include "resa/schedule.h"
#if defined(RESA_HAVE_CUDA)
#include "resa_cuda/api.h"
#endif

namespace resa::cli {

namespace {

int run_info() {
  std::printf("resa — Rectified Sparse Attention toolkit\n\n");
  for (const auto& [k, v] : resa::build_info()) std::printf("  %-26s %s\n", (k + ":").c_str(), v.c_str());
#if defined(RESA_HAVE_CUDA)
  std::printf("  %-26s %s\n", "CUDA kernels:", "compiled in (" RESA_CUDA_ARCHS ")");
  std::printf("  %-26s %s\n", "CUDA device:", resa::cuda::device_info().str().c_str());
#else
  std::printf("  %-26s %s\n", "CUDA kernels:", "not compiled in (nvcc not found, or RESA_ENABLE_CUDA=OFF)");
#endif
  const resa::SparseConfig cfg;
  const resa::Schedule s = resa::make_schedule({12, 2, 128});
  std::printf("\nDefaults: %s (cost model 1/b + ratio + 1/f = %.3f of dense bytes)\n",
              cfg.str().c_str(), resa::cost_model_fraction(cfg));
  std::printf("Schedule (Hq=12 Hkv=2 d=128): %s\n", s.str().c_str());
  std::printf("Supported: head dim 64 and 128, GQA group 1..8, KV dtype bf16 and fp16.\n");
  const resa::FpEnvironmentCheck fp = resa::check_fp_environment();
  std::printf("\nNumerics guards: %s\n", fp.ok() ? "all hold" : "FAILED (results would not be bit-exact)");
  return fp.ok() ? 0 : 1;
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto* info = app.add_subcommand("info", "Show the build, the numerics guards and what is compiled in");
  info->callback([] {
    if (const int rc = run_info(); rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace resa::cli

int main(int argc, char** argv) {
  CLI::App app{"resa — Rectified Sparse Attention toolkit: bit-exact reference, CUDA kernels, decode "
               "simulator and ablation sweeps (arXiv 2506.04108)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(resa::version()) + " (" + resa::git_commit() + ")");
  resa::cli::add_info_command(app);
  resa::cli::add_selftest_command(app);
  resa::cli::add_simulate_command(app);
  resa::cli::add_verify_command(app);
  resa::cli::add_sweep_command(app);
  resa::cli::add_report_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resa: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
