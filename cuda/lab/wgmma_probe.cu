// cuda/lab/wgmma_probe.cu — lab: is one wgmma k16 step the same arithmetic as one mma.sync
// m16n8k16 step, and are our shared-memory layouts and descriptors right?
//
// One warpgroup computes the rectification kernel's two products with wgmma (cuda/src/wgmma.cuh):
//   S = Cs + Σ_u Q[:, 16u..] K[:, 16u..]^T   (64x64, 8 chained k16 steps, both operands in shared)
//   O = Co + Σ_u P[:, 16u..] [V | 1][16u.., :] (64x136, 4 chained steps, P in registers)
// and again with chains of mma.sync.m16n8k16 over the same k16 groups, on random bf16/fp16 inputs
// with exponent spreads up to 2^±24 and zeros, and counts elements whose bit patterns differ;
// in three layouts of the operands: the kernel's no-swizzle core-matrix layout; the
// 128-byte-swizzle layout (wgmma.cuh: sw128_offset, wgmma_desc_sw128; the ones column of V in a
// column block of its own) written by the threads; and the same layout written by the bulk
// tensor copy engine from a tensor map (CU_TENSOR_MAP_SWIZZLE_128B, boxes of 64 x 64 elements,
// completion on an mbarrier). So a kernel can move its loader to the copy engine knowing the
// layout, the descriptors, and that the arithmetic is unchanged.
// Result on an H200 (2026-11-28): 0 of 5,120,000 elements differ, bf16 and fp16, in all three
// layouts (validation/experiments/2026-11-28-wgmma-sw128-probe.txt, with mutations that the
// probe catches: V's lbo and sbo swapped, 3.48M differ; tensor maps without the swizzle, 4.8M
// differ; descriptors without the swizzle bit fault).
// Build: the CMake target wgmma_probe (CUDA architecture 90a); run it: exit status 1 on any
// mismatch. scripts/gpu_validate.sh's probe stage builds and runs it.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../src/wgmma.cuh"
#include "lab_check.h"

using namespace resa::cuda::detail;

// Bytes past the last 1024-byte boundary of a shared-memory address.
__device__ __forceinline__ uint32_t offset_past_1024(const void* p) { return smem_addr(p) % 1024; }

constexpr int kD = 128, kKeys = 64, kRows = 64, kOut = kD + 8;

struct ProbeIn {
  const uint16_t *q, *k, *p, *v;  // row-major: q [64][128], k [64][128], p [64][64], v [64][128]
  const float *cs, *co;           // [64][64], [64][136]
};
struct ProbeOut {
  float *s_wg, *o_wg, *s_mma, *o_mma;
};

// Shared memory of the probe: Q and K tiles, V with its ones column, each 1024-byte aligned.
constexpr int kVBlocks = (kOut + 63) / 64;  // the swizzled V's column blocks (the last holds the ones)
constexpr int kSmemElems = kRows * kD + kKeys * kD + kKeys * kVBlocks * 64;
constexpr int kSmemBytes = kSmemElems * 2 + 1024;  // + alignment slack

// The three operand layouts probed: the kernel's no-swizzle core-matrix layout (wgmma.cuh
// core_offset), and the 128-byte-swizzle layout (sw128_offset) written by the threads or by the
// bulk tensor copy engine (cp.async.bulk.tensor with CU_TENSOR_MAP_SWIZZLE_128B, boxes of 64
// elements x 64 rows, completion on an mbarrier); K-major Q and K, MN-major V.
enum class Layout { CoreMatrix, Sw128, Sw128Copy };
constexpr const char* layout_name(Layout l) {
  return l == Layout::CoreMatrix ? "core-matrix" : l == Layout::Sw128 ? "128-byte-swizzle" : "128-byte-swizzle by tensor copy";
}

// The tensor maps of Q, K and V for Layout::Sw128Copy: [64 rows][128] 16-bit elements each.
struct ProbeMaps {
  CUtensorMap q, k, v;
};

