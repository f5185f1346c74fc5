// tests/sim/test_study.cpp — the study driver and its HDF5 file: layout read back through the
// project's reader, run specs, resume (a study interrupted mid-pass and resumed equals an
// uninterrupted one, bit for bit), refusal to overwrite, completion flags, and bad input that
// must leave existing files untouched.
// Run: build/main/tests/sim/resa_sim_tests --gtest_filter='Study*'
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "resa/analysis/h5.h"
#include "resa/analysis/study.h"
#include "sim_test_util.h"

namespace resa::analysis {
namespace {

namespace fs = std::filesystem;
using sim::testing::temp_dir;

StudyConfig small_study() {
  StudyConfig c;
  c.prompt_len = 200;
  c.steps = 40;
  c.sparse.ratio = Fraction{1, 8};
  c.sparse.n_min = 2;
  c.sparse.rectify_every = 8;
  c.runs = {"sparse", "resa", "resa:f=1"};
  c.chunk_steps = 16;
  return c;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Study, RunSpecsParseAndReject) {
  const auto specs = parse_run_specs({"sparse", "resa", "resa:f=8,ratio=0.25,name=quarter", "resa:b=32"}, SparseConfig{}, 64, 32);
  ASSERT_EQ(specs.size(), 4u);
  EXPECT_EQ(specs[0].name, "sparse");
  EXPECT_EQ(specs[0].sparse.rectify_every, 0);
  EXPECT_EQ(specs[1].name, "resa_f32");
  EXPECT_EQ(specs[2].name, "quarter");
  EXPECT_EQ(specs[2].sparse.ratio, (Fraction{1, 4}));
  EXPECT_EQ(specs[3].name, "resa_f32_b32");
  for (const char* bad : {"dense", "sparse:f=4", "resa:f=0", "resa:q=1", "resa:b=3", "resa:ratio=2", "resa:b=x",
                          "resa:name=a/b"})
    EXPECT_THROW(parse_run_specs({bad}, SparseConfig{}, 64, 32), InvalidArgument) << bad;
  EXPECT_THROW(parse_run_specs({"resa", "resa"}, SparseConfig{}, 64, 32), InvalidArgument);
}

TEST(Study, WritesTheDocumentedLayoutAndReadsItBack) {
  const fs::path dir = temp_dir("study_layout");
  StudyOptions o;
  o.output = (dir / "s.h5").string();
  o.command_line = "resa simulate --test";
  const StudyResult res = run_study(small_study(), o);
  ASSERT_EQ(res.summary.size(), 4u);
  const StudyReader r(o.output);
  EXPECT_TRUE(r.complete());
  EXPECT_EQ(r.config(), small_study().canonical());
  EXPECT_EQ(r.root_attributes().at("command_line"), "resa simulate --test");
  EXPECT_FALSE(r.root_attributes().at("git_commit").empty());
  EXPECT_EQ(r.runs(), (std::vector<std::string>{"dense", "resa_f1", "resa_f8", "sparse"}));
  for (const auto& run : r.runs()) {
    EXPECT_TRUE(r.run_complete(run));
    const RunSeries k = r.series(run, "k_err");
    EXPECT_EQ(k.dims, (std::vector<uint64_t>{40, 4, 2}));
    EXPECT_EQ(r.series(run, "attn_err").dims, (std::vector<uint64_t>{40, 4, 4}));
    EXPECT_EQ(r.series(run, "hidden_err").dims, (std::vector<uint64_t>{40, 4}));
    EXPECT_EQ(r.series(run, "step").values.back(), 39.0);
    const RunSeries mass = r.series(run, "top_block_mass"), top3 = r.series(run, "top3_hit");
    EXPECT_EQ(mass.dims, (std::vector<uint64_t>{40, 4, 4}));
    EXPECT_EQ(top3.dims, (std::vector<uint64_t>{40}));
    for (double x : mass.values) EXPECT_TRUE(x > 0.0 && x <= 1.0 + 1e-12) << x;  // a share of the mass
    for (double x : top3.values) EXPECT_TRUE(x == 0.0 || x == 1.0);
  }
  const RunSeries rect = r.series("resa_f8", "rectified"), k = r.series("resa_f8", "k_err");
  int n_rect = 0;
  for (size_t s = 0; s < 40; ++s)
    if (rect.values[s] == 1) {
      ++n_rect;
      for (size_t i = 0; i < 8; ++i) EXPECT_EQ(k.values[s * 8 + i], 0.0);
    }
  EXPECT_EQ(n_rect, 5);
  const auto summary = r.summary();
  ASSERT_EQ(summary.size(), 4u);
  EXPECT_EQ(summary[0].name, "dense");
  EXPECT_EQ(summary[0].k_err_max, 0.0);
  EXPECT_EQ(summary[1].name, "sparse");
  EXPECT_GT(summary[1].k_err_max, 0.0);
  EXPECT_GT(summary[1].k_err_mean, summary[2].k_err_mean);  // ReSA(f=8) below sparse
  EXPECT_EQ(summary[3].k_err_max, 0.0);                     // f = 1
  EXPECT_EQ(summary[2].rectifications, 5);
  EXPECT_LT(summary[1].bytes_rel, 1.0);
  EXPECT_FALSE(format_summary(summary).empty());
}

// A run with last = x keeps every step in its per-step data (following dense before its start),
// but its summary covers only the x steps it decodes itself: steps = x, the means over those
// steps, and nll_delta against dense's NLL on the same steps (checked against the per-step data).
TEST(Study, LastRunSummaryCoversOnlyItsOwnSteps) {
  const fs::path dir = temp_dir("study_last");
  StudyConfig c = small_study();
  c.runs = {"sparse", "sparse:last=10,name=sparse_last10"};
  StudyOptions o;
  o.output = (dir / "s.h5").string();
  run_study(c, o);
  const StudyReader r(o.output);
  const auto summary = r.summary();
  ASSERT_EQ(summary.size(), 3u);
  const RunSummary& dense = summary[0];
  const RunSummary& full = summary[1];
  const RunSummary& last = summary[2];
  ASSERT_EQ(last.name, "sparse_last10");
  EXPECT_EQ(dense.steps, 40);
  EXPECT_EQ(full.steps, 40);
  EXPECT_EQ(last.steps, 10);
  EXPECT_EQ(r.series("sparse_last10", "nll").dims, (std::vector<uint64_t>{40}));  // every step is kept
  const std::vector<double> nll_d = r.series("dense", "nll").values, nll_l = r.series("sparse_last10", "nll").values,
                            kl_l = r.series("sparse_last10", "kl").values;
  double delta = 0, kl = 0, nll = 0;
  for (size_t s = 30; s < 40; ++s) delta += nll_l[s] - nll_d[s], kl += kl_l[s], nll += nll_l[s];
  EXPECT_NEAR(last.nll_delta, delta / 10, 1e-12);
  EXPECT_NEAR(last.kl_mean, kl / 10, 1e-12);
  EXPECT_NEAR(last.nll_mean, nll / 10, 1e-12);
  EXPECT_GT(last.kl_mean, 0.0);  // its own steps are sparse: not diluted by the 30 copied ones
  EXPECT_EQ(dense.nll_delta, 0.0);
  const std::vector<double> nll_f = r.series("sparse", "nll").values;
  double full_delta = 0;
  for (size_t s = 0; s < 40; ++s) full_delta += nll_f[s] - nll_d[s];
  EXPECT_NEAR(full.nll_delta, full_delta / 40, 1e-12);
  fs::remove_all(dir);
}

TEST(Study, ResumedStudyEqualsAnUninterruptedOne) {
  const fs::path dir = temp_dir("study_resume");
  StudyConfig c = small_study();
  StudyOptions whole;
  whole.output = (dir / "whole.h5").string();
  run_study(c, whole);

  c.runs_per_pass = 1;  // passes: {dense, sparse}, {resa_f8}, {resa_f1}
  StudyOptions cut;
  cut.output = (dir / "cut.h5").string();
  cut.stop_after_steps = 40 + 25;  // inside the second pass
  EXPECT_THROW(run_study(c, cut), StudyInterrupted);
  {
    const StudyReader r(cut.output);
    EXPECT_FALSE(r.complete());
    EXPECT_TRUE(r.run_complete("dense"));
    EXPECT_TRUE(r.run_complete("sparse"));
    EXPECT_FALSE(r.run_complete("resa_f8"));  // partially written, flagged incomplete
    EXPECT_EQ(r.summary().size(), 2u);
  }
  EXPECT_NE(error_of([&] { run_study(c, cut); }).find("exists"), std::string::npos);
  cut.stop_after_steps = -1;
  cut.resume = true;
  const StudyResult res = run_study(c, cut);
  EXPECT_EQ(res.skipped, (std::vector<std::string>{"dense", "sparse"}));
  EXPECT_EQ(res.computed, (std::vector<std::string>{"resa_f8", "resa_f1"}));

  const StudyReader a(whole.output), b(cut.output);
  EXPECT_TRUE(b.complete());
  ASSERT_EQ(a.runs(), b.runs());
  for (const auto& run : a.runs()) {
    ASSERT_EQ(a.datasets(run), b.datasets(run));
    for (const auto& ds : a.datasets(run)) {
      const RunSeries x = a.series(run, ds), y = b.series(run, ds);
      ASSERT_EQ(x.dims, y.dims) << run << "/" << ds;
      for (size_t i = 0; i < x.values.size(); ++i)
        ASSERT_EQ(std::memcmp(&x.values[i], &y.values[i], sizeof(double)), 0) << run << "/" << ds << " element " << i;
    }
  }
  const auto sa = a.summary(), sb = b.summary();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].name, sb[i].name);
    EXPECT_EQ(sa[i].k_err_mean, sb[i].k_err_mean);
    EXPECT_EQ(sa[i].kl_mean, sb[i].kl_mean);
    EXPECT_EQ(sa[i].nll_mean, sb[i].nll_mean);
  }
  // Resuming a complete study computes nothing; another configuration is refused.
  const StudyResult again = run_study(c, cut);
  EXPECT_TRUE(again.computed.empty());
  c.steps = 41;
  EXPECT_NE(error_of([&] { run_study(c, cut); }).find("another configuration"), std::string::npos);
}

