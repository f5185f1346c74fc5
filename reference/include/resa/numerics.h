// resa/numerics.h — the shared numerics of the ReSA toolkit (DESIGN.md §3).
//
// One header, compiled by g++ for the CPU reference and by nvcc for the kernels, so both sides run
// the same operations in the same order: bf16/fp16 <-> fp32 conversion (round-to-nearest-even,
// canonical NaN), explicit FMA/add/mul helpers that never contract, the FMA-only exp2, the
// online-softmax rules, and the two dot-product arithmetics (fixed-order FMA chain and the Hopper
// tensor-core rule of mma.sync.m16n8k16 with fp32 accumulation).
//
// Tested by tests/test_numerics.cpp (host) and tests/gpu/test_gpu_numerics.cu (device vs host bits).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RESA_HD __host__ __device__ __forceinline__
#else
#define RESA_HD inline
#endif

#if defined(__FAST_MATH__)
#error "resa numerics must not be compiled with -ffast-math (DESIGN.md §3)"
#endif
#if !defined(__CUDA_ARCH__)
static_assert(FLT_EVAL_METHOD == 0, "resa numerics need FLT_EVAL_METHOD == 0 (no excess precision)");
#endif

namespace resa {

// ---------------------------------------------------------------- bit access
RESA_HD uint32_t f32_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}
RESA_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

inline constexpr uint32_t kCanonicalNanF32 = 0x7fc00000u;
inline constexpr uint16_t kCanonicalNanBf16 = 0x7fc0u;
inline constexpr uint16_t kCanonicalNanFp16 = 0x7e00u;

RESA_HD bool is_nan(float x) {
#if defined(__CUDA_ARCH__)
  return isnan(x);  // one unordered compare instead of a mask and an integer compare
#else
  return (f32_bits(x) & 0x7fffffffu) > 0x7f800000u;
#endif
}
RESA_HD float canonical_nan() { return f32_from_bits(kCanonicalNanF32); }
RESA_HD float canonicalize_nan(float x) { return is_nan(x) ? canonical_nan() : x; }
RESA_HD float neg_inf() { return f32_from_bits(0xff800000u); }
RESA_HD float pos_inf() { return f32_from_bits(0x7f800000u); }

// ------------------------------------------------- never-contracted arithmetic
// The reference is built with -ffp-contract=off and the device side uses the _rn intrinsics,
// which nvcc never fuses; every FMA in a result path is written with fma_rn.
RESA_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
RESA_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
RESA_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
RESA_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
RESA_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Max that propagates NaN (as canonical NaN) and orders -0 below +0, so the result does not depend
// on the order of its arguments. Used for descriptors (min/max of keys) and score maxima.
RESA_HD float max_total(float a, float b) {
  if (is_nan(a) || is_nan(b)) return canonical_nan();
  if (a == b) return (f32_bits(a) & 0x80000000u) ? b : a;  // +0 beats -0
  return a > b ? a : b;
}
RESA_HD float min_total(float a, float b) {
  if (is_nan(a) || is_nan(b)) return canonical_nan();
  if (a == b) return (f32_bits(a) & 0x80000000u) ? a : b;  // -0 beats +0
  return a < b ? a : b;
}
// Max used by the online softmax: NaN scores are ignored here (they still poison the sum through
// exp2), so m stays a real number or -inf.
RESA_HD float max_ignore_nan(float m, float t) { return t > m ? t : m; }

// One term of a block's upper-bound score: max(q̄_j * kmax_j, q̄_j * kmin_j), NaN if either is NaN.
RESA_HD float block_score_term(float qbar, float kmin, float kmax) {
  const float hi = mul_rn(qbar, kmax), lo = mul_rn(qbar, kmin);
  return is_nan(hi) || is_nan(lo) ? canonical_nan() : (hi > lo ? hi : lo);
}

// block_score_term for the scores kernel, with fewer instructions (no NaN constant, one compare
// folded into the select): the same bits whenever the term is not NaN, and a NaN whenever it is
// (a NaN hi is selected by the NaN test, a NaN lo by the compare failing), not necessarily the
// canonical one. The kernel canonicalizes each block's sum, and a NaN term makes the sum NaN, so
// every score has the bits of the reference. tests/test_numerics.cpp compares the two.
RESA_HD float block_score_term_any_nan(float qbar, float kmin, float kmax) {
  const float hi = mul_rn(qbar, kmax), lo = mul_rn(qbar, kmin);
  return hi > lo || is_nan(hi) ? hi : lo;
}

