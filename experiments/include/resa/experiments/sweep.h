// resa/experiments/sweep.h — ablation sweeps: a spec file (TOML) with lists of f, ratio, b, n_min,
// n_local, n_sink and seeds expands to every combination, each with a stable key; each seed's
// combinations run as one lockstep study (analysis/study.h, one shard file per seed, resumable),
// and the shards merge into one sweep file with a summary table per combination.
//
// Sweep file (HDF5), what `resa report` and experiments/plot_sweep.py read:
//   A [grid] list `last` (x values) runs the paper's language-modelling protocol: each such run
//   follows dense for the first steps - x decode steps and decodes the last x itself.
//   /                   attributes: format = "resa-sweep", tool, version, git_commit, command_line,
//                       created, spec_name, combinations, complete (0/1)
//   /spec               the spec file text (string dataset)
//   /sweep              one row per combination and one per seed's dense run (compound;
//                       pandas.DataFrame(f["sweep"][()])), the members of SweepRow below: key,
//                       mode, seed, b, ratio, n_min, n_local, n_sink, f, last, misalignment K/V
//                       final, mean and peak, KL mean, top-1 agreement, NLL change vs dense,
//                       recall, measured bytes fraction, Eq. 6, rectifications (read them by
//                       name: files before 2026-11-28 store key, mode, ratio first)
//   /runs/<key>         the combination's per-step datasets, copied from its shard (same layout
//                       as a study run: k_err [step][layer][kv_head], kl [step], rectified ...)
// Shards live in <output>.shards/seed<k>.h5 and stay for resume and inspection. With overwrite, an
// existing sweep file stays until the new one, complete, replaces it (rename).
// Tested by tests/experiments/test_sweep.cpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "resa/analysis/study.h"
#include "resa/config.h"

namespace resa::experiments {

struct SweepSpec {
  std::string name;                 // from the spec (default: the file's stem)
  analysis::StudyConfig base;       // model, tokens, prompt_len, steps, dtypes, dot, chunk_steps
  std::vector<uint64_t> seeds = {0};
  std::vector<int> f = {32}, b = {16}, n_min = {16}, n_local = {1}, n_sink = {0};
  std::vector<int> last = {0};      // decode only the last x steps sparsely (0 = every step)
  std::vector<Fraction> ratio = {Fraction{1, 10}};
  std::string text;                 // the spec as read

  // Parses TOML text; `origin` names it in errors ("experiments/specs/default.toml"). Unknown keys,
  // wrong types and invalid values throw InvalidArgument naming the key.
  static SweepSpec parse(const std::string& text, const std::string& origin);
  static SweepSpec parse_file(const std::string& path);
};

// One point of the grid. key is stable: it depends only on the values, e.g.
// "s0_b16_r1-10_nmin16_nloc1_nsink0_f32".
struct Combination {
  uint64_t seed = 0;
  SparseConfig cfg;
  int last = 0;  // the run decodes only the last `last` steps itself (0 = every step)
  std::string key;
};
std::vector<Combination> expand(const SweepSpec& spec);
// ..._f<f>, then _last<x> when x > 0 (keys of sweeps without `last` are unchanged).
std::string combination_key(uint64_t seed, const SparseConfig& cfg, int last = 0);

// One row of /sweep and of the CSV/Markdown tables. Every member must be a column of
// RESA_SWEEP_COLUMNS in sweep.cpp: a column listed there and missing here fails to compile, a
// member added here and not listed there is never written.
struct SweepRow {
  std::string key, mode;  // mode: dense, sparse (f = 0) or resa
  uint64_t seed = 0;
  int b = 0, n_min = 0, n_local = 0, n_sink = 0, f = 0, last = 0;
  std::string ratio;
  // Cache misalignment (mean over layers and KV heads) after the last step (0 right after a
  // rectification), its mean and its peak over the steps (the top of ReSA's sawtooth).
  double k_err_final = 0, k_err_mean = 0, k_err_peak = 0, v_err_final = 0, v_err_mean = 0, v_err_peak = 0;
  double kl_mean = 0, top1_agreement = 0, nll_delta = 0, recall_mean = 0;
  double bytes_rel = 0, cost_model = 0;
  int64_t rectifications = 0;
};

struct SweepProgress {
  int done = 0, total = 0;     // combinations finished / in the grid
  std::string current;         // what runs now
  double fraction = 0;         // of the whole sweep's work
  double elapsed_s = 0, eta_s = -1;
};

struct SweepOptions {
  std::string output;          // the sweep file; shards go to <output>.shards/
  bool overwrite = false, resume = false;
  std::string command_line;
  std::function<void(const SweepProgress&)> progress;
  const std::atomic<bool>* cancel = nullptr;  // set -> analysis::StudyInterrupted at the next step
  int64_t stop_after_steps = -1;  // tests: interrupt the first shard after this many steps
};

// Runs every combination (validating the spec and the output first) and writes the sweep file.
// Throws analysis::StudyInterrupted when stopped; a later call with resume continues.
std::vector<SweepRow> run_sweep(const SweepSpec& spec, const SweepOptions& opts);

// The /sweep table of a sweep file; throws if the file is not a complete sweep file.
std::vector<SweepRow> read_sweep(const std::string& path);

std::string format_table(const std::vector<SweepRow>& rows);  // fixed width, for the terminal
std::string to_csv(const std::vector<SweepRow>& rows);
std::string to_markdown(const std::vector<SweepRow>& rows);

// Writes <stem>.csv and <stem>.md next to the sweep file and, when Python 3 with h5py and
// matplotlib is available, the plots <stem>_misalignment.png and <stem>_tradeoff.png (by
// experiments/plot_sweep.py). Returns the paths written; `note` receives how to get the plots
// when they could not be made.
std::vector<std::string> write_reports(const std::string& sweep_file, const std::vector<SweepRow>& rows,
                                       std::string* note);

}  // namespace resa::experiments
