// cuda/src/wgmma.cuh — Hopper warpgroup MMA (wgmma.mma_async, sm_90a) building blocks: shared
// memory tiles in the no-swizzle core-matrix layout (Q's) and the 128-byte-swizzle layout (K's
// and V's, written by the bulk tensor copy engine from a tensor map made by sw128_tensor_map),
// their matrix descriptors, and the two instruction shapes the rectification kernel issues:
//
//   wgmma_ss_n64   S[64x64] += A[64x16] (shared, K-major) * B[16x64] (shared, K-major: B^T rows)
//   wgmma_rs_pv    O[64x(D+8)] += A[64x16] (registers) * B[16x(D+8)] (shared, MN-major, transposed)
//
// One k16 step of either is the same arithmetic per element as mma.sync.m16n8k16 with the same
// 16 k-indices and the accumulator as c; cuda/lab/wgmma_probe.cu checks that bit for bit on the
// card, and tests/gpu checks the kernel against the reference. Accumulator fragments are laid out
// per warp exactly like m16n8k16 C fragments: warp w of the warpgroup holds rows 16w..16w+15,
// d[j][0..3] = (gid, 8j+2tq), (gid, 8j+2tq+1), (gid+8, 8j+2tq), (gid+8, 8j+2tq+1).
// Included only by .cu files compiled for sm_90a.
#pragma once

#include <cuda.h>          // CUtensorMap
#include <cudaTypedefs.h>  // the tensor-map encoder's function type

#include <cstdint>
#include <stdexcept>
#include <string>

#include "device_common.cuh"

namespace resa::cuda::detail {

// A tile of rows x (chunks * 8) 16-bit elements stored as 8x8 core matrices: core matrix
// (row / 8, col / 8) occupies 128 contiguous bytes, rows 16 bytes apart; core matrices of one
// 8-row group follow each other (chunks of them), then the next 8-row group. Element offset:
__host__ __device__ constexpr int core_offset(int row, int col, int chunks) {
  return ((row >> 3) * chunks + (col >> 3)) * 64 + (row & 7) * 8 + (col & 7);
}

// Matrix descriptor for a no-swizzle operand starting at p. lbo: bytes between core matrices
// adjacent in K; sbo: bytes between core matrices adjacent in M or N (PTX ISA, "Matrix
// Descriptor Format"; addresses and offsets are stored in units of 16 bytes).
__device__ __forceinline__ uint64_t wgmma_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  const uint64_t a = smem_addr(p);
  return ((a & 0x3FFFFu) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFFu) << 32);
}

// The 128-byte-swizzle layout (what the bulk tensor copy writes with CU_TENSOR_MAP_SWIZZLE_128B
// and a box 64 elements wide): a tile of rows x (blocks * 64) 16-bit elements as `blocks` column
// blocks of rows x 64, each row of a block 128 contiguous bytes whose 16-byte chunk c sits at
// chunk position c ^ (row % 8). A block must start on a 1024-byte boundary (the swizzle is a
// function of the address bits). Element offset:
__host__ __device__ constexpr int sw128_offset(int row, int col, int rows) {
  return (col >> 6) * rows * 64 + row * 64 + ((((col >> 3) & 7) ^ (row & 7)) << 3) + (col & 7);
}

// Matrix descriptor for a 128-byte-swizzle operand starting at p (PTX ISA, "Matrix Descriptor
// Format": layout type 1 in bits 62-63, base offset 0). K-major (Q, K: rows along M or N, the
// block's 64 elements along K): sbo = 1024, the bytes between 8-row groups; lbo is not used; a
// k16 step inside a block is 32 bytes on (the hardware swizzles the computed address, so a start
// 32 or 64 bytes into the atom reads chunks 2u, 2u + 1 of each row). MN-major (V for P·V: keys
// along K, a block's 64 columns along N): sbo = 1024, the bytes between 8-key groups, and lbo =
// the bytes between column blocks. cuda/lab/wgmma_probe.cu checks both bit for bit.
__device__ __forceinline__ uint64_t wgmma_desc_sw128(const void* p, uint32_t lbo, uint32_t sbo) {
  return wgmma_desc(p, lbo, sbo) | (1ull << 62);
}

// The tensor map of a 16-bit tensor of Rank dimensions (dims innermost first; strides in bytes,
// of dims 1..Rank-1) read in boxes of 64 elements x box_rows rows (x 1 beyond), each landing in
// shared memory in the 128-byte swizzle that sw128_offset and wgmma_desc_sw128 describe. The
// encoder comes from the driver through the runtime (no link to libcuda). Throws
// std::runtime_error naming `what` when the driver lacks the encoder or refuses the map.
template <int Rank>
CUtensorMap sw128_tensor_map(const void* base, const cuuint64_t (&dims)[Rank], const cuuint64_t (&strides)[Rank - 1],
                             cuuint32_t box_rows, CUtensorMapL2promotion promotion, const char* what) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess
               ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn)
               : nullptr;
  }();
  if (!encode) throw std::runtime_error(std::string(what) + ": the CUDA driver has no cuTensorMapEncodeTiled");
  cuuint32_t box[Rank], element_strides[Rank];
  for (int i = 0; i < Rank; ++i) {
    box[i] = i == 0 ? 64 : i == 1 ? box_rows : 1;
    element_strides[i] = 1;
  }
  CUtensorMap map;
  const CUresult result =
      encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT16, Rank, const_cast<void*>(base), dims, strides, box, element_strides,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS)
    throw std::runtime_error(std::string(what) + ": cuTensorMapEncodeTiled failed (CUresult " +
                             std::to_string(static_cast<int>(result)) + ")");
  return map;
}

