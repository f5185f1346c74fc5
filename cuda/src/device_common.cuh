// cuda/src/device_common.cuh — device building blocks shared by the kernels: the m16n8k16 MMA
// (bf16/fp16 in, fp32 accumulate, in place), ldmatrix, cp.async with zero fill, storage-type
// traits, programmatic dependent launch, mbarriers, and stores into a cluster peer's shared
// memory counted by its mbarrier. Included only by .cu files of cuda/src.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "resa/numerics.h"

namespace resa::cuda::detail {

template <class T>
struct MmaTraits;
template <>
struct MmaTraits<bf16> {
  static constexpr bool kBf16 = true;
  static constexpr uint32_t kOnePair = 0x3f803f80u;  // two bf16 1.0
};
template <>
struct MmaTraits<fp16> {
  static constexpr bool kBf16 = false;
  static constexpr uint32_t kOnePair = 0x3c003c00u;  // two fp16 1.0
};

// d = a * b + d for one m16n8k16 tile (A row-major 16x16, B column-major 16x8).
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (MmaTraits<T>::kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_ptr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_ptr)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row_ptr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_ptr)));
}

// 16-byte asynchronous copy global -> shared; src_bytes = 0 writes zeros and reads nothing. The
// destination is a shared-memory address (smem_addr), for loaders that step it, or a pointer.
__device__ __forceinline__ void cp_async_16(uint32_t smem_dst, const void* gmem_src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_dst), "l"(gmem_src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
  cp_async_16(smem_addr(smem_dst), gmem_src, src_bytes);
}
// An 8-byte asynchronous copy global -> shared (through L1; both addresses 8-byte aligned).
__device__ __forceinline__ void cp_async_8(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ uint32_t pack_pair(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// Two floats rounded to the storage dtype (to nearest, ties to even) and packed, lo in the low
// half: one cvt.rn.{bf16x2,f16x2}.f32 instead of two f32_to_*_bits. The same bits as
// pack_pair(from_float<T>(lo).bits, from_float<T>(hi).bits) for every input but NaN, which
// becomes the hardware's NaN pattern; use it only for values that feed the tensor cores (P),
// where every NaN acts alike and results are canonicalized at the end. The GPU test
// GpuNumerics.PackedRoundingMatchesTheSharedConversion checks all 2^32 inputs.
template <class T>
__device__ __forceinline__ uint32_t pack_rn(float lo, float hi) {
  uint32_t d;
  if constexpr (MmaTraits<T>::kBf16)
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}

// Programmatic dependent launch (sm_90): a kernel launched with launch_dependent (launch.cuh) may
// be scheduled while the previous kernel of the stream is still running, so its launch latency
// overlaps that kernel's tail. Every kernel launched that way calls wait_for_previous_grid()
// before it touches global memory: it returns once the previous kernel has completed and its
// writes are visible (and that kernel, launched the same way or not, completed only after its own
// predecessors), so stream order holds for every read and write. A kernel calls
// allow_dependent_launch() at its start to let the next kernel be scheduled early (no effect when
// that one is launched normally), but only where the early CTAs, which wait on its SMs, cost
// nothing: the attention kernels (but the cluster decode kernel, which measured 3-12% slower
// with the merge's CTAs let in early, calls it at its end, and the one-CTA decode kernel right
// after its wait). The selection kernels are bound by instruction issue and do not (with the
// trigger in the scores kernel, selection at 12/2 batch 1 256K took 44.7 us instead of 30.1 on
// the H200, and 136 us instead of 118 at 28/4 batch 8); without it the launch latency is still
// partly hidden.
// The one exception to the wait before the first access: a merge that follows split flags
// (attention.cu, attention_merge_kernel) waits for the flags instead, which the split kernel sets
// after its own wait, so what the merge reads was written after the kernels before the split
// kernel completed; since the split kernel lets the merge be scheduled only after its wait, the
// merge's own writes come after them too; and it waits for the split grid at its end, so that
// it, too, completes only after its predecessor.
__device__ __forceinline__ void wait_for_previous_grid() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void allow_dependent_launch() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// mbarriers (sm_90) in this CTA's shared memory, at shared address `bar`: one thread initializes
// them for one arrival per phase (that of the thread which announces the phase's bytes by
// mbarrier_arrive_expect_tx), then fence_mbarrier_init before another thread, a copy engine or a
// cluster peer uses them. A phase completes when its arrival is in and the announced bytes have
// landed (bulk copies and st.async complete their bytes on it). mbarrier_wait spins until phase
// `parity` has completed, with acquire at CTA scope (bytes from this CTA's copies);
// mbarrier_wait_cluster with acquire at cluster scope (bytes stored by cluster peers).
__device__ __forceinline__ void mbarrier_init(uint32_t bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar));
}
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes));
}
// The spin of both waits (%0 the barrier, %1 the parity); `sem` the try_wait's semantics and
// scope ("": acquire at CTA scope, PTX's default).
#define RESA_MBARRIER_WAIT_LOOP(sem)         \
  "{\n.reg .pred done;\nwait_mbarrier:\n" \
  "mbarrier.try_wait.parity" sem ".shared::cta.b64 done, [%0], %1;\n@!done bra wait_mbarrier;\n}\n"
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(RESA_MBARRIER_WAIT_LOOP("") ::"r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void mbarrier_wait_cluster(uint32_t bar, uint32_t parity) {
  asm volatile(RESA_MBARRIER_WAIT_LOOP(".acquire.cluster") ::"r"(bar), "r"(parity) : "memory");
}
#undef RESA_MBARRIER_WAIT_LOOP

