// sweep.cpp — sweep specs (TOML via CLI11's reader), grid expansion with stable keys, running the
// per-seed studies as resumable shards, merging them into one sweep file, tables and plots.
#include "resa/experiments/sweep.h"

#include <CLI/CLI.hpp>
#include <hdf5.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>

#include "resa/analysis/h5.h"
#include "resa/fp_env.h"

#ifndef RESA_SOURCE_DIR
#define RESA_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;

namespace resa::experiments {

namespace {

std::string where(const std::string& origin, const std::string& key) { return origin + ": key '" + key + "'"; }

int64_t parse_int(const std::string& origin, const std::string& key, const std::string& s) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != s.size())
    throw InvalidArgument(where(origin, key) + ": \"" + s + "\" is not an integer");
  return v;
}

std::string single(const std::string& origin, const std::string& key, const std::vector<std::string>& in) {
  if (in.size() != 1) throw InvalidArgument(where(origin, key) + ": expected one value, got " + std::to_string(in.size()));
  return in[0];
}

// A relative path of a spec (model folder, token file) is read from the current directory, and
// when nothing is there, from the repository root: the shipped specs name models/... and
// experiments/passages/... and work from any directory. The path found is made absolute, so the
// configuration a sweep's shards record (and resume compares) does not depend on where it runs.
std::string spec_path(const std::string& p) {
  const fs::path path(p);
  if (path.is_absolute()) return p;
  auto anchor = [](const fs::path& x) { return x.has_parent_path() ? x.parent_path() : x; };  // names may hold {seed}
  std::error_code ec;
  if (fs::exists(anchor(path), ec)) return fs::absolute(path).lexically_normal().string();
  const fs::path in_repo = fs::path(RESA_SOURCE_DIR) / path;
  return fs::exists(anchor(in_repo), ec) ? fs::absolute(in_repo).lexically_normal().string() : p;
}

template <class T, class F>
std::vector<T> list_of(const std::string& origin, const std::string& key, const std::vector<std::string>& in, F conv) {
  if (in.empty()) throw InvalidArgument(where(origin, key) + ": the list is empty");
  std::vector<T> out;
  for (const std::string& s : in) out.push_back(conv(s));
  return out;
}

}  // namespace

