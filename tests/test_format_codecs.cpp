// Bit-exact codec checks against the CUDA toolkit's host conversions (cuda_fp4.h / cuda_fp8.h), an
// implementation independent of ours.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "format/e2m1.h"
#include "format/e4m3.h"
#include "format/ue8m0.h"

#if FP4LAB_HAVE_TOOLKIT_HEADERS
#include <cuda_fp4.h>
#include <cuda_fp8.h>
#endif

using namespace fp4lab;

TEST(E2M1, DecodeTable) {
  const float want[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 8; ++c) {
    EXPECT_EQ(e2m1_decode(static_cast<uint8_t>(c)), want[c]);
    EXPECT_EQ(e2m1_decode(static_cast<uint8_t>(c | 8)), -want[c]);
  }
}

TEST(E2M1, TiesGoToEvenCode) {
  // The tie list from NVFP4-NOTES.md: tables that send ties to the smaller magnitude are a known bug source.
  EXPECT_EQ(e2m1_encode(0.25f), 0);
  EXPECT_EQ(e2m1_encode(0.75f), 2);
  EXPECT_EQ(e2m1_encode(1.25f), 2);
  EXPECT_EQ(e2m1_encode(1.75f), 4);
  EXPECT_EQ(e2m1_encode(2.5f), 4);
  EXPECT_EQ(e2m1_encode(3.5f), 6);
  EXPECT_EQ(e2m1_encode(5.0f), 6);
  EXPECT_EQ(e2m1_encode(100.0f), 7);
  EXPECT_EQ(e2m1_encode(-100.0f), 15);
  EXPECT_EQ(e2m1_encode(-0.1f), 8);  // sign kept on values that round to zero
}

TEST(E2M1, PackingLowNibbleFirst) {
  const uint8_t b = e2m1_pack(0x3, 0xA);
  EXPECT_EQ(b, 0xA3);
  EXPECT_EQ(e2m1_lo(b), 0x3);
  EXPECT_EQ(e2m1_hi(b), 0xA);
}

TEST(E4M3, DecodeKnownValues) {
  EXPECT_EQ(e4m3_decode(0x7e), 448.0f);
  EXPECT_EQ(e4m3_decode(0x01), 0.001953125f);
  EXPECT_EQ(e4m3_decode(0x08), 0.015625f);
  EXPECT_EQ(e4m3_decode(0x38), 1.0f);
  EXPECT_EQ(e4m3_decode(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(e4m3_decode(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_decode(0xff)));
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) != 0x7f) {
      EXPECT_EQ(e4m3_encode(e4m3_decode(static_cast<uint8_t>(c))), c) << c;
    }
  }
}

TEST(UE8M0, PowersOfTwo) {
  EXPECT_EQ(ue8m0_decode(127), 1.0f);
  EXPECT_EQ(ue8m0_decode(130), 8.0f);
  EXPECT_EQ(ue8m0_decode(0), std::ldexp(1.0f, -127));
  EXPECT_TRUE(std::isnan(ue8m0_decode(255)));
  EXPECT_EQ(floor_log2(1.0f), 0);
  EXPECT_EQ(floor_log2(6.0f), 2);
  EXPECT_EQ(floor_log2(0.3f), -2);
  EXPECT_EQ(floor_log2(std::ldexp(1.0f, -140)), -140);
  EXPECT_EQ(floor_log2(std::ldexp(3.0f, -145)), -144);
}

#if FP4LAB_HAVE_TOOLKIT_HEADERS

namespace {

struct SweepResult {
  uint64_t tested = 0, mismatches = 0;
  uint32_t first_bad = 0;
};

// Runs f over bit patterns [lo, hi) in parallel; f returns true on a match.
template <class F>
SweepResult sweep(uint64_t lo, uint64_t hi, uint64_t stride, F f) {
  const unsigned nt = std::max(1u, std::thread::hardware_concurrency());
  std::vector<SweepResult> part(nt);
  std::vector<std::thread> th;
  for (unsigned t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      SweepResult& r = part[t];
      for (uint64_t i = lo + t * stride; i < hi; i += nt * stride) {
        const uint32_t u = static_cast<uint32_t>(i);
        ++r.tested;
        if (!f(u)) {
          if (!r.mismatches) r.first_bad = u;
          ++r.mismatches;
        }
      }
    });
  for (auto& x : th) x.join();
  SweepResult all;
  for (auto& r : part) {
    all.tested += r.tested;
    if (r.mismatches && !all.mismatches) all.first_bad = r.first_bad;
    all.mismatches += r.mismatches;
  }
  return all;
}

bool e2m1_matches(uint32_t u) {
  const float x = bits_f32(u);
  return e2m1_encode(x) == static_cast<uint8_t>(__nv_cvt_float_to_fp4(x, __NV_E2M1, cudaRoundNearest));
}
bool e4m3_matches(uint32_t u) {
  const float x = bits_f32(u);
  return e4m3_encode(x) == static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

}  // namespace

// Every float32 bit pattern (2^32 inputs: every sign, exponent and mantissa, subnormals, +-0, +-Inf, every
// NaN payload, every tie), against the toolkit's conversion. About 10-20 s per codec on 2 cores.
TEST(CodecSweep, E2M1MatchesToolkitEveryFloat32) {
  const auto r = sweep(0, 1ull << 32, 1, e2m1_matches);
  EXPECT_EQ(r.tested, 1ull << 32);
  EXPECT_EQ(r.mismatches, 0u) << "first mismatch at 0x" << std::hex << r.first_bad;
}

TEST(CodecSweep, E4M3MatchesToolkitEveryFloat32) {
  const auto r = sweep(0, 1ull << 32, 1, e4m3_matches);
  EXPECT_EQ(r.tested, 1ull << 32);
  EXPECT_EQ(r.mismatches, 0u) << "first mismatch at 0x" << std::hex << r.first_bad;
}

TEST(CodecSweep, E4M3DecodeMatchesToolkit) {
  for (int c = 0; c < 256; ++c) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(c), __NV_E4M3);
    const float ref = fp4lab::f16_to_f32(h.x);
    const float ours = e4m3_decode(static_cast<uint8_t>(c));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(ours)) << c;
    } else {
      EXPECT_EQ(ours, ref) << c;
    }
  }
}

TEST(CodecSweep, E2M1DecodeMatchesToolkit) {
  for (int c = 0; c < 16; ++c) {
    const __half_raw h = __nv_cvt_fp4_to_halfraw(static_cast<__nv_fp4_storage_t>(c), __NV_E2M1);
    EXPECT_EQ(e2m1_decode(static_cast<uint8_t>(c)), fp4lab::f16_to_f32(h.x)) << c;
  }
}

#endif  // without the toolkit these sweeps are not built (the CPU-only build has no oracle for them)
