// cli/selftest.cpp — `resa selftest`: every reference kernel against the fp64 oracle (derived
// tolerance and the 2x-naive rule) plus the exact properties, on random inputs, as a table.
#include "selftest.h"

#include "commands.h"
#include "resa/fp_env.h"

#include <chrono>
#include <memory>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "resa/attention.h"
#include "resa/oracle.h"
#include "resa/selection.h"
#include "resa/testdata.h"

namespace resa::cli {

namespace {

template <class T>
std::vector<T> random_q(size_t n, std::mt19937_64& rng) {
  return testdata::random_storage<T>(n, rng, testdata::Fill::Normal);
}

struct Row {
  std::string kernel, dtype, shape, lengths, detail;
  bool ok;
  double seconds;
};

void print_row(const Row& r) {
  std::printf("%-18s %-5s %-20s %-14s %-6s %6.2fs  %s\n", r.kernel.c_str(), r.dtype.c_str(),
              r.shape.c_str(), r.lengths.c_str(), r.ok ? "PASS" : "FAIL", r.seconds, r.detail.c_str());
  std::fflush(stdout);
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::string accuracy(const oracle::AttentionCheck& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "max|err| %.2e (naive %.2e), worst/tol %.3f", c.ref_error,
                c.naive_error, c.cmp.worst_ratio);
  return buf;
}

template <class T>
void run_shape(const AttentionShape& shape, const std::vector<int64_t>& lengths,
               const SparseConfig& sparse, std::mt19937_64& rng, std::vector<Row>& rows) {
  using clock = std::chrono::steady_clock;
  const Schedule s = make_schedule(shape);
  int64_t cap = 1;
  for (auto L : lengths) cap = std::max(cap, L);
  const KvCache<T> cache =
      testdata::random_cache<T>(shape, lengths, static_cast<int>(cap), rng, testdata::Fill::Normal);
  const int batch = cache.batch, hq = shape.n_q_heads, d = shape.head_dim;
  const std::string dt = Storage<T>::name, sh = shape.str(), ls = join(lengths);
  {
    auto t0 = clock::now();
    const auto q = random_q<T>(static_cast<size_t>(batch) * hq * d, rng);
    std::vector<float> out(q.size());
    dense_decode<T>(shape, s, cache, q.data(), out.data());
    const auto c = oracle::check_attention<T>(shape, s, cache, q, out,
        [&](int b, int, int) { return std::vector<KeySegment>{{0, cache.length[b]}}; }, 1);
    rows.push_back({"dense decode", dt, sh, ls, accuracy(c), c.ok(),
                    std::chrono::duration<double>(clock::now() - t0).count()});
    print_row(rows.back());
  }
  {
    auto t0 = clock::now();
    int64_t min_len = lengths[0];
    for (auto L : lengths) min_len = std::min(min_len, L);
    const int n = static_cast<int>(std::min<int64_t>(min_len, 8));
    const auto q = random_q<T>(static_cast<size_t>(batch) * n * hq * d, rng);
    std::vector<float> out(q.size());
    chunked_attention<T>(shape, s, cache, n, q.data(), out.data());
    const auto c = oracle::check_attention<T>(shape, s, cache, q, out,
        [&](int b, int i, int) { return std::vector<KeySegment>{{0, cache.length[b] - n + i + 1}}; }, n);
    rows.push_back({"chunked (n=" + std::to_string(n) + ")", dt, sh, ls, accuracy(c), c.ok(),
                    std::chrono::duration<double>(clock::now() - t0).count()});
    print_row(rows.back());
  }
  {
    auto t0 = clock::now();
    BlockDescriptors<T> desc(cache, sparse.block_size), inc(cache, sparse.block_size);
    build_descriptors(cache, desc);
    KvCache<T> grow = cache;
    bool same = true;
    for (int b = 0; b < batch; ++b)
      for (int64_t L = 1; L <= cache.length[b]; ++L) {
        grow.length[b] = L;
        update_descriptors(grow, inc, b, L - 1);
      }
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < shape.n_kv_heads; ++h)
        for (int64_t blk = 0; blk < num_blocks(cache.length[b], sparse.block_size); ++blk)
          for (int j = 0; j < d; ++j) {
            const size_t o = desc.offset(b, h, blk) + j;
            same &= desc.kmin[o].bits == inc.kmin[o].bits && desc.kmax[o].bits == inc.kmax[o].bits;
          }
    rows.push_back({"descriptors", dt, sh, ls, "incremental == rebuild (bits)", same,
                    std::chrono::duration<double>(clock::now() - t0).count()});
    print_row(rows.back());

    t0 = clock::now();
    const auto q = random_q<T>(static_cast<size_t>(batch) * hq * d, rng);
    const BlockSelection sel = select_for_decode<T>(shape, sparse, cache, desc, q.data());
    bool sel_ok = true;
    std::vector<float> qbar(static_cast<size_t>(shape.n_kv_heads) * d);
    for (int b = 0; b < batch; ++b) {
      pooled_query<T>(shape, q.data() + static_cast<size_t>(b) * hq * d, qbar.data());
      const int64_t m = num_blocks(cache.length[b], sparse.block_size);
      for (int h = 0; h < shape.n_kv_heads; ++h) {
        std::vector<float> scores(m);
        block_scores(desc, b, h, qbar.data() + h * d, m, scores.data());
        const auto want = oracle::select_blocks_by_definition(scores, sparse);
        sel_ok &= std::vector<int32_t>(sel.list(b, h), sel.list(b, h) + sel.n(b, h)) == want;
      }
    }
    rows.push_back({"selection", dt, sh, ls, "top-k == brute-force definition (" + sparse.str() + ")",
                    sel_ok, std::chrono::duration<double>(clock::now() - t0).count()});
    print_row(rows.back());

    t0 = clock::now();
    std::vector<float> out(q.size());
    block_sparse_decode<T>(shape, s, cache, sparse.block_size, sel, q.data(), out.data());
    const auto c = oracle::check_attention<T>(shape, s, cache, q, out,
        [&](int b, int, int kvh) {
          return block_segments(sel.list(b, kvh), sel.n(b, kvh), sparse.block_size, cache.length[b]);
        }, 1);
    rows.push_back({"block-sparse", dt, sh, ls, accuracy(c), c.ok(),
                    std::chrono::duration<double>(clock::now() - t0).count()});
    print_row(rows.back());

    t0 = clock::now();
    SparseConfig all = sparse;
    all.ratio = Fraction{1, 1};
    const BlockSelection every = select_for_decode<T>(shape, all, cache, desc, q.data());
    std::vector<float> sp(q.size()), de(q.size());
    block_sparse_decode<T>(shape, s, cache, sparse.block_size, every, q.data(), sp.data());
    dense_decode<T>(shape, s, cache, q.data(), de.data());
    bool eq = true;
    for (size_t i = 0; i < sp.size(); ++i) eq &= f32_bits(sp[i]) == f32_bits(de[i]);
    rows.push_back({"ratio=1 == dense", dt, sh, ls, "sparse over all blocks equals dense (bits)", eq,
                    std::chrono::duration<double>(clock::now() - t0).count()});
    print_row(rows.back());
  }
}

}  // namespace