SweepSpec SweepSpec::parse(const std::string& text, const std::string& origin) {
  SweepSpec spec;
  spec.text = text;
  spec.name = fs::path(origin).stem().string();
  spec.base.runs.clear();
  std::istringstream in(text);
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_config(in);
  } catch (const std::exception& e) {
    throw InvalidArgument(origin + ": not a valid spec file: " + e.what());
  }
  std::set<std::string> seen;
  for (const CLI::ConfigItem& it : items) {
    if (it.name == "++" || it.name == "--") continue;
    std::string section;
    for (const std::string& p : it.parents) section += (section.empty() ? "" : ".") + p;
    const std::string key = section.empty() ? it.name : section + "." + it.name;
    if (!seen.insert(key).second) throw InvalidArgument(where(origin, key) + ": given twice");
    const auto& v = it.inputs;
    auto to_int = [&](const std::string& s) { return parse_int(origin, key, s); };
    auto to_nonneg = [&](const std::string& s) {
      const int64_t x = to_int(s);
      if (x < 0 || x > (1 << 30)) throw InvalidArgument(where(origin, key) + ": " + s + " must be in [0, 2^30]");
      return static_cast<int>(x);
    };
    if (section.empty()) {
      if (key == "name") {
        spec.name = single(origin, key, v);
        if (spec.name.empty() || spec.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != std::string::npos)
          throw InvalidArgument(where(origin, key) + ": use letters, digits, _ - . only");
      } else if (key == "model") {
        spec.base.model = single(origin, key, v);
        if (spec.base.model.find('/') != std::string::npos) spec.base.model = spec_path(spec.base.model);
      } else if (key == "tokens") {
        spec.base.tokens = single(origin, key, v);
        for (const char* kind : {"ids:", "text:"})
          if (spec.base.tokens.rfind(kind, 0) == 0)
            spec.base.tokens = kind + spec_path(spec.base.tokens.substr(std::string(kind).size()));
      } else if (key == "prompt_len") {
        spec.base.prompt_len = to_int(single(origin, key, v));
      } else if (key == "steps") {
        spec.base.steps = to_int(single(origin, key, v));
      } else if (key == "layers") {
        spec.base.layers = static_cast<int>(to_int(single(origin, key, v)));
      } else if (key == "kv_dtype") {
        spec.base.kv_dtype = single(origin, key, v);
      } else if (key == "weight_dtype") {
        spec.base.weight_dtype = single(origin, key, v);
      } else if (key == "dot") {
        spec.base.dot = single(origin, key, v);
      } else if (key == "chunk_steps") {
        spec.base.chunk_steps = to_int(single(origin, key, v));
      } else if (key == "seeds") {
        spec.seeds = list_of<uint64_t>(origin, key, v, [&](const std::string& s) {
          const int64_t x = to_int(s);
          if (x < 0) throw InvalidArgument(where(origin, key) + ": seeds must be >= 0");
          return static_cast<uint64_t>(x);
        });
      } else {
        throw InvalidArgument(where(origin, key) +
                              ": unknown (known: name, model, tokens, prompt_len, steps, layers, kv_dtype, "
                              "weight_dtype, dot, chunk_steps, seeds, and [grid] f, ratio, b, n_min, n_local, n_sink, last)");
      }
    } else if (section == "grid") {
      if (it.name == "f") spec.f = list_of<int>(origin, key, v, to_nonneg);
      else if (it.name == "b") spec.b = list_of<int>(origin, key, v, to_nonneg);
      else if (it.name == "n_min") spec.n_min = list_of<int>(origin, key, v, to_nonneg);
      else if (it.name == "n_local") spec.n_local = list_of<int>(origin, key, v, to_nonneg);
      else if (it.name == "n_sink") spec.n_sink = list_of<int>(origin, key, v, to_nonneg);
      else if (it.name == "last") spec.last = list_of<int>(origin, key, v, to_nonneg);
      else if (it.name == "ratio")
        spec.ratio = list_of<Fraction>(origin, key, v, [&](const std::string& s) {
          try {
            return Fraction::parse(s);
          } catch (const InvalidArgument& e) {
            throw InvalidArgument(where(origin, key) + ": " + e.what());
          }
        });
      else
        throw InvalidArgument(where(origin, key) + ": unknown (known in [grid]: f, ratio, b, n_min, n_local, n_sink, last)");
    } else {
      throw InvalidArgument(where(origin, key) + ": unknown section [" + section + "] (known: [grid])");
    }
  }
  // Every value of the grid must make a valid configuration, and the study settings must hold.
  for (const Combination& c : expand(spec)) {
    try {
      c.cfg.validate();
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(origin + ": [grid] " + e.what());
    }
    if (c.last > spec.base.steps)
      throw InvalidArgument(where(origin, "grid.last") + ": " + std::to_string(c.last) + " is more than steps = " +
                            std::to_string(spec.base.steps));
  }
  analysis::StudyConfig check = spec.base;
  check.runs = {"sparse"};
  try {
    check.validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(origin + ": " + e.what());
  }
  return spec;
}

SweepSpec SweepSpec::parse_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw InvalidArgument("sweep spec '" + path + "': cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse(ss.str(), path);
}

std::string combination_key(uint64_t seed, const SparseConfig& c, int last) {
  std::ostringstream os;
  os << "s" << seed << "_b" << c.block_size << "_r" << c.ratio.num << "-" << c.ratio.den << "_nmin" << c.n_min
     << "_nloc" << c.n_local << "_nsink" << c.n_sink << "_f" << c.rectify_every;
  if (last > 0) os << "_last" << last;
  return os.str();
}