TEST(Study, BadInputIsRefusedAndExistingFilesAreKept) {
  const fs::path dir = temp_dir("study_bad");
  const fs::path existing = dir / "keep.h5";
  { std::ofstream(existing) << "precious"; }
  StudyOptions o;
  o.output = existing.string();
  StudyConfig c = small_study();
  EXPECT_NE(error_of([&] { run_study(c, o); }).find("--overwrite"), std::string::npos);
  o.resume = true;
  EXPECT_NE(error_of([&] { run_study(c, o); }).find("not an HDF5 file"), std::string::npos);
  o.resume = false;
  EXPECT_EQ(file_bytes(existing), "precious");

  o.output = (dir / "new.h5").string();
  auto refused = [&](StudyConfig bad, const std::string& needle) {
    const std::string e = error_of([&] { run_study(bad, o); });
    EXPECT_NE(e.find(needle), std::string::npos) << "message \"" << e << "\" lacks \"" << needle << "\"";
    EXPECT_FALSE(fs::exists(o.output)) << "a file was created for bad input: " << needle;
  };
  StudyConfig b = c;
  b.steps = 0;
  refused(b, "steps");
  b = c, b.prompt_len = -3;
  refused(b, "prompt_len");
  b = c, b.model = (dir / "no_such_model").string();
  refused(b, "no_such_model");
  b = c, b.kv_dtype = "fp8";
  refused(b, "fp8");
  b = c, b.runs = {"resa:f=-1"};
  refused(b, "f");
  { std::ofstream(dir / "ids.txt") << "1 2 3 999"; }
  b = c, b.tokens = "ids:" + (dir / "ids.txt").string();
  refused(b, "outside the vocabulary");
  { std::ofstream(dir / "ids.txt") << "1 2 3"; }
  refused(b, "prompt_len + steps + 1");
  fs::create_directories(dir / "ckpt");
  { std::ofstream(dir / "ckpt" / "config.json") << "{not json"; }
  b = c, b.model = (dir / "ckpt").string();
  refused(b, "config.json");
  o.output = (dir / "missing_folder" / "x.h5").string();
  refused(c, "does not exist");
  o.output = dir.string();  // a folder, not a file
  EXPECT_NE(error_of([&] { run_study(c, o); }).find(dir.string()), std::string::npos);
}

