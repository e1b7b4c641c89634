// Wire bytes <-> protobuf messages for the service's raw (ByteBuffer) methods. gRPC's own
// deserialization answers a request that does not parse with a bare UNIMPLEMENTED (unary) or an
// OK end of the stream; parsing here lets the handlers answer INVALID_ARGUMENT with a message
// that names the message type and its size.
//
// Stateless free functions; thread-safe.
#ifndef RNNSERVE_SERVER_MESSAGE_CODEC_H_
#define RNNSERVE_SERVER_MESSAGE_CODEC_H_

#include <cstdint>

#include <google/protobuf/message.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"

namespace rnnserve {

// Parses `buffer` into `message` (cleared first). The size is checked before any parsing:
// INVALID_ARGUMENT when it exceeds `max_bytes` or when the bytes are not a valid message of
// the type; the message names the type and what came.
absl::Status ParseMessage(const grpc::ByteBuffer& buffer, int64_t max_bytes,
                          google::protobuf::Message* message);

// `message` as wire bytes (replacing what `buffer` held).
void SerializeMessage(const google::protobuf::Message& message, grpc::ByteBuffer* buffer);

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_MESSAGE_CODEC_H_