std::vector<Combination> expand(const SweepSpec& spec) {
  std::vector<Combination> out;
  std::set<std::string> keys;
  for (uint64_t seed : spec.seeds)
    for (int b : spec.b)
      for (const Fraction& r : spec.ratio)
        for (int n_min : spec.n_min)
          for (int n_local : spec.n_local)
            for (int n_sink : spec.n_sink)
              for (int f : spec.f)
                for (int last : spec.last) {
                  Combination c;
                  c.last = last;
                  c.seed = seed;
                  c.cfg.block_size = b;
                  c.cfg.ratio = r;
                  c.cfg.n_min = n_min;
                  c.cfg.n_local = n_local;
                  c.cfg.n_sink = n_sink;
                  c.cfg.rectify_every = f;
                  c.key = combination_key(seed, c.cfg, last);
                  if (c.key.size() > analysis::kMaxRunName)
                    throw InvalidArgument("sweep '" + spec.name + "': combination key " + c.key + " is longer than " +
                                          std::to_string(analysis::kMaxRunName) + " characters (use smaller seeds)");
                  if (!keys.insert(c.key).second)
                    throw InvalidArgument("sweep '" + spec.name + "': combination " + c.key +
                                          " appears twice (a value is repeated in a [grid] list or seeds)");
                  out.push_back(c);
                }
  return out;
}

namespace {

std::string run_spec_string(const Combination& c) {
  std::ostringstream os;
  os << (c.cfg.rectify_every == 0 ? "sparse" : "resa") << ":b=" << c.cfg.block_size << ",ratio=" << c.cfg.ratio.str()
     << ",n_min=" << c.cfg.n_min << ",n_local=" << c.cfg.n_local << ",n_sink=" << c.cfg.n_sink;
  if (c.cfg.rectify_every > 0) os << ",f=" << c.cfg.rectify_every;
  if (c.last > 0) os << ",last=" << c.last;
  os << ",name=" << c.key;
  return os.str();
}

std::string shard_path(const std::string& output, uint64_t seed) {
  return output + ".shards/seed" + std::to_string(seed) + ".h5";
}

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Mean over everything but the step axis, per step.
std::vector<double> per_step_mean(const analysis::RunSeries& s) {
  std::vector<double> out;
  if (s.dims.empty()) return out;
  size_t inner = 1;
  for (size_t i = 1; i < s.dims.size(); ++i) inner *= s.dims[i];
  for (size_t t = 0; t < s.dims[0]; ++t) {
    double sum = 0;
    for (size_t i = 0; i < inner; ++i) sum += s.values[t * inner + i];
    out.push_back(sum / static_cast<double>(inner));
  }
  return out;
}
double last(const std::vector<double>& v) { return v.empty() ? 0.0 : v.back(); }
double peak(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); }

// Every column of a sweep row, once: the /sweep record's members (in this order), the CSV and
// Markdown columns, and the copies between SweepRow and the record are generated from it (four
// hand-kept lists had drifted apart before: the reader once dropped `last`). X(name, kind), kind
// STR (a string, fixed-size in the record: kStrSize_<name> bytes), I32, I64, U64 or F64.
#define RESA_SWEEP_COLUMNS(X)                                                                        \
  X(key, STR) X(mode, STR) X(seed, U64) X(b, I32) X(ratio, STR) X(n_min, I32) X(n_local, I32)        \
  X(n_sink, I32) X(f, I32) X(last, I32) X(k_err_final, F64) X(k_err_mean, F64) X(k_err_peak, F64)    \
  X(v_err_final, F64) X(v_err_mean, F64) X(v_err_peak, F64) X(kl_mean, F64) X(top1_agreement, F64) \
  X(nll_delta, F64) X(recall_mean, F64) X(bytes_rel, F64) X(cost_model, F64) X(rectifications, I64)
constexpr size_t kStrSize_key = analysis::kMaxRunName + 1, kStrSize_mode = 8, kStrSize_ratio = 24;

// The /sweep compound record.
struct Record {
#define RESA_MEMBER_STR(name) char name[kStrSize_##name];
#define RESA_MEMBER_I32(name) int32_t name;
#define RESA_MEMBER_I64(name) int64_t name;
#define RESA_MEMBER_U64(name) uint64_t name;
#define RESA_MEMBER_F64(name) double name;
#define RESA_MEMBER(name, kind) RESA_MEMBER_##kind(name)
  RESA_SWEEP_COLUMNS(RESA_MEMBER)
#undef RESA_MEMBER
#undef RESA_MEMBER_STR
#undef RESA_MEMBER_I32
#undef RESA_MEMBER_I64
#undef RESA_MEMBER_U64
#undef RESA_MEMBER_F64
};