// Selection order as one 64-bit key (larger = ranks earlier): the score mapped to an order-
// preserving unsigned integer (-0 counted as +0, NaN lowest) in the high half, the complement of
// the block index in the low half (ties go to the lower index). Forced (local/sink) blocks take
// the all-ones high half, above every score.
RESA_HD uint64_t selection_key(float score, uint32_t block, bool forced) {
  uint32_t hi;
  if (forced) {
    hi = 0xffffffffu;
  } else if (is_nan(score)) {
    hi = 0u;
  } else {
    const uint32_t u = f32_bits(score == 0.0f ? 0.0f : score);
    hi = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  return (static_cast<uint64_t>(hi) << 32) | (0xffffffffu - block);
}

// ------------------------------------------------------------ storage types
// KV cache / query storage: 16-bit patterns, converted with the same code on host and device.
struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};

RESA_HD uint16_t f32_to_bf16_bits(float x) {
  const uint32_t u = f32_bits(x);
  // Round to nearest, ties to even; overflow carries into Inf. A select, not a branch, for NaN.
  const uint16_t rounded = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  return (u & 0x7fffffffu) > 0x7f800000u ? kCanonicalNanBf16 : rounded;
}
RESA_HD float bf16_bits_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

RESA_HD uint16_t f32_to_fp16_bits(float x) {
  const uint32_t u = f32_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return kCanonicalNanFp16;
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to Inf (and Inf stays Inf)
  if (a >= 0x38800000u) {                        // result is a normal half (>= 2^-14)
    a += 0x0fffu + ((a >> 13) & 1u);             // round to nearest even at bit 13
    a -= 112u << 23;                             // rebias the exponent 127 -> 15
    return sign | static_cast<uint16_t>(a >> 13);
  }
  if (a < 0x33000000u) return sign;  // below 2^-25 (or exactly half of 2^-24, tie to even): zero
  const uint32_t e = a >> 23;                      // 102..112
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;  // value = m * 2^(e-150)
  const uint32_t shift = 126u - e;                 // subnormal unit 2^-24: k = m >> shift
  uint32_t k = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (k & 1u))) ++k;
  return sign | static_cast<uint16_t>(k);
}
RESA_HD float fp16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  if (e == 0x1fu) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  if (e != 0) return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
  if (m == 0) return f32_from_bits(sign);
  int exp = 113;  // subnormal: normalize the significand
  while ((m & 0x400u) == 0) {
    m <<= 1;
    --exp;
  }
  return f32_from_bits(sign | (static_cast<uint32_t>(exp) << 23) | ((m & 0x3ffu) << 13));
}

// Storage traits: one place per dtype for the conversion and the name.
template <class T>
struct Storage;
template <>
struct Storage<bf16> {
  static constexpr const char* name = "bf16";
  RESA_HD static float to_float(bf16 x) { return bf16_bits_to_f32(x.bits); }
  RESA_HD static bf16 from_float(float x) { return bf16{f32_to_bf16_bits(x)}; }
};
template <>
struct Storage<fp16> {
  static constexpr const char* name = "fp16";
  RESA_HD static float to_float(fp16 x) { return fp16_bits_to_f32(x.bits); }
  RESA_HD static fp16 from_float(float x) { return fp16{f32_to_fp16_bits(x)}; }
};
template <class T>
RESA_HD float to_float(T x) {
  return Storage<T>::to_float(x);
}
template <class T>
RESA_HD T from_float(float x) {
  return Storage<T>::from_float(x);
}
// Round an fp32 value through the storage type (what the device sees).
template <class T>
RESA_HD float round_through(float x) {
  return to_float(from_float<T>(x));
}

// -------------------------------------------------------------------- exp2
// The part both exp2 functions share: n = rint(x) as the integer ni (modulo 2^32) from the add
// of 1.5 * 2^23, and 2^r for r = x - n by the polynomial.
struct Exp2Parts {
  uint32_t ni;
  float p;
};
RESA_HD Exp2Parts exp2_parts(float x) {
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
  const float shifted = add_rn(x, kRoundMagic);
  const float n = sub_rn(shifted, kRoundMagic);
  const float r = sub_rn(x, n);
  float p = 1.5252733804059840e-05f;
  p = fma_rn(p, r, 1.5403530393381608e-04f);
  p = fma_rn(p, r, 1.3333558146428443e-03f);
  p = fma_rn(p, r, 9.6181291076284772e-03f);
  p = fma_rn(p, r, 5.5504108664821580e-02f);
  p = fma_rn(p, r, 2.4022650695910071e-01f);
  p = fma_rn(p, r, 6.9314718055994531e-01f);
  p = fma_rn(p, r, 1.0f);
  return {f32_bits(shifted) - f32_bits(kRoundMagic), p};
}

