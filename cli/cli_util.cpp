// cli/cli_util.cpp — see cli_util.h.
#include "cli_util.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iterator>

namespace resa::cli {

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted.store(true); }
}  // namespace

std::string command_line(const std::string& fallback) {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), out;
  for (char c : raw) out += c == '\0' ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out.empty() ? fallback : out;
}

InterruptGuard::InterruptGuard() {
  g_interrupted.store(false);
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
}
InterruptGuard::~InterruptGuard() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}
const std::atomic<bool>* InterruptGuard::flag() { return &g_interrupted; }

ProgressPacer::ProgressPacer() : tty_(isatty(fileno(stderr)) != 0) {}

bool ProgressPacer::due(bool final) {
  const auto now = std::chrono::steady_clock::now();
  if (!final && printed_ && std::chrono::duration<double>(now - last_).count() < (tty_ ? 0.5 : 5.0)) return false;
  last_ = now, printed_ = true;
  return true;
}

}  // namespace resa::cli