h5::Id record_type() {
  h5::Id t(H5Tcreate(H5T_COMPOUND, sizeof(Record)));
#define RESA_INSERT_STR(name) h5::insert_string_member(t, #name, HOFFSET(Record, name), sizeof(Record::name));
#define RESA_INSERT_I32(name) H5Tinsert(t, #name, HOFFSET(Record, name), H5T_NATIVE_INT32);
#define RESA_INSERT_I64(name) H5Tinsert(t, #name, HOFFSET(Record, name), H5T_NATIVE_INT64);
#define RESA_INSERT_U64(name) H5Tinsert(t, #name, HOFFSET(Record, name), H5T_NATIVE_UINT64);
#define RESA_INSERT_F64(name) H5Tinsert(t, #name, HOFFSET(Record, name), H5T_NATIVE_DOUBLE);
#define RESA_INSERT(name, kind) RESA_INSERT_##kind(name)
  RESA_SWEEP_COLUMNS(RESA_INSERT)
#undef RESA_INSERT
#undef RESA_INSERT_STR
#undef RESA_INSERT_I32
#undef RESA_INSERT_I64
#undef RESA_INSERT_U64
#undef RESA_INSERT_F64
  return t;
}

// A record member from a row's value: a string NUL-terminated (and cut) to the member's size, a
// number assigned.
template <size_t N>
void store(char (&dst)[N], const std::string& s) {
  std::memset(dst, 0, N);
  std::memcpy(dst, s.data(), std::min(N - 1, s.size()));
}
template <class To, class From>
void store(To& dst, const From& v) {
  dst = v;
}

Record to_record(const SweepRow& r) {
  Record x{};
#define RESA_TO_RECORD(name, kind) store(x.name, r.name);
  RESA_SWEEP_COLUMNS(RESA_TO_RECORD)
#undef RESA_TO_RECORD
  return x;
}

SweepRow from_record(const Record& x) {
  SweepRow r;
#define RESA_FROM_RECORD(name, kind) r.name = x.name;  // a string member is NUL-terminated by store
  RESA_SWEEP_COLUMNS(RESA_FROM_RECORD)
#undef RESA_FROM_RECORD
  return r;
}

// Rows of one complete shard, dense first; the shard's runs are copied into `runs` of the sweep file.
std::vector<SweepRow> merge_shard(const std::string& shard, uint64_t seed, const std::vector<Combination>& combos,
                                  hid_t runs) {
  analysis::StudyReader reader(shard);
  if (!reader.complete()) throw std::runtime_error("shard " + shard + " is not complete");
  const std::vector<analysis::RunSummary> summary = reader.summary();
  std::map<std::string, analysis::RunSummary> by_name;
  for (const auto& s : summary) by_name[s.name] = s;
  if (!by_name.count("dense")) throw std::runtime_error("shard " + shard + " has no dense run");
  h5::Id src = h5::open_file(shard, false);
  h5::Id src_runs = h5::open_group(src, "runs");
  std::vector<SweepRow> rows;
  // One row: the shard's dense run (c null) or combination c's run.
  auto add = [&](const std::string& run_name, const std::string& key, const Combination* c) {
    auto it = by_name.find(run_name);
    if (it == by_name.end()) throw std::runtime_error("shard " + shard + " lacks run " + run_name);
    const analysis::RunSummary& s = it->second;
    SweepRow r;
    r.key = key;
    r.mode = s.mode;
    r.seed = seed;
    if (c) {
      r.last = c->last;
      r.b = c->cfg.block_size;
      r.ratio = c->cfg.ratio.str();
      r.n_min = c->cfg.n_min;
      r.n_local = c->cfg.n_local;
      r.n_sink = c->cfg.n_sink;
      r.f = c->cfg.rectify_every;
      r.cost_model = cost_model_fraction(c->cfg);
    } else {
      r.ratio = "1/1";
      r.cost_model = 1.0;
    }
    const std::vector<double> k = per_step_mean(reader.series(run_name, "k_err"));
    const std::vector<double> v = per_step_mean(reader.series(run_name, "v_err"));
    r.k_err_final = last(k);
    r.v_err_final = last(v);
    r.k_err_peak = peak(k);
    r.v_err_peak = peak(v);
    r.k_err_mean = s.k_err_mean;
    r.v_err_mean = s.v_err_mean;
    r.kl_mean = s.kl_mean;
    r.top1_agreement = s.top1_agreement;
    r.nll_delta = s.nll_delta;  // over the steps the run decodes itself, against dense on the same steps
    r.recall_mean = s.recall_mean;
    r.bytes_rel = s.bytes_rel;
    r.rectifications = s.rectifications;
    if (H5Ocopy(src_runs, run_name.c_str(), runs, key.c_str(), H5P_DEFAULT, H5P_DEFAULT) < 0)
      h5::fail(runs, "cannot copy run " + run_name + " of " + shard);
    h5::Id g = h5::open_group(runs, key);
    h5::set_attr(g, "seed", static_cast<int64_t>(seed));
    h5::set_attr(g, "shard_run", run_name);
    rows.push_back(r);
  };
  add("dense", "dense_s" + std::to_string(seed), nullptr);
  for (const Combination& c : combos)
    if (c.seed == seed) add(c.key, c.key, &c);
  return rows;
}

