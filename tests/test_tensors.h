// Helpers shared by the C++ tests: seeded random tensors, and the one NaN-proof comparison.
#ifndef RNNSERVE_TESTS_TEST_TENSORS_H_
#define RNNSERVE_TESTS_TEST_TENSORS_H_

#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "base/tensor.h"

namespace rnnserve {

// A tensor of N(0, scale^2) values, the same for the same seed.
inline Tensor Random(Shape shape, uint64_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor t = Tensor::Zeros(std::move(shape));
  for (float& v : t.values) v = normal(rng);
  return t;
}

// Rows [begin, end) of the leading dimension (a time slice of a (T, ...) tensor).
inline Tensor LeadingRows(const Tensor& t, int64_t begin, int64_t end) {
  const int64_t row = t.num_elements() / t.shape[0];
  Shape shape = t.shape;
  shape[0] = end - begin;
  return Tensor(shape, std::vector<float>(t.values.begin() + begin * row,
                                          t.values.begin() + end * row));
}

// The largest |a - b|; infinity when the sizes differ or any difference is NaN (a NaN or an
// infinity on either side), so a broken output can never pass an EXPECT_LE against a tolerance.
// (std::max over differences would skip NaN: every comparison with NaN is false.)
inline double MaxAbsDiff(absl::Span<const float> a, absl::Span<const float> b) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (a.size() != b.size()) return kInf;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (std::isnan(d)) return kInf;
    if (d > worst) worst = d;
  }
  return worst;
}

// Tensors must also agree in shape.
inline double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  if (a.shape != b.shape) return std::numeric_limits<double>::infinity();
  return MaxAbsDiff(absl::MakeConstSpan(a.values), absl::MakeConstSpan(b.values));
}

}  // namespace rnnserve

#endif  // RNNSERVE_TESTS_TEST_TENSORS_H_
