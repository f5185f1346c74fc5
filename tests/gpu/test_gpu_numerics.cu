// tests/gpu/test_gpu_numerics.cu — the shared numerics header compiled by nvcc gives the host's
// bits (exp2, conversions, score terms, selection keys), and the card's mma.sync.m16n8k16 follows
// resa::dot16_tensor_core bit for bit (bf16 and fp16, spread exponents, fp16 subnormals, zeros);
// the packed hardware rounding of P (cuda::detail::pack_rn) equals the shared conversion on all
// 2^32 inputs, and the kernels' exp2_nonpositive equals exp2_shared on all nonpositive inputs.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "resa/numerics.h"
#include "resa/testdata.h"
#include "../../cuda/src/device_common.cuh"

namespace resa {
namespace {

__global__ void scalar_kernel(const float* x, int n, float* exp2_out, uint16_t* bf, uint16_t* hf, float* hf_back) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  exp2_out[i] = exp2_shared(x[i]);
  bf[i] = f32_to_bf16_bits(x[i]);
  hf[i] = f32_to_fp16_bits(x[i]);
  hf_back[i] = fp16_bits_to_f32(static_cast<uint16_t>(i & 0xffff));
}

TEST(GpuNumerics, DeviceAndHostGiveTheSameBits) {
  RESA_REQUIRE_GPU();
  const int n = 1 << 20;
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<uint32_t> any;
  std::uniform_real_distribution<float> range(-130.f, 130.f);
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = i % 2 ? range(rng) : f32_from_bits(any(rng));
  cuda::DeviceBuffer<float> dx(x), de(n), dhb(n);
  cuda::DeviceBuffer<uint16_t> dbf(n), dhf(n);
  scalar_kernel<<<n / 256, 256>>>(dx.get(), n, de.get(), dbf.get(), dhf.get(), dhb.get());
  RESA_CUDA_CHECK_LAUNCH("scalar_kernel");
  const auto e = de.download(), hb = dhb.download();
  const auto bf = dbf.download(), hf = dhf.download();
  int64_t bad = 0;
  for (int i = 0; i < n; ++i) {
    bad += f32_bits(e[i]) != f32_bits(exp2_shared(x[i]));
    bad += bf[i] != f32_to_bf16_bits(x[i]);
    bad += hf[i] != f32_to_fp16_bits(x[i]);
    bad += f32_bits(hb[i]) != f32_bits(fp16_bits_to_f32(static_cast<uint16_t>(i & 0xffff)));
  }
  EXPECT_EQ(bad, 0);
}

// Every fp32 bit pattern u goes through pack_rn<T> as the low half (its sign-flipped twin as the
// high half) and through the shared f32_to_*_bits; counts the halves that differ (NaN in, NaN of
// T out is a match) and keeps the smallest such u.
template <class T>
__global__ void pack_rn_kernel(unsigned long long* mismatches, unsigned* first_bad) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < (1ull << 32); i += stride) {
    const uint32_t u = static_cast<uint32_t>(i);
    const float lo = f32_from_bits(u), hi = f32_from_bits(u ^ 0x80000000u);
    const uint32_t got = cuda::detail::pack_rn<T>(lo, hi);
    const uint32_t want = cuda::detail::pack_pair(from_float<T>(lo).bits, from_float<T>(hi).bits);
    const uint16_t max_finite_abs = cuda::detail::MmaTraits<T>::kBf16 ? 0x7f80 : 0x7c00;  // the Inf pattern
    auto same = [&](uint16_t g, uint16_t w, float x) {
      return is_nan(x) ? (g & 0x7fff) > max_finite_abs : g == w;
    };
    if (!same(static_cast<uint16_t>(got), static_cast<uint16_t>(want), lo) ||
        !same(static_cast<uint16_t>(got >> 16), static_cast<uint16_t>(want >> 16), hi)) {
      ++bad;
      atomicMin(first_bad, u);
    }
  }
  if (bad) atomicAdd(mismatches, bad);
}

template <class T>
void check_pack_rn() {
  cuda::DeviceBuffer<unsigned long long> mismatches(std::vector<unsigned long long>{0});
  cuda::DeviceBuffer<unsigned> first_bad(std::vector<unsigned>{0xffffffffu});
  pack_rn_kernel<T><<<4096, 256>>>(mismatches.get(), first_bad.get());
  RESA_CUDA_CHECK_LAUNCH("pack_rn_kernel");
  const auto n = mismatches.download()[0];
  EXPECT_EQ(n, 0u) << Storage<T>::name << ": of 2^32 inputs; the smallest differing one is 0x" << std::hex
                   << first_bad.download()[0];
}

