// cuda/src/launch.cuh — host-side launch with programmatic dependent launch (the device side,
// wait_for_previous_grid and allow_dependent_launch, is in device_common.cuh, which says what a
// kernel launched this way must do), and the device's SM count, by which launches size their
// grids. Included by the .cu files of cuda/src that launch kernels.
#pragma once

#include <cuda_runtime.h>

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

// Streaming multiprocessors of the current device (the launches size their choices by it).
inline int sm_count() {
  int device = 0, sms = 0;
  RESA_CUDA_CHECK(cudaGetDevice(&device));
  RESA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

}  // namespace resa::cuda::detail