TEST(Study, Hdf5ErrorsNameFileAndObject) {
  const fs::path dir = temp_dir("study_h5err");
  h5::Id f = h5::create_file((dir / "e.h5").string(), false);
  const std::string e = error_of([&] { h5::open_group(f, "nope"); });
  EXPECT_NE(e.find("e.h5"), std::string::npos) << e;
  EXPECT_NE(e.find("nope"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { h5::create_file((dir / "e.h5").string(), false); }).find("e.h5"), std::string::npos);
}

}  // namespace
}  // namespace resa::analysis

namespace resa::analysis {
namespace {

// --overwrite loses nothing until the new study is complete: the replaced file waits aside as
// <output>.previous and goes away only when the new one completes.
TEST(Study, OverwriteKeepsThePreviousFileUntilTheNewStudyCompletes) {
  const fs::path dir = temp_dir("study_overwrite");
  const std::string out = (dir / "s.h5").string();
  { std::ofstream(out) << "precious"; }
  StudyConfig c = small_study();
  StudyOptions o;
  o.output = out;
  o.overwrite = true;
  o.stop_after_steps = 3;
  EXPECT_THROW(run_study(c, o), StudyInterrupted);
  EXPECT_EQ(file_bytes(dir / "s.h5.previous"), "precious");
  EXPECT_FALSE(StudyReader(out).complete());
  o.stop_after_steps = -1;
  run_study(c, o);
  EXPECT_TRUE(StudyReader(out).complete());
  EXPECT_FALSE(fs::exists(dir / "s.h5.previous"));
}

}  // namespace
}  // namespace resa::analysis
