// cuda/src/device.cu — CUDA error reporting (call, file:line, device) and the device query used by
// `resa info`, `resa verify`, the GPU tests and the benchmark.
#include <cuda_runtime.h>

#include <sstream>

#include "resa_cuda/api.h"

namespace resa::cuda {

void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return;
  int dev = -1;
  cudaGetDevice(&dev);
  std::ostringstream os;
  os << "CUDA error " << cudaGetErrorName(err) << " (" << cudaGetErrorString(err) << ") in " << what
     << " at " << file << ":" << line << " on device " << dev;
  throw CudaError(os.str());
}

DeviceInfo device_info() {
  DeviceInfo d;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    d.why_absent = err != cudaSuccess ? std::string("no usable CUDA device (") + cudaGetErrorString(err) + ")"
                                      : "no CUDA device present";
    cudaGetLastError();  // clear the sticky-free error state of the query
    return d;
  }
  cudaDeviceProp prop{};
  RESA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  d.present = true;
  d.name = prop.name;
  d.sm_major = prop.major;
  d.sm_minor = prop.minor;
  d.multiprocessors = prop.multiProcessorCount;
  d.global_memory = prop.totalGlobalMem;
  cudaDriverGetVersion(&d.driver_version);
  cudaRuntimeGetVersion(&d.runtime_version);
  return d;
}

std::string DeviceInfo::str() const {
  if (!present) return why_absent;
  std::ostringstream os;
  os << name << " (sm_" << sm_major << sm_minor << ", " << multiprocessors << " SMs, "
     << (global_memory >> 20) << " MiB, driver " << driver_version / 1000 << "." << (driver_version % 1000) / 10
     << ", runtime " << runtime_version / 1000 << "." << (runtime_version % 1000) / 10 << ")";
  return os.str();
}

}  // namespace resa::cuda
