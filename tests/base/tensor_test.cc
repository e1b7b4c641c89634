#include "base/tensor.h"

#include <cmath>
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

TEST(TensorTest, FirstNonFiniteFindsTheFirstBadValueInAnyBlock) {
  std::vector<float> v(5000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::ldexp(1.0f, static_cast<int>(i % 200) - 100);
  v[4000] = -std::numeric_limits<float>::max();
  EXPECT_EQ(FirstNonFinite(v.data(), static_cast<int64_t>(v.size())), std::nullopt);
  EXPECT_EQ(FirstNonFinite(v.data(), 0), std::nullopt);
  for (size_t at : {size_t{0}, size_t{1023}, size_t{1024}, size_t{3333}, v.size() - 1}) {
    for (float bad : {std::nanf(""), -std::nanf(""), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      std::vector<float> w = v;
      w[at] = bad;
      w[v.size() - 1] = bad;  // a later one does not hide the first
      EXPECT_EQ(FirstNonFinite(w.data(), static_cast<int64_t>(w.size())), at) << bad;
      EXPECT_EQ(FirstNonFinite(w.data(), static_cast<int64_t>(at)), std::nullopt);
    }
  }
}

TEST(TensorTest, TensorBytesHoldsFloatsAsRawBytes) {
  const Tensor t({2, 3}, {1, 2, 3, 4, 5, -6.5f});
  TensorBytes b = TensorBytes::FromTensor(t);
  EXPECT_EQ(b.shape, t.shape);
  EXPECT_EQ(b.bytes.size(), 6 * sizeof(float));
  EXPECT_TRUE(b.consistent());
  EXPECT_EQ(b.num_elements(), 6);
  EXPECT_EQ(b.values()[5], -6.5f);
  EXPECT_EQ(b.ToTensor().values, t.values);
  b.data()[0] = 7;
  EXPECT_EQ(b.ToTensor().values[0], 7.0f);
  b.bytes.pop_back();
  EXPECT_FALSE(b.consistent());
  TensorBytes z = TensorBytes::Zeros({3, 1});
  EXPECT_TRUE(z.consistent());
  EXPECT_EQ(z.ToTensor().values, std::vector<float>(3, 0.0f));
  EXPECT_FALSE(TensorBytes({-1}, "").consistent());
}

TEST(TensorTest, SliceTakesARangeAlongAnAxis) {
  // (2, 3, 2): values 0..11.
  Tensor t({2, 3, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  absl::StatusOr<Tensor> middle = Slice(t, 1, 1, 2);
  ASSERT_TRUE(middle.ok()) << middle.status();
  EXPECT_EQ(middle->shape, (Shape{2, 2, 2}));
  EXPECT_EQ(middle->values, (std::vector<float>{2, 3, 4, 5, 8, 9, 10, 11}));
  absl::StatusOr<Tensor> empty = Slice(t, 0, 2, 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->shape, (Shape{0, 3, 2}));
}

TEST(TensorTest, SliceRefusesRangesOutsideTheTensor) {
  Tensor t({2, 3}, {0, 1, 2, 3, 4, 5});
  EXPECT_EQ(Slice(t, 2, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Slice(t, -1, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Slice(t, 1, 2, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Slice(t, 1, -1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Slice(t, 1, 1, std::numeric_limits<int64_t>::max()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorTest, ConcatUndoesSlice) {
  Tensor t({2, 5, 3}, std::vector<float>(30));
  for (int i = 0; i < 30; ++i) t.values[i] = static_cast<float>(i) * 0.5f;
  std::vector<Tensor> parts;
  for (int64_t at : {0, 2, 3}) {
    const int64_t len = at == 0 ? 2 : at == 2 ? 1 : 2;
    parts.push_back(*Slice(t, 1, at, len));
  }
  absl::StatusOr<Tensor> joined = Concat(parts, 1);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->shape, t.shape);
  EXPECT_EQ(joined->values, t.values);
}

TEST(TensorTest, ConcatRefusesMismatchedParts) {
  std::vector<Tensor> parts = {Tensor::Zeros({2, 3}), Tensor::Zeros({3, 3})};
  EXPECT_EQ(Concat(parts, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Concat(parts, 0).ok());
  EXPECT_EQ(Concat({}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Concat(parts, 2).status().code(), absl::StatusCode::kInvalidArgument);
  parts.push_back(Tensor::Zeros({3}));
  EXPECT_EQ(Concat(parts, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace rnnserve
