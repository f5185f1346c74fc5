// cli/cli_util.h — small helpers shared by the long-running subcommands: the process's command
// line (for provenance attributes) and an interrupt flag set by SIGINT/SIGTERM while a study runs.
#pragma once

#include <atomic>
#include <string>

namespace resa::cli {

// The command line as typed (from /proc/self/cmdline), or `fallback`.
std::string command_line(const std::string& fallback);

// While alive, SIGINT and SIGTERM set flag() instead of killing the process, so a study can close
// its file cleanly (marked incomplete) and be resumed.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  static const std::atomic<bool>* flag();
};

}  // namespace resa::cli