// A counter in this CTA's shared memory (shared address `addr`) increased by one, with release and
// acquire at CTA scope: what the calling thread did before (its reads of a buffer) happens before
// what the thread that later reads the count does after. Returns the count before the increment.
__device__ __forceinline__ uint32_t count_arrival_acq_rel(uint32_t addr) {
  uint32_t before;
  asm volatile("atom.acq_rel.cta.shared::cta.add.u32 %0, [%1], 1;\n" : "=r"(before) : "r"(addr) : "memory");
  return before;
}

// A flag in global memory between two kernels running at once (attention's split flags): the
// writer's CTA stores its data, each writing thread fences (__threadfence), the CTA meets at a
// barrier, then one thread sets the flag by flag_release; the reader spins on flag_acquire until
// it is set and meets its CTA at a barrier before any thread reads the data (the pattern of
// CUTLASS's semaphore). flag_spin_pause keeps a waiting thread from taking the issue slots of
// the CTAs it waits for.
__device__ __forceinline__ void flag_release(uint32_t* flag, uint32_t value) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(flag), "r"(value) : "memory");
}
__device__ __forceinline__ uint32_t flag_acquire(const uint32_t* flag) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(flag) : "memory");
  return v;
}
__device__ __forceinline__ void flag_spin_pause() { __nanosleep(256); }

// Distributed shared memory (sm_90 clusters) without cluster-wide memory barriers: a value stored
// into another CTA's shared memory by st_async_u32 completes its 4 bytes on that CTA's mbarrier,
// which the receiver waits on with mbarrier_wait_cluster; the cluster barrier is used relaxed,
// for start and exit only. Remote addresses are shared::cluster addresses from cluster_map (this
// CTA's shared address of the same object, in CTA `rank`).
__device__ __forceinline__ uint32_t cluster_map(uint32_t smem, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem), "r"(rank));
  return r;
}
__device__ __forceinline__ void st_async_u32(uint32_t remote, uint32_t value, uint32_t remote_bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n" ::"r"(remote), "r"(value),
               "r"(remote_bar)
               : "memory");
}
__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }

}  // namespace resa::cuda::detail