template <class T, Layout kLayout>
__global__ void __launch_bounds__(128) probe(ProbeIn in, ProbeOut out, uint32_t one_pair,
                                             const __grid_constant__ ProbeMaps maps) {
  constexpr bool kSw128 = kLayout != Layout::CoreMatrix;
  extern __shared__ __align__(128) uint16_t smem_raw[];
  __shared__ __align__(8) uint64_t loaded;  // the copy engine's mbarrier
  uint16_t* smem = smem_raw + (1024 - offset_past_1024(smem_raw)) % 1024 / 2;
  uint16_t *qs = smem, *ks = qs + kRows * kD, *vs = ks + kKeys * kD;
  const int t = threadIdx.x, warp = t / 32, lane = t % 32, gid = lane / 4, tq = lane % 4;
  const uint16_t one = static_cast<uint16_t>(one_pair & 0xffffu);
  if constexpr (kLayout == Layout::Sw128Copy) {
    // Six boxes of 64 x 64 elements (8 KB each): column blocks 0 and 1 of Q, K and V.
    const uint32_t bar = smem_addr(&loaded);
    if (t == 0) {
      mbarrier_init(bar);
      fence_mbarrier_init();
      mbarrier_arrive_expect_tx(bar, 6 * 8192);
      const CUtensorMap* const tile_maps[3] = {&maps.q, &maps.k, &maps.v};
      uint16_t* const dsts[3] = {qs, ks, vs};
      for (int m = 0; m < 3; ++m)
        for (int block = 0; block < 2; ++block)
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
              "[%4];\n" ::"r"(smem_addr(dsts[m] + block * 64 * 64)),
              "l"(reinterpret_cast<uint64_t>(tile_maps[m])), "r"(64 * block), "r"(0), "r"(bar)
              : "memory");
    }
    for (int i = t; i < kKeys * 64; i += 128)  // the ones block: ones in its first 8 columns
      vs[sw128_offset(i / 64, kD + i % 64, kKeys)] = i % 64 < kOut - kD ? one : 0;
    __syncthreads();  // the barrier is initialized before anyone waits on it
    mbarrier_wait(bar, 0);
  } else if constexpr (kSw128) {
    for (int i = t; i < kRows * kD; i += 128) {
      qs[sw128_offset(i / kD, i % kD, kRows)] = in.q[i];
      ks[sw128_offset(i / kD, i % kD, kKeys)] = in.k[i];
    }
    for (int i = t; i < kKeys * kVBlocks * 64; i += 128) {  // the ones block: ones in its first 8 columns
      const int key = i / (kVBlocks * 64), c = i % (kVBlocks * 64);
      vs[sw128_offset(key, c, kKeys)] = c < kD ? in.v[key * kD + c] : c < kOut ? one : 0;
    }
  } else {
    for (int i = t; i < kRows * kD; i += 128) {
      qs[core_offset(i / kD, i % kD, kD / 8)] = in.q[i];
      ks[core_offset(i / kD, i % kD, kD / 8)] = in.k[i];
    }
    for (int i = t; i < kKeys * kOut; i += 128) {
      const int key = i / kOut, c = i % kOut;
      vs[core_offset(key, c, kOut / 8)] = c < kD ? in.v[key * kD + c] : one;
    }
  }
  fence_proxy_async();
  __syncthreads();
  const int r0 = 16 * warp + gid, r1 = r0 + 8;

  // S by wgmma.
  // No swizzle: K-major Q and K: the next 8-element chunk of d is the next core matrix (128
  // bytes), the next 8 rows are 16 chunks on. MN-major V: the next 8 keys are 17 chunks on, the
  // next 8 columns 128.
  // 128-byte swizzle: Q and K: 8-row groups 1024 bytes apart, a k16 step 32 bytes into a column
  // block of 64; V: 8-key groups 1024 bytes apart, column blocks 64 keys x 128 bytes apart.
  auto qk_desc = [&](const uint16_t* tile, int rows, int u) {
    return kSw128 ? wgmma_desc_sw128(tile + sw128_offset(0, 64 * (u / 4), rows) + 16 * (u % 4), 16, 1024)
                  : wgmma_desc(tile + core_offset(0, 16 * u, kD / 8), 128, kD / 8 * 128);
  };
  auto v_desc = [&](int u) {
    return kSw128 ? wgmma_desc_sw128(vs + sw128_offset(16 * u, 0, kKeys), kKeys * 128, 1024)
                  : wgmma_desc(vs + core_offset(16 * u, 0, kOut / 8), kOut / 8 * 128, 128);
  };
  float s[8][4];
  for (int j = 0; j < 8; ++j)
    for (int e = 0; e < 4; ++e) s[j][e] = in.cs[(e < 2 ? r0 : r1) * kKeys + 8 * j + 2 * tq + e % 2];
  fence_fragments(s);
  wgmma_fence();
