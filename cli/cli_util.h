// cli/cli_util.h — small helpers shared by the long-running subcommands: the process's command
// line (for provenance attributes), an interrupt flag set by SIGINT/SIGTERM while a study runs,
// and the pacing of progress lines.
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

// Pacing of progress lines on stderr: redrawn in place every 0.5 s on a terminal, one line every
// 5 s into a log; the final update is always due.
class ProgressPacer {
 public:
  ProgressPacer();
  bool tty() const { return tty_; }
  bool printed() const { return last_ >= 0; }  // some line was printed
  // Whether the update at `elapsed_s` prints; if so it counts as printed.
  bool due(double elapsed_s, bool final);

 private:
  bool tty_;
  double last_ = -1;
};

}  // namespace resa::cli