void write_sweep_file(const std::string& path, const SweepSpec& spec, const SweepOptions& opts,
                      const std::vector<Combination>& combos, std::vector<SweepRow>* rows) {
  // Written under a temporary name and renamed when complete: a partial file never carries the
  // final name.
  const std::string tmp = path + ".partial";
  std::error_code ec;
  fs::remove(tmp, ec);
  {
    h5::Id file = h5::create_file(tmp, true);
    h5::set_attr(file, "format", std::string("resa-sweep"));
    h5::set_attr(file, "tool", std::string("resa sweep"));
    h5::set_attr(file, "version", std::string(resa::version()));
    h5::set_attr(file, "git_commit", std::string(resa::git_commit()));
    h5::set_attr(file, "command_line", opts.command_line);
    h5::set_attr(file, "created", now_iso());
    h5::set_attr(file, "spec_name", spec.name);
    h5::set_attr(file, "combinations", static_cast<int64_t>(combos.size()));
    h5::set_attr(file, "complete", static_cast<int64_t>(0));
    h5::write_string(file, "spec", spec.text);
    h5::Id runs = h5::create_group(file, "runs");
    rows->clear();
    for (uint64_t seed : spec.seeds) {
      const auto part = merge_shard(shard_path(path, seed), seed, combos, runs);
      rows->insert(rows->end(), part.begin(), part.end());
    }
    std::vector<Record> recs;
    for (const SweepRow& r : *rows) recs.push_back(to_record(r));
    h5::Id t = record_type();
    const hsize_t n = recs.size();
    h5::Id space(H5Screate_simple(1, &n, nullptr));
    h5::Id ds(H5Dcreate2(file, "sweep", t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (ds.get() < 0 || H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, recs.data()) < 0)
      h5::fail(file, "cannot write the sweep table");
    h5::set_attr(ds, "description", std::string("one row per combination (and per seed's dense run); "
                                                "pandas.DataFrame(f['sweep'][()])"));
    h5::set_attr(file, "complete", static_cast<int64_t>(1));
    h5::flush(file);
  }
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("sweep file " + path + ": cannot be written (" + ec.message() + ")");
}

}  // namespace

