// cli/commands.h — each `resa` subcommand registers itself on the app from its own file.
// A command's callback throws CLI::RuntimeError(code) to exit non-zero and lets library
// exceptions (resa::InvalidArgument, std::runtime_error) reach main(), which prints them.
#pragma once

#include <CLI/CLI.hpp>

namespace resa::cli {

void add_info_command(CLI::App& app);      // main.cpp
void add_selftest_command(CLI::App& app);  // selftest.cpp
void add_simulate_command(CLI::App& app);  // simulate.cpp
void add_verify_command(CLI::App& app);    // verify.cpp
void add_sweep_command(CLI::App& app);     // sweep.cpp
void add_report_command(CLI::App& app);    // sweep.cpp

}  // namespace resa::cli
