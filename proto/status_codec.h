// The one mapping between absl::Status (what base, the core and the client libraries return)
// and the wire's statuses, in both directions: grpc::Status for a call, and the
// (error_code, error_message) pair a StreamResponse carries for one request on a stream.
// Stateless free functions; thread-safe.
#ifndef RNNSERVE_PROTO_STATUS_CODEC_H_
#define RNNSERVE_PROTO_STATUS_CODEC_H_

#include <cstdint>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rnnserve {

// Longest status message put on the wire. gRPC sends a call's message in the trailers, and a
// trailer over ~8 KiB turns the call into RESOURCE_EXHAUSTED; cutting the message here keeps
// the true code whatever a message echoes.
inline constexpr size_t kMaxWireMessageBytes = 1024;

// `status`'s message, cut to kMaxWireMessageBytes (never inside a UTF-8 sequence) with
// "...(+N bytes)" appended when anything was left out.
std::string WireMessage(const absl::Status& status);

// absl and gRPC share the canonical code numbering (google.rpc.Code), so codes map one to one.
// The message goes through WireMessage.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// A request's status as a StreamResponse's error_code/error_message (0 and "" when OK).
int32_t ToStreamErrorCode(const absl::Status& status);
// A StreamResponse's error_code/error_message: 0 is OK; a number that is no gRPC code becomes
// UNKNOWN, naming the number, so a hostile or newer server cannot produce an invalid status.
absl::Status FromStreamError(int32_t error_code, absl::string_view error_message);

// "OK", "INVALID_ARGUMENT", ...: the code's canonical name, as metrics label it.
std::string CodeName(absl::StatusCode code);

}  // namespace rnnserve

#endif  // RNNSERVE_PROTO_STATUS_CODEC_H_
