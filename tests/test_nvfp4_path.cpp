#include <gtest/gtest.h>

#include "engine/nvfp4_path.h"
#include "test_util.h"

using namespace fp4lab;

TEST(Nvfp4Path, PerArchitecture) {
  const std::vector<std::string> all{"80", "90a", "100a", "120a"};
  EXPECT_EQ(choose_nvfp4_path(7, 5, all).path, Nvfp4Path::Unsupported);
  EXPECT_EQ(choose_nvfp4_path(8, 0, all).path, Nvfp4Path::W4A16_SM80);
  EXPECT_EQ(choose_nvfp4_path(8, 6, all).path, Nvfp4Path::W4A16_SM80);
  const auto ada = choose_nvfp4_path(8, 9, all);
  EXPECT_EQ(ada.path, Nvfp4Path::W4A16_SM80);
  EXPECT_NE(ada.reason.find("sm_89: Ada has FP8 but no FP4 tensor cores"), std::string::npos);
  EXPECT_EQ(choose_nvfp4_path(9, 0, all).path, Nvfp4Path::W4A16_SM90);
  EXPECT_EQ(choose_nvfp4_path(10, 0, all).path, Nvfp4Path::W4A4_SM100);
  EXPECT_EQ(choose_nvfp4_path(12, 0, all).path, Nvfp4Path::W4A4_SM120);
  EXPECT_FALSE(choose_nvfp4_path(12, 0, all).tested_here);
  // Without native kernels in the binary, Blackwell falls back to the portable W4A16 path, never crashes.
  EXPECT_EQ(choose_nvfp4_path(10, 0, {"80", "90a"}).path, Nvfp4Path::W4A16_SM80);
  EXPECT_EQ(choose_nvfp4_path(9, 0, {"80"}).path, Nvfp4Path::W4A16_SM80);
}

TEST(Doctor, RunsWithoutCrashing) {
  const auto r = fp4lab::test::run_fp4lab("doctor");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(r.out.find("GPU 0:") != std::string::npos || r.out.find("GPU: none") != std::string::npos)
      << r.out;
}

#include "cuda/gpu_info.h"
#include "cuda/gpu_telemetry.h"

TEST(GpuTelemetry, ReportsOrExplains) {
  const auto t = fp4lab::read_gpu_telemetry(0);
  if (fp4lab::query_gpus().ok) {
    EXPECT_TRUE(t.available) << t.error;
    EXPECT_GT(t.sm_mhz, 0u);
    EXPECT_GT(t.mem_mhz, 0u);
  } else {
    EXPECT_FALSE(t.available);
    EXPECT_FALSE(t.error.empty());
    EXPECT_EQ(t.to_json()["available"], false);
  }
  fp4lab::GpuTelemetry f;
  f.throttle_reasons = 0x1 | 0x20;
  EXPECT_TRUE(f.throttled());
  EXPECT_EQ(f.throttle_text(), "idle,sw-thermal");
  f.throttle_reasons = 0x1;
  EXPECT_FALSE(f.throttled());
}
