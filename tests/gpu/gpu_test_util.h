// tests/gpu/gpu_test_util.h — skip a GPU test with a clear message when no device is present.
#pragma once

#include <gtest/gtest.h>

#include "resa_cuda/api.h"

#define RESA_REQUIRE_GPU()                                                                  \
  do {                                                                                      \
    const ::resa::cuda::DeviceInfo dev_ = ::resa::cuda::device_info();                      \
    if (!dev_.present) GTEST_SKIP() << "no CUDA device (" << dev_.why_absent << "): GPU test skipped"; \
  } while (0)