std::vector<SweepRow> run_sweep(const SweepSpec& spec, const SweepOptions& opts) {
  const std::vector<Combination> combos = expand(spec);
  if (opts.output.empty()) throw InvalidArgument("sweep: --output is required");
  const fs::path out(opts.output);
  const fs::path shards = opts.output + ".shards";
  if (out.has_parent_path() && !fs::is_directory(out.parent_path()))
    throw InvalidArgument("sweep output '" + opts.output + "': folder " + out.parent_path().string() + " does not exist");
  const bool exists = fs::exists(out) || fs::exists(shards);
  if (exists && !opts.overwrite && !opts.resume)
    throw InvalidArgument("sweep output '" + opts.output + "' (or its .shards folder) exists: pass --resume to continue "
                          "it or --overwrite to replace it");
  if (opts.overwrite) {  // the old sweep file stays until the new one replaces it, complete
    std::error_code ec;
    fs::remove_all(shards, ec);
  }
  fs::create_directories(shards);
  {  // Unwritable output: fail now, before any work.
    const fs::path probe = shards / ".write-test";
    std::ofstream t(probe);
    if (!t) throw InvalidArgument("sweep output '" + opts.output + "': folder " + shards.string() + " is not writable");
    t.close();
    fs::remove(probe);
  }
  // The spec a resumed sweep continues must be the same one.
  const fs::path spec_copy = shards / "spec.toml";
  if (fs::exists(spec_copy)) {
    std::ifstream f(spec_copy);
    std::stringstream ss;
    ss << f.rdbuf();
    if (ss.str() != spec.text)
      throw InvalidArgument("sweep output '" + opts.output + "' was started with a different spec (" +
                            spec_copy.string() + "); use --overwrite to start again");
  } else {
    std::ofstream(spec_copy) << spec.text;
  }

  const auto t0 = std::chrono::steady_clock::now();
  const int n_seeds = static_cast<int>(spec.seeds.size());
  int done_combos = 0;
  for (int si = 0; si < n_seeds; ++si) {
    const uint64_t seed = spec.seeds[si];
    const std::string shard = shard_path(opts.output, seed);
    std::vector<std::string> names;
    for (const Combination& c : combos)
      if (c.seed == seed) names.push_back(c.key);
    if (fs::exists(shard) && analysis::StudyReader(shard).complete()) {
      done_combos += static_cast<int>(names.size());
      continue;
    }
    analysis::StudyConfig sc = spec.base;
    sc.seed = seed;
    sc.runs.clear();
    for (const Combination& c : combos)
      if (c.seed == seed) sc.runs.push_back(run_spec_string(c));
    analysis::StudyOptions so;
    so.output = shard;
    so.resume = fs::exists(shard);
    so.command_line = opts.command_line;
    so.stop_after_steps = si == 0 ? opts.stop_after_steps : -1;
    so.cancel = opts.cancel;
    so.progress = [&](const analysis::StudyProgress& p) {
      if (!opts.progress) return;
      SweepProgress sp;
      sp.total = static_cast<int>(combos.size());
      sp.done = done_combos;
      const double within = p.passes > 0 && p.steps > 0
                                ? (p.pass + static_cast<double>(p.step) / static_cast<double>(p.steps)) / p.passes
                                : 0.0;
      sp.fraction = (si + within) / n_seeds;
      sp.current = "seed " + std::to_string(seed) + ": " + std::to_string(p.runs.size()) + " runs, step " +
                   std::to_string(p.step) + "/" + std::to_string(p.steps);
      sp.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      sp.eta_s = sp.fraction > 0.01 ? sp.elapsed_s * (1.0 - sp.fraction) / sp.fraction : -1;
      opts.progress(sp);
    };
    analysis::run_study(sc, so);
    done_combos += static_cast<int>(names.size());
  }
  std::vector<SweepRow> rows;
  write_sweep_file(opts.output, spec, opts, combos, &rows);
  return rows;
}

std::vector<SweepRow> read_sweep(const std::string& path) {
  h5::Id file = h5::open_file(path, false);
  if (!h5::has_attr(file, "format") || h5::attr_string(file, "format") != "resa-sweep")
    throw InvalidArgument("'" + path + "' is not a sweep file (no format = resa-sweep attribute)");
  if (h5::attr_int(file, "complete") != 1) throw InvalidArgument("sweep file '" + path + "' is not complete");
  h5::Id ds = h5::open_dataset(file, "sweep");
  h5::Id space(H5Dget_space(ds));
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<Record> recs(static_cast<size_t>(std::max<hssize_t>(0, n)));
  h5::Id t = record_type();
  if (n > 0 && H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, recs.data()) < 0) h5::fail(ds, "cannot read the sweep table");
  std::vector<SweepRow> rows;
  for (const Record& r : recs) rows.push_back(from_record(r));
  return rows;
}

