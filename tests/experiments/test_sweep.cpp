// tests/experiments/test_sweep.cpp — sweep specs (keys named in every rejection), grid expansion
// with stable keys, resume after an interruption equals an uninterrupted sweep (bit patterns of
// every dataset), and the summary's cost columns against the paper's Eq. 6.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "resa/analysis/h5.h"
#include "resa/experiments/sweep.h"

namespace fs = std::filesystem;

namespace resa::experiments {
namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("resa_sweep_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

const char* kSmall = R"(name = "small"
model = "tiny"
layers = 2
tokens = "random"
prompt_len = 96
steps = 30
seeds = [3]
chunk_steps = 8

[grid]
f = [0, 4, 16]
ratio = ["1/4", 0.5]
b = [8]
n_min = [0]
)";

std::string expect_rejected(const std::string& text) {
  try {
    SweepSpec::parse(text, "spec.toml");
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted:\n" << text;
  return "";
}

TEST(SweepSpec, ParsesTheShippedSpecs) {
  for (const char* name : {"default", "paper", "real-nll", "real-lm", "real-nll-f1"}) {
    const SweepSpec s = SweepSpec::parse_file(std::string(RESA_SOURCE_DIR) + "/experiments/specs/" + name + ".toml");
    EXPECT_EQ(s.name, name);
    EXPECT_FALSE(expand(s).empty());
  }
  const SweepSpec paper = SweepSpec::parse_file(std::string(RESA_SOURCE_DIR) + "/experiments/specs/paper.toml");
  EXPECT_EQ(paper.f, (std::vector<int>{0, 16, 32, 64, 128}));
  EXPECT_EQ(paper.ratio, (std::vector<Fraction>{{1, 50}, {1, 20}, {1, 10}}));
  EXPECT_EQ(expand(paper).size(), 15u);
  // The language-modelling protocol: one combination per (seed, f, x), keys ending in _last<x>.
  const SweepSpec lm = SweepSpec::parse_file(std::string(RESA_SOURCE_DIR) + "/experiments/specs/real-lm.toml");
  const auto lm_combos = expand(lm);
  EXPECT_EQ(lm_combos.size(), lm.seeds.size() * lm.f.size() * lm.last.size());
  EXPECT_EQ(lm_combos.back().last, lm.last.back());
  EXPECT_EQ(lm_combos.back().key, combination_key(lm_combos.back().seed, lm_combos.back().cfg) + "_last" +
                                      std::to_string(lm.last.back()));
  // Relative model and passage paths resolve against the repository from any directory, to the
  // same absolute path from the repository root and from elsewhere (resume compares them).
  EXPECT_TRUE(std::filesystem::exists(lm.base.model + "/config.json")) << lm.base.model;
  const auto here = std::filesystem::current_path();
  std::filesystem::current_path(RESA_SOURCE_DIR);
  const SweepSpec from_root = SweepSpec::parse_file("experiments/specs/real-lm.toml");
  std::filesystem::current_path(std::filesystem::temp_directory_path());
  const SweepSpec from_tmp = SweepSpec::parse_file(std::string(RESA_SOURCE_DIR) + "/experiments/specs/real-lm.toml");
  std::filesystem::current_path(here);
  EXPECT_EQ(from_root.base.model, from_tmp.base.model);
  EXPECT_EQ(from_root.base.tokens, from_tmp.base.tokens);
  EXPECT_TRUE(std::filesystem::path(from_root.base.model).is_absolute()) << from_root.base.model;
}

TEST(SweepSpec, LastMustFitTheDecodeSteps) {
  EXPECT_NE(expect_rejected("steps = 10\n[grid]\nlast = [11]\n").find("'grid.last'"), std::string::npos);
  EXPECT_NE(expect_rejected("[grid]\nlast = [-2]\n").find("'grid.last'"), std::string::npos);
}

TEST(SweepSpec, RejectsUnknownKeysAndBadValuesNamingTheKey) {
  EXPECT_NE(expect_rejected("model = \"tiny\"\nfrobnicate = 3\n").find("'frobnicate'"), std::string::npos);
  EXPECT_NE(expect_rejected("[grid]\nfoo = [1]\n").find("'grid.foo'"), std::string::npos);
  EXPECT_NE(expect_rejected("[other]\nf = [1]\n").find("[other]"), std::string::npos);
  EXPECT_NE(expect_rejected("[grid]\nb = [12]\n").find("block_size"), std::string::npos);
  EXPECT_NE(expect_rejected("[grid]\nratio = [\"3/2\"]\n").find("ratio"), std::string::npos);
  EXPECT_NE(expect_rejected("[grid]\nratio = [\"abc\"]\n").find("'grid.ratio'"), std::string::npos);
  EXPECT_NE(expect_rejected("[grid]\nf = [-1]\n").find("'grid.f'"), std::string::npos);
  EXPECT_NE(expect_rejected("[grid]\nf = [8, 8]\n").find("appears twice"), std::string::npos);
  EXPECT_NE(expect_rejected("steps = \"many\"\n").find("'steps'"), std::string::npos);
  EXPECT_NE(expect_rejected("steps = 0\n").find("steps"), std::string::npos);
  EXPECT_NE(expect_rejected("seeds = [-4]\n").find("'seeds'"), std::string::npos);
  EXPECT_NE(expect_rejected("kv_dtype = \"int8\"\n").find("KV dtype \"int8\""), std::string::npos);
  EXPECT_NE(expect_rejected("steps = 5\nsteps = 6\n").find("'steps'"), std::string::npos);  // one value only
  EXPECT_THROW(SweepSpec::parse_file("/nonexistent/spec.toml"), InvalidArgument);
}

TEST(SweepGrid, ExpandsEveryCombinationWithStableKeys) {
  const SweepSpec s = SweepSpec::parse(kSmall, "small.toml");
  const auto combos = expand(s);
  ASSERT_EQ(combos.size(), 6u);  // 3 f x 2 ratios
  std::set<std::string> keys;
  for (const auto& c : combos) {
    keys.insert(c.key);
    EXPECT_EQ(c.key, combination_key(c.seed, c.cfg));
    EXPECT_EQ(c.seed, 3u);
    EXPECT_EQ(c.cfg.block_size, 8);
  }
  EXPECT_EQ(keys.size(), 6u);
  EXPECT_TRUE(keys.count("s3_b8_r1-2_nmin0_nloc1_nsink0_f16"));  // 0.5 is the exact fraction 1/2
  // The same values in another order give the same keys.
  std::string reordered = kSmall;
  reordered.replace(reordered.find("f = [0, 4, 16]"), 14, "f = [16, 0, 4]");
  reordered.replace(reordered.find("ratio = [\"1/4\", 0.5]"), 20, "ratio = [0.5, \"2/8\"]");
  std::set<std::string> keys2;
  for (const auto& c : expand(SweepSpec::parse(reordered, "r.toml"))) keys2.insert(c.key);
  EXPECT_EQ(keys, keys2);
}

// Every dataset of the sweep file, as raw bytes, keyed by path.
std::map<std::string, std::vector<char>> all_datasets(const std::string& path) {
  std::map<std::string, std::vector<char>> out;
  h5::Id f = h5::open_file(path, false);
  std::function<void(hid_t, const std::string&)> walk = [&](hid_t g, const std::string& prefix) {
    for (const std::string& name : h5::list_children(g)) {
      const H5I_type_t kind = H5Iget_type(h5::Id(H5Oopen(g, name.c_str(), H5P_DEFAULT)));
      if (kind == H5I_GROUP) {
        h5::Id sub = h5::open_group(g, name);
        walk(sub, prefix + "/" + name);
      } else if (kind == H5I_DATASET) {
        h5::Id ds = h5::open_dataset(g, name);
        h5::Id type(H5Dget_type(ds));
        if (H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) > 0) {
          out[prefix + "/" + name] = {};  // the spec text: compared through the file's spec
          continue;
        }
        const size_t bytes = H5Dget_storage_size(ds) ? static_cast<size_t>(H5Sget_simple_extent_npoints(h5::Id(H5Dget_space(ds)))) * H5Tget_size(type) : 0;
        std::vector<char> buf(bytes);
        if (bytes) H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
        out[prefix + "/" + name] = std::move(buf);
      }
    }
  };
  walk(f, "");
  return out;
}

TEST(Sweep, ResumeAfterAnInterruptionEqualsAnUninterruptedSweep) {
  const fs::path d = temp_dir("resume");
  const SweepSpec s = SweepSpec::parse(kSmall, "small.toml");
  SweepOptions whole;
  whole.output = (d / "whole.h5").string();
  const auto rows_whole = run_sweep(s, whole);
  ASSERT_EQ(rows_whole.size(), 7u);  // dense + 6 combinations

  SweepOptions part;
  part.output = (d / "part.h5").string();
  part.stop_after_steps = 11;
  EXPECT_THROW(run_sweep(s, part), analysis::StudyInterrupted);
  EXPECT_FALSE(fs::exists(part.output)) << "an interrupted sweep must not leave a sweep file";
  SweepOptions again;
  again.output = part.output;
  EXPECT_THROW(run_sweep(s, again), InvalidArgument);  // exists: needs --resume
  part.stop_after_steps = -1;
  part.resume = true;
  const auto rows_part = run_sweep(s, part);
  ASSERT_EQ(rows_part.size(), rows_whole.size());

  const auto a = all_datasets(whole.output), b = all_datasets(part.output);
  ASSERT_EQ(a.size(), b.size());
  int compared = 0;
  for (const auto& [path, bytes] : a) {
    ASSERT_TRUE(b.count(path)) << path;
    EXPECT_EQ(bytes, b.at(path)) << path << " differs between the resumed and the uninterrupted sweep";
    compared += !bytes.empty();
  }
  EXPECT_GT(compared, 40);
  // A resumed sweep with a different spec is refused.
  SweepSpec other = SweepSpec::parse(std::string(kSmall) + "n_sink = [1]\n", "other.toml");
  part.resume = true;
  EXPECT_THROW(run_sweep(other, part), InvalidArgument);
  fs::remove_all(d);
}

// Rewrites the file's /sweep with its members in reverse order (the layout of another version of
// the writer: files before 2026-11-28 stored key, mode and ratio first).
void reverse_sweep_members(const std::string& path) {
  h5::Id file = h5::open_file(path, true);
  h5::Id ds = h5::open_dataset(file, "sweep");
  h5::Id type(H5Dget_type(ds)), space(H5Dget_space(ds));
  const int n = H5Tget_nmembers(type);
  size_t size = 0;
  for (int i = 0; i < n; ++i) size += H5Tget_size(h5::Id(H5Tget_member_type(type, i)));
  h5::Id reversed(H5Tcreate(H5T_COMPOUND, size));
  size_t offset = 0;
  for (int i = n - 1; i >= 0; --i) {
    char* name = H5Tget_member_name(type, i);
    h5::Id member(H5Tget_member_type(type, i));
    H5Tinsert(reversed, name, offset, member);
    offset += H5Tget_size(member);
    H5free_memory(name);
  }
  std::vector<char> buf(size * static_cast<size_t>(H5Sget_simple_extent_npoints(space)));
  ASSERT_GE(H5Dread(ds, reversed, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), 0);  // converts by name
  ds = h5::Id();
  h5::unlink(file, "sweep");
  h5::Id out(H5Dcreate2(file, "sweep", reversed, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_GE(H5Dwrite(out, reversed, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), 0);
  char *was_first = H5Tget_member_name(type, 0), *now_first = H5Tget_member_name(reversed, 0);
  EXPECT_STRNE(was_first, now_first);  // the order did change
  H5free_memory(was_first);
  H5free_memory(now_first);
}

// Runs `spec` into <d>/<name>.h5 and checks that the file's table (what `resa report` reads)
// holds every column of the rows run_sweep returned, also after its members are reordered.
// Returns the rows.
std::vector<SweepRow> sweep_and_check_file(const fs::path& d, const char* spec, const std::string& name) {
  SweepOptions o;
  o.output = (d / (name + ".h5")).string();
  const auto rows = run_sweep(SweepSpec::parse(spec, name + ".toml"), o);
  const auto read = read_sweep(o.output);
  EXPECT_EQ(read.size(), rows.size());
  for (size_t i = 0; i < std::min(rows.size(), read.size()); ++i) {
    const SweepRow &a = rows[i], &x = read[i];
    EXPECT_EQ(x.key, a.key);
    EXPECT_EQ(x.mode, a.mode) << a.key;
    EXPECT_EQ(x.ratio, a.ratio) << a.key;
    EXPECT_EQ(std::tie(x.seed, x.b, x.n_min, x.n_local, x.n_sink, x.f, x.last, x.rectifications),
              std::tie(a.seed, a.b, a.n_min, a.n_local, a.n_sink, a.f, a.last, a.rectifications)) << a.key;
    EXPECT_EQ(std::tie(x.k_err_final, x.k_err_mean, x.k_err_peak, x.v_err_final, x.v_err_mean, x.v_err_peak),
              std::tie(a.k_err_final, a.k_err_mean, a.k_err_peak, a.v_err_final, a.v_err_mean, a.v_err_peak))
        << a.key;
    EXPECT_EQ(std::tie(x.kl_mean, x.top1_agreement, x.nll_delta, x.recall_mean, x.bytes_rel, x.cost_model),
              std::tie(a.kl_mean, a.top1_agreement, a.nll_delta, a.recall_mean, a.bytes_rel, a.cost_model))
        << a.key;
  }
  reverse_sweep_members(o.output);
  EXPECT_EQ(to_csv(read_sweep(o.output)), to_csv(read)) << "the reader must address members by name";
  return rows;
}

// Runs that decode only the last x steps keep their `last` column in the file (the cost test
// below has last = 0 only).
TEST(Sweep, FileTableKeepsTheLastStepsColumn) {
  const fs::path d = temp_dir("last");
  const char* spec = R"(model = "tiny"
layers = 1
tokens = "random"
prompt_len = 64
steps = 12
seeds = [2]

[grid]
f = [0, 4]
ratio = ["1/4"]
b = [8]
n_min = [0]
last = [0, 8]
)";
  const auto rows = sweep_and_check_file(d, spec, "last");
  int with_last = 0;
  for (const SweepRow& r : rows) with_last += r.last == 8;
  EXPECT_EQ(with_last, 2);  // f = 0 and f = 4 with last = 8
  fs::remove_all(d);
}

TEST(Sweep, SummaryCostColumnsMatchEquation6) {
  const fs::path d = temp_dir("cost");
  // Long prompt, few steps (a multiple of every f), n_min 0: the measured bytes approach
  // 1/b + ratio + 1/f from above.
  const char* spec = R"(model = "tiny"
layers = 1
tokens = "random"
prompt_len = 2048
steps = 32
seeds = [1]

[grid]
f = [0, 8, 32]
ratio = ["1/8", "1/4"]
b = [16]
n_min = [0]
)";
  const auto rows = sweep_and_check_file(d, spec, "cost");
  int checked = 0;
  for (const SweepRow& r : rows) {
    if (r.mode == "dense") {
      EXPECT_DOUBLE_EQ(r.cost_model, 1.0);
      EXPECT_NEAR(r.bytes_rel, 1.0, 1e-12);
      continue;
    }
    const Fraction ratio = Fraction::parse(r.ratio);
    const double formula = 1.0 / r.b + ratio.value() + (r.f > 0 ? 1.0 / r.f : 0.0);
    EXPECT_DOUBLE_EQ(r.cost_model, formula) << r.key;
    const double m = 2048.0 / r.b;
    // Never below the formula (the selection rounds up, M*b >= L), above it by at most one
    // selected block and one partial block's descriptors: 2/M. (Measured: 0.002-0.004.)
    EXPECT_GE(r.bytes_rel, formula - 1e-12) << r.key;
    EXPECT_LE(r.bytes_rel, formula + 2.0 / m) << r.key;
    ++checked;
  }
  EXPECT_EQ(checked, 6);
  // The written tables carry the same numbers.
  const std::string csv = to_csv(rows), md = to_markdown(rows);
  for (const SweepRow& r : rows) {
    EXPECT_NE(csv.find(r.key), std::string::npos);
    EXPECT_NE(md.find("| " + r.key + " |"), std::string::npos);
  }
  fs::remove_all(d);
}

TEST(Sweep, RefusesAnExistingOutputAndAnUnwritableFolder) {
  const fs::path d = temp_dir("refuse");
  const SweepSpec s = SweepSpec::parse(kSmall, "small.toml");
  std::ofstream(d / "taken.h5") << "precious";
  SweepOptions o;
  o.output = (d / "taken.h5").string();
  EXPECT_THROW(run_sweep(s, o), InvalidArgument);
  std::ifstream in(d / "taken.h5");
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
  o.output = (d / "no_such_folder" / "x.h5").string();
  EXPECT_THROW(run_sweep(s, o), InvalidArgument);
  EXPECT_THROW(read_sweep((d / "taken.h5").string()), std::exception);
  fs::remove_all(d);
}

}  // namespace
}  // namespace resa::experiments
