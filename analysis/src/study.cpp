// study.cpp — study configuration, run specs, the study driver with resume, the HDF5 layout and
// its reader (see study.h).
#include "resa/analysis/study.h"

#include <hdf5.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <sstream>

#include "resa/analysis/h5.h"
#include "resa/analysis/metrics.h"
#include "resa/fp_env.h"
#include "resa/sim/json.h"
#include "resa/sim/qwen2.h"

namespace resa::analysis {

namespace fs = std::filesystem;
using sim::RunSpec;

// ------------------------------------------------------------------------ configuration
void StudyConfig::validate() const {
  if (model.empty()) throw InvalidArgument("model: empty (a synthetic shape name or a checkpoint folder)");
  if (layers < 0 || layers > 1024) throw InvalidArgument("layers = " + std::to_string(layers) + ": must be in [0, 1024]");
  sim::parse_weight_dtype(weight_dtype);
  sim::parse_kv_dtype(kv_dtype);
  if (dot != "fma" && dot != "tensor-core")
    throw InvalidArgument("dot = \"" + dot + "\": must be fma or tensor-core");
  if (!(tokens == "greedy" || tokens == "random" || tokens.rfind("ids:", 0) == 0 || tokens.rfind("text:", 0) == 0))
    throw InvalidArgument("tokens = \"" + tokens + "\": must be greedy, random, ids:PATH or text:PATH");
  if (prompt_len < 1) throw InvalidArgument("prompt_len = " + std::to_string(prompt_len) + ": must be >= 1");
  if (steps < 1) throw InvalidArgument("steps = " + std::to_string(steps) + ": must be >= 1");
  if (prompt_len + steps > (1 << 24))
    throw InvalidArgument("prompt_len + steps = " + std::to_string(prompt_len + steps) +
                          ": longer than the simulator's limit of 2^24 positions");
  sparse.validate();
  if (chunk_steps < 1 || chunk_steps > 65536)
    throw InvalidArgument("chunk_steps = " + std::to_string(chunk_steps) + ": must be in [1, 65536]");
  if (runs_per_pass < 0) throw InvalidArgument("runs_per_pass = " + std::to_string(runs_per_pass) + ": must be >= 0");
  parse_run_specs(runs, sparse, prompt_len, steps);
}

std::string StudyConfig::canonical() const {
  std::ostringstream os;
  auto q = [](const std::string& s) { return sim::json_quote(s); };
  os << "model = " << q(model) << "\nlayers = " << layers << "\nseed = " << seed
     << "\nweight_dtype = " << q(weight_dtype) << "\nkv_dtype = " << q(kv_dtype) << "\ndot = " << q(dot)
     << "\ntokens = " << q(tokens) << "\nprompt_len = " << prompt_len << "\nsteps = " << steps
     << "\nblock_size = " << sparse.block_size << "\nratio = " << q(sparse.ratio.str())
     << "\nn_min = " << sparse.n_min << "\nn_local = " << sparse.n_local << "\nn_sink = " << sparse.n_sink
     << "\nrectify_every = " << sparse.rectify_every << "\nrun = [";
  for (size_t i = 0; i < runs.size(); ++i) os << (i ? ", " : "") << q(runs[i]);
  os << "]\nchunk_steps = " << chunk_steps << "\n";
  return os.str();
}

std::vector<RunSpec> parse_run_specs(const std::vector<std::string>& specs, const SparseConfig& defaults,
                                     int64_t prompt_len, int64_t steps) {
  std::vector<RunSpec> out;
  for (const std::string& spec : specs) {
    const std::string ctx = "run spec \"" + spec + "\"";
    const size_t colon = spec.find(':');
    const std::string mode = spec.substr(0, colon);
    RunSpec r;
    r.sparse = defaults;
    if (mode == "sparse") {
      r.sparse.rectify_every = 0;
    } else if (mode != "resa") {
      throw InvalidArgument(ctx + ": mode must be sparse or resa (dense always runs as the ground truth)");
    }
    r.mode = DecodeMode::Resa;
    std::string name, suffix;
    bool f_given = false;
    if (colon != std::string::npos) {
      std::stringstream ss(spec.substr(colon + 1));
      std::string kv;
      while (std::getline(ss, kv, ',')) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) throw InvalidArgument(ctx + ": \"" + kv + "\" is not key=value");
        const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
        auto to_int = [&](const std::string& s) {
          size_t used = 0;
          int x = 0;
          try {
            x = std::stoi(s, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          if (used == 0 || used != s.size()) throw InvalidArgument(ctx + ": " + k + " = \"" + s + "\" is not an integer");
          return x;
        };
        if (k == "name") {
          if (v.empty() || v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") !=
                               std::string::npos)
            throw InvalidArgument(ctx + ": name must be non-empty and use only letters, digits, _ - .");
          if (v.size() > kMaxRunName)
            throw InvalidArgument(ctx + ": name \"" + v + "\" is longer than " + std::to_string(kMaxRunName) +
                                  " characters (the summary table's name field)");
          name = v;
          continue;
        }
        if (k == "b") r.sparse.block_size = to_int(v);
        else if (k == "ratio") r.sparse.ratio = Fraction::parse(v);
        else if (k == "n_min") r.sparse.n_min = to_int(v);
        else if (k == "n_local") r.sparse.n_local = to_int(v);
        else if (k == "n_sink") r.sparse.n_sink = to_int(v);
        else if (k == "f") r.sparse.rectify_every = to_int(v), f_given = true;
        else if (k == "last") {
          const int last = to_int(v);
          if (last < 0 || last > steps)
            throw InvalidArgument(ctx + ": last = " + v + " must be in [0, steps = " + std::to_string(steps) + "]");
          r.start = last == 0 ? 0 : prompt_len + steps - last;
        } else throw InvalidArgument(ctx + ": unknown key \"" + k + "\" (b, ratio, n_min, n_local, n_sink, f, last, name)");
        if (k != "f") suffix += "_" + k + (k == "ratio" ? r.sparse.ratio.str() : v);
      }
    }
    if (mode == "sparse" && r.sparse.rectify_every != 0)
      throw InvalidArgument(ctx + ": sparse means f = 0 (use resa:f=... for rectification)");
    if (mode == "resa" && r.sparse.rectify_every < 1)
      throw InvalidArgument(ctx + ": resa needs f >= 1 (" + std::string(f_given ? "given" : "default") + " f = " +
                            std::to_string(r.sparse.rectify_every) + "; use sparse for f = 0)");
    try {
      r.sparse.validate();
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(ctx + ": " + e.what());
    }
    for (char& c : suffix)
      if (c == '/') c = '-';
    r.name = !name.empty() ? name
                           : (mode == "sparse" ? "sparse" : "resa_f" + std::to_string(r.sparse.rectify_every)) + suffix;
    if (r.name == "dense") throw InvalidArgument(ctx + ": the name \"dense\" is reserved for the ground truth");
    for (const auto& o : out)
      if (o.name == r.name)
        throw InvalidArgument(ctx + ": run name \"" + r.name + "\" used twice (add name=... to tell them apart)");
    out.push_back(r);
  }
  return out;
}

// --------------------------------------------------------------------------- run writer
namespace {

const char* kFormat = "resa-study/1";

struct Accum {
  double k_sum = 0, k_max = 0, v_sum = 0, v_max = 0, attn_sum = 0, hidden_sum = 0, kl_sum = 0, kl_max = 0;
  double nll_sum = 0, dense_nll_sum = 0, recall_sum = 0, bytes = 0, dense_bytes = 0;
  int64_t n_k = 0, n_attn = 0, n_rec = 0, top1 = 0, steps = 0, rect = 0;
};

class RunWriter {
 public:
  RunWriter(hid_t runs_group, const RunSpec& spec, int n_layers, int hq, int hkv, int64_t prompt_len, int64_t planned,
            hsize_t chunk)
      : spec_(spec), n_layers_(n_layers), hq_(hq), hkv_(hkv), chunk_(chunk) {
    group_ = h5::create_group(runs_group, spec.name);
    const hid_t g = group_;
    h5::set_attr(g, "complete", int64_t{0});
    h5::set_attr(g, "mode", std::string(spec.mode == DecodeMode::Dense ? "dense"
                                        : spec.sparse.rectify_every == 0 ? "sparse" : "resa"));
    h5::set_attr(g, "sparse", spec.mode == DecodeMode::Dense ? std::string("dense") : spec.sparse.str());
    h5::set_attr(g, "b", int64_t{spec.sparse.block_size});
    h5::set_attr(g, "ratio", spec.sparse.ratio.str());
    h5::set_attr(g, "n_min", int64_t{spec.sparse.n_min});
    h5::set_attr(g, "n_local", int64_t{spec.sparse.n_local});
    h5::set_attr(g, "n_sink", int64_t{spec.sparse.n_sink});
    h5::set_attr(g, "f", int64_t{spec.mode == DecodeMode::Dense ? 0 : spec.sparse.rectify_every});
    h5::set_attr(g, "steps_planned", planned);
    h5::set_attr(g, "start", spec.start);  // 0: decodes every step itself
    h5::set_attr(g, "last", spec.start == 0 ? int64_t{0} : prompt_len + planned - spec.start);
    const std::vector<hsize_t> none, LK{static_cast<hsize_t>(n_layers), static_cast<hsize_t>(hkv)},
        LQ{static_cast<hsize_t>(n_layers), static_cast<hsize_t>(hq)}, LL{static_cast<hsize_t>(n_layers)};
    step_ = h5::Series<int64_t>(g, "step", none, chunk, "decode step index (0 = first token after the prompt)");
    position_ = h5::Series<int64_t>(g, "position", none, chunk, "cache position of the token fed at this step");
    token_ = h5::Series<int32_t>(g, "token", none, chunk, "token fed at this step");
    target_ = h5::Series<int32_t>(g, "target", none, chunk, "next token of the stream (NLL target)");
    kl_ = h5::Series<double>(g, "kl", none, chunk, "KL(dense || run) of the next-token distribution, nats");
    nll_ = h5::Series<double>(g, "nll", none, chunk, "teacher-forced NLL of target under this run, nats");
    top1_ = h5::Series<uint8_t>(g, "top1_agree", none, chunk, "1 when this run's argmax equals dense's");
    top3_ = h5::Series<uint8_t>(g, "top3_hit", none, chunk, "1 when the target is among this run's 3 most likely tokens");
    rect_ = h5::Series<uint8_t>(g, "rectified", none, chunk, "1 when a rectification ran after this step");
    k_err_ = h5::Series<double>(g, "k_err", LK, chunk, "||K - K_dense||_F / ||K_dense||_F over the cache, per KV head");
    v_err_ = h5::Series<double>(g, "v_err", LK, chunk, "||V - V_dense||_F / ||V_dense||_F over the cache, per KV head");
    k_new_ = h5::Series<double>(g, "k_new_err", LK, chunk, "relative error of the newest K entry");
    v_new_ = h5::Series<double>(g, "v_new_err", LK, chunk, "relative error of the newest V entry");
    sel_ = h5::Series<int32_t>(g, "selected_blocks", LK, chunk, "blocks attended (M when dense)");
    attn_ = h5::Series<double>(g, "attn_err", LQ, chunk, "relative error of the attention output, per query head");
    recall_ = h5::Series<double>(g, "recall", LQ, chunk,
                                 "share of this run's full attention mass inside the attended blocks");
    top_mass_ = h5::Series<double>(g, "top_block_mass", LQ, chunk,
                                   "share of this run's full attention mass held by the top 10% of blocks");
    hidden_ = h5::Series<double>(g, "hidden_err", LL, chunk, "relative error of the residual stream after the layer");
    bytes_ = h5::Series<double>(g, "bytes_read", LL, chunk, "attention bytes read (K/V, descriptors, rectification)");
    std::vector<int32_t> li(static_cast<size_t>(n_layers)), hi(static_cast<size_t>(hq)), ki(static_cast<size_t>(hkv));
    for (int i = 0; i < n_layers; ++i) li[static_cast<size_t>(i)] = i;
    for (int i = 0; i < hq; ++i) hi[static_cast<size_t>(i)] = i;
    for (int i = 0; i < hkv; ++i) ki[static_cast<size_t>(i)] = i;
    h5::Id layer = h5::write_vector(g, "layer", li), head = h5::write_vector(g, "head", hi),
           kv_head = h5::write_vector(g, "kv_head", ki);
    h5::make_scale(step_.id(), "step");
    h5::make_scale(layer, "layer");
    h5::make_scale(head, "head");
    h5::make_scale(kv_head, "kv_head");
    for (hid_t d : {position_.id(), token_.id(), target_.id(), kl_.id(), nll_.id(), top1_.id(), top3_.id(), rect_.id()})
      h5::attach_scale(d, step_.id(), 0);
    for (hid_t d : {k_err_.id(), v_err_.id(), k_new_.id(), v_new_.id(), sel_.id()}) {
      h5::attach_scale(d, step_.id(), 0);
      h5::attach_scale(d, layer, 1);
      h5::attach_scale(d, kv_head, 2);
    }
    for (hid_t d : {attn_.id(), recall_.id(), top_mass_.id()}) {
      h5::attach_scale(d, step_.id(), 0);
      h5::attach_scale(d, layer, 1);
      h5::attach_scale(d, head, 2);
    }
    for (hid_t d : {hidden_.id(), bytes_.id()}) {
      h5::attach_scale(d, step_.id(), 0);
      h5::attach_scale(d, layer, 1);
    }
  }