TEST(GpuNumerics, PackedRoundingMatchesTheSharedConversion) {
  RESA_REQUIRE_GPU();
  check_pack_rn<bf16>();
  check_pack_rn<fp16>();
}

// exp2_nonpositive against exp2_shared on every nonpositive fp32 pattern (and +0): the same bits,
// or NaN for NaN. Counts the differences and keeps the smallest differing pattern.
__global__ void exp2_nonpositive_kernel(unsigned long long* mismatches, unsigned* first_bad) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i <= (1ull << 31); i += stride) {
    const uint32_t u = i == (1ull << 31) ? 0u : static_cast<uint32_t>(i) | 0x80000000u;
    const float x = f32_from_bits(u);
    const float got = exp2_nonpositive(x), want = exp2_shared(x);
    if (is_nan(x) ? !is_nan(got) : f32_bits(got) != f32_bits(want)) {
      ++bad;
      atomicMin(first_bad, u);
    }
  }
  if (bad) atomicAdd(mismatches, bad);
}

TEST(GpuNumerics, NonpositiveExp2MatchesTheSharedExp2) {
  RESA_REQUIRE_GPU();
  cuda::DeviceBuffer<unsigned long long> mismatches(std::vector<unsigned long long>{0});
  cuda::DeviceBuffer<unsigned> first_bad(std::vector<unsigned>{0xffffffffu});
  exp2_nonpositive_kernel<<<4096, 256>>>(mismatches.get(), first_bad.get());
  RESA_CUDA_CHECK_LAUNCH("exp2_nonpositive_kernel");
  EXPECT_EQ(mismatches.download()[0], 0u) << "of 2^31 + 1 inputs; the smallest differing pattern is 0x" << std::hex
                                          << first_bad.download()[0];
}

template <class T>
__global__ void mma_kernel(const uint16_t* A, const uint16_t* B, const float* C, float* D, int tiles) {
  const int tile = blockIdx.x;
  if (tile >= tiles) return;
  A += tile * 256;
  B += tile * 128;
  C += tile * 128;
  D += tile * 128;
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  uint32_t a[4] = {cuda::detail::pack_pair(A[g * 16 + t * 2], A[g * 16 + t * 2 + 1]),
                   cuda::detail::pack_pair(A[(g + 8) * 16 + t * 2], A[(g + 8) * 16 + t * 2 + 1]),
                   cuda::detail::pack_pair(A[g * 16 + t * 2 + 8], A[g * 16 + t * 2 + 9]),
                   cuda::detail::pack_pair(A[(g + 8) * 16 + t * 2 + 8], A[(g + 8) * 16 + t * 2 + 9])};
  const uint32_t b0 = cuda::detail::pack_pair(B[g * 16 + t * 2], B[g * 16 + t * 2 + 1]);
  const uint32_t b1 = cuda::detail::pack_pair(B[g * 16 + t * 2 + 8], B[g * 16 + t * 2 + 9]);
  float d[4] = {C[g * 8 + t * 2], C[g * 8 + t * 2 + 1], C[(g + 8) * 8 + t * 2], C[(g + 8) * 8 + t * 2 + 1]};
  cuda::detail::mma_16816<T>(d, a, b0, b1);
  D[g * 8 + t * 2] = d[0];
  D[g * 8 + t * 2 + 1] = d[1];
  D[(g + 8) * 8 + t * 2] = d[2];
  D[(g + 8) * 8 + t * 2 + 1] = d[3];
}

