// Tensor: a dense, row-major float32 array with a shape. TensorBytes: the same, its values kept
// as little-endian bytes in a std::string (the wire format's `raw` layout), so the RPC layer can
// move the buffer into and out of protobuf `bytes` fields instead of copying it. Plain value
// types; like any standard container they are safe to read from many threads and must not be
// mutated concurrently.
#ifndef RNNSERVE_BASE_TENSOR_H_
#define RNNSERVE_BASE_TENSOR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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

// Token ids travel in a Tensor as floats. Ids in [0, kMaxTokenId) are exact; anything outside
// is clamped to -1 or kMaxTokenId, both outside every vocabulary (an Embedding has at most
// 2^24 rows), so a valid id stays exact and an invalid one stays invalid.
inline constexpr int64_t kMaxTokenId = int64_t{1} << 24;
inline float TokenIdAsFloat(int64_t id) {
  return static_cast<float>(id < 0 ? -1 : (id > kMaxTokenId ? kMaxTokenId : id));
}

struct Tensor {
  Shape shape;
  std::vector<float> values;  // row-major, values.size() == NumElements(shape)
  // The values are integer token ids (the wire's Tensor.ids), each exactly representable:
  // the input of a model whose input layer is an Embedding (ids are < 2^24 there).
  bool ids = false;

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

// t[..., start:start+length, ...] along `axis`. INVALID_ARGUMENT when the axis or the range
// lies outside the tensor.
absl::StatusOr<Tensor> Slice(const Tensor& t, int64_t axis, int64_t start, int64_t length);

// Joins tensors along `axis`; they must agree in every other dimension (INVALID_ARGUMENT
// otherwise, naming the first part that differs). At least one part.
absl::StatusOr<Tensor> Concat(absl::Span<const Tensor> parts, int64_t axis);

// Flat index of the first NaN or Inf in data[0, count), or nullopt when all are finite. The scan
// is branch-free per block of values (vectorised), so the common all-finite case is cheap.
std::optional<int64_t> FirstNonFinite(const float* data, int64_t count);

struct TensorBytes {
  Shape shape;
  // NumElements(shape) * sizeof(float) bytes when consistent(). A std::string's buffer comes
  // from operator new (or sits inside the string for short ones), so it is aligned for floats.
  std::string bytes;
  bool ids = false;  // as Tensor::ids

  TensorBytes() = default;
  TensorBytes(Shape s, std::string b) : shape(std::move(s)), bytes(std::move(b)) {}
  // Sized for `shape`, zero-filled (std::string cannot grow uninitialised before C++23).
  static TensorBytes Zeros(Shape shape);
  // Copies NumElements(shape) floats from `data`.
  static TensorBytes Copy(Shape shape, const float* data);
  static TensorBytes FromTensor(const Tensor& tensor) {
    TensorBytes bytes = Copy(tensor.shape, tensor.data());
    bytes.ids = tensor.ids;
    return bytes;
  }
  Tensor ToTensor() const;

  // True when the byte count matches the shape.
  bool consistent() const;
  int64_t num_elements() const { return static_cast<int64_t>(bytes.size() / sizeof(float)); }
  float* data() { return reinterpret_cast<float*>(bytes.data()); }
  const float* data() const { return reinterpret_cast<const float*>(bytes.data()); }
  absl::Span<const float> values() const { return {data(), bytes.size() / sizeof(float)}; }
};

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_TENSOR_H_
