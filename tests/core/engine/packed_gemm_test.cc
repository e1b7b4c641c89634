#include "core/engine/packed_gemm.h"

#include <cmath>
#include <random>
#include <tuple>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

// Every kernel table this build has and this CPU runs: each one passes every test below.
class PackedGemmTest : public testing::TestWithParam<KernelIsa> {};

INSTANTIATE_TEST_SUITE_P(Kernels, PackedGemmTest, testing::ValuesIn(SupportedKernelIsas()),
                         [](const testing::TestParamInfo<KernelIsa>& info) {
                           return std::string(KernelIsaName(info.param));
                         });

std::vector<float> RandomVector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

// Every output element against a double-precision reference; rows of C beyond `rows` (when
// ldc > rows) must be left untouched.
void CheckProduct(KernelIsa isa, int64_t rows, int64_t depth, int64_t cols, bool with_bias,
                  bool accumulate, Epilogue epilogue) {
  SCOPED_TRACE(testing::Message() << "kernels=" << KernelIsaName(isa) << " rows=" << rows << " depth=" << depth << " cols=" << cols
                                  << " bias=" << with_bias << " accumulate=" << accumulate
                                  << " epilogue=" << static_cast<int>(epilogue));
  const int64_t ldx = depth + 3, ldc = rows + 5;
  const std::vector<float> w = RandomVector(rows * depth, 1);
  const std::vector<float> x = RandomVector(ldx * cols, 2);
  std::vector<float> c = RandomVector(ldc * cols, 3);
  const std::vector<float> c_before = c;
  const PackedMatrix packed = PackedMatrix::FromRowMajor(w.data(), rows, depth, isa);
  ASSERT_EQ(packed.kernels().isa, isa);
  std::vector<float> bias = RandomVector(packed.padded_rows(), 4);

  PackedGemm(packed, x.data(), ldx, cols, with_bias ? bias.data() : nullptr, accumulate,
             epilogue, c.data(), ldc);

  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t r = 0; r < ldc; ++r) {
      const float got = c[j * ldc + r];
      if (r >= rows) {
        ASSERT_EQ(got, c_before[j * ldc + r]) << "padding row " << r << " col " << j;
        continue;
      }
      double expected = accumulate ? c_before[j * ldc + r] : (with_bias ? bias[r] : 0.0);
      double magnitude = std::fabs(expected);
      for (int64_t k = 0; k < depth; ++k) {
        expected += double{w[r * depth + k]} * x[j * ldx + k];
        magnitude += std::fabs(double{w[r * depth + k]} * x[j * ldx + k]);
      }
      if (epilogue == Epilogue::kTanh) expected = std::tanh(expected);
      if (epilogue == Epilogue::kRelu) expected = std::max(expected, 0.0);
      // float32 accumulation error grows with the sum of |terms|.
      ASSERT_NEAR(got, expected, 1e-6 * (1.0 + magnitude)) << "row " << r << " col " << j;
    }
  }
}

TEST_P(PackedGemmTest, MatchesReferenceOverShapes) {
  for (int64_t rows : {1, 3, 15, 16, 17, 33, 64, 100}) {
    for (int64_t depth : {1, 7, 16, 65}) {
      for (int64_t cols : {1, 2, 3, 5, 8, 9, 17}) {
        CheckProduct(GetParam(), rows, depth, cols, /*with_bias=*/true, /*accumulate=*/false,
                     Epilogue::kNone);
      }
    }
  }
}

TEST_P(PackedGemmTest, StartsFromBiasOrOutputOrZero) {
  for (auto [bias, accumulate] : {std::pair{false, false}, {true, false}, {false, true}}) {
    CheckProduct(GetParam(), 37, 20, 11, bias, accumulate, Epilogue::kNone);
  }
}

TEST_P(PackedGemmTest, AppliesTheActivationInTheSamePass) {
  for (Epilogue e : {Epilogue::kTanh, Epilogue::kRelu}) {
    CheckProduct(GetParam(), 50, 30, 13, /*with_bias=*/true, /*accumulate=*/false, e);
    CheckProduct(GetParam(), 50, 30, 13, /*with_bias=*/false, /*accumulate=*/true, e);
  }
}

