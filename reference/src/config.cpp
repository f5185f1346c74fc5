// config.cpp — SparseConfig validation, exact ratio parsing and n_sel arithmetic.
#include "resa/config.h"

#include <limits>
#include <numeric>
#include <sstream>

namespace resa {

namespace {
std::string quoted(std::string_view s) {
  std::string q = "'";  // appended, not "'" + std::string(s): GCC 12 warns (-Wrestrict) on that form
  q += s;
  q += '\'';
  return q;
}

bool parse_uint(std::string_view s, int64_t& out, int& digits) {
  if (s.empty()) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  digits = static_cast<int>(s.size());
  return true;
}
}  // namespace

Fraction Fraction::make(int64_t num, int64_t den) {
  if (den == 0) throw InvalidArgument("ratio: denominator is zero");
  if (den < 0) {
    num = -num;
    den = -den;
  }
  const int64_t g = std::gcd(num < 0 ? -num : num, den);
  const Fraction f = g > 1 ? Fraction{num / g, den / g} : Fraction{num, den};
  if (f.den > kFractionMax || f.num > kFractionMax || f.num < -kFractionMax)
    throw InvalidArgument("ratio " + std::to_string(num) + "/" + std::to_string(den) +
                          ": numerator and denominator (reduced) must be at most 2^31 - 1");
  return f;
}

Fraction Fraction::parse(std::string_view text) {
  const std::string bad = "ratio " + quoted(text) +
                          ": expected a fraction 'a/b' or a decimal like '0.1' (at most 12 decimals)";
  if (const auto slash = text.find('/'); slash != std::string_view::npos) {
    int64_t a = 0, b = 0;
    int da = 0, db = 0;
    if (!parse_uint(text.substr(0, slash), a, da) || !parse_uint(text.substr(slash + 1), b, db))
      throw InvalidArgument(bad);
    if (b == 0) throw InvalidArgument("ratio " + quoted(text) + ": denominator is zero");
    return make(a, b);
  }
  const auto dot = text.find('.');
  std::string_view whole = text.substr(0, dot), frac;
  if (dot != std::string_view::npos) frac = text.substr(dot + 1);
  if (whole.empty() && frac.empty()) throw InvalidArgument(bad);
  int64_t w = 0, f = 0;
  int dw = 0, df = 0;
  if (!whole.empty() && !parse_uint(whole, w, dw)) throw InvalidArgument(bad);
  if (!frac.empty() && !parse_uint(frac, f, df)) throw InvalidArgument(bad);
  if (dot != std::string_view::npos && frac.empty() && whole.empty()) throw InvalidArgument(bad);
  if (df > 12 || w > 1000000) throw InvalidArgument(bad);
  int64_t den = 1;
  for (int i = 0; i < df; ++i) den *= 10;
  return make(w * den + f, den);
}

std::string Fraction::str() const { return std::to_string(num) + "/" + std::to_string(den); }

int64_t Fraction::ceil_times(int64_t m) const {
  // num <= den (ratio <= 1) and m < 2^31 keep num * m far from overflow after validation.
  const __int128 p = static_cast<__int128>(num) * m;
  return static_cast<int64_t>((p + den - 1) / den);
}

void SparseConfig::validate() const {
  auto fail = [](const std::string& field, const std::string& value, const std::string& why) {
    throw InvalidArgument(field + " = " + value + ": " + why);
  };
  if (block_size < 1 || block_size > 512 || (block_size & (block_size - 1)) != 0)
    fail("block_size (b)", std::to_string(block_size), "must be a power of two in [1, 512]");
  if (ratio.den <= 0 || ratio.num <= 0 || ratio.num > ratio.den)
    fail("ratio", ratio.str(), "must be in (0, 1]");
  if (ratio.den > kFractionMax) fail("ratio", ratio.str(), "denominator must be at most 2^31 - 1");
  if (n_min < 0) fail("n_min", std::to_string(n_min), "must be >= 0");
  if (n_local < 1) fail("n_local", std::to_string(n_local), "must be >= 1 (the current block)");
  if (n_sink < 0) fail("n_sink", std::to_string(n_sink), "must be >= 0");
  if (rectify_every < 0) fail("rectify_every (f)", std::to_string(rectify_every), "must be >= 0");
}

std::string SparseConfig::str() const {
  std::ostringstream os;
  os << "b=" << block_size << " ratio=" << ratio.str() << " n_min=" << n_min
     << " n_local=" << n_local << " n_sink=" << n_sink << " f=" << rectify_every;
  return os.str();
}

int64_t num_blocks(int64_t length, int block_size) {
  if (length < 1) throw InvalidArgument("length = " + std::to_string(length) + ": must be >= 1");
  return (length + block_size - 1) / block_size;
}

int64_t num_selected(int64_t length, const SparseConfig& cfg) {
  const int64_t m = num_blocks(length, cfg.block_size);
  const int64_t by_ratio = cfg.ratio.ceil_times(m);
  const int64_t floor_count = std::min<int64_t>(m, cfg.n_min);
  return std::min(m, std::max(by_ratio, floor_count));
}

double cost_model_fraction(const SparseConfig& cfg) {
  return 1.0 / cfg.block_size + cfg.ratio.value() +
         (cfg.rectify_every > 0 ? 1.0 / cfg.rectify_every : 0.0);
}

}  // namespace resa
