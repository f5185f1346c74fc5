// resa/config.h — the ReSA method parameters (DESIGN.md §2) and their exact integer arithmetic.
//
// SparseConfig lists each field once (RESA_SPARSE_CONFIG_FIELDS) so that validation messages,
// printing and the CLI all come from one list. Tested by tests/test_config.cpp.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace resa {

// Bad parameters and inputs: the message names the input and what is wrong with it.
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A ratio kept as an exact fraction num/den (reduced, den > 0, both at most 2^31 - 1). "0.1"
// parses as 1/10, "1/20" as 1/20, "1" as 1/1. Ceilings of ratio * M are computed in integers.
inline constexpr int64_t kFractionMax = 2147483647;  // keeps num * M exact in 64 bits everywhere

struct Fraction {
  int64_t num = 1;
  int64_t den = 10;

  static Fraction parse(std::string_view text);  // throws InvalidArgument naming the text
  static Fraction make(int64_t num, int64_t den);
  double value() const { return static_cast<double>(num) / static_cast<double>(den); }
  std::string str() const;  // "1/10"
  int64_t ceil_times(int64_t m) const;  // ceil(num * m / den), exact
  friend bool operator==(const Fraction&, const Fraction&) = default;
};

// X-macro list of the sparse-decoding parameters: (type, name, default, help).
#define RESA_SPARSE_CONFIG_FIELDS(X)                                                          \
  X(int, block_size, 16, "b: tokens per block (power of two, 1..512)")                        \
  X(Fraction, ratio, (Fraction{1, 10}), "fraction of blocks kept, in (0, 1], e.g. 1/10 or 0.1") \
  X(int, n_min, 16, "minimum number of selected blocks (dense while L <= n_min * b)")         \
  X(int, n_local, 1, "last blocks always selected (>= 1: the current token's block)")         \
  X(int, n_sink, 0, "first blocks always selected (optional extension, 0 = off)")             \
  X(int, rectify_every, 32, "f: dense rectification after every f sparse steps (0 = never)")

struct SparseConfig {
#define RESA_DECLARE_FIELD(type, name, def, help) type name = def;
  RESA_SPARSE_CONFIG_FIELDS(RESA_DECLARE_FIELD)
#undef RESA_DECLARE_FIELD

  void validate() const;    // throws InvalidArgument naming the field
  std::string str() const;  // "b=16 ratio=1/10 n_min=16 n_local=1 n_sink=0 f=32"
  friend bool operator==(const SparseConfig&, const SparseConfig&) = default;
};

// M = ceil(L / b): blocks covering a cache of length L (L >= 1).
int64_t num_blocks(int64_t length, int block_size);
// n_sel = max(ceil(ratio * M), min(M, n_min)), exact; never more than M.
int64_t num_selected(int64_t length, const SparseConfig& cfg);
// Paper Eq. 6: bytes per step relative to dense ~ 1/b + ratio + 1/f (the 1/f term is 0 for f = 0).
double cost_model_fraction(const SparseConfig& cfg);

}  // namespace resa