  // Appends one step's data; a step where the run follows dense (its_own false) is kept in the
  // per-step data but left out of the summary. dense_bytes and dense_nll are the dense run's.
  void add(int64_t step, const StepMetrics& m, bool its_own, double dense_bytes, double dense_nll) {
    buf_.push_back(m);
    steps_.push_back(step);
    if (buf_.size() >= chunk_) flush();
    if (!its_own) return;
    Accum& a = acc_;
    for (size_t i = 0; i < m.k_err.size(); ++i) {
      a.k_sum += m.k_err[i], a.v_sum += m.v_err[i];
      a.k_max = std::max(a.k_max, m.k_err[i]), a.v_max = std::max(a.v_max, m.v_err[i]);
    }
    a.n_k += static_cast<int64_t>(m.k_err.size());
    for (size_t i = 0; i < m.attn_err.size(); ++i) a.attn_sum += m.attn_err[i], a.recall_sum += m.recall[i];
    a.n_attn += static_cast<int64_t>(m.attn_err.size());
    a.hidden_sum += m.hidden_err.back();
    a.kl_sum += m.kl, a.kl_max = std::max(a.kl_max, m.kl), a.nll_sum += m.nll, a.dense_nll_sum += dense_nll;
    a.top1 += m.top1_agree, a.rect += m.rectified, ++a.steps;
    for (double b : m.bytes_read) a.bytes += b;
    a.dense_bytes += dense_bytes;
  }

