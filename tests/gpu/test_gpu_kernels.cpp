// tests/gpu/test_gpu_kernels.cpp — every CUDA kernel equals the CPU reference bit for bit over the
// validation matrix (cuda/src/verify.cpp: shapes, dtypes, lengths to 300K, ratios, f, batch
// invariance, run-to-run, CUDA-graph replay), reported per kernel with the first failure; and the
// step API's argument checks, which need no device.
#include <gtest/gtest.h>

#include <string>

#include "gpu_test_util.h"
#include "resa_cuda/api.h"
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

// SparseStepParams::max_length outside [0, capacity] is refused, naming it, before anything is
// enqueued (no device needed: CI runs these through the ctest entry gpu_api_argument_checks).
TEST(GpuApi, StepsRefuseAMaxLengthOutsideTheCapacity) {
  cuda::SparseStepParams<bf16> p;
  p.kv.capacity = 100;
  p.kv.batch = 1;
  p.kv.n_kv_heads = 1;
  p.kv.head_dim = 128;
  p.n_q_heads = 1;
  p.schedule = make_schedule({1, 1, 128});
  for (const int bad : {-1, 101}) {
    p.max_length = bad;
    const std::string expected = "max_length = " + std::to_string(bad);
    auto message = [](auto&& call) {
      try {
        call();
      } catch (const InvalidArgument& e) {
        return std::string(e.what());
      }
      return std::string("no InvalidArgument");
    };
    EXPECT_NE(message([&] { cuda::dense_decode_step<bf16>(p, nullptr); }).find(expected), std::string::npos);
    EXPECT_NE(message([&] { cuda::sparse_decode_step<bf16>(p, nullptr); }).find(expected), std::string::npos);
    EXPECT_NE(message([&] { cuda::rectify<bf16>(p, 8, nullptr, nullptr, nullptr, 0, 1, nullptr, nullptr); }).find(expected),
              std::string::npos);
  }
}

// Split flags fewer than the launch needs are refused, naming them, before anything is enqueued
// (no device needed; the pointers are never dereferenced).
TEST(GpuApi, AttentionRefusesTooFewSplitFlags) {
  bf16 host_t[1];
  int32_t host_len[1];
  float host_f[1];
  uint32_t host_flags[1];
  cuda::AttentionParams<bf16> p;
  p.q = host_t;
  p.kv = {host_t, host_t, host_len, 2, 2, 4096, 128};
  p.n_q_heads = 12;
  p.schedule = make_schedule({12, 2, 128});
  p.max_keys = 4096;
  p.workspace = host_f;
  p.workspace_floats = cuda::attention_workspace_floats(2, 2, 12, 1, 128, 4096, p.schedule);
  p.out = host_f;
  p.split_flags = host_flags;
  const size_t need = cuda::attention_split_flag_words(2, 2, 12, 1, 4096, p.schedule);
  EXPECT_EQ(need, 2u * 2 * (4096 / p.schedule.split_len) * 6);  // sequence x KV head x split x row
  p.split_flag_words = need - 1;
  try {
    cuda::attention<bf16>(p, nullptr);
    ADD_FAILURE() << "no InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("split flags of " + std::to_string(need - 1) + " words, " +
                                         std::to_string(need) + " needed"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace resa