#pragma unroll
  for (int u = 0; u < kD / 16; ++u) wgmma_ss_n64<T>(s, qk_desc(qs, kRows, u), qk_desc(ks, kKeys, u));
  wgmma_commit();
  wgmma_wait_all();
  fence_fragments(s);
  for (int j = 0; j < 8; ++j)
    for (int e = 0; e < 4; ++e) out.s_wg[(e < 2 ? r0 : r1) * kKeys + 8 * j + 2 * tq + e % 2] = s[j][e];

  // S by mma.sync, fragments straight from global memory.
  auto g32 = [](const uint16_t* base, int idx) { return pack_pair(base[idx], base[idx + 1]); };
  for (int j = 0; j < 8; ++j) {
    float c[4];
    for (int e = 0; e < 4; ++e) c[e] = in.cs[(e < 2 ? r0 : r1) * kKeys + 8 * j + 2 * tq + e % 2];
    for (int u = 0; u < kD / 16; ++u) {
      const uint32_t a[4] = {g32(in.q, r0 * kD + 16 * u + 2 * tq), g32(in.q, r1 * kD + 16 * u + 2 * tq),
                             g32(in.q, r0 * kD + 16 * u + 8 + 2 * tq), g32(in.q, r1 * kD + 16 * u + 8 + 2 * tq)};
      const int key = 8 * j + gid;
      mma_16816<T>(c, a, g32(in.k, key * kD + 16 * u + 2 * tq), g32(in.k, key * kD + 16 * u + 8 + 2 * tq));
    }
    for (int e = 0; e < 4; ++e) out.s_mma[(e < 2 ? r0 : r1) * kKeys + 8 * j + 2 * tq + e % 2] = c[e];
  }

  // O by wgmma, P from registers.
  uint32_t pa[4][4];
  for (int u = 0; u < 4; ++u) {
    pa[u][0] = g32(in.p, r0 * kKeys + 16 * u + 2 * tq);
    pa[u][1] = g32(in.p, r1 * kKeys + 16 * u + 2 * tq);
    pa[u][2] = g32(in.p, r0 * kKeys + 16 * u + 8 + 2 * tq);
    pa[u][3] = g32(in.p, r1 * kKeys + 16 * u + 8 + 2 * tq);
  }
  float o[17][4];
  for (int j = 0; j < 17; ++j)
    for (int e = 0; e < 4; ++e) o[j][e] = in.co[(e < 2 ? r0 : r1) * kOut + 8 * j + 2 * tq + e % 2];
  fence_fragments(o);
  wgmma_fence();
#pragma unroll
  for (int u = 0; u < 4; ++u) wgmma_rs_pv<T>(o, pa[u], v_desc(u));
  wgmma_commit();
  wgmma_wait_all();
  fence_fragments(o);
  for (int j = 0; j < 17; ++j)
    for (int e = 0; e < 4; ++e) out.o_wg[(e < 2 ? r0 : r1) * kOut + 8 * j + 2 * tq + e % 2] = o[j][e];

  // O by mma.sync (B = V column 8j+gid over keys, or the ones column).
  for (int j = 0; j < 17; ++j) {
    float c[4];
    for (int e = 0; e < 4; ++e) c[e] = in.co[(e < 2 ? r0 : r1) * kOut + 8 * j + 2 * tq + e % 2];
    for (int u = 0; u < 4; ++u) {
      uint32_t b0 = one_pair, b1 = one_pair;
      if (j < 16) {
        const int col = 8 * j + gid, k0 = 16 * u + 2 * tq;
        b0 = pack_pair(in.v[k0 * kD + col], in.v[(k0 + 1) * kD + col]);
        b1 = pack_pair(in.v[(k0 + 8) * kD + col], in.v[(k0 + 9) * kD + col]);
      }
      mma_16816<T>(c, pa[u], b0, b1);
    }
    for (int e = 0; e < 4; ++e) out.o_mma[(e < 2 ? r0 : r1) * kOut + 8 * j + 2 * tq + e % 2] = c[e];
  }
}