  void flush() {
    if (buf_.empty()) return;
    const hsize_t n = buf_.size();
    auto gather = [&](auto member) {
      using V = typename std::decay_t<decltype(buf_[0].*member)>::value_type;
      std::vector<V> out;
      for (const auto& m : buf_) out.insert(out.end(), (m.*member).begin(), (m.*member).end());
      return out;
    };
    auto scalar = [&](auto member) {
      std::vector<std::decay_t<decltype(buf_[0].*member)>> out;
      for (const auto& m : buf_) out.push_back(m.*member);
      return out;
    };
    step_.append(steps_.data(), n);
    position_.append(scalar(&StepMetrics::position).data(), n);
    token_.append(scalar(&StepMetrics::token).data(), n);
    target_.append(scalar(&StepMetrics::target).data(), n);
    kl_.append(scalar(&StepMetrics::kl).data(), n);
    nll_.append(scalar(&StepMetrics::nll).data(), n);
    top1_.append(scalar(&StepMetrics::top1_agree).data(), n);
    top3_.append(scalar(&StepMetrics::top3_hit).data(), n);
    rect_.append(scalar(&StepMetrics::rectified).data(), n);
    k_err_.append(gather(&StepMetrics::k_err).data(), n);
    v_err_.append(gather(&StepMetrics::v_err).data(), n);
    k_new_.append(gather(&StepMetrics::k_new_err).data(), n);
    v_new_.append(gather(&StepMetrics::v_new_err).data(), n);
    sel_.append(gather(&StepMetrics::selected).data(), n);
    attn_.append(gather(&StepMetrics::attn_err).data(), n);
    recall_.append(gather(&StepMetrics::recall).data(), n);
    top_mass_.append(gather(&StepMetrics::top_mass).data(), n);
    hidden_.append(gather(&StepMetrics::hidden_err).data(), n);
    bytes_.append(gather(&StepMetrics::bytes_read).data(), n);
    buf_.clear();
    steps_.clear();
  }

