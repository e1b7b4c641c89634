#include "core/tensor.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rnnserve {

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

std::string ShapeToString(absl::Span<const int64_t> shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

void SwapLeadingDims(const float* src, int64_t a, int64_t b, int64_t c, float* dst) {
  for (int64_t i = 0; i < a; ++i) {
    for (int64_t j = 0; j < b; ++j) {
      std::copy_n(src + (i * b + j) * c, c, dst + (j * a + i) * c);
    }
  }
}

Tensor Tensor::Zeros(Shape shape) { return Filled(std::move(shape), 0.0f); }

Tensor Tensor::Filled(Shape shape, float value) {
  const int64_t n = NumElements(shape);
  return Tensor(std::move(shape), std::vector<float>(n < 0 ? 0 : n, value));
}

}  // namespace rnnserve
