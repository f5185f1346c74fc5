// cuda/lab/tc_probe.cu — lab: which tensor-core accumulation model does this card follow?
//
// Runs mma.sync.m16n8k16 (bf16 and fp16 -> fp32) on random and adversarial inputs and counts, per
// candidate model, how many outputs match bit for bit. The winner is what resa::dot16_tensor_core
// implements; the probe exits 1 when that model misses any output, and tests/gpu keeps checking
// it. Build: nvcc -std=c++20 -arch=sm_90a -I reference/include cuda/lab/tc_probe.cu -o tc_probe
// && ./tc_probe
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <random>
#include <vector>

#include "resa/numerics.h"
#include "lab_check.h"

// A: 16x16 row-major, B: 16x8 stored as [n][k], C/D: 16x8 row-major. One warp, one mma.
template <bool kFp16>
__global__ void mma_once(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  auto pack = [](uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); };
  uint32_t a0 = pack(A[g * 16 + t * 2], A[g * 16 + t * 2 + 1]);
  uint32_t a1 = pack(A[(g + 8) * 16 + t * 2], A[(g + 8) * 16 + t * 2 + 1]);
  uint32_t a2 = pack(A[g * 16 + t * 2 + 8], A[g * 16 + t * 2 + 9]);
  uint32_t a3 = pack(A[(g + 8) * 16 + t * 2 + 8], A[(g + 8) * 16 + t * 2 + 9]);
  uint32_t b0 = pack(B[g * 16 + t * 2], B[g * 16 + t * 2 + 1]);
  uint32_t b1 = pack(B[g * 16 + t * 2 + 8], B[g * 16 + t * 2 + 9]);
  float c0 = C[g * 8 + t * 2], c1 = C[g * 8 + t * 2 + 1], c2 = C[(g + 8) * 8 + t * 2],
        c3 = C[(g + 8) * 8 + t * 2 + 1];
  float d0, d1, d2, d3;
  if constexpr (kFp16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(c2), "f"(c3));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(c2), "f"(c3));
  }
  D[g * 8 + t * 2] = d0;
  D[g * 8 + t * 2 + 1] = d1;
  D[(g + 8) * 8 + t * 2] = d2;
  D[(g + 8) * 8 + t * 2 + 1] = d3;
}