// 2^x from FMAs, one round-to-integer and an exponent add; identical bits on host and device.
// Domain: NaN -> canonical NaN; x >= 128 -> +Inf; x < -125 -> +0 (results below 2^-125 are
// dropped, so no subnormal is ever produced); otherwise a normal number within 2 ulp of 2^x.
// Method: n = rint(x), r = x - n in [-1/2, 1/2] (exact), 2^r by the degree-7 Taylor polynomial of
// e^(r ln 2) in Horner form (truncation error < 5e-9), then n is added to the exponent field.
// rint is one add of 1.5 * 2^23: for |x| < 2^22 the sum lies in [2^23, 2^24), where the ulp is 1,
// so round-to-nearest-even leaves exactly 1.5 * 2^23 + rint(x) (1.5 * 2^23 is even), and n is the
// difference of the bit patterns. Plain fp32 adds and integer ops: no conversion instruction, which
// on the GPU runs at a fraction of the FMA rate.
// The polynomial path runs for every x and the domain cases are selected at the end, so the GPU
// code has no branches and the many exps of one thread interleave (with early returns each exp
// was its own basic block, issued one dependent FMA at a time). Outside the domain the path's
// intermediates are discarded; they involve only IEEE arithmetic and unsigned integer wrap.
RESA_HD float exp2_shared(float x) {
  const Exp2Parts e = exp2_parts(x);
  // In the domain: p in [0.7071, 1.4143]; n in [-125, 128]; the biased exponent stays in [1, 254]
  // (for n = 128, r < 0 so p < 1).
  float y = f32_from_bits(f32_bits(e.p) + (e.ni << 23));
  y = x < -125.0f ? 0.0f : y;
  y = x >= 128.0f ? pos_inf() : y;
  return is_nan(x) ? canonical_nan() : y;
}

// exp2_shared for the online softmax's arguments, x = t - m <= 0 (or -inf, or NaN), with fewer
// instructions: the same bits for every x <= 0 (including -0 and -inf), and a NaN for a NaN (not
// necessarily the canonical one: probabilities and rescale factors only feed products, and the
// outputs are canonicalized). No x >= 128 select; the NaN propagates through the polynomial and a
// final multiply by 2^n instead of being selected. For x in [-125, 0], n is in [-125, 0], so 2^n
// and p * 2^n are normal and the multiply is exact: the result equals the exponent add of
// exp2_shared. The kernels use it; the reference keeps exp2_shared (tests/test_numerics.cpp and the
// GPU test GpuNumerics.NonpositiveExp2MatchesTheSharedExp2 compare the two).
RESA_HD float exp2_nonpositive(float x) {
  const Exp2Parts e = exp2_parts(x);
  const float y = mul_rn(e.p, f32_from_bits((e.ni + 127u) << 23));  // p * 2^n
  return x < -125.0f ? 0.0f : y;
}

// The softmax scale folded with log2(e) into one fp32 constant: t = s * scale_log2 is the logit in
// base 2, and every probability is exp2_shared(t - m). Computed once, on the host, in double.
inline float softmax_scale_log2(int head_dim) {
  return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim)));
}

// ------------------------------------------------------------ online softmax
// Per query row the state is (m, l, acc[d]) in the base-2 logit domain: m the running max (or -inf
// while empty), l the running sum of probabilities, acc the unnormalized output.
// exp2 argument shift: while the row has seen only masked keys (m = -inf) the shift is 0, so
// exp2(-inf - 0) = 0 and no NaN arises.
RESA_HD float softmax_shift(float m) { return m == neg_inf() ? 0.0f : m; }
// Rescale factor for state accumulated under m_old when the max moves to m_new >= m_old.
RESA_HD float softmax_rescale(float m_old, float m_new) {
  return exp2_shared(sub_rn(m_old, softmax_shift(m_new)));
}
RESA_HD float softmax_prob(float t, float m) { return exp2_shared(sub_rn(t, softmax_shift(m))); }
// The same two with exp2_nonpositive, for the kernels' hot loops (m_new >= m_old and m >= t, so the
// argument is never positive): the same bits, NaN for NaN.
RESA_HD float softmax_rescale_np(float m_old, float m_new) {
  return exp2_nonpositive(sub_rn(m_old, softmax_shift(m_new)));
}
RESA_HD float softmax_prob_np(float t, float m) { return exp2_nonpositive(sub_rn(t, softmax_shift(m))); }

