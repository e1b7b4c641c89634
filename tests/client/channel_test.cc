// client/channel.h: the option checks (cert without key and the like refused, the token never
// echoed), PEM files named when missing, empty or not PEM, and the token interceptor, seen by
// a plaintext loopback server that answers a call with the authorization metadata it got (the
// TLS path and streams are tls_client_test's).
#include "client/channel.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>

#include <memory>
#include <string>

#include "absl/synchronization/notification.h"
#include "base/file_io.h"
#include "client/rnnserve_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace rnnserve {
namespace client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPemBlock[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

TEST(ValidateChannelOptionsTest, CertAndKeyComeTogetherAndOnlyWithTls) {
  ClientOptions options;
  EXPECT_TRUE(ValidateChannelOptions(options).ok());
  options.tls_ca_file = "ca.crt";
  options.tls_cert_file = "client.crt";
  absl::Status status = ValidateChannelOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("needs its private key (tls_key_file)"));

  options.tls_cert_file = "";
  options.tls_key_file = "client.key";
  status = ValidateChannelOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("needs its certificate (tls_cert_file)"));

  options.tls_cert_file = "client.crt";
  EXPECT_TRUE(ValidateChannelOptions(options).ok());
  options.tls_ca_file = "";
  status = ValidateChannelOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("set tls_ca_file"));
}

TEST(ValidateChannelOptionsTest, TokenMustBeAMetadataValueAndIsNeverEchoed) {
  ClientOptions options;
  for (const std::string bad : {"sec ret", "sec\nret", "sec\x01ret", "s\xc3\xa9" "cret"}) {
    options.token = bad;
    absl::Status status = ValidateChannelOptions(options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("printable ASCII"));
    EXPECT_THAT(status.message(), Not(HasSubstr("ret")));
  }
  options.token = "abc.DEF-123_~+/=";
  EXPECT_TRUE(ValidateChannelOptions(options).ok());
  options.max_message_bytes = 0;
  EXPECT_FALSE(ValidateChannelOptions(options).ok());
}

TEST(MakeChannelCredentialsTest, NamesTheFileThatIsMissingEmptyOrNotPem) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(WriteFile(dir.File("ca.crt"), kPemBlock).ok());
  ASSERT_TRUE(WriteFile(dir.File("empty.crt"), "").ok());
  ASSERT_TRUE(WriteFile(dir.File("text.key"), "not a key\n").ok());

  ClientOptions options;
  options.tls_ca_file = dir.File("missing.crt");
  absl::Status status = MakeChannelCredentials(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("TLS CA file '" + dir.File("missing.crt") + "'"));

  options.tls_ca_file = dir.File("empty.crt");
  status = MakeChannelCredentials(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(dir.File("empty.crt")));
  EXPECT_THAT(status.message(), HasSubstr("it is empty"));

  options.tls_ca_file = dir.File("ca.crt");
  options.tls_cert_file = dir.File("ca.crt");
  options.tls_key_file = dir.File("text.key");
  status = MakeChannelCredentials(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("TLS client key file '" + dir.File("text.key") + "' holds no PEM block"));

  options.tls_cert_file = dir.File("missing.crt");
  status = MakeChannelCredentials(options).status();
  EXPECT_THAT(status.message(), HasSubstr("TLS client certificate file"));

  options.tls_key_file = dir.File("ca.crt");
  options.tls_cert_file = dir.File("ca.crt");
  EXPECT_TRUE(MakeChannelCredentials(options).ok());

  // Connect fails up front, before anything is sent, with the same message.
  options.tls_ca_file = dir.File("missing.crt");
  absl::StatusOr<std::unique_ptr<RnnServeClient>> client =
      RnnServeClient::Connect("127.0.0.1:1", options);
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(client.status().message(), HasSubstr(dir.File("missing.crt")));
}

// Answers every call with the authorization metadata it carried
// ("<none>" without), then ends it.
class EchoAuthorization : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      // Answers at once; the request, unread, is discarded with the call.
      explicit Reactor(grpc::GenericCallbackServerContext* ctx) {
        const auto& metadata = ctx->client_metadata();
        auto it = metadata.find(kAuthorizationKey);
        grpc::Slice answer(it == metadata.end() ? std::string("<none>")
                                                : std::string(it->second.data(), it->second.size()));
        answer_ = grpc::ByteBuffer(&answer, 1);
        StartWriteAndFinish(&answer_, grpc::WriteOptions(), grpc::Status::OK);
      }
      void OnDone() override { delete this; }

     private:
      grpc::ByteBuffer answer_;
    };
    return new Reactor(ctx);
  }
};

class TokenInterceptorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterCallbackGenericService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now()); }

  // The authorization the server saw on a call over a MakeChannel channel. (Streams carry it
  // too: tls_client_test streams through a server that refuses calls without it.)
  std::string Seen(const ClientOptions& options) {
    auto channel = MakeChannel("127.0.0.1:" + std::to_string(port_), options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    grpc::GenericStub stub(*channel);
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1);
    std::string seen;
    {
      grpc::ClientContext context;
      grpc::ByteBuffer response;
      absl::Notification done;
      grpc::Status status;
      stub.UnaryCall(&context, "/test.Echo/Unary", grpc::StubOptions(), &request, &response,
                     [&](grpc::Status s) {
                       status = std::move(s);
                       done.Notify();
                     });
      done.WaitForNotification();
      EXPECT_TRUE(status.ok()) << status.error_message();
      seen = Text(response);
    }
    return seen;
  }

  static std::string Text(const grpc::ByteBuffer& buffer) {
    std::vector<grpc::Slice> slices;
    std::string text;
    if (buffer.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) text.append(s.begin(), s.end());
    }
    return text;
  }

  int port_ = 0;
  EchoAuthorization service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(TokenInterceptorTest, SendsTheTokenOnEveryCallEvenOverPlaintext) {
  ClientOptions options;
  EXPECT_EQ(Seen(options), "<none>");
  options.token = "s3cret-token";
  EXPECT_EQ(Seen(options), "Bearer s3cret-token");
}

}  // namespace
}  // namespace client
}  // namespace rnnserve