std::string format_table(const std::vector<SweepRow>& rows) {
  std::ostringstream os;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-36s %4s %6s %4s %5s %9s %9s %9s %9s %6s %8s %7s %7s %6s\n", "combination", "f",
                "ratio", "b", "seed", "K final", "K mean", "K peak", "KL mean", "top1", "dNLL", "recall", "bytes",
                "Eq.6");
  os << buf;
  for (const SweepRow& r : rows) {
    std::snprintf(buf, sizeof buf, "%-36s %4d %6s %4d %5llu %9.2e %9.2e %9.2e %9.2e %6.3f %+8.4f %7.4f %7.3f %6.3f\n",
                  r.key.c_str(), r.f, r.ratio.c_str(), r.b, static_cast<unsigned long long>(r.seed), r.k_err_final,
                  r.k_err_mean, r.k_err_peak, r.kl_mean, r.top1_agreement, r.nll_delta, r.recall_mean, r.bytes_rel,
                  r.cost_model);
    os << buf;
  }
  return os.str();
}

namespace {
const char* kColumns[] = {
#define RESA_COLUMN_NAME(name, kind) #name,
    RESA_SWEEP_COLUMNS(RESA_COLUMN_NAME)
#undef RESA_COLUMN_NAME
};
// A table cell: strings as they are, integers in full, doubles to 6 significant digits.
std::string cell(const std::string& s) { return s; }
std::string cell(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", x);
  return b;
}
template <class I>
std::enable_if_t<std::is_integral_v<I>, std::string> cell(I x) {
  return std::to_string(x);
}
std::vector<std::string> cells(const SweepRow& r) {
  std::vector<std::string> c;
#define RESA_CELL(name, kind) c.push_back(cell(r.name));
  RESA_SWEEP_COLUMNS(RESA_CELL)
#undef RESA_CELL
  return c;
}
}  // namespace

std::string to_csv(const std::vector<SweepRow>& rows) {
  std::ostringstream os;
  for (size_t i = 0; i < std::size(kColumns); ++i) os << (i ? "," : "") << kColumns[i];
  os << "\n";
  for (const SweepRow& r : rows) {
    const auto c = cells(r);
    for (size_t i = 0; i < c.size(); ++i) os << (i ? "," : "") << c[i];
    os << "\n";
  }
  return os.str();
}

std::string to_markdown(const std::vector<SweepRow>& rows) {
  std::ostringstream os;
  os << "|";
  for (const char* c : kColumns) os << " " << c << " |";
  os << "\n|";
  for (size_t i = 0; i < std::size(kColumns); ++i) os << " --- |";
  os << "\n";
  for (const SweepRow& r : rows) {
    os << "|";
    for (const std::string& c : cells(r)) os << " " << c << " |";
    os << "\n";
  }
  return os.str();
}

std::vector<std::string> write_reports(const std::string& sweep_file, const std::vector<SweepRow>& rows,
                                       std::string* note) {
  std::vector<std::string> written;
  const fs::path p(sweep_file);
  const std::string stem = (p.parent_path() / p.stem()).string();
  auto write = [&](const std::string& path, const std::string& text) {
    std::ofstream f(path);
    if (!f || !(f << text)) throw std::runtime_error("cannot write " + path);
    written.push_back(path);
  };
  write(stem + ".csv", to_csv(rows));
  write(stem + ".md", to_markdown(rows));
  const std::string script = std::string(RESA_SOURCE_DIR) + "/experiments/plot_sweep.py";
  std::string python;
  for (const char* candidate : {"/usr/bin/python3", "python3"}) {
    const std::string probe = std::string(candidate) + " -c 'import h5py, matplotlib' >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) {
      python = candidate;
      break;
    }
  }
  if (python.empty()) {
    if (note)
      *note = "plots not made: they need Python 3 with h5py and matplotlib (Debian: apt-get install python3-h5py "
              "python3-matplotlib), then `resa report " + sweep_file + "`";
    return written;
  }
  const std::string cmd = python + " '" + script + "' '" + sweep_file + "'";
  if (std::system(cmd.c_str()) != 0) {
    if (note) *note = "plots not made: " + cmd + " failed (see its message above)";
    return written;
  }
  written.push_back(stem + "_misalignment.png");
  written.push_back(stem + "_tradeoff.png");
  return written;
}

}  // namespace resa::experiments
