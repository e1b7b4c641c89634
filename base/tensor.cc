#include "base/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

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

namespace {

// Elements before and after dimension `axis`.
std::pair<int64_t, int64_t> OuterInner(const Shape& shape, int64_t axis) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  return {outer, inner};
}

}  // namespace

absl::StatusOr<Tensor> Slice(const Tensor& t, int64_t axis, int64_t start, int64_t length) {
  if (axis < 0 || axis >= t.dim()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot slice dimension ", axis,
                                                   " of a tensor of shape ",
                                                   ShapeToString(t.shape)));
  }
  const int64_t size = t.shape[axis];
  if (start < 0 || length < 0 || start > size || length > size - start) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slice [", start, ", ", start, " + ", length, ") is outside dimension ", axis,
        " of size ", size, " (shape ", ShapeToString(t.shape), ")"));
  }
  auto [outer, inner] = OuterInner(t.shape, axis);
  Shape shape = t.shape;
  shape[axis] = length;
  Tensor out = Tensor::Zeros(shape);
  for (int64_t o = 0; o < outer; ++o) {
    const float* src = t.data() + (o * size + start) * inner;
    std::copy(src, src + length * inner, out.data() + o * length * inner);
  }
  return out;
}

absl::StatusOr<Tensor> Concat(absl::Span<const Tensor> parts, int64_t axis) {
  if (parts.empty()) return absl::InvalidArgumentError("Concat needs at least one tensor");
  Shape shape = parts.front().shape;
  if (axis < 0 || axis >= static_cast<int64_t>(shape.size())) {
    return absl::InvalidArgumentError(absl::StrCat("cannot concatenate along dimension ", axis,
                                                   " of shape ", ShapeToString(shape)));
  }
  shape[axis] = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    Shape other = parts[i].shape;
    if (other.size() == shape.size()) other[axis] = 0;
    if (other != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot concatenate along dimension ", axis, ": part ", i, " has shape ",
          ShapeToString(parts[i].shape), ", part 0 has shape ",
          ShapeToString(parts.front().shape)));
    }
  }
  for (const Tensor& p : parts) shape[axis] += p.shape[axis];
  auto [outer, inner] = OuterInner(shape, axis);
  Tensor out = Tensor::Zeros(shape);
  int64_t at = 0;
  for (const Tensor& p : parts) {
    const int64_t len = p.shape[axis];
    for (int64_t o = 0; o < outer; ++o) {
      std::copy(p.data() + o * len * inner, p.data() + (o + 1) * len * inner,
                out.data() + (o * shape[axis] + at) * inner);
    }
    at += len;
  }
  return out;
}

Tensor Tensor::Zeros(Shape shape) { return Filled(std::move(shape), 0.0f); }

Tensor Tensor::Filled(Shape shape, float value) {
  const int64_t n = NumElements(shape);
  return Tensor(std::move(shape), std::vector<float>(n < 0 ? 0 : n, value));
}

std::optional<int64_t> FirstNonFinite(const float* data, int64_t count) {
  // A float is NaN or Inf exactly when its exponent bits are all ones, the largest value the
  // masked bits can take: the max over a block tells whether the block holds one.
  constexpr uint32_t kExponent = 0x7f800000u;
  constexpr int64_t kBlock = 1024;
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    uint32_t largest = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, data + i, sizeof(bits));
      largest = std::max(largest, bits & kExponent);
    }
    if (largest != kExponent) continue;
    for (int64_t i = begin; i < end; ++i) {
      if (!std::isfinite(data[i])) return i;
    }
  }
  return std::nullopt;
}

TensorBytes TensorBytes::Zeros(Shape shape) {
  const int64_t n = NumElements(shape);
  return TensorBytes(std::move(shape), std::string(n < 0 ? 0 : n * sizeof(float), '\0'));
}

TensorBytes TensorBytes::Copy(Shape shape, const float* data) {
  const int64_t n = NumElements(shape);
  return TensorBytes(std::move(shape), std::string(reinterpret_cast<const char*>(data),
                                                   n < 0 ? 0 : n * sizeof(float)));
}

Tensor TensorBytes::ToTensor() const {
  const absl::Span<const float> v = values();
  Tensor tensor(shape, std::vector<float>(v.begin(), v.end()));
  tensor.ids = ids;
  return tensor;
}

bool TensorBytes::consistent() const {
  const int64_t n = NumElements(shape);
  return n >= 0 && bytes.size() == static_cast<size_t>(n) * sizeof(float);
}

}  // namespace rnnserve
