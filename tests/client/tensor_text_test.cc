// TensorText: numpy-style text of the CLI's non-JSON output.
#include "client/cli/tensor_text.h"

#include "gtest/gtest.h"

namespace rnnserve {
namespace cli {
namespace {

TEST(TensorTextTest, ScalarIsItsValue) { EXPECT_EQ(TensorText(Tensor({}, {2.5f})), "2.5"); }

TEST(TensorTextTest, EmptyTensorIsEmptyBrackets) {
  EXPECT_EQ(TensorText(Tensor({0}, {})), "[]");
  EXPECT_EQ(TensorText(Tensor({2, 0, 3}, {})), "[]");
}

TEST(TensorTextTest, OneDimensionOnOneLine) {
  EXPECT_EQ(TensorText(Tensor({3}, {1, -2, 3})), "[ 1 -2  3]");
}

TEST(TensorTextTest, RowsAlignedToTheWidestValue) {
  EXPECT_EQ(TensorText(Tensor({2, 2}, {1, 22, 333, 4})), "[[  1  22]\n [333   4]]");
}

TEST(TensorTextTest, BlankLineBetweenBlocksAsNumpy) {
  EXPECT_EQ(TensorText(Tensor({2, 1, 2}, {1, 2, 3, 4})), "[[[1 2]]\n\n [[3 4]]]");
  // Four dimensions: one blank line between blocks at every level above the rows (numpy
  // would print two at the top level).
  EXPECT_EQ(TensorText(Tensor({2, 1, 1, 1}, {1, 2})), "[[[[1]]]\n\n [[[2]]]]");
}

TEST(TensorTextTest, SixSignificantDigits) {
  EXPECT_EQ(TensorText(Tensor({3}, {0.1f, 1e-7f, 123456789.0f})),
            "[        0.1       1e-07 1.23457e+08]");
}

TEST(TensorTextTest, NamedTensorTextHasNameShapeAndNewline) {
  EXPECT_EQ(NamedTensorText("h_n", Tensor({1, 2}, {1, 2})), "h_n (1, 2):\n[[1 2]]\n");
  EXPECT_EQ(NamedTensorText("x", Tensor({2}, {1, 2})), "x (2,):\n[1 2]\n");
}

}  // namespace
}  // namespace cli
}  // namespace rnnserve