int run_selftest(const SelftestOptions& opt) {
  opt.sparse.validate();
  std::mt19937_64 rng(opt.seed);
  std::printf("resa selftest: the CPU reference against the fp64 oracle (seed %llu)\n",
              static_cast<unsigned long long>(opt.seed));
  std::printf("PASS = every element within its derived tolerance and max error <= 2x a naive\n"
              "same-precision implementation; exact properties compare bit patterns.\n\n");
  std::printf("%-18s %-5s %-20s %-14s %-6s %7s  %s\n", "kernel", "dtype", "shape", "lengths", "result",
              "time", "detail");
  std::vector<Row> rows;
  const std::vector<int64_t> short_lengths = {300, 17};
  const std::vector<int64_t> long_lengths = opt.quick ? std::vector<int64_t>{600, 1}
                                                      : std::vector<int64_t>{4096, 1531, 256};
  run_shape<bf16>({12, 2, 128}, long_lengths, opt.sparse, rng, rows);
  run_shape<fp16>({28, 4, 128}, short_lengths, opt.sparse, rng, rows);
  if (!opt.quick) {
    run_shape<bf16>({7, 1, 64}, short_lengths, opt.sparse, rng, rows);
    run_shape<fp16>({8, 8, 64}, {2049}, opt.sparse, rng, rows);
  }
  int failed = 0;
  for (const Row& r : rows) failed += !r.ok;
  std::printf("\n%zu passed, %d failed\n", rows.size() - failed, failed);
  return failed;
}

void add_selftest_command(CLI::App& app) {
  auto opt = std::make_shared<SelftestOptions>();
  auto ratio = std::make_shared<std::string>(opt->sparse.ratio.str());
  auto* cmd = app.add_subcommand(
      "selftest", "Run the CPU reference against the fp64 oracle on random inputs and print a table");
  cmd->add_option("--seed", opt->seed, "Random seed")->capture_default_str();
  cmd->add_flag("--quick", opt->quick, "Fewer, shorter cases");
  cmd->add_option("-b,--block-size", opt->sparse.block_size, "Block size b")->capture_default_str();
  cmd->add_option("--ratio", *ratio, "Fraction of blocks kept, e.g. 0.1 or 1/10")->capture_default_str();
  cmd->add_option("--n-min", opt->sparse.n_min, "Minimum selected blocks")->capture_default_str();
  cmd->add_option("--n-local", opt->sparse.n_local, "Local blocks always kept")->capture_default_str();
  cmd->add_option("--n-sink", opt->sparse.n_sink, "Sink blocks always kept")->capture_default_str();
  cmd->callback([opt, ratio] {
    require_fp_environment();
    opt->sparse.ratio = Fraction::parse(*ratio);
    if (run_selftest(*opt) != 0) throw CLI::RuntimeError(1);
  });
}

}  // namespace resa::cli