template <class T>
void check_mma_model(uint64_t seed) {
  const int tiles = 4000;
  std::mt19937_64 rng(seed);
  std::vector<uint16_t> A(tiles * 256), B(tiles * 128);
  std::vector<float> C(tiles * 128);
  const bool fp16 = !cuda::detail::MmaTraits<T>::kBf16;
  for (int tile = 0; tile < tiles; ++tile) {
    const int spread = std::array<int, 5>{0, 4, 12, 24, 40}[tile % 5];
    std::uniform_int_distribution<int> e(-spread, spread);
    std::normal_distribution<float> n(0.f, 1.f);
    auto val = [&] {
      int ex = e(rng);
      if (fp16) ex = std::min(ex, 10);  // stay finite; negative exponents reach fp16 subnormals
      if (tile % 11 == 5 && (rng() & 7) == 0) return 0.0f;
      return std::ldexp(n(rng), ex);
    };
    for (int i = 0; i < 256; ++i) A[tile * 256 + i] = from_float<T>(val()).bits;
    for (int i = 0; i < 128; ++i) B[tile * 128 + i] = from_float<T>(val()).bits;
    for (int i = 0; i < 128; ++i) C[tile * 128 + i] = tile % 3 == 0 ? 0.0f : std::ldexp(n(rng), e(rng));
  }
  cuda::DeviceBuffer<uint16_t> dA(A), dB(B);
  cuda::DeviceBuffer<float> dC(C), dD(C.size());
  mma_kernel<T><<<tiles, 32>>>(dA.get(), dB.get(), dC.get(), dD.get(), tiles);
  RESA_CUDA_CHECK_LAUNCH("mma_kernel");
  const auto D = dD.download();
  int64_t bad = 0;
  for (int tile = 0; tile < tiles; ++tile)
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        float a[16], b[16];
        for (int k = 0; k < 16; ++k) {
          a[k] = to_float(T{A[tile * 256 + i * 16 + k]});
          b[k] = to_float(T{B[tile * 128 + j * 16 + k]});
        }
        const float c = C[tile * 128 + i * 8 + j];
        const float want = dot16<T>(DotArithmetic::TensorCoreHopper, c, a, b);
        const float got = D[tile * 128 + i * 8 + j];
        if (f32_bits(got) != f32_bits(want)) {
          if (bad < 5)
            ADD_FAILURE() << Storage<T>::name << " tile " << tile << " (" << i << "," << j << "): card "
                          << std::hexfloat << got << " model " << want << " c=" << c;
          ++bad;
        }
      }
  EXPECT_EQ(bad, 0) << "of " << tiles * 128 << " outputs";
}

TEST(GpuNumerics, TensorCoreFollowsTheModelBf16) {
  RESA_REQUIRE_GPU();
  check_mma_model<bf16>(11);
}
TEST(GpuNumerics, TensorCoreFollowsTheModelFp16IncludingSubnormals) {
  RESA_REQUIRE_GPU();
  check_mma_model<fp16>(12);
}

__global__ void special_mma_kernel(float* out) {
  // Row 0: -0 accumulator with zero products; row 1: exact cancellation; row 2: NaN input;
  // row 3: Inf - Inf; row 4: Inf. Columns all use B = 1.0.
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  auto a_elem = [](int row, int k) -> uint16_t {
    if (row == 1) return k == 0 ? 0x3f80 : k == 1 ? 0xbf80 : 0;
    if (row == 2) return k == 3 ? 0x7fc1 : 0x3f80;
    if (row == 3) return k == 0 ? 0x7f80 : k == 1 ? 0xff80 : 0;
    if (row == 4) return k == 5 ? 0x7f80 : 0x3f80;
    return static_cast<uint16_t>((k & 1) ? 0x8000 : 0);
  };
  uint32_t a[4] = {cuda::detail::pack_pair(a_elem(g, 2 * t), a_elem(g, 2 * t + 1)),
                   cuda::detail::pack_pair(a_elem(g + 8, 2 * t), a_elem(g + 8, 2 * t + 1)),
                   cuda::detail::pack_pair(a_elem(g, 2 * t + 8), a_elem(g, 2 * t + 9)),
                   cuda::detail::pack_pair(a_elem(g + 8, 2 * t + 8), a_elem(g + 8, 2 * t + 9))};
  float d[4] = {-0.0f, -0.0f, -0.0f, -0.0f};
  cuda::detail::mma_16816<bf16>(d, a, 0x3f803f80u, 0x3f803f80u);
  if (t == 0) {
    out[g] = d[0];
    out[g + 8] = d[2];
  }
}

TEST(GpuNumerics, TensorCoreZerosAndNonFiniteValues) {
  RESA_REQUIRE_GPU();
  cuda::DeviceBuffer<float> out(16);
  special_mma_kernel<<<1, 32>>>(out.get());
  RESA_CUDA_CHECK_LAUNCH("special_mma_kernel");
  const auto o = out.download();
  EXPECT_EQ(f32_bits(o[0]), 0x00000000u) << "-0 + zero products";
  EXPECT_EQ(f32_bits(o[1]), 0x00000000u) << "exact cancellation";
  EXPECT_EQ(f32_bits(o[2]), kTensorCoreNanF32) << "NaN input";
  EXPECT_EQ(f32_bits(o[3]), kTensorCoreNanF32) << "Inf - Inf";
  EXPECT_EQ(f32_bits(o[4]), 0x7f800000u) << "Inf";
}

}  // namespace
}  // namespace resa
