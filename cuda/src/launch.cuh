// cuda/src/launch.cuh — host-side launch with programmatic dependent launch (the device side,
// wait_for_previous_grid and allow_dependent_launch, is in device_common.cuh, which says what a
// kernel launched this way must do), the device's SM count, by which launches size their grids,
// and the per-device cache of such values and of kernel attributes. Included by the .cu files of
// cuda/src that launch kernels.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <utility>

#include "resa_cuda/api.h"

namespace resa::cuda::detail {

// Launches kernel<<<grid, block, smem, stream>>>(args...) with the programmatic stream
// serialization attribute; a launch error is reported with `name`.
template <class... Params, class... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      const char* name, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  ::resa::cuda::check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), name, __FILE__, __LINE__);
}

// A value that depends on the device, computed by make() on the first call on each device (the
// current one) and then read from `cache`: the SM count, occupancy queries, and kernel attributes
// (cudaFuncSetAttribute sets them on the kernel as loaded for the current device, so each device
// sets them once). Calls that race on a device's first use may both run make(), which must be
// idempotent. Devices past kMaxDevices are not cached.
constexpr int kMaxDevices = 64;
using PerDeviceCache = std::array<std::atomic<int>, kMaxDevices>;  // value + 1; 0: not computed
template <class F>
int once_per_device(PerDeviceCache& cache, F&& make) {
  int device = 0;
  RESA_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) return make();
  const int cached = cache[device].load(std::memory_order_acquire);
  if (cached != 0) return cached - 1;
  const int value = make();
  cache[device].store(value + 1, std::memory_order_release);
  return value;
}

// Streaming multiprocessors of the current device (the launches size their choices by it).
inline int sm_count() {
  static PerDeviceCache cache;
  return once_per_device(cache, [] {
    int device = 0, sms = 0;
    RESA_CUDA_CHECK(cudaGetDevice(&device));
    RESA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  });
}

// Sets `kernel`'s dynamic shared-memory limit to `bytes` on the current device, once per device.
template <class... Params>
void allow_dynamic_smem(PerDeviceCache& cache, void (*kernel)(Params...), size_t bytes) {
  once_per_device(cache, [&] {
    RESA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    return 1;
  });
}

}  // namespace resa::cuda::detail
