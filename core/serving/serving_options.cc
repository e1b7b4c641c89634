#include "core/serving/serving_options.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/tensor.h"

namespace rnnserve {

absl::Status CheckFinite(absl::Span<const float> values, const char* what,
                         const ServingOptions& options) {
  if (options.allow_non_finite) return absl::OkStatus();
  const std::optional<int64_t> bad = FirstNonFinite(values.data(), values.size());
  if (!bad.has_value()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, " holds a non-finite value (", values[*bad], ") at flat index ", *bad,
      "; send finite numbers, or start the server with --allow_non_finite"));
}

namespace {
constexpr int64_t kBytesPerFloat = 5;
// A session id (128 bytes at most), a model name (a folder name, 255 at most), shapes, the
// chunk index and protobuf framing fit well within this.
constexpr int64_t kResponseOverheadBytes = 1024;
}  // namespace

int64_t ResponseBytesBound(int64_t floats) {
  return floats * kBytesPerFloat + kResponseOverheadBytes;
}

absl::Status CheckResponseFits(int64_t output_floats, int64_t state_floats,
                               const ServingOptions& options, const char* advice) {
  if (options.max_response_bytes <= 0) return absl::OkStatus();
  const int64_t bytes = ResponseBytesBound(output_floats + state_floats);
  if (bytes <= options.max_response_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the response would take up to ", bytes, " bytes (", output_floats, " output and ",
      state_floats, " state values), over the message limit of ", options.max_response_bytes,
      " bytes (--max_message_bytes); nothing was computed or applied: ", advice));
}

absl::Status CheckStateFits(int64_t floats_per_row, int64_t batch,
                            const ServingOptions& options) {
  if (options.max_response_bytes <= 0 || floats_per_row <= 0) return absl::OkStatus();
  const int64_t bytes = ResponseBytesBound(floats_per_row * batch);
  if (bytes <= options.max_response_bytes) return absl::OkStatus();
  const int64_t largest = std::max<int64_t>(
      0, (options.max_response_bytes - kResponseOverheadBytes) / kBytesPerFloat / floats_per_row);
  return absl::ResourceExhaustedError(absl::StrCat(
      "a session with batch size N=", batch, " has a state (h_n, and c_n for an LSTM) of up to ",
      bytes,
      " bytes, which could never be returned in one message (limit ", options.max_response_bytes,
      " bytes, --max_message_bytes); the largest N that fits is ", largest,
      ": split the batch over several sessions"));
}

}  // namespace rnnserve
