// RnnServer's security options in process: start-up validation of the flag combinations, and
// token authentication on a plaintext port (the handlers' own check; the TLS port's processor
// and mTLS are covered by tests/server/auth and test_security.py).
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"
#include "server/server.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

ServerOptions LocalOptions() {
  ServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.metrics_port = -1;
  options.serving.threads = 1;
  return options;
}

TEST(ServerSecurityTest, BadCombinationsAreRefusedNamingTheFlag) {
  const auto refused = [](ServerOptions options, const std::string& expected) {
    const absl::Status status = ValidateServerOptions(options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << expected;
    EXPECT_THAT(std::string(status.message()), HasSubstr(expected));
  };
  EXPECT_TRUE(ValidateServerOptions(LocalOptions()).ok());
  const std::vector<std::pair<std::function<void(ServerOptions&)>, std::string>> cases = {
      {[](ServerOptions& o) { o.port = 70000; }, "--port=70000"},  // would wrap to 4464
      {[](ServerOptions& o) { o.port = -1; }, "--port=-1"},
      {[](ServerOptions& o) { o.metrics_port = 65536; }, "--metrics_port"},
      {[](ServerOptions& o) { o.tls_cert_file = "cert.pem"; }, "--tls_key_file"},
      {[](ServerOptions& o) { o.tls_key_file = "key.pem"; }, "--tls_cert_file"},
      {[](ServerOptions& o) { o.tls_client_ca_file = "ca.pem"; }, "--tls_client_ca_file"},
      {[](ServerOptions& o) { o.health_port = 0; }, "--health_port"},
      {[](ServerOptions& o) { o.log_level = "verbose"; }, "--log_level"},
      {[](ServerOptions& o) { o.serving.max_sessions_per_principal = -1; },
       "--max_sessions_per_principal"},
      {[](ServerOptions& o) { o.max_message_bytes = 0; }, "--max_message_bytes=0"},
      {[](ServerOptions& o) { o.max_message_bytes = 1023; }, "--max_message_bytes=1023"},
      {[](ServerOptions& o) { o.service.max_in_flight_per_stream = 0; },
       "--max_in_flight_per_stream=0"},
      {[](ServerOptions& o) { o.serving.max_batch = 0; }, "--max_batch=0"},
      {[](ServerOptions& o) { o.serving.max_sessions = 0; }, "--max_sessions=0"},
      {[](ServerOptions& o) { o.serving.max_state_bytes = -5; }, "--max_state_bytes=-5"},
      {[](ServerOptions& o) { o.serving.max_buffered_steps = 0; }, "--max_buffered_steps=0"},
      {[](ServerOptions& o) { o.serving.max_tombstone_bytes = -1; },
       "--max_tombstone_bytes=-1"},
      {[](ServerOptions& o) { o.serving.threads = -1; }, "--threads=-1"},
      {[](ServerOptions& o) { o.serving.session_idle_timeout = absl::ZeroDuration(); },
       "--session_idle_timeout=0"},
      {[](ServerOptions& o) { o.serving.evict_idle_after = absl::Seconds(-1); },
       "--evict_idle_after=-1s"},
      {[](ServerOptions& o) { o.drain_timeout = absl::Seconds(-1); }, "--drain_timeout=-1s"},
      {[](ServerOptions& o) { o.service.max_stream_buffered_bytes = 1000; },
       "--max_stream_buffered_bytes=1000"},
      {[](ServerOptions& o) { o.service.stream_idle_timeout = absl::Seconds(-1); },
       "--stream_idle_timeout=-1s"},
      {[](ServerOptions& o) { o.max_concurrent_streams_per_connection = 0; },
       "--max_concurrent_streams_per_connection=0"},
      {[](ServerOptions& o) { o.keepalive_time = absl::ZeroDuration(); }, "--keepalive_time=0"},
      {[](ServerOptions& o) { o.keepalive_timeout = absl::Hours(1000); },
       "--keepalive_timeout=1000h"},
      {[](ServerOptions& o) { o.keepalive_min_client_ping_interval = absl::Seconds(-1); },
       "--keepalive_min_client_ping_interval=-1s"},
  };
  for (const auto& [change, expected] : cases) {
    ServerOptions options = LocalOptions();
    change(options);
    refused(options, expected);
  }
  ServerOptions options = LocalOptions();
  // Start() refuses the same, before binding anything.
  options.port = 70000;
  EXPECT_EQ(RnnServer::Start(options).status().code(), absl::StatusCode::kInvalidArgument);
}

class PlaintextTokensTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_file_ = absl::StrCat(::testing::TempDir(), "/server_security_test_tokens");
    std::ofstream(tokens_file_) << "alice " << TokenHashHex(HashToken("alice-token")) << "\n"
                                << "bob " << TokenHashHex(HashToken("bob-token")) << "\n";
    ServerOptions options = LocalOptions();
    options.auth_tokens_file = tokens_file_;
    auto server = RnnServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    stub_ = v1::RnnService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { std::remove(tokens_file_.c_str()); }

  static void Authorize(grpc::ClientContext* context, const std::string& token) {
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  }

  std::string tokens_file_;
  std::unique_ptr<RnnServer> server_;
  std::unique_ptr<v1::RnnService::Stub> stub_;
};

TEST_F(PlaintextTokensTest, EveryRpcNeedsAValidTokenAndSessionsAreTheirOwners) {
  for (const std::string token : {"", "wrong", "alice-tokenx"}) {
    grpc::ClientContext list;
    Authorize(&list, token);
    v1::ListModelsResponse models;
    EXPECT_EQ(stub_->ListModels(&list, {}, &models).error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << "token '" << token << "'";
    grpc::ClientContext get;
    Authorize(&get, token);
    v1::SessionInfo info;
    EXPECT_EQ(stub_->GetSession(&get, {}, &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext stream_context;
    Authorize(&stream_context, token);
    auto stream = stub_->Stream(&stream_context);
    v1::StreamResponse response;
    EXPECT_FALSE(stream->Read(&response));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }

  // Alice starts a start-only session; bob cannot see or close it, alice can.
  grpc::ClientContext stream_context;
  Authorize(&stream_context, "alice-token");
  auto stream = stub_->Stream(&stream_context);
  v1::StreamRequest start;
  start.set_model("demo");
  start.set_start(true);
  start.set_session_id("alice-1");
  ASSERT_TRUE(stream->Write(start));
  v1::StreamResponse started;
  ASSERT_TRUE(stream->Read(&started));
  ASSERT_EQ(started.error_code(), 0) << started.error_message();
  stream->WritesDone();
  ASSERT_TRUE(stream->Finish().ok());

  v1::GetSessionRequest request;
  request.set_session_id("alice-1");
  v1::SessionInfo info;
  grpc::ClientContext bob_get;
  Authorize(&bob_get, "bob-token");
  EXPECT_EQ(stub_->GetSession(&bob_get, request, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::CloseSessionRequest close;
  close.set_session_id("alice-1");
  v1::CloseSessionResponse closed;
  grpc::ClientContext bob_close;
  Authorize(&bob_close, "bob-token");
  EXPECT_EQ(stub_->CloseSession(&bob_close, close, &closed).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext alice_close;
  Authorize(&alice_close, "alice-token");
  const grpc::Status status = stub_->CloseSession(&alice_close, close, &closed);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(closed.session().session_id(), "alice-1");
}

}  // namespace
}  // namespace rnnserve