// Candidate model: products exact; M = max exponent (normalized or sum-of-exponents for products);
// terms truncated to units 2^(M - frac); integer sum; final RZ or RN to fp32.
struct Model {
  bool unnormalized;
  int frac;
  bool round_nearest;
  const char* name;
};
static float emulate(const Model& md, float c, const float* a, const float* b, int emin) {
  using namespace resa;
  bool neg[17];
  uint64_t sig[17];
  int lsb[17], key[17];
  int n = 0, M = -100000;
  for (int k = 0; k < 16; ++k) {
    if (a[k] == 0.0f || b[k] == 0.0f) continue;
    auto da = detail::decompose(a[k]), db = detail::decompose(b[k]);
    neg[n] = da.negative != db.negative;
    sig[n] = uint64_t(da.sig) * db.sig;
    lsb[n] = da.lsb_exp + db.lsb_exp;
    key[n] = md.unnormalized ? std::max(da.msb_exp, emin) + std::max(db.msb_exp, emin) : lsb[n] + detail::msb_index(sig[n]);
    if (key[n] > M) M = key[n];
    ++n;
  }
  if (c != 0.0f) {
    auto dc = detail::decompose(c);
    neg[n] = dc.negative;
    sig[n] = dc.sig;
    lsb[n] = dc.lsb_exp;
    key[n] = dc.msb_exp;
    if (key[n] > M) M = key[n];
    ++n;
  }
  if (n == 0) return c;
  const int unit = M - md.frac;
  int64_t sum = 0;
  for (int i = 0; i < n; ++i) {
    int64_t t = detail::align_truncate(sig[i], lsb[i], unit);
    sum += neg[i] ? -t : t;
  }
  if (sum == 0) return 0.0f;
  double v = std::ldexp(double(sum), unit);  // exact: |sum| < 2^40
  if (md.round_nearest) return float(v);
  float f = float(v);
  if (std::fabs(double(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);
  return f;
}

int main() {
  const Model models[] = {
      {false, 25, false, "norm  M-25 RZ (DESIGN)"}, {true, 25, false, "unnorm M-25 RZ"},
      {false, 24, false, "norm  M-24 RZ"},          {true, 24, false, "unnorm M-24 RZ"},
      {false, 26, false, "norm  M-26 RZ"},          {true, 26, false, "unnorm M-26 RZ"},
      {false, 25, true, "norm  M-25 RN"},           {false, 23, false, "norm  M-23 RZ"},
  };
  const int kModels = sizeof(models) / sizeof(models[0]);
  uint16_t *dA, *dB;
  float *dC, *dD;
  CHECK(cudaMalloc(&dA, 256 * 2));
  CHECK(cudaMalloc(&dB, 128 * 2));
  CHECK(cudaMalloc(&dC, 128 * 4));
  CHECK(cudaMalloc(&dD, 128 * 4));
  std::mt19937_64 rng(12345);
  long resa_misses = 0;  // outputs where resa::dot16_tensor_core differs from the card: exit 1
  for (int fp16 = 0; fp16 < 2; ++fp16) {
    std::vector<long> match(kModels, 0);
    long total = 0, resa_match = 0;
    for (int trial = 0; trial < 3000; ++trial) {
      const int spread = trial % 4 == 0 ? 0 : trial % 4 == 1 ? 4 : trial % 4 == 2 ? 12 : 24;
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      std::uniform_int_distribution<int> e(-spread, spread);
      auto rnd = [&] {
        float x = std::ldexp(u(rng), fp16 ? std::min(e(rng), 8) : e(rng));
        return x;
      };
      uint16_t A[256], B[128];
      float Af[256], Bf[128], C[128], D[128];
      for (int i = 0; i < 256; ++i) {
        float x = rnd();
        if (trial % 7 == 3 && i % 5 == 0) x = 0.0f;
        A[i] = fp16 ? resa::f32_to_fp16_bits(x) : resa::f32_to_bf16_bits(x);
        Af[i] = fp16 ? resa::fp16_bits_to_f32(A[i]) : resa::bf16_bits_to_f32(A[i]);
      }
      for (int i = 0; i < 128; ++i) {
        float x = rnd();
        B[i] = fp16 ? resa::f32_to_fp16_bits(x) : resa::f32_to_bf16_bits(x);
        Bf[i] = fp16 ? resa::fp16_bits_to_f32(B[i]) : resa::bf16_bits_to_f32(B[i]);
        C[i] = trial % 3 == 0 ? 0.0f : std::ldexp(u(rng), e(rng) + (trial % 5) - 2);
      }
      CHECK(cudaMemcpy(dA, A, sizeof A, cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(dB, B, sizeof B, cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(dC, C, sizeof C, cudaMemcpyHostToDevice));
      if (fp16)
        mma_once<true><<<1, 32>>>(dA, dB, dC, dD);
      else
        mma_once<false><<<1, 32>>>(dA, dB, dC, dD);
      CHECK(cudaGetLastError());
      CHECK(cudaMemcpy(D, dD, sizeof D, cudaMemcpyDeviceToHost));
      for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 8; ++j) {
          const float* a = Af + i * 16;
          const float* b = Bf + j * 16;
          const float c = C[i * 8 + j], d = D[i * 8 + j];
          ++total;
          for (int m = 0; m < kModels; ++m)
            if (resa::f32_bits(emulate(models[m], c, a, b, fp16 ? -14 : -126)) == resa::f32_bits(d)) ++match[m];
          if (resa::f32_bits(resa::dot16_tensor_core(c, a, b, fp16 ? -14 : -126)) == resa::f32_bits(d)) ++resa_match;
          else if (resa_match + 20 > total)
            std::printf("  mismatch %s c=%a got %a resa %a\n", fp16 ? "fp16" : "bf16", c, d,
                        resa::dot16_tensor_core(c, a, b, fp16 ? -14 : -126));
        }
    }
    std::printf("%s: %ld outputs\n", fp16 ? "fp16" : "bf16", total);
    for (int m = 0; m < kModels; ++m) std::printf("  %-26s %ld matches\n", models[m].name, match[m]);
    std::printf("  resa::dot16_tensor_core   %ld matches\n", resa_match);
    resa_misses += total - resa_match;
  }
  // Special values: zeros and signs.
  {
    uint16_t A[256] = {}, B[128] = {};
    float C[128], D[128];
    for (int i = 0; i < 128; ++i) C[i] = (i & 1) ? -0.0f : 0.0f;
    for (int i = 0; i < 256; ++i) A[i] = (i & 2) ? 0x8000 : 0;  // +-0 bf16
    for (int i = 0; i < 128; ++i) B[i] = 0x3f80;                 // 1.0
    CHECK(cudaMemcpy(dA, A, sizeof A, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dB, B, sizeof B, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dC, C, sizeof C, cudaMemcpyHostToDevice));
    mma_once<false><<<1, 32>>>(dA, dB, dC, dD);
    CHECK(cudaMemcpy(D, dD, sizeof D, cudaMemcpyDeviceToHost));
    std::printf("zeros: c=+0 -> %08x, c=-0 -> %08x\n", resa::f32_bits(D[0]), resa::f32_bits(D[1]));
    // Exact cancellation: a = {1, -1, 0...}, c = 0
    for (int i = 0; i < 256; ++i) A[i] = 0;
    A[0] = 0x3f80; A[1] = 0xbf80;
    for (int i = 0; i < 128; ++i) C[i] = 0.0f;
    C[1] = -0.0f;
    CHECK(cudaMemcpy(dA, A, sizeof A, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dC, C, sizeof C, cudaMemcpyHostToDevice));
    mma_once<false><<<1, 32>>>(dA, dB, dC, dD);
    CHECK(cudaMemcpy(D, dD, sizeof D, cudaMemcpyDeviceToHost));
    std::printf("cancel: c=+0 -> %08x, c=-0 -> %08x\n", resa::f32_bits(D[0]), resa::f32_bits(D[1]));
    // NaN and Inf
    A[0] = 0x7fc1; C[0] = 0; 
    A[16] = 0x7f80; A[17] = 0xff80;  // row 1: inf - inf
    A[32] = 0x7f80;                  // row 2: inf
    CHECK(cudaMemcpy(dA, A, sizeof A, cudaMemcpyHostToDevice));
    mma_once<false><<<1, 32>>>(dA, dB, dC, dD);
    CHECK(cudaMemcpy(D, dD, sizeof D, cudaMemcpyDeviceToHost));
    std::printf("nan-in -> %08x, inf-inf -> %08x, inf -> %08x\n", resa::f32_bits(D[0]),
                resa::f32_bits(D[8]), resa::f32_bits(D[16]));
  }
  if (resa_misses) {
    std::printf("tc_probe: resa::dot16_tensor_core differs from this card on %ld outputs\n", resa_misses);
    return 1;
  }
  std::printf("tc_probe: resa::dot16_tensor_core matches this card on every output\n");
  return 0;
}
