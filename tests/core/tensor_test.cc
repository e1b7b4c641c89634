#include "core/tensor.h"

#include <limits>

#include "gtest/gtest.h"

namespace rnnserve {
namespace {

TEST(TensorTest, NumElementsMultipliesDimensions) {
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({5, 0}), 0);
}

TEST(TensorTest, NumElementsRejectsNegativeAndOverflow) {
  EXPECT_EQ(NumElements({2, -1}), -1);
  const int64_t big = std::numeric_limits<int64_t>::max() / 2;
  EXPECT_EQ(NumElements({big, 3}), -1);
  EXPECT_EQ(NumElements({big, 0, 3}), 0);
}

TEST(TensorTest, ShapeToStringFollowsTorch) {
  EXPECT_EQ(ShapeToString({2, 3, 10}), "(2, 3, 10)");
  EXPECT_EQ(ShapeToString({7}), "(7,)");
  EXPECT_EQ(ShapeToString({}), "()");
}

TEST(TensorTest, ZerosAndFilled) {
  Tensor z = Tensor::Zeros({2, 3});
  EXPECT_EQ(z.num_elements(), 6);
  EXPECT_EQ(z.dim(), 2);
  EXPECT_EQ(z.size(-1), 3);
  for (float v : z.values) EXPECT_EQ(v, 0.0f);
  Tensor f = Tensor::Filled({4}, 1.5f);
  for (float v : f.values) EXPECT_EQ(v, 1.5f);
}

TEST(TensorTest, SwapLeadingDimsTransposesFirstTwoAxes) {
  // (2, 3, 2) -> (3, 2, 2)
  std::vector<float> src(12);
  for (int i = 0; i < 12; ++i) src[i] = static_cast<float>(i);
  std::vector<float> dst(12);
  SwapLeadingDims(src.data(), 2, 3, 2, dst.data());
  EXPECT_EQ(dst, (std::vector<float>{0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11}));
}

}  // namespace
}  // namespace rnnserve
