#include "proto/tensor_codec.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rnnserve {

static_assert(ABSL_IS_LITTLE_ENDIAN, "raw tensors are little-endian float32");

bool IsEmptyTensor(const v1::Tensor& proto) {
  return proto.shape_size() == 0 && proto.values_size() == 0 && proto.raw().empty() &&
         proto.ids_size() == 0;
}

TensorEncoding EncodingOf(const v1::Tensor& proto) {
  return proto.raw().empty() ? TensorEncoding::kValues : TensorEncoding::kRaw;
}

namespace {

// Checks a wire tensor's shape against its data; returns the shape.
absl::StatusOr<Shape> CheckedShape(const v1::Tensor& proto, absl::string_view what,
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
  // Which data fields came, named as the proto names them.
  std::vector<absl::string_view> present;
  if (proto.values_size() > 0) present.push_back("`values`");
  if (!proto.raw().empty()) present.push_back("`raw`");
  if (proto.ids_size() > 0) present.push_back("`ids`");
  if (present.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": set exactly one of `values`, `raw` and `ids`, got ",
                     absl::StrJoin(present, " and ")));
  }
  if (present.empty() && count > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": shape ", ShapeToString(shape), " needs ", count,
        " elements and none came: set one of `values`, `raw` (float32) and `ids` (token ids)"));
  }
  if (!proto.raw().empty()) {
    const size_t want_bytes = static_cast<size_t>(count) * sizeof(float);
    if (proto.raw().size() != want_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": `raw` holds ", proto.raw().size(), " bytes, shape ", ShapeToString(shape),
          " needs ", want_bytes, " (", count, " little-endian float32 values)"));
    }
  } else if (proto.ids_size() > 0) {
    if (proto.ids_size() != count) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": `ids` holds ", proto.ids_size(),
                                                     " ids, shape ", ShapeToString(shape),
                                                     " needs ", count));
    }
  } else if (proto.values_size() != count) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": `values` holds ",
                                                   proto.values_size(), " values, shape ",
                                                   ShapeToString(shape), " needs ", count));
  }
  return shape;
}

// The ids as floats (TokenIdAsFloat: out-of-range ids clamped, still out of range).
void IdsAsFloats(const v1::Tensor& proto, float* out) {
  for (int64_t id : proto.ids()) *out++ = TokenIdAsFloat(id);
}

}  // namespace

absl::StatusOr<Tensor> DecodeTensor(const v1::Tensor& proto, absl::string_view what,
                                    int64_t max_elements) {
  absl::StatusOr<Shape> shape = CheckedShape(proto, what, max_elements);
  if (!shape.ok()) return shape.status();
  Tensor tensor(std::move(shape).value(), {});
  if (proto.ids_size() > 0) {
    tensor.values.resize(proto.ids_size());
    IdsAsFloats(proto, tensor.values.data());
    tensor.ids = true;
  } else if (!proto.raw().empty()) {
    tensor.values.resize(proto.raw().size() / sizeof(float));
    std::memcpy(tensor.values.data(), proto.raw().data(), proto.raw().size());
  } else {
    tensor.values.assign(proto.values().begin(), proto.values().end());
  }
  return tensor;
}

absl::StatusOr<std::optional<Tensor>> DecodeOptional(const v1::Tensor& proto,
                                                     absl::string_view what,
                                                     int64_t max_elements) {
  if (IsEmptyTensor(proto)) return std::optional<Tensor>();
  absl::StatusOr<Tensor> tensor = DecodeTensor(proto, what, max_elements);
  if (!tensor.ok()) return tensor.status();
  return std::optional<Tensor>(std::move(tensor).value());
}

absl::StatusOr<TensorBytes> TakeTensorBytes(v1::Tensor* proto, absl::string_view what,
                                            int64_t max_elements) {
  absl::StatusOr<Shape> shape = CheckedShape(*proto, what, max_elements);
  if (!shape.ok()) return shape.status();
  if (proto->ids_size() > 0) {
    TensorBytes tensor = TensorBytes::Zeros(std::move(shape).value());
    IdsAsFloats(*proto, tensor.data());
    tensor.ids = true;
    return tensor;
  }
  if (proto->raw().empty()) {
    return TensorBytes::Copy(std::move(shape).value(), proto->values().data());
  }
  TensorBytes tensor(std::move(shape).value(), std::move(*proto->mutable_raw()));
  proto->clear_raw();
  // A std::string's buffer is aligned for floats; should one ever not be, copy it to one that is.
  if (reinterpret_cast<uintptr_t>(tensor.bytes.data()) % alignof(float) != 0) {
    tensor.bytes = std::string(tensor.bytes.begin(), tensor.bytes.end());
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

void EncodeIds(absl::Span<const int64_t> shape, absl::Span<const int64_t> ids,
               v1::Tensor* proto) {
  proto->Clear();
  proto->mutable_shape()->Add(shape.begin(), shape.end());
  proto->mutable_ids()->Add(ids.begin(), ids.end());
}

void EncodeTensor(const Tensor& tensor, TensorEncoding encoding, v1::Tensor* proto) {
  if (tensor.ids) {
    proto->Clear();
    proto->mutable_shape()->Add(tensor.shape.begin(), tensor.shape.end());
    proto->mutable_ids()->Reserve(static_cast<int>(tensor.values.size()));
    // The floats came from TokenIdAsFloat; anything else a caller put there is no valid id.
    for (float id : tensor.values) {
      proto->add_ids(id >= -1.0f && id <= static_cast<float>(kMaxTokenId)
                         ? static_cast<int64_t>(id)
                         : -1);
    }
    return;
  }
  EncodeTensor(tensor.shape, tensor.data(), encoding, proto);
}

void EncodeTensor(TensorBytes&& tensor, TensorEncoding encoding, v1::Tensor* proto) {
  if (tensor.ids) {
    EncodeTensor(tensor.ToTensor(), encoding, proto);
    return;
  }
  if (encoding != TensorEncoding::kRaw) {
    EncodeTensor(tensor.shape, tensor.data(), encoding, proto);
    return;
  }
  proto->Clear();
  proto->mutable_shape()->Add(tensor.shape.begin(), tensor.shape.end());
  proto->set_raw(std::move(tensor.bytes));
}

}  // namespace rnnserve
