// cli/cli_util.h — small helpers shared by the long-running subcommands: the process's command
// line (for provenance attributes), an interrupt flag set by SIGINT/SIGTERM while a study runs,
// and the pacing of progress lines.
#pragma once

#include <atomic>
#include <chrono>
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

// Pacing of progress lines on stderr: redrawn in place every 0.5 s on a terminal, one line every
// 5 s into a log; the final update is always due. It keeps its own clock (the callers' elapsed
// times restart with each pass of a study).
class ProgressPacer {
 public:
  ProgressPacer();
  bool tty() const { return tty_; }
  bool printed() const { return printed_; }  // some line was printed
  // Whether an update now prints; if so it counts as printed.
  bool due(bool final);

 private:
  bool tty_, printed_ = false;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace resa::cli