  RunSummary finish(double seconds) {
    flush();
    const Accum& a = acc_;
    RunSummary s;
    s.name = spec_.name;
    s.mode = spec_.mode == DecodeMode::Dense ? "dense" : spec_.sparse.rectify_every == 0 ? "sparse" : "resa";
    s.ratio = spec_.sparse.ratio.str();
    s.b = spec_.sparse.block_size, s.n_min = spec_.sparse.n_min, s.n_local = spec_.sparse.n_local;
    s.n_sink = spec_.sparse.n_sink, s.f = spec_.mode == DecodeMode::Dense ? 0 : spec_.sparse.rectify_every;
    s.steps = a.steps, s.rectifications = a.rect;
    const double st = std::max<int64_t>(a.steps, 1);
    s.k_err_mean = a.k_sum / std::max<int64_t>(a.n_k, 1), s.k_err_max = a.k_max;
    s.v_err_mean = a.v_sum / std::max<int64_t>(a.n_k, 1), s.v_err_max = a.v_max;
    s.attn_err_mean = a.attn_sum / std::max<int64_t>(a.n_attn, 1);
    s.recall_mean = a.recall_sum / std::max<int64_t>(a.n_attn, 1);
    s.hidden_err_mean = a.hidden_sum / st;
    s.kl_mean = a.kl_sum / st, s.kl_max = a.kl_max;
    s.top1_agreement = static_cast<double>(a.top1) / st;
    s.nll_mean = a.nll_sum / st, s.ppl = std::exp(s.nll_mean);
    s.nll_delta = (a.nll_sum - a.dense_nll_sum) / st;
    s.bytes_rel = a.dense_bytes > 0 ? a.bytes / a.dense_bytes : 0;
    s.cost_model = spec_.mode == DecodeMode::Dense ? 1.0 : cost_model_fraction(spec_.sparse);
    s.seconds = seconds;
    const hid_t g = group_;
    h5::set_attr(g, "steps", s.steps);
    h5::set_attr(g, "rectifications", s.rectifications);
    for (const auto& [k, v] : numeric_fields(s)) h5::set_attr(g, k, v);
    return s;
  }
  void mark_complete() { h5::set_attr(group_.get(), "complete", int64_t{1}); }

  static std::vector<std::pair<std::string, double>> numeric_fields(const RunSummary& s) {
    return {{"k_err_mean", s.k_err_mean}, {"k_err_max", s.k_err_max}, {"v_err_mean", s.v_err_mean},
            {"v_err_max", s.v_err_max}, {"attn_err_mean", s.attn_err_mean}, {"hidden_err_mean", s.hidden_err_mean},
            {"kl_mean", s.kl_mean}, {"kl_max", s.kl_max}, {"top1_agreement", s.top1_agreement},
            {"nll_mean", s.nll_mean}, {"nll_delta", s.nll_delta}, {"ppl", s.ppl}, {"recall_mean", s.recall_mean}, {"bytes_rel", s.bytes_rel},
            {"cost_model", s.cost_model}, {"seconds", s.seconds}};
  }