// Merge rule for two partial states (a, b) -> a, in a fixed order (a is the earlier KV range).
// An empty state (m == -inf) is the identity on either side, bit for bit.
//   m = max(ma, mb); sa = exp2(ma - m); sb = exp2(mb - m);
//   l = fma(lb, sb, la * sa);  acc[c] = fma(accb[c], sb, acca[c] * sa)
struct MergeFactors {
  float m, sa, sb;
};
RESA_HD MergeFactors merge_factors(float ma, float mb) {
  const float m = max_ignore_nan(ma, mb);
  return {m, softmax_rescale(ma, m), softmax_rescale(mb, m)};
}
RESA_HD float merge_value(float a, float b, const MergeFactors& f) {
  return fma_rn(b, f.sb, mul_rn(a, f.sa));
}
// Final normalization of one output element: acc / l, NaN canonicalized (NaN payloads of the
// tensor cores are not characterized, so outputs carry one NaN pattern).
RESA_HD float softmax_normalize(float acc, float l) { return canonicalize_nan(div_rn(acc, l)); }

// ------------------------------------------------------- dot arithmetics
// Both take an fp32 accumulator c and 16 products a[k]*b[k] whose factors are exactly
// representable in the storage dtype, and return c + sum, in the order the kernels compute it.
enum class DotArithmetic : int {
  // Hopper mma.sync.m16n8k16 (bf16/fp16 in, fp32 accumulate), DESIGN.md §3.
  TensorCoreHopper = 0,
  // Sequential fp32 chain c = fma(a[k], b[k], c), k = 0..15.
  FmaChain = 1,
};

RESA_HD float dot16_fma_chain(float c, const float* a, const float* b) {
  for (int k = 0; k < 16; ++k) c = fma_rn(a[k], b[k], c);
  return c;
}

namespace detail {
// x = sig * 2^lsb_exp with sig an integer of at most 24 bits; msb_exp = floor(log2|x|).
struct Decomposed {
  bool negative;
  uint32_t sig;
  int lsb_exp;
  int msb_exp;
};
RESA_HD int msb_index(uint64_t v) {  // floor(log2 v), -1 for 0
#if defined(__CUDA_ARCH__)
  return v ? 63 - __clzll(static_cast<long long>(v)) : -1;
#else
  return v ? 63 - __builtin_clzll(v) : -1;
#endif
}
RESA_HD Decomposed decompose(float x) {  // finite, non-zero x
  const uint32_t u = f32_bits(x);
  const int e = static_cast<int>((u >> 23) & 0xffu);
  uint32_t sig = u & 0x7fffffu;
  int lsb;
  if (e == 0) {
    lsb = -149;
  } else {
    sig |= 0x800000u;
    lsb = e - 150;
  }
  return {(u >> 31) != 0, sig, lsb, lsb + msb_index(sig)};
}
// Shift a magnitude to units of 2^unit_exp, truncating toward zero.
RESA_HD int64_t align_truncate(uint64_t sig, int lsb_exp, int unit_exp) {
  const int s = lsb_exp - unit_exp;
  if (s >= 0) return static_cast<int64_t>(sig << s);
  if (s <= -63) return 0;
  return static_cast<int64_t>(sig >> (-s));
}
}  // namespace detail

