#include "proto/status_codec.h"

#include "absl/strings/str_cat.h"

namespace rnnserve {

std::string WireMessage(const absl::Status& status) {
  const absl::string_view message = status.message();
  if (message.size() <= kMaxWireMessageBytes) return std::string(message);
  size_t keep = kMaxWireMessageBytes;
  // Back off over UTF-8 continuation bytes so no character is cut in half.
  while (keep > 0 && (static_cast<unsigned char>(message[keep]) & 0xC0) == 0x80) --keep;
  return absl::StrCat(message.substr(0, keep), "...(+", message.size() - keep, " bytes)");
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), WireMessage(status));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

int32_t ToStreamErrorCode(const absl::Status& status) {
  return static_cast<int32_t>(status.code());
}

absl::Status FromStreamError(int32_t error_code, absl::string_view error_message) {
  if (error_code == 0) return absl::OkStatus();
  if (error_code < 0 || error_code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(
        absl::StrCat("error code ", error_code, " (not a gRPC code): ", error_message));
  }
  return absl::Status(static_cast<absl::StatusCode>(error_code), error_message);
}

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace rnnserve
