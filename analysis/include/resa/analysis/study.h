// resa/analysis/study.h — a misalignment study: dense plus sparse / ReSA runs of one model in
// lockstep, metrics per decode step and layer, written to one HDF5 file (DESIGN.md §4):
//
//   /                       attributes: format, tool, version, git_commit, command_line, created,
//                           model, config (the resolved configuration), complete (0/1)
//   /config                 the same configuration as a UTF-8 string dataset (TOML)
//   /summary                one row per completed run (compound; pandas.DataFrame(f["summary"][()]))
//   /runs/<name>/           attributes: mode, sparse, b, ratio, n_min, n_local, n_sink, f,
//                           complete (0/1), summary numbers; datasets, step axis first:
//       step [S], layer [NL], head [Hq], kv_head [Hkv]    dimension scales (xarray dims)
//       position, token, target [step]; kl, nll [step]; top1_agree, top3_hit, rectified [step]
//       k_err, v_err, k_new_err, v_new_err, selected_blocks [step][layer][kv_head]
//       attn_err, recall, top_block_mass [step][layer][head]; hidden_err, bytes_read [step][layer]
//                           (attributes start / last: the position from which the run decodes on
//                           its own and the number of steps it decodes so; 0 = every step)
//
// Runs are computed in passes (dense is recomputed in each pass: it is deterministic). A run's
// `complete` flag is set only after all its data and summary are written and flushed; the root
// flag only when every run is complete. Resume skips complete runs and redoes unfinished ones.
// Tested by tests/sim/test_study.cpp and tests/sim/check_study_h5py.py.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "resa/config.h"
#include "resa/sim/lockstep.h"

namespace resa::analysis {

struct StudyConfig {
  std::string model = "tiny";         // synthetic shape name or HF checkpoint folder
  int layers = 0;                     // synthetic shapes: layer count override (0 = the shape's)
  uint64_t seed = 0;                  // synthetic weights and random tokens
  std::string weight_dtype = "bf16";  // synthetic weights: bf16, fp16, fp32
  std::string kv_dtype = "bf16";      // bf16 or fp16
  std::string dot = "fma";            // fma (fast) or tensor-core (the sm_90a kernels' arithmetic)
  std::string tokens = "greedy";      // greedy | random | ids:PATH | text:PATH; in PATH, {seed}
                                      // stands for the seed (one passage per seed)
  int64_t prompt_len = 1024;
  int64_t steps = 512;
  SparseConfig sparse;                // defaults for every run spec
  std::vector<std::string> runs = {"sparse", "resa"};
  int64_t chunk_steps = 64;           // HDF5 chunk length and flush period (steps)
  int runs_per_pass = 0;              // runs sharing one lockstep pass (0 = all)

  void validate() const;              // throws InvalidArgument naming the field
  std::string canonical() const;      // every result-affecting field, TOML, one per line
};

// Longest run name the study's summary table stores.
inline constexpr size_t kMaxRunName = 63;

// "sparse[:k=v,...]" or "resa[:k=v,...]", keys b, ratio, n_min, n_local, n_sink, f, last, name.
// sparse means f = 0; resa takes f from the defaults unless given (f >= 1). last = x decodes only
// the last x of the `steps` decode steps this way (the run follows dense before: RunSpec::start =
// prompt_len + steps - x); 0 or absent = every step. Names default to "sparse" / "resa_f<f>" plus
// the fields that differ from the defaults; they must be unique.
std::vector<sim::RunSpec> parse_run_specs(const std::vector<std::string>& specs, const SparseConfig& defaults,
                                          int64_t prompt_len, int64_t steps);

// One run's summary. Means are over the decode steps the run decodes itself (all of them, or the
// last x for a run with last = x: the steps where it follows dense are in the per-step data but not
// in the summary; `steps` counts the summarized steps) and over layers/heads where the data has
// them, except: hidden_err_mean is the last layer's residual-stream error (the model's output
// state); nll_delta is the mean of (this run's NLL - dense's NLL) over the same steps (0 for
// dense); seconds is the wall time of the lockstep pass the run was computed in, shared by every
// run of that pass. In the per-step data the dense run's selected_blocks is M at the first run's b.
struct RunSummary {
  std::string name, mode, ratio;
  int64_t b = 0, n_min = 0, n_local = 0, n_sink = 0, f = 0, steps = 0, rectifications = 0;
  double k_err_mean = 0, k_err_max = 0, v_err_mean = 0, v_err_max = 0, attn_err_mean = 0,
         hidden_err_mean = 0, kl_mean = 0, kl_max = 0, top1_agreement = 0, nll_mean = 0, nll_delta = 0, ppl = 0,
         recall_mean = 0, bytes_rel = 0, cost_model = 0, seconds = 0;
};

struct StudyProgress {
  int pass = 0, passes = 0;
  int64_t step = 0, steps = 0;  // within the pass
  std::vector<std::string> runs;
  double elapsed_s = 0;
};

struct StudyOptions {
  std::string output;
  bool overwrite = false, resume = false;
  std::string command_line;
  std::function<void(const StudyProgress&)> progress;  // called after every step
  const std::atomic<bool>* cancel = nullptr;           // set -> StudyInterrupted at the next step
  int64_t stop_after_steps = -1;                       // tests: interrupt after this many steps
};

class StudyInterrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct StudyResult {
  std::vector<RunSummary> summary;  // every run of the file, dense first
  std::vector<std::string> skipped, computed;
  double seconds = 0;
};

// Everything is validated (configuration, model, tokens, output path) before the output is
// touched; an existing output is refused unless overwrite or resume is set. With overwrite the
// replaced file is kept as <output>.previous until the new study completes.
StudyResult run_study(const StudyConfig& cfg, const StudyOptions& opts);

// Reader of a study file (the project's own, used by tests and later sweeps).
struct RunSeries {
  std::vector<double> values;
  std::vector<uint64_t> dims;
};
class StudyReader {
 public:
  explicit StudyReader(const std::string& path);
  bool complete() const { return complete_; }
  const std::string& config() const { return config_; }
  const std::map<std::string, std::string>& root_attributes() const { return attrs_; }
  std::vector<std::string> runs() const;
  bool run_complete(const std::string& run) const;
  // Any dataset of a run, converted to double, with its shape.
  RunSeries series(const std::string& run, const std::string& dataset) const;
  std::vector<std::string> datasets(const std::string& run) const;
  std::vector<RunSummary> summary() const;  // the /summary table

 private:
  std::string path_;
  bool complete_ = false;
  std::string config_;
  std::map<std::string, std::string> attrs_;
};

// A short fixed-width table of the summary (what `resa simulate` prints).
std::string format_summary(const std::vector<RunSummary>& rows);

}  // namespace resa::analysis
