// Conversions between the wire Tensor (rnnserve.v1.Tensor) and the core Tensor, shared by the
// server and the C++ client. Stateless free functions; thread-safe. Decoding treats the message
// as hostile: every count is checked before any copy.
#ifndef RNNSERVE_PROTO_TENSOR_CODEC_H_
#define RNNSERVE_PROTO_TENSOR_CODEC_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/tensor.h"
#include "rnnserve/v1/rnn_service.pb.h"

namespace rnnserve {

enum class TensorEncoding { kValues, kRaw };

// True when the message carries no shape and no data (an absent optional tensor).
bool IsEmptyTensor(const v1::Tensor& proto);

// Which encoding a request used (raw when `raw` is set, else values; ids requests are answered
// in values).
TensorEncoding EncodingOf(const v1::Tensor& proto);

// Checks and copies a wire tensor. INVALID_ARGUMENT, naming `what` (e.g. "input"), when more
// than one of values/raw/ids is set (the message names those that came), none is set for a
// non-empty shape, a dimension is negative, the element count overflows or exceeds
// `max_elements`, or the data length does not match the shape. `ids` become floats with
// Tensor::ids set, each id outside [-1, kMaxTokenId] clamped to that range (TokenIdAsFloat):
// whether an id fits the model's vocabulary is the engine's check.
absl::StatusOr<Tensor> DecodeTensor(const v1::Tensor& proto, absl::string_view what,
                                    int64_t max_elements = int64_t{1} << 31);
// An optional tensor field: an empty message (absent) gives nullopt, anything else is decoded
// as above.
absl::StatusOr<std::optional<Tensor>> DecodeOptional(const v1::Tensor& proto,
                                                     absl::string_view what,
                                                     int64_t max_elements = int64_t{1} << 31);
// The same checks, into raw bytes: a `raw` tensor's buffer is moved out of `proto` (left
// without it), not copied; `values` are copied.
absl::StatusOr<TensorBytes> TakeTensorBytes(v1::Tensor* proto, absl::string_view what,
                                            int64_t max_elements = int64_t{1} << 31);

// Writes `tensor` into `proto` in the given encoding (replacing what was there); a tensor of
// token ids (Tensor::ids) goes into `ids` whatever the encoding.
void EncodeTensor(const Tensor& tensor, TensorEncoding encoding, v1::Tensor* proto);
// Same, from a shape and a pointer to row-major floats.
void EncodeTensor(absl::Span<const int64_t> shape, const float* data, TensorEncoding encoding,
                  v1::Tensor* proto);
// Same; in the raw encoding `tensor`'s buffer is moved into `proto`, not copied.
void EncodeTensor(TensorBytes&& tensor, TensorEncoding encoding, v1::Tensor* proto);
// Token ids (row-major, NumElements(shape) of them) into `ids`, exactly as given.
void EncodeIds(absl::Span<const int64_t> shape, absl::Span<const int64_t> ids,
               v1::Tensor* proto);

}  // namespace rnnserve

#endif  // RNNSERVE_PROTO_TENSOR_CODEC_H_