// Hopper tensor-core rule for one k16 step: (1) exact products with unnormalized significands: a
// product's exponent is the sum of its factors' exponents (a subnormal factor counts with its
// format's minimum exponent, factor_min_exp: -126 for bf16, -14 for fp16), even when the
// significand product is >= 2; (2) zero terms dropped; (3) every remaining term, c included, aligned
// to the largest such exponent M and truncated toward zero to units of 2^(M-25); (4) the integers
// summed exactly; (5) the sum truncated to fp32 (toward zero). A zero sum, or no non-zero term at
// all, gives +0. NaN inputs, Inf*0 or Inf-Inf give the NaN 0x7fffffff; an Inf term otherwise gives
// that Inf. Probed bit for bit on an H100 (cuda/lab/tc_probe.cu, 2026-11-28: 768,000 random and
// spread-exponent outputs); subnormal-range results are not characterized (DESIGN.md §3).
inline constexpr uint32_t kTensorCoreNanF32 = 0x7fffffffu;
RESA_HD float dot16_tensor_core(float c, const float* a, const float* b, int factor_min_exp) {
  using detail::Decomposed;
  bool any_nan = is_nan(c), pos_infinite = false, neg_infinite = false;
  if (c == pos_inf()) pos_infinite = true;
  if (c == neg_inf()) neg_infinite = true;
  for (int k = 0; k < 16; ++k) {
    const bool ai = (f32_bits(a[k]) & 0x7fffffffu) == 0x7f800000u;
    const bool bi = (f32_bits(b[k]) & 0x7fffffffu) == 0x7f800000u;
    if (is_nan(a[k]) || is_nan(b[k])) any_nan = true;
    if (ai || bi) {
      if (a[k] == 0.0f || b[k] == 0.0f) {
        any_nan = true;
      } else {
        const bool neg = ((f32_bits(a[k]) ^ f32_bits(b[k])) & 0x80000000u) != 0;
        (neg ? neg_infinite : pos_infinite) = true;
      }
    }
  }
  if (any_nan || (pos_infinite && neg_infinite)) return f32_from_bits(kTensorCoreNanF32);
  if (pos_infinite) return pos_inf();
  if (neg_infinite) return neg_inf();

  // Exact products as (sign, significand <= 48 bits, exponents).
  bool neg[17];
  uint64_t sig[17];
  int lsb[17];
  int n = 0, M = -100000;
  for (int k = 0; k < 16; ++k) {
    if (a[k] == 0.0f || b[k] == 0.0f) continue;
    const Decomposed da = detail::decompose(a[k]), db = detail::decompose(b[k]);
    neg[n] = da.negative != db.negative;
    sig[n] = static_cast<uint64_t>(da.sig) * db.sig;
    lsb[n] = da.lsb_exp + db.lsb_exp;
    const int exp_a = da.msb_exp > factor_min_exp ? da.msb_exp : factor_min_exp;
    const int exp_b = db.msb_exp > factor_min_exp ? db.msb_exp : factor_min_exp;
    if (exp_a + exp_b > M) M = exp_a + exp_b;
    ++n;
  }
  if (c != 0.0f) {
    const Decomposed dc = detail::decompose(c);
    neg[n] = dc.negative;
    sig[n] = dc.sig;
    lsb[n] = dc.lsb_exp;
    if (dc.msb_exp > M) M = dc.msb_exp;
    ++n;
  }
  if (n == 0) return 0.0f;
  const int unit = M - 25;
  int64_t sum = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t t = detail::align_truncate(sig[i], lsb[i], unit);
    sum += neg[i] ? -t : t;
  }
  if (sum == 0) return 0.0f;
  const bool negative = sum < 0;
  uint64_t mag = static_cast<uint64_t>(negative ? -sum : sum);
  int exp = unit;
  const int top = detail::msb_index(mag);
  if (top > 23) {  // truncate to 24 significant bits (round toward zero)
    mag >>= (top - 23);
    exp += top - 23;
  }
  // mag < 2^24 and exp within range for the characterized (normal) regime.
  const int msb = exp + detail::msb_index(mag);
  if (msb > 127) return negative ? -FLT_MAX : FLT_MAX;  // round-toward-zero overflow
  uint32_t bits;
  if (msb >= -126) {
    const int sh = 23 - detail::msb_index(mag);
    const uint32_t m24 = static_cast<uint32_t>(mag << sh);
    bits = (static_cast<uint32_t>(msb + 127) << 23) | (m24 & 0x7fffffu);
  } else {  // subnormal result (uncharacterized): truncate to the subnormal grid
    const int s = exp + 149;
    bits = s >= 0 ? static_cast<uint32_t>(mag << s) : static_cast<uint32_t>(s <= -63 ? 0 : mag >> -s);
  }
  return f32_from_bits(bits | (negative ? 0x80000000u : 0u));
}

// Minimum normal exponent of a storage dtype (what a subnormal factor counts as).
template <class T>
inline constexpr int kMinNormalExp = 0;
template <>
inline constexpr int kMinNormalExp<bf16> = -126;
template <>
inline constexpr int kMinNormalExp<fp16> = -14;

template <class T>
RESA_HD float dot16(DotArithmetic arith, float c, const float* a, const float* b) {
  return arith == DotArithmetic::TensorCoreHopper ? dot16_tensor_core(c, a, b, kMinNormalExp<T>)
                                                  : dot16_fma_chain(c, a, b);
}

}  // namespace resa
