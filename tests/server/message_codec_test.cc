// message_codec: wire bytes that do not parse, or exceed the limit, are INVALID_ARGUMENT naming
// the message type and the size; valid bytes round-trip.
#include "server/message_codec.h"

#include <string>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rnnserve/v1/rnn_service.pb.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

TEST(MessageCodecTest, RoundTrip) {
  v1::StreamRequest request;
  request.set_session_id("s-1");
  request.set_request_id(7);
  request.mutable_input()->add_shape(2);
  request.mutable_input()->add_values(1.5f);
  request.mutable_input()->add_values(-2.0f);
  grpc::ByteBuffer wire;
  SerializeMessage(request, &wire);
  EXPECT_EQ(wire.Length(), request.ByteSizeLong());
  v1::StreamRequest parsed;
  parsed.set_model("left over");
  ASSERT_TRUE(ParseMessage(wire, 1024, &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), request.SerializeAsString());
}

TEST(MessageCodecTest, MalformedBytesAreInvalidArgumentNamingTheType) {
  // Field 1 (length-delimited) says 5 bytes and has 2.
  v1::ForwardRequest request;
  const absl::Status status = ParseMessage(Bytes(std::string("\x0a\x05" "ab", 4)), 1024, &request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("rnnserve.v1.ForwardRequest"));
  EXPECT_THAT(status.message(), HasSubstr("4 bytes"));
}

TEST(MessageCodecTest, InvalidUtf8InAStringFieldIsRefused) {
  v1::GetSessionRequest request;
  const absl::Status status =
      ParseMessage(Bytes(std::string("\x0a\x02\xff\xfe", 4)), 1024, &request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("rnnserve.v1.GetSessionRequest"));
}

TEST(MessageCodecTest, OverTheLimitIsRefusedBeforeParsing) {
  v1::StreamRequest request;
  request.set_session_id(std::string(100, 'x'));
  grpc::ByteBuffer wire;
  SerializeMessage(request, &wire);
  const absl::Status status = ParseMessage(wire, 50, &request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("exceeds the message limit of 50 bytes"));
  EXPECT_TRUE(request.session_id().empty());
}

TEST(MessageCodecTest, EmptyBytesAreAnEmptyMessage) {
  v1::ListModelsRequest request;
  EXPECT_TRUE(ParseMessage(grpc::ByteBuffer(), 1024, &request).ok());
}

}  // namespace
}  // namespace rnnserve
