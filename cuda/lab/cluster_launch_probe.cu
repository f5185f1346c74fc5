// cuda/lab/cluster_launch_probe.cu — what a grid of thread-block clusters costs to launch and
// retire on this card, with no work in it: the question behind PERFORMANCE.md change 49, where
// the cluster decode kernel's time grows by ~0.2 us per cluster of eight CTAs at a fixed amount
// of work per cluster. An empty kernel of 128 threads and the cluster decode kernel's shared
// memory (52 KB dynamic) is launched 200 times back to back on one stream for each total CTA
// count and cluster size (1 = no cluster attribute); the table gives microseconds per launch
// (CUDA events over the 200). If the time grows with the number of clusters at a fixed CTA
// count, the cost is in placing clusters, and fewer, larger units of work per cluster are the
// lever; if it grows with CTAs alike for every cluster size, it is CTA launch throughput.
// Run: build/gpu/cuda/cluster_launch_probe (needs an sm_90 device; prints the table, exits 0).
#include <cuda_runtime.h>

#include <cstdio>

#include "lab_check.h"

__global__ void empty_kernel(int* sink) {
  extern __shared__ int smem[];
  if (blockIdx.x == 0xFFFFFFFu) sink[0] = smem[threadIdx.x];  // never true: keeps the kernel
}

static float us_per_launch(int ctas, int cluster, size_t smem, int* sink, cudaStream_t stream) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = cluster;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(ctas);
  config.blockDim = dim3(128);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = cluster > 1 ? &attribute : nullptr;
  config.numAttrs = cluster > 1 ? 1 : 0;
  constexpr int kLaunches = 200;
  for (int i = 0; i < 20; ++i) CHECK(cudaLaunchKernelEx(&config, empty_kernel, sink));  // warm-up
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < kLaunches; ++i) CHECK(cudaLaunchKernelEx(&config, empty_kernel, sink));
  CHECK(cudaEventRecord(stop, stream));
  CHECK(cudaEventSynchronize(stop));
  float ms = 0.f;
  CHECK(cudaEventElapsedTime(&ms, start, stop));
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return ms * 1000.f / kLaunches;
}

int main() {
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  if (prop.major < 9) {
    std::printf("cluster_launch_probe: %s is sm_%d%d; thread-block clusters need sm_90\n", prop.name, prop.major,
                prop.minor);
    return 0;
  }
  constexpr size_t kSmem = 52 * 1024;
  CHECK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem)));
  CHECK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  int* sink = nullptr;
  CHECK(cudaMalloc(&sink, sizeof(int)));
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  std::printf("cluster_launch_probe on %s (%d SMs): empty kernel, 128 threads, %zu KB dynamic shared memory,\n"
              "us per launch over 200 back-to-back launches, by CTAs in the grid and cluster size\n",
              prop.name, prop.multiProcessorCount, kSmem / 1024);
  const int cluster_sizes[] = {1, 2, 4, 8};
  std::printf("%8s", "CTAs");
  for (int c : cluster_sizes) std::printf("  cluster %d", c);
  std::printf("\n");
  for (int ctas : {8, 64, 128, 208, 272, 416, 496, 1024}) {
    std::printf("%8d", ctas);
    for (int c : cluster_sizes) std::printf("  %9.2f", us_per_launch(ctas, c, kSmem, sink, stream));
    std::printf("\n");
  }
  CHECK(cudaStreamDestroy(stream));
  CHECK(cudaFree(sink));
  return 0;
}