// A [64][128] 16-bit row-major tensor as 64 x 64 boxes in the 128-byte swizzle.
CUtensorMap tile_map(const uint16_t* base) {
  const cuuint64_t dims[2] = {kD, 64}, strides[1] = {kD * 2};
  return sw128_tensor_map<2>(base, dims, strides, 64, CU_TENSOR_MAP_L2_PROMOTION_NONE, "wgmma_probe");
}

template <class T, Layout kLayout>
long run(bool fp16, int trials, long& total) {
  std::mt19937_64 rng(777);
  std::vector<uint16_t> q(kRows * kD), k(kKeys * kD), p(kRows * kKeys), v(kKeys * kD);
  std::vector<float> cs(kRows * kKeys), co(kRows * kOut);
  uint16_t *dq, *dk, *dp, *dv;
  float *dcs, *dco, *res;
  CHECK(cudaMalloc(&dq, q.size() * 2));
  CHECK(cudaMalloc(&dk, k.size() * 2));
  CHECK(cudaMalloc(&dp, p.size() * 2));
  CHECK(cudaMalloc(&dv, v.size() * 2));
  CHECK(cudaMalloc(&dcs, cs.size() * 4));
  CHECK(cudaMalloc(&dco, co.size() * 4));
  const size_t ns = cs.size(), no = co.size();
  CHECK(cudaMalloc(&res, (2 * ns + 2 * no) * 4));
  std::vector<float> h(2 * ns + 2 * no);
  long bad = 0;
  for (int trial = 0; trial < trials; ++trial) {
    const int spread = std::vector<int>{0, 4, 12, 24}[trial % 4];
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::uniform_int_distribution<int> ex(-spread, spread);
    auto rnd = [&](bool zeros) {
      if (zeros && rng() % 9 == 0) return 0.0f;
      return std::ldexp(uni(rng), fp16 ? std::min(ex(rng), 8) : ex(rng));
    };
    auto store = [&](float x) { return fp16 ? resa::f32_to_fp16_bits(x) : resa::f32_to_bf16_bits(x); };
    for (auto& x : q) x = store(rnd(trial % 3 == 1));
    for (auto& x : k) x = store(rnd(trial % 3 == 1));
    for (auto& x : p) x = store(std::fabs(rnd(trial % 3 == 2)));
    for (auto& x : v) x = store(rnd(trial % 3 == 2));
    for (auto& x : cs) x = trial % 5 == 0 ? 0.0f : std::ldexp(uni(rng), ex(rng));
    for (auto& x : co) x = trial % 5 == 0 ? 0.0f : std::ldexp(uni(rng), ex(rng));
    CHECK(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dk, k.data(), k.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dp, p.data(), p.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dcs, cs.data(), cs.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dco, co.data(), co.size() * 4, cudaMemcpyHostToDevice));
    const ProbeIn in{dq, dk, dp, dv, dcs, dco};
    const ProbeOut out{res, res + ns, res + ns + no, res + 2 * ns + no};
    const ProbeMaps maps{tile_map(dq), tile_map(dk), tile_map(dv)};
    CHECK(cudaFuncSetAttribute(probe<T, kLayout>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    probe<T, kLayout><<<1, 128, kSmemBytes>>>(in, out, MmaTraits<T>::kOnePair, maps);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(h.data(), res, h.size() * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < ns; ++i) bad += std::memcmp(&h[i], &h[ns + no + i], 4) != 0;
    for (size_t i = 0; i < no; ++i) bad += std::memcmp(&h[ns + i], &h[2 * ns + no + i], 4) != 0;
    total += ns + no;
  }
  cudaFree(dq), cudaFree(dk), cudaFree(dp), cudaFree(dv), cudaFree(dcs), cudaFree(dco), cudaFree(res);
  return bad;
}

// Both storage types in one layout; prints the counts and returns whether none differ.
template <Layout kLayout>
bool check() {
  bool ok = true;
  for (const bool fp16 : {false, true}) {
    long total = 0;
    const long bad = fp16 ? run<resa::fp16, kLayout>(true, 400, total) : run<resa::bf16, kLayout>(false, 400, total);
    std::printf("%s, %s layout: %ld of %ld elements differ from the mma.sync chain\n", fp16 ? "fp16" : "bf16",
                layout_name(kLayout), bad, total);
    ok = ok && bad == 0;
  }
  return ok;
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("wgmma_probe on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  const bool ok = check<Layout::CoreMatrix>() & check<Layout::Sw128>() & check<Layout::Sw128Copy>();
  return ok ? 0 : 1;
}