// One box of a 3-D tensor map (coordinates innermost first) into shared memory at dst by the bulk
// tensor copy engine, completing its bytes on the mbarrier at shared address `bar`.
__device__ __forceinline__ void tma_load_3d(void* dst, const void* map, int c0, int c1, int c2, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}

// The descriptor of the operand `bytes` further on (a multiple of 16) in the same layout: the
// start address is the low field, in 16-byte units, and shared memory addresses stay below 2^18
// bytes (the field's 14 bits), so adding to the descriptor never carries into lbo. The k16 steps of
// one tile and the stages of a ring then differ from one base descriptor by constants, which the
// compiler keeps in uniform registers when the base is warp-uniform.
__device__ __forceinline__ uint64_t wgmma_desc_advance(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }

// Orders this thread's earlier generic-proxy writes to shared memory (st.shared, cp.async) before
// later wgmma reads of it (async proxy); follow with a barrier so the whole CTA is covered.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

// Keeps the compiler from moving reads or writes of accumulator registers across the
// asynchronous MMA (the registers are in flight between issue and wait).
template <int N>
__device__ __forceinline__ void fence_fragments(float (&d)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
}

#define RESA_F4(d, j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define RESA_F16(d, j) RESA_F4(d, j), RESA_F4(d, j + 1), RESA_F4(d, j + 2), RESA_F4(d, j + 3)

// The accumulator register lists of the two shapes, written out (inline asm cannot loop).
#define RESA_REGS32                                                                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define RESA_REGS36                                                                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}"
#define RESA_REGS68                                                                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "  \
  "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "  \
  "%62, %63, %64, %65, %66, %67}"

// S += A * B for a 64x64 tile and one k16 step; A and B from shared memory, both K-major.
#define RESA_WGMMA_SS_N64(TY)                                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                           \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " RESA_REGS32 ", %32, %33, " \
               "p, 1, 1, 0, 0;\n}\n"                                                                \
               : RESA_F16(d, 0), RESA_F16(d, 4)                                                      \
               : "l"(desc_a), "l"(desc_b))
template <class T>
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (MmaTraits<T>::kBf16)
    RESA_WGMMA_SS_N64("bf16");
  else
    RESA_WGMMA_SS_N64("f16");
}

// O += A * B for a 64x(D+8) tile (D = 128 or 64) and one k16 step; A in registers (m16n8k16 A
// fragments, one per warp), B from shared memory stored MN-major (transposed: element (k, n) at
// n % 8 + 8 (k % 8) within a core matrix).
#define RESA_WGMMA_RS(SHAPE_TY, REGS, OPERANDS, FRAGS)                                               \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                           \
               "wgmma.mma_async.sync.aligned." SHAPE_TY " " REGS ", " OPERANDS ", p, 1, 1, 1;\n}\n"    \
               : FRAGS                                                                                \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b))
#define RESA_F68(d) RESA_F16(d, 0), RESA_F16(d, 4), RESA_F16(d, 8), RESA_F16(d, 12), RESA_F4(d, 16)
#define RESA_F36(d) RESA_F16(d, 0), RESA_F16(d, 4), RESA_F4(d, 8)
template <class T>
__device__ __forceinline__ void wgmma_rs_pv(float (&d)[17][4], const uint32_t (&a)[4], uint64_t desc_b) {
  if constexpr (MmaTraits<T>::kBf16)
    RESA_WGMMA_RS("m64n136k16.f32.bf16.bf16", RESA_REGS68, "{%68, %69, %70, %71}, %72", RESA_F68(d));
  else
    RESA_WGMMA_RS("m64n136k16.f32.f16.f16", RESA_REGS68, "{%68, %69, %70, %71}, %72", RESA_F68(d));
}
template <class T>
__device__ __forceinline__ void wgmma_rs_pv(float (&d)[9][4], const uint32_t (&a)[4], uint64_t desc_b) {
  if constexpr (MmaTraits<T>::kBf16)
    RESA_WGMMA_RS("m64n72k16.f32.bf16.bf16", RESA_REGS36, "{%36, %37, %38, %39}, %40", RESA_F36(d));
  else
    RESA_WGMMA_RS("m64n72k16.f32.f16.f16", RESA_REGS36, "{%36, %37, %38, %39}, %40", RESA_F36(d));
}

#undef RESA_WGMMA_SS_N64
#undef RESA_WGMMA_RS
#undef RESA_REGS32
#undef RESA_REGS36
#undef RESA_REGS68
#undef RESA_F68
#undef RESA_F36
#undef RESA_F16
#undef RESA_F4

}  // namespace resa::cuda::detail
