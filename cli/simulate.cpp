// cli/simulate.cpp — `resa simulate`: a KV-misalignment study (dense vs sparse vs ReSA) of one
// model, written to one HDF5 file (analysis/study.h), with progress and a summary table.
// With only --output it runs the `tiny` synthetic model with dense / sparse (f=0) / ReSA (f=32).
// Options may also come from a TOML or INI file (--config); unknown keys are rejected.
// Tested by tests/sim/CMakeLists.txt (cli_simulate_* cases) and tests/sim/check_study_h5py.py.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli_util.h"
#include "commands.h"
#include "resa/analysis/study.h"

namespace resa::cli {

namespace {

struct Settings {
  analysis::StudyConfig cfg;
  std::string config_file;
  std::string ratio = "1/10";
  std::string output;
  bool overwrite = false, resume = false, quiet = false;
};

// Options from a TOML/INI file (CLI11's parser), applied to the options the command line left
// unset. Keys are long option names with - or _; a [simulate] section is accepted.
void apply_config_file(CLI::App& cmd, const std::string& path) {
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::Error& e) {
    throw InvalidArgument("config file " + path + ": " + e.what());
  }
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers of the parser
    if (!(item.parents.empty() || (item.parents.size() == 1 && item.parents[0] == "simulate")))
      throw InvalidArgument("config file " + path + ": unknown section [" + item.parents[0] + "]");
    std::string name = item.name;
    for (char& ch : name)
      if (ch == '_') ch = '-';
    CLI::Option* opt = name == "config" ? nullptr : cmd.get_option_no_throw("--" + name);
    if (!opt) throw InvalidArgument("config file " + path + ": unknown key \"" + item.name + "\" (keys are the long options of resa simulate)");
    if (opt->count() > 0) continue;
    try {
      opt->add_result(item.inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw InvalidArgument("config file " + path + ": key \"" + item.name + "\": " + e.what());
    }
  }
}

}  // namespace

