// cli/sweep.cpp — `resa sweep SPEC` (run an ablation grid into one sweep file, with progress,
// resume, a dry run, the summary table, CSV/Markdown and plots) and `resa report FILE` (print the
// summary of an existing sweep or study and regenerate the sweep's plots).
// Tested by tests/experiments/ (cli_sweep_* cases).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli_util.h"
#include "commands.h"
#include "resa/analysis/study.h"
#include "resa/experiments/sweep.h"

#ifndef RESA_SOURCE_DIR
#define RESA_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;

namespace resa::cli {

namespace {

// The names of the shipped specs (experiments/specs/<name>.toml), as they are on disk.
std::string shipped_spec_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(std::string(RESA_SOURCE_DIR) + "/experiments/specs", ec))
    if (e.path().extension() == ".toml") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  return list;
}

// A spec argument: a path, or the name of a shipped spec.
std::string resolve_spec(const std::string& arg) {
  if (fs::exists(arg)) return arg;
  const std::string shipped = std::string(RESA_SOURCE_DIR) + "/experiments/specs/" + arg + ".toml";
  if (arg.find('/') == std::string::npos && fs::exists(shipped)) return shipped;
  throw InvalidArgument("sweep spec '" + arg + "': no such file, and no shipped spec of that name (shipped: " +
                        shipped_spec_names() + ")");
}

void print_reports(const std::string& file, const std::vector<experiments::SweepRow>& rows) {
  std::printf("%s", experiments::format_table(rows).c_str());
  std::printf("\nK final, mean, peak: relative Frobenius error of the whole K cache vs dense after the last step "
              "(0 right after a\nrectification), over all steps, and its maximum; KL: nats vs dense; top1: next-token "
              "agreement with dense;\ndNLL: teacher-forced NLL change vs dense; recall: share of the run's full "
              "(dense) attention mass inside the\nselected blocks; bytes: attention bytes read / dense (measured); "
              "Eq.6: the paper's 1/b + ratio + 1/f.\n");
  std::string note;
  const auto written = experiments::write_reports(file, rows, &note);
  std::printf("\nsweep file: %s\n", file.c_str());
  for (const auto& w : written) std::printf("wrote %s\n", w.c_str());
  if (!note.empty()) std::printf("%s\n", note.c_str());
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  struct Options {
    std::string spec, output;
    bool dry_run = false, resume = false, overwrite = false, quiet = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("sweep", "Run an ablation grid (a TOML spec: lists of f, ratio, b, n_min, n_local, "
                                          "n_sink, seeds) into one sweep file with a summary table and plots");
  cmd->add_option("spec", o->spec, "Spec file, or a shipped spec name: " + shipped_spec_names())->required();
  cmd->add_option("-o,--output", o->output, "Sweep file (default: results/<spec name>.h5)");
  cmd->add_flag("--dry-run", o->dry_run, "Print the expanded grid, one line per combination, and stop");
  cmd->add_flag("--resume", o->resume, "Continue an interrupted sweep: finished combinations are kept");
  cmd->add_flag("--overwrite", o->overwrite, "Replace an existing sweep file and its shards");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress output");
  cmd->callback([o] {
    const std::string path = resolve_spec(o->spec);
    const experiments::SweepSpec spec = experiments::SweepSpec::parse_file(path);
    const auto combos = experiments::expand(spec);
    if (o->dry_run) {
      std::printf("sweep '%s' (%s): %zu combinations; every seed also runs dense\n", spec.name.c_str(), path.c_str(),
                  combos.size());
      for (const auto& c : combos)
        std::printf("%s  seed=%llu %s%s\n", c.key.c_str(), static_cast<unsigned long long>(c.seed), c.cfg.str().c_str(),
                    c.last > 0 ? (" last=" + std::to_string(c.last)).c_str() : "");
      return;
    }
    if (o->resume && o->overwrite) throw InvalidArgument("--resume and --overwrite exclude each other");
    experiments::SweepOptions so;
    so.output = o->output;
    if (so.output.empty()) {
      fs::create_directories("results");
      so.output = "results/" + spec.name + ".h5";
    }
    so.resume = o->resume;
    so.overwrite = o->overwrite;
    so.command_line = command_line("resa sweep");
    so.cancel = InterruptGuard::flag();
    ProgressPacer pacer;
    const bool tty = pacer.tty();
    bool announced = false;
    if (!o->quiet)
      so.progress = [&](const experiments::SweepProgress& p) {
        if (!announced) {  // after run_sweep has accepted the spec and the output
          std::fprintf(stderr, "sweep '%s': %zu combinations from %s -> %s\n", spec.name.c_str(), combos.size(),
                       path.c_str(), so.output.c_str());
          announced = true;
        }
        if (!pacer.due(p.fraction >= 1.0)) return;
        std::fprintf(stderr, "%s[%d/%d] %s  %3.0f%%  elapsed %.0fs  ETA %s%s", tty ? "\r" : "", p.done, p.total,
                     p.current.c_str(), 100.0 * p.fraction, p.elapsed_s,
                     p.eta_s < 0 ? "?" : (std::to_string(static_cast<long long>(p.eta_s + 0.5)) + "s").c_str(),
                     tty ? "    " : "\n");
        std::fflush(stderr);
      };
    std::vector<experiments::SweepRow> rows;
    try {
      const InterruptGuard guard;
      rows = experiments::run_sweep(spec, so);
    } catch (const analysis::StudyInterrupted& e) {
      std::fprintf(stderr, "\nresa sweep: %s; finished combinations are kept in %s.shards — continue with --resume\n",
                   e.what(), so.output.c_str());
      throw CLI::RuntimeError(130);
    }
    if (!o->quiet && tty) std::fprintf(stderr, "\n");
    print_reports(so.output, rows);
  });
}

void add_report_command(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("report", "Print the summary of a sweep or study file and regenerate its plots");
  cmd->add_option("file", *file, "A sweep file (resa sweep) or a study file (resa simulate)")->required();
  cmd->callback([file] {
    if (!fs::exists(*file)) throw InvalidArgument("report: '" + *file + "' does not exist");
    try {
      const auto rows = experiments::read_sweep(*file);
      print_reports(*file, rows);
      return;
    } catch (const InvalidArgument&) {
      // not a sweep file: a study file?
    }
    const analysis::StudyReader study(*file);
    std::printf("%s", analysis::format_summary(study.summary()).c_str());
    std::printf("\n%s is a study file (resa simulate)%s; plots are made for sweep files (resa sweep).\n", file->c_str(),
                study.complete() ? "" : ", NOT complete — resume it with resa simulate --resume");
  });
}

}  // namespace resa::cli
