// The one mapping from absl::Status (the core's errors) to grpc::Status (the wire's).
// Stateless; thread-safe.
#ifndef RNNSERVE_SERVER_STATUS_UTIL_H_
#define RNNSERVE_SERVER_STATUS_UTIL_H_

#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace rnnserve {

// absl and gRPC share the canonical code numbering, so the code maps one to one.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// "OK", "INVALID_ARGUMENT", ...: the label value used in metrics.
inline std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_STATUS_UTIL_H_