void add_simulate_command(CLI::App& app) {
  auto s = std::make_shared<Settings>();
  auto* cmd = app.add_subcommand(
      "simulate",
      "Run dense, sparse and ReSA decoding of one model in lockstep and write the KV-misalignment study to HDF5");
  cmd->add_option("--config", s->config_file,
                  "Read options from a TOML or INI file: keys are the long option names (run = [..] for several "
                  "runs); unknown keys are errors; the command line wins");
  analysis::StudyConfig& c = s->cfg;
  cmd->add_option("--output,-o", s->output, "Study file to write (HDF5); required");
  cmd->add_flag("--overwrite", s->overwrite, "Replace an existing study file");
  cmd->add_flag("--resume", s->resume, "Continue an interrupted study: complete runs are kept, unfinished ones redone");
  cmd->add_option("--model,-m", c.model,
                  "Synthetic shape (tiny, r1-qwen-1.5b-attn, r1-qwen-7b-attn) or a Hugging Face checkpoint folder")
      ->capture_default_str();
  cmd->add_option("--layers", c.layers, "Synthetic shapes: number of layers (0 = the shape's)")->capture_default_str();
  cmd->add_option("--seed", c.seed, "Seed of synthetic weights and random tokens")->capture_default_str();
  cmd->add_option("--weight-dtype", c.weight_dtype, "Synthetic weights: bf16, fp16 or fp32")->capture_default_str();
  cmd->add_option("--kv-dtype", c.kv_dtype, "KV cache dtype: bf16 or fp16")->capture_default_str();
  cmd->add_option("--dot", c.dot,
                  "Attention dot products: fma (fixed-order FMA chain, fast) or tensor-core (the sm_90a kernels' "
                  "arithmetic, bit-comparable with GPU runs, ~40x slower on a CPU)")
      ->capture_default_str();
  cmd->add_option("--tokens", c.tokens,
                  "Token stream: greedy (random prompt, dense greedy continuation), random, ids:FILE (token ids), "
                  "text:FILE (raw bytes)")
      ->capture_default_str();
  cmd->add_option("--prompt-len", c.prompt_len, "Prompt tokens (dense prefill, shared by every run)")->capture_default_str();
  cmd->add_option("--steps", c.steps, "Decode steps")->capture_default_str();
  cmd->add_option("--block-size,-b", c.sparse.block_size, "Default b: tokens per block")->capture_default_str();
  cmd->add_option("--ratio", s->ratio, "Default fraction of blocks kept, e.g. 1/10 or 0.1")->capture_default_str();
  cmd->add_option("--n-min", c.sparse.n_min, "Default minimum number of selected blocks")->capture_default_str();
  cmd->add_option("--n-local", c.sparse.n_local, "Default number of last blocks always selected")->capture_default_str();
  cmd->add_option("--n-sink", c.sparse.n_sink, "Default number of first blocks always selected")->capture_default_str();
  cmd->add_option("--rectify-every,-f", c.sparse.rectify_every, "Default f of resa runs")->capture_default_str();
  cmd->add_option("--run", c.runs,
                  "A run besides dense: sparse[:k=v,...] or resa[:k=v,...], keys b, ratio, n_min, n_local, n_sink, f, "
                  "last (decode only the last x steps so; before, follow dense), "
                  "name (repeatable; default: sparse and resa)")
      ->capture_default_str();
  cmd->add_option("--chunk-steps", c.chunk_steps, "HDF5 chunk length and flush period in steps")->capture_default_str();
  cmd->add_option("--runs-per-pass", c.runs_per_pass,
                  "Runs sharing one lockstep pass (0 = all; smaller passes make resume finer-grained)")
      ->capture_default_str();
  cmd->add_flag("--quiet,-q", s->quiet, "No progress output");

  cmd->callback([s, cmd] {
    if (!s->config_file.empty()) apply_config_file(*cmd, s->config_file);
    if (s->output.empty()) throw InvalidArgument("--output: required (the study file to write)");
    analysis::StudyConfig cfg = s->cfg;
    cfg.sparse.ratio = Fraction::parse(s->ratio);
    analysis::StudyOptions opts;
    opts.output = s->output;
    opts.overwrite = s->overwrite;
    opts.resume = s->resume;
    opts.command_line = command_line("resa simulate");
    opts.cancel = InterruptGuard::flag();
    ProgressPacer pacer;
    const bool tty = pacer.tty();
    if (!s->quiet)
      opts.progress = [&](const analysis::StudyProgress& p) {
        const bool done = p.step == p.steps;
        if (p.elapsed_s < 2.0 && !done) return;
        if (done && !pacer.printed()) return;  // short pass: no progress lines at all
        if (!pacer.due(done)) return;
        const double rate = p.step / std::max(p.elapsed_s, 1e-9);
        std::fprintf(stderr, "%s[pass %d/%d] step %lld/%lld (%3.0f%%)  %.1f steps/s  ETA %.0fs%s", tty ? "\r" : "",
                     p.pass + 1, p.passes, static_cast<long long>(p.step), static_cast<long long>(p.steps),
                     100.0 * p.step / p.steps, rate, (p.steps - p.step) / std::max(rate, 1e-9),
                     tty && !done ? "   " : "\n");
        std::fflush(stderr);
      };
    analysis::StudyResult r;
    try {
      const InterruptGuard guard;
      r = analysis::run_study(cfg, opts);
    } catch (const analysis::StudyInterrupted& e) {
      std::fprintf(stderr, "\nresa simulate: %s; %s keeps the completed runs and is marked incomplete — continue "
                   "with --resume\n", e.what(), s->output.c_str());
      throw CLI::RuntimeError(130);
    }
    std::printf("%s", analysis::format_summary(r.summary).c_str());
    std::printf("\nK/V err: relative Frobenius error of the whole cache vs dense (mean / max over steps, layers, "
                "heads); KL: nats vs dense;\nbytes: attention bytes read relative to dense; Eq.6: 1/b + ratio + 1/f.\n");
    std::string skipped;
    for (const auto& n : r.skipped) skipped += (skipped.empty() ? "" : ", ") + n;
    std::printf("wrote %s (%zu runs computed%s) in %.1f s\n", s->output.c_str(), r.computed.size(),
                skipped.empty() ? "" : (", kept complete: " + skipped).c_str(), r.seconds);
  });
}

}  // namespace resa::cli
