// Tensor: a dense, row-major float32 array with a shape. A plain value type; like any standard
// container it is safe to read from many threads and must not be mutated concurrently.
#ifndef RNNSERVE_CORE_TENSOR_H_
#define RNNSERVE_CORE_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace rnnserve {

using Shape = std::vector<int64_t>;

// Product of the dimensions; 1 for a scalar (empty shape). Returns -1 when a dimension is
// negative or the product overflows int64, so callers can reject hostile shapes.
int64_t NumElements(absl::Span<const int64_t> shape);

// "(2, 3, 10)", the way torch prints sizes.
std::string ShapeToString(absl::Span<const int64_t> shape);

// Copies a row-major (a, b, c) array into (b, a, c) order: (N, T, C) <-> (T, N, C).
void SwapLeadingDims(const float* src, int64_t a, int64_t b, int64_t c, float* dst);

struct Tensor {
  Shape shape;
  std::vector<float> values;  // row-major, values.size() == NumElements(shape)

  Tensor() = default;
  Tensor(Shape s, std::vector<float> v) : shape(std::move(s)), values(std::move(v)) {}
  static Tensor Zeros(Shape shape);
  static Tensor Filled(Shape shape, float value);

  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t size(int64_t i) const { return shape[i < 0 ? i + dim() : i]; }
  int64_t num_elements() const { return static_cast<int64_t>(values.size()); }
  float* data() { return values.data(); }
  const float* data() const { return values.data(); }
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_TENSOR_H_
