#include "proto/tensor_codec.h"

#include <cstring>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"

namespace rnnserve {

static_assert(ABSL_IS_LITTLE_ENDIAN, "raw tensors are little-endian float32");

bool IsEmptyTensor(const v1::Tensor& proto) {
  return proto.shape_size() == 0 && proto.values_size() == 0 && proto.raw().empty();
}

TensorEncoding EncodingOf(const v1::Tensor& proto) {
  return proto.raw().empty() ? TensorEncoding::kValues : TensorEncoding::kRaw;
}

absl::StatusOr<Tensor> DecodeTensor(const v1::Tensor& proto, absl::string_view what,
                                    int64_t max_elements) {
  Shape shape(proto.shape().begin(), proto.shape().end());
  const int64_t count = NumElements(shape);
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": shape ", ShapeToString(shape),
        " is invalid (dimensions must be non-negative and their product must fit in int64)"));
  }
  if (count > max_elements) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeToString(shape),
                                                   " has ", count, " elements, more than the ",
                                                   max_elements, " allowed"));
  }
  const bool has_values = proto.values_size() > 0;
  const bool has_raw = !proto.raw().empty();
  if (has_values && has_raw) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": set exactly one of `values` and `raw`, got both"));
  }
  Tensor tensor(std::move(shape), std::vector<float>(count));
  if (has_raw) {
    const size_t want_bytes = static_cast<size_t>(count) * sizeof(float);
    if (proto.raw().size() != want_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": `raw` holds ", proto.raw().size(), " bytes, shape ",
          ShapeToString(tensor.shape), " needs ", want_bytes, " (", count,
          " little-endian float32 values)"));
    }
    std::memcpy(tensor.values.data(), proto.raw().data(), want_bytes);
  } else {
    if (proto.values_size() != count) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": `values` holds ",
                                                     proto.values_size(), " values, shape ",
                                                     ShapeToString(tensor.shape), " needs ",
                                                     count));
    }
    std::copy(proto.values().begin(), proto.values().end(), tensor.values.begin());
  }
  return tensor;
}

void EncodeTensor(absl::Span<const int64_t> shape, const float* data, TensorEncoding encoding,
                  v1::Tensor* proto) {
  proto->Clear();
  int64_t count = 1;
  for (int64_t d : shape) {
    proto->add_shape(d);
    count *= d;
  }
  if (encoding == TensorEncoding::kRaw) {
    proto->mutable_raw()->assign(reinterpret_cast<const char*>(data), count * sizeof(float));
  } else {
    proto->mutable_values()->Add(data, data + count);
  }
}

void EncodeTensor(const Tensor& tensor, TensorEncoding encoding, v1::Tensor* proto) {
  EncodeTensor(tensor.shape, tensor.data(), encoding, proto);
}

}  // namespace rnnserve