 private:
  RunSpec spec_;
  int n_layers_, hq_, hkv_;
  hsize_t chunk_;
  h5::Id group_;
  h5::Series<int64_t> step_, position_;
  h5::Series<int32_t> token_, target_, sel_;
  h5::Series<double> kl_, nll_, k_err_, v_err_, k_new_, v_new_, attn_, recall_, top_mass_, hidden_, bytes_;
  h5::Series<uint8_t> top1_, top3_, rect_;
  std::vector<StepMetrics> buf_;
  std::vector<int64_t> steps_;
  Accum acc_;
};

RunSummary read_run_summary(hid_t runs, const std::string& name) {
  h5::Id g = h5::open_group(runs, name);
  RunSummary s;
  s.name = name;
  s.mode = h5::attr_string(g, "mode");
  s.ratio = h5::attr_string(g, "ratio");
  s.b = h5::attr_int(g, "b"), s.n_min = h5::attr_int(g, "n_min"), s.n_local = h5::attr_int(g, "n_local");
  s.n_sink = h5::attr_int(g, "n_sink"), s.f = h5::attr_int(g, "f");
  s.steps = h5::attr_int(g, "steps"), s.rectifications = h5::attr_int(g, "rectifications");
  for (auto& [k, v] : RunWriter::numeric_fields(s)) {
    const double x = h5::attr_double(g, k);
    if (k == "k_err_mean") s.k_err_mean = x;
    else if (k == "k_err_max") s.k_err_max = x;
    else if (k == "v_err_mean") s.v_err_mean = x;
    else if (k == "v_err_max") s.v_err_max = x;
    else if (k == "attn_err_mean") s.attn_err_mean = x;
    else if (k == "hidden_err_mean") s.hidden_err_mean = x;
    else if (k == "kl_mean") s.kl_mean = x;
    else if (k == "kl_max") s.kl_max = x;
    else if (k == "top1_agreement") s.top1_agreement = x;
    else if (k == "nll_mean") s.nll_mean = x;
    else if (k == "nll_delta") s.nll_delta = x;
    else if (k == "ppl") s.ppl = x;
    else if (k == "recall_mean") s.recall_mean = x;
    else if (k == "bytes_rel") s.bytes_rel = x;
    else if (k == "cost_model") s.cost_model = x;
    else if (k == "seconds") s.seconds = x;
    (void)v;
  }
  return s;
}

// The /summary compound table.
struct SummaryRecord {
  char name[kMaxRunName + 1], mode[16], ratio[32];
  int64_t b, n_min, n_local, n_sink, f, steps, rectifications;
  double k_err_mean, k_err_max, v_err_mean, v_err_max, attn_err_mean, hidden_err_mean, kl_mean, kl_max,
      top1_agreement, nll_mean, nll_delta, ppl, recall_mean, bytes_rel, cost_model, seconds;
};

h5::Id summary_type() {
  h5::Id t(H5Tcreate(H5T_COMPOUND, sizeof(SummaryRecord)));
  h5::insert_string_member(t, "name", offsetof(SummaryRecord, name), sizeof(SummaryRecord::name));
  h5::insert_string_member(t, "mode", offsetof(SummaryRecord, mode), sizeof(SummaryRecord::mode));
  h5::insert_string_member(t, "ratio", offsetof(SummaryRecord, ratio), sizeof(SummaryRecord::ratio));
#define RESA_I64(f) H5Tinsert(t, #f, offsetof(SummaryRecord, f), H5T_NATIVE_INT64);
#define RESA_F64(f) H5Tinsert(t, #f, offsetof(SummaryRecord, f), H5T_NATIVE_DOUBLE);
  RESA_I64(b) RESA_I64(n_min) RESA_I64(n_local) RESA_I64(n_sink) RESA_I64(f) RESA_I64(steps) RESA_I64(rectifications)
  RESA_F64(k_err_mean) RESA_F64(k_err_max) RESA_F64(v_err_mean) RESA_F64(v_err_max) RESA_F64(attn_err_mean)
  RESA_F64(hidden_err_mean) RESA_F64(kl_mean) RESA_F64(kl_max) RESA_F64(top1_agreement) RESA_F64(nll_mean)
  RESA_F64(nll_delta) RESA_F64(ppl) RESA_F64(recall_mean) RESA_F64(bytes_rel) RESA_F64(cost_model) RESA_F64(seconds)
#undef RESA_I64
#undef RESA_F64
  return t;
}

void write_summary_table(hid_t file, const std::vector<RunSummary>& rows) {
  if (h5::exists(file, "summary")) h5::unlink(file, "summary");
  std::vector<SummaryRecord> recs(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    SummaryRecord& r = recs[i];
    std::memset(&r, 0, sizeof r);
    const RunSummary& s = rows[i];
    std::snprintf(r.name, sizeof r.name, "%s", s.name.c_str());
    std::snprintf(r.mode, sizeof r.mode, "%s", s.mode.c_str());
    std::snprintf(r.ratio, sizeof r.ratio, "%s", s.ratio.c_str());
    r.b = s.b, r.n_min = s.n_min, r.n_local = s.n_local, r.n_sink = s.n_sink, r.f = s.f, r.steps = s.steps;
    r.rectifications = s.rectifications;
    r.k_err_mean = s.k_err_mean, r.k_err_max = s.k_err_max, r.v_err_mean = s.v_err_mean, r.v_err_max = s.v_err_max;
    r.attn_err_mean = s.attn_err_mean, r.hidden_err_mean = s.hidden_err_mean, r.kl_mean = s.kl_mean;
    r.kl_max = s.kl_max, r.top1_agreement = s.top1_agreement, r.nll_mean = s.nll_mean, r.nll_delta = s.nll_delta;
    r.ppl = s.ppl;
    r.recall_mean = s.recall_mean, r.bytes_rel = s.bytes_rel, r.cost_model = s.cost_model, r.seconds = s.seconds;
  }
  h5::Id t = summary_type();
  const hsize_t n = recs.size();
  h5::Id space(H5Screate_simple(1, &n, nullptr));
  h5::Id ds(H5Dcreate2(file, "summary", t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (ds.get() < 0 || (n && H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, recs.data()) < 0))
    h5::fail(file, "cannot write the summary table");
  h5::set_attr(ds, "description", std::string("one row per completed run; pandas.DataFrame(f['summary'][()])"));
}

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

template <class T>
struct StudyRunner {
  const StudyConfig& cfg;
  const StudyOptions& opts;
  const sim::Qwen2Model& model;
  const std::vector<int32_t>& given_tokens;  // empty for greedy
  std::vector<int32_t> prompt;
  ScheduleConfig sched;
  int64_t steps_done_total = 0;

  // One lockstep pass over `specs`; writes the runs listed in `write` (indices into dense+specs).
  void pass(hid_t runs_group, hid_t file, const std::vector<RunSpec>& specs, bool write_dense, int pass_i,
            int passes, std::vector<std::string>& computed) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const sim::Qwen2Config& mc = model.config();
    const int64_t P = cfg.prompt_len, S = cfg.steps;
    sim::Lockstep<T> ls(model, specs, P + S, sched);
    std::vector<std::unique_ptr<RunWriter>> writers(static_cast<size_t>(ls.n_runs()));
    for (int r = write_dense ? 0 : 1; r < ls.n_runs(); ++r)
      writers[static_cast<size_t>(r)] = std::make_unique<RunWriter>(
          runs_group, ls.spec(r), mc.num_hidden_layers, mc.num_attention_heads, mc.num_key_value_heads, P, S,
          static_cast<hsize_t>(std::min(cfg.chunk_steps, S)));
    h5::flush(file);
    std::vector<int32_t> stream = given_tokens.empty() ? prompt : given_tokens;
    const std::vector<float> first = ls.prefill(prompt);
    if (given_tokens.empty()) stream.push_back(sim::argmax_token(first.data(), mc.vocab_size));
    StudyProgress prog;
    prog.pass = pass_i, prog.passes = passes, prog.steps = S;
    for (int r = 0; r < ls.n_runs(); ++r) prog.runs.push_back(ls.spec(r).name);
    for (int64_t s = 0; s < S; ++s) {
      if (opts.cancel && opts.cancel->load()) throw StudyInterrupted("interrupted");
      if (opts.stop_after_steps >= 0 && steps_done_total >= opts.stop_after_steps)
        throw StudyInterrupted("stopped after " + std::to_string(steps_done_total) + " steps (test hook)");
      const int32_t token = stream[static_cast<size_t>(P + s)];
      ls.step(token);
      if (given_tokens.empty())
        stream.push_back(sim::argmax_token(ls.observation(0).logits.data(), mc.vocab_size));
      const int32_t target = stream[static_cast<size_t>(P + s + 1)];
      double dense_bytes = 0;
      for (double b : ls.observation(0).bytes_read) dense_bytes += b;
      const double dense_nll = nll(ls.observation(0).logits.data(), mc.vocab_size, target);
      for (int r = 0; r < ls.n_runs(); ++r)
        if (writers[static_cast<size_t>(r)])
          writers[static_cast<size_t>(r)]->add(s, step_metrics(ls, r, token, target), !ls.follows_dense(r),
                                               dense_bytes, dense_nll);
      ++steps_done_total;
      if ((s + 1) % cfg.chunk_steps == 0) h5::flush(file);
      prog.step = s + 1;
      prog.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
      if (opts.progress) opts.progress(prog);
    }
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    for (int r = 0; r < ls.n_runs(); ++r)
      if (writers[static_cast<size_t>(r)]) writers[static_cast<size_t>(r)]->finish(secs);
    h5::flush(file);  // data and summaries on disk before any flag says complete
    for (int r = 0; r < ls.n_runs(); ++r)
      if (writers[static_cast<size_t>(r)]) {
        writers[static_cast<size_t>(r)]->mark_complete();
        computed.push_back(ls.spec(r).name);
      }
    h5::flush(file);
  }
};

std::string describe_model(const sim::Qwen2Weights& w) { return w.source + " (" + w.cfg.str() + ")"; }

}  // namespace

// -------------------------------------------------------------------------------- driver
StudyResult run_study(const StudyConfig& cfg, const StudyOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  cfg.validate();
  const std::vector<RunSpec> specs = parse_run_specs(cfg.runs, cfg.sparse, cfg.prompt_len, cfg.steps);
  if (opts.output.empty()) throw InvalidArgument("output: no study file given");
  if (opts.overwrite && opts.resume) throw InvalidArgument("--overwrite and --resume exclude each other");

  // Model and tokens first: nothing is written before every input is known to be good.
  std::shared_ptr<sim::Qwen2Weights> weights;
  std::error_code ec;
  if (sim::is_synthetic_shape(cfg.model)) {
    sim::Qwen2Config mc = sim::synthetic_shape(cfg.model);
    if (cfg.layers > 0) mc.num_hidden_layers = cfg.layers;
    weights = std::make_shared<sim::Qwen2Weights>(
        sim::make_synthetic_weights(mc, cfg.seed, sim::parse_weight_dtype(cfg.weight_dtype)));
    weights->source = "synthetic:" + cfg.model + " " + weights->source;
  } else if (fs::is_directory(cfg.model, ec)) {
    weights = std::make_shared<sim::Qwen2Weights>(sim::load_hf_checkpoint(cfg.model));
    if (cfg.layers > 0) throw InvalidArgument("layers: only synthetic shapes take a layer override");
  } else {
    sim::synthetic_shape(cfg.model);  // throws: names the shapes and says no such folder
  }
  const sim::Qwen2Model model(weights);
  const int V = model.config().vocab_size;
  const int64_t need = cfg.prompt_len + cfg.steps + 1;
  std::vector<int32_t> given;
  if (cfg.tokens == "random") {
    given = sim::random_tokens(need, V, cfg.seed + 1);
  } else if (cfg.tokens != "greedy") {
    const bool ids = cfg.tokens.rfind("ids:", 0) == 0;
    std::string path = cfg.tokens.substr(ids ? 4 : 5);
    for (size_t at; (at = path.find("{seed}")) != std::string::npos;) path.replace(at, 6, std::to_string(cfg.seed));
    given = ids ? sim::read_token_ids(path, V) : sim::read_text_bytes(path, V);
    if (static_cast<int64_t>(given.size()) < need)
      throw InvalidArgument((ids ? "token file " : "text file ") + path + ": holds " + std::to_string(given.size()) +
                            " tokens; prompt_len + steps + 1 = " + std::to_string(need) + " are needed");
    given.resize(static_cast<size_t>(need));
  }
  const std::string canon = cfg.canonical();

  // The output.
  const bool exists = fs::exists(opts.output, ec);
  if (exists && !opts.overwrite && !opts.resume)
    throw InvalidArgument(opts.output + ": exists; pass --resume to continue that study or --overwrite to replace it");
  h5::Id file;
  bool fresh = true;
  if (exists && opts.resume) {
    file = h5::open_file(opts.output, true);
    if (!h5::has_attr(file, "format") || h5::attr_string(file, "format") != kFormat)
      throw InvalidArgument(opts.output + ": not a resa study file (format attribute missing); not resuming");
    const std::string old = h5::read_string(file, "config");
    if (old != canon) {
      std::istringstream a(old), b(canon);
      std::string la, lb;
      while (std::getline(a, la) && std::getline(b, lb) && la == lb) {
      }
      throw InvalidArgument(opts.output + ": the study was made with another configuration (stored \"" + la +
                            "\", now \"" + lb + "\"); resume needs the same settings");
    }
    fresh = false;
  } else {
    const fs::path parent = fs::absolute(opts.output).parent_path();
    if (!fs::is_directory(parent, ec)) throw InvalidArgument(opts.output + ": folder " + parent.string() + " does not exist");
    if (exists && opts.overwrite) {  // nothing already written is lost until the new study completes
      fs::rename(opts.output, opts.output + ".previous", ec);
      if (ec) throw InvalidArgument(opts.output + ": cannot move the study being replaced aside (" + ec.message() + ")");
    }
    file = h5::create_file(opts.output, false);
  }
  if (fresh) {
    h5::set_attr(file, "format", std::string(kFormat));
    h5::set_attr(file, "tool", std::string("resa simulate"));
    h5::set_attr(file, "version", std::string(resa::version()));
    h5::set_attr(file, "git_commit", std::string(resa::git_commit()));
    h5::set_attr(file, "command_line", opts.command_line);
    h5::set_attr(file, "created", now_iso());
    h5::set_attr(file, "model", describe_model(*weights));
    h5::set_attr(file, "config", canon);
    std::string build;
    for (const auto& [k, v] : build_info()) build += k + ": " + v + "\n";
    h5::set_attr(file, "build", build);
    h5::write_string(file, "config", canon);
    h5::create_group(file, "runs");
  } else {
    const int64_t n = h5::has_attr(file, "resumes") ? h5::attr_int(file, "resumes") : 0;
    h5::set_attr(file, "resumes", n + 1);
    h5::set_attr(file, "last_resume_command_line", opts.command_line);
  }
  h5::set_attr(file, "complete", int64_t{0});
  h5::flush(file);
  h5::Id runs = h5::open_group(file, "runs");

  StudyResult result;
  auto is_complete = [&](const std::string& name) {
    if (!h5::exists(runs, name)) return false;
    h5::Id g = h5::open_group(runs, name);
    return h5::has_attr(g, "complete") && h5::attr_int(g, "complete") == 1;
  };
  auto drop_unfinished = [&](const std::string& name) {
    if (h5::exists(runs, name) && !is_complete(name)) h5::unlink(runs, name);
  };
  const bool dense_pending = !is_complete("dense");
  drop_unfinished("dense");
  if (!dense_pending) result.skipped.push_back("dense");
  std::vector<RunSpec> pending;
  for (const auto& s : specs) {
    if (is_complete(s.name)) {
      result.skipped.push_back(s.name);
    } else {
      drop_unfinished(s.name);
      pending.push_back(s);
    }
  }
  const size_t per = cfg.runs_per_pass > 0 ? static_cast<size_t>(cfg.runs_per_pass) : std::max<size_t>(pending.size(), 1);
  std::vector<std::vector<RunSpec>> passes;
  for (size_t i = 0; i < pending.size(); i += per)
    passes.emplace_back(pending.begin() + static_cast<std::ptrdiff_t>(i),
                        pending.begin() + static_cast<std::ptrdiff_t>(std::min(pending.size(), i + per)));
  if (passes.empty() && dense_pending) passes.emplace_back();

  auto run_passes = [&](auto tag) {
    using T = decltype(tag);
    StudyRunner<T> runner{cfg, opts, model, given, {}, {}, 0};
    runner.prompt = given.empty() ? sim::random_tokens(cfg.prompt_len, V, cfg.seed + 1)
                                  : std::vector<int32_t>(given.begin(), given.begin() + cfg.prompt_len);
    runner.sched.arith = cfg.dot == "fma" ? DotArithmetic::FmaChain : DotArithmetic::TensorCoreHopper;
    for (size_t p = 0; p < passes.size(); ++p)
      runner.pass(runs, file, passes[p], p == 0 && dense_pending, static_cast<int>(p), static_cast<int>(passes.size()),
                  result.computed);
  };
  auto update_summary = [&] {
    result.summary.clear();
    std::vector<std::string> order{"dense"};
    for (const auto& s : specs) order.push_back(s.name);
    for (const auto& n : order)
      if (is_complete(n)) result.summary.push_back(read_run_summary(runs, n));
    write_summary_table(file, result.summary);
    h5::flush(file);
  };
  try {
    if (sim::parse_kv_dtype(cfg.kv_dtype) == sim::KvDType::BF16) run_passes(bf16{});
    else run_passes(fp16{});
  } catch (...) {
    update_summary();  // keep the table consistent with the runs that did complete
    throw;
  }
  update_summary();
  h5::set_attr(file, "complete", int64_t{1});
  h5::flush(file);
  fs::remove(opts.output + ".previous", ec);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

// -------------------------------------------------------------------------------- reader
StudyReader::StudyReader(const std::string& path) : path_(path) {
  h5::Id f = h5::open_file(path, false);
  if (!h5::has_attr(f, "format") || h5::attr_string(f, "format") != kFormat)
    throw InvalidArgument(path + ": not a resa study file");
  complete_ = h5::attr_int(f, "complete") == 1;
  config_ = h5::read_string(f, "config");
  for (const char* k : {"format", "tool", "version", "git_commit", "command_line", "created", "model", "config"})
    attrs_[k] = h5::attr_string(f, k);
}

std::vector<std::string> StudyReader::runs() const {
  h5::Id f = h5::open_file(path_, false);
  h5::Id g = h5::open_group(f, "runs");
  return h5::list_children(g);
}

bool StudyReader::run_complete(const std::string& run) const {
  h5::Id f = h5::open_file(path_, false);
  h5::Id g = h5::open_group(f, "runs/" + run);
  return h5::attr_int(g, "complete") == 1;
}

std::vector<std::string> StudyReader::datasets(const std::string& run) const {
  h5::Id f = h5::open_file(path_, false);
  h5::Id g = h5::open_group(f, "runs/" + run);
  return h5::list_children(g);
}

RunSeries StudyReader::series(const std::string& run, const std::string& dataset) const {
  h5::Id f = h5::open_file(path_, false);
  h5::Id g = h5::open_group(f, "runs/" + run);
  std::vector<hsize_t> dims;
  RunSeries s;
  s.values = h5::read_all<double>(g, dataset, &dims);
  s.dims.assign(dims.begin(), dims.end());
  return s;
}

std::vector<RunSummary> StudyReader::summary() const {
  h5::Id f = h5::open_file(path_, false);
  h5::Id ds = h5::open_dataset(f, "summary");
  h5::Id space(H5Dget_space(ds));
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space, &n, nullptr);
  std::vector<SummaryRecord> recs(static_cast<size_t>(n));
  h5::Id t = summary_type();
  if (n && H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, recs.data()) < 0) h5::fail(ds, "cannot read the summary");
  std::vector<RunSummary> out;
  for (const auto& r : recs) {
    RunSummary s;
    s.name = r.name, s.mode = r.mode, s.ratio = r.ratio;
    s.b = r.b, s.n_min = r.n_min, s.n_local = r.n_local, s.n_sink = r.n_sink, s.f = r.f, s.steps = r.steps;
    s.rectifications = r.rectifications, s.k_err_mean = r.k_err_mean, s.k_err_max = r.k_err_max;
    s.v_err_mean = r.v_err_mean, s.v_err_max = r.v_err_max, s.attn_err_mean = r.attn_err_mean;
    s.hidden_err_mean = r.hidden_err_mean, s.kl_mean = r.kl_mean, s.kl_max = r.kl_max;
    s.top1_agreement = r.top1_agreement, s.nll_mean = r.nll_mean, s.nll_delta = r.nll_delta, s.ppl = r.ppl;
    s.recall_mean = r.recall_mean;
    s.bytes_rel = r.bytes_rel, s.cost_model = r.cost_model, s.seconds = r.seconds;
    out.push_back(s);
  }
  return out;
}

std::string format_summary(const std::vector<RunSummary>& rows) {
  std::ostringstream os;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-16s %6s %5s %9s %9s %9s %9s %6s %7s %7s %7s %7s\n", "run", "f", "rect",
                "K err", "K max", "V err", "KL", "top1", "NLL", "recall", "bytes", "Eq.6");
  os << buf;
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%-16s %6lld %5lld %9.2e %9.2e %9.2e %9.2e %6.3f %7.4f %7.4f %7.3f %7.3f\n",
                  r.name.c_str(), static_cast<long long>(r.f), static_cast<long long>(r.rectifications), r.k_err_mean,
                  r.k_err_max, r.v_err_mean, r.kl_mean, r.top1_agreement, r.nll_mean, r.recall_mean, r.bytes_rel,
                  r.cost_model);
    os << buf;
  }
  return os.str();
}

}  // namespace resa::analysis
