// tests/gpu/test_gpu_kernels.cpp — every CUDA kernel equals the CPU reference bit for bit over the
// validation matrix (cuda/src/verify.cpp: shapes, dtypes, lengths to 300K, ratios, f, batch
// invariance, run-to-run, CUDA-graph replay), reported per kernel with the first failure.
#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "resa_cuda/verify.h"

namespace resa {
namespace {

void expect_clean(const cuda::VerifyReport& r, size_t min_kernels) {
  EXPECT_GE(r.kernels.size(), min_kernels);
  for (const auto& [name, t] : r.kernels) {
    EXPECT_GT(t.cases, 0) << name;
    EXPECT_GT(t.elements, 0) << name;
    EXPECT_EQ(t.mismatches, 0) << name << ": " << t.first_failure << " (worst " << t.worst_ulp << " ulp)";
  }
}

TEST(GpuKernels, QuickMatrixIsBitExact) {
  RESA_REQUIRE_GPU();
  cuda::VerifyOptions o;
  o.quick = true;
  expect_clean(cuda::run_validation_matrix(o), 10);
}

TEST(GpuKernels, FullMatrixIsBitExact) {
  RESA_REQUIRE_GPU();
  cuda::VerifyOptions o;
  o.seed = 7;
  expect_clean(cuda::run_validation_matrix(o), 12);
}

TEST(GpuKernels, NoDeviceIsReportedClearly) {
  const cuda::DeviceInfo d = cuda::device_info();
  if (d.present) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.sm_major, 9) << "the kernels are built for sm_90a";
  } else {
    EXPECT_FALSE(d.why_absent.empty());
    EXPECT_THROW(cuda::run_validation_matrix({}), cuda::CudaError);
  }
}

}  // namespace
}  // namespace resa