// Depth above the blocking threshold runs in several passes: the start values, the
// accumulation across passes and the activation (last pass only) must still be exact.
TEST_P(PackedGemmTest, DeepProductsSplitIntoPasses) {
  CheckProduct(GetParam(), 40, 2100, 3, /*with_bias=*/true, /*accumulate=*/false, Epilogue::kTanh);
  CheckProduct(GetParam(), 20, 1500, 9, /*with_bias=*/false, /*accumulate=*/true, Epilogue::kRelu);
}

// Enough rows for several panel blocks (each block keeps ~1 MiB of weights in cache).
TEST_P(PackedGemmTest, TallProductsSplitIntoPanelBlocks) {
  CheckProduct(GetParam(), 1100, 300, 10, /*with_bias=*/true, /*accumulate=*/false, Epilogue::kTanh);
}

TEST_P(PackedGemmTest, ZeroColumnsWritesNothing) {
  const std::vector<float> w = RandomVector(4 * 4, 1);
  const PackedMatrix packed = PackedMatrix::FromRowMajor(w.data(), 4, 4, GetParam());
  std::vector<float> c(16, 7.0f);
  PackedGemm(packed, w.data(), 4, 0, nullptr, false, Epilogue::kTanh, c.data(), 4);
  for (float v : c) EXPECT_EQ(v, 7.0f);
}

TEST_P(PackedGemmTest, PacksPanelsOfRegisterRows) {
  const std::vector<float> w = RandomVector(19 * 5, 1);
  const PackedMatrix packed = PackedMatrix::FromRowMajor(w.data(), 19, 5, GetParam());
  const int64_t lanes = packed.panel_rows();
  if (GetParam() == KernelIsa::kAvx512) {
    EXPECT_EQ(lanes, 16);
  } else if (GetParam() == KernelIsa::kAvx2) {
    EXPECT_EQ(lanes, 8);
  }
  EXPECT_EQ(packed.panels(), (19 + lanes - 1) / lanes);
  EXPECT_EQ(packed.padded_rows(), packed.panels() * lanes);
  for (int64_t r = 0; r < packed.padded_rows(); ++r) {
    for (int64_t k = 0; k < 5; ++k) {
      const float stored = packed.panels_view().data[(r / lanes) * 5 * lanes + k * lanes + r % lanes];
      EXPECT_EQ(stored, r < 19 ? w[r * 5 + k] : 0.0f) << r << "," << k;
    }
  }
}

// The choice itself, against the CPU's flags read here independently.
TEST(KernelIsaTest, AutoIsTheBestTheCpuRuns) {
  const std::vector<KernelIsa>& supported = SupportedKernelIsas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front(), KernelIsa::kBaseline);
  EXPECT_EQ(ChooseKernelIsa("auto").value(), supported.back());
  EXPECT_EQ(BestKernelIsa(), supported.back());
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  EXPECT_EQ(BestKernelIsa(), avx512 ? KernelIsa::kAvx512
                                    : (avx2 ? KernelIsa::kAvx2 : KernelIsa::kBaseline));
  absl::StatusOr<KernelIsa> forced = ChooseKernelIsa("avx512");
  if (avx512) {
    EXPECT_EQ(forced.value(), KernelIsa::kAvx512);
  } else {
    EXPECT_EQ(forced.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(forced.status().message()), HasSubstr("available here: auto"));
  }
#endif
  EXPECT_EQ(ChooseKernelIsa("baseline").value(), KernelIsa::kBaseline);
}

TEST(KernelIsaTest, UnknownNamesAreRefusedWithTheChoices) {
  absl::StatusOr<KernelIsa> unknown = ChooseKernelIsa(std::string(1000, 'x'));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("expected auto, baseline, avx2 or avx512"));
  EXPECT_LT(unknown.status().message().size(), 150u);  // the name is cut, not echoed whole
}

TEST(KernelIsaTest, TheBuildRunsOnThisCpu) { EXPECT_TRUE(CheckCpuRunsThisBuild().ok()); }

}  // namespace
}  // namespace rnnserve
