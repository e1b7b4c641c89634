#include "server/message_codec.h"

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include "absl/strings/str_cat.h"

namespace rnnserve {

absl::Status ParseMessage(const grpc::ByteBuffer& buffer, int64_t max_bytes,
                          google::protobuf::Message* message) {
  message->Clear();
  const int64_t size = static_cast<int64_t>(buffer.Length());
  const std::string& type = message->GetDescriptor()->full_name();
  if (size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("a ", type, " of ", size,
                                                   " bytes exceeds the message limit of ",
                                                   max_bytes, " bytes"));
  }
  if (size == 0) return absl::OkStatus();  // every field at its default (an empty buffer may
                                           // hold no grpc_byte_buffer to read)
  // The reader takes a non-const buffer, but only reads it (a reference on its slices).
  grpc::ByteBuffer view(buffer);
  grpc::ProtoBufferReader reader(&view);
  if (!reader.status().ok() || !message->ParseFromZeroCopyStream(&reader)) {
    message->Clear();
    return absl::InvalidArgumentError(absl::StrCat(
        "the request (", size, " bytes) is not a valid ", type,
        " message (malformed protobuf wire format); nothing was applied"));
  }
  return absl::OkStatus();
}

void SerializeMessage(const google::protobuf::Message& message, grpc::ByteBuffer* buffer) {
  bool own_buffer = false;
  // Cannot fail for a message under the 2 GiB protobuf limit (responses are sized against
  // --max_message_bytes before they are built).
  grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::Message>(message, buffer,
                                                                              &own_buffer);
}

}  // namespace rnnserve
