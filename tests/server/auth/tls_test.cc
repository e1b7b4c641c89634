// End-to-end checks of server/auth over real loopback connections: TLS, mTLS, the bearer-token
// processor, the plaintext AuthenticateCall path and certificate rotation. Certificates are
// made at run time by make_test_certs.sh; the server runs gRPC's health service and a generic
// "/test.Whoami/Get" method that answers with the principal the call was given.
#include <grpc/grpc.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server_builder.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/auth_processor.h"
#include "server/auth/tls.h"
#include "server/auth/token_file.h"
#include "tests/temp_dir.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kWhoami[] = "/test.Whoami/Get";
constexpr char kHealthCheck[] = "/grpc.health.v1.Health/Check";
const std::string kServingResponse("\x08\x01", 2);  // HealthCheckResponse{status: SERVING}

// Answers kWhoami with the principal AuthenticateCall finds (UNAUTHENTICATED otherwise) and
// counts how many calls reached it. Without an authenticator it answers "anonymous".
class WhoamiService : public grpc::CallbackGenericService {
 public:
  WhoamiService(const TokenAuthenticator* auth, CallAuthOptions options)
      : auth_(auth), options_(options) {}

  int handled() const { return handled_.load(); }

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    if (ctx->method() != kWhoami) return grpc::CallbackGenericService::CreateReactor(ctx);
    ++handled_;
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      Reactor(grpc::GenericCallbackServerContext* ctx, const TokenAuthenticator* auth,
              CallAuthOptions options) {
        text_ = "anonymous";
        if (auth != nullptr) {
          absl::StatusOr<std::string> principal = AuthenticateCall(*auth, *ctx, options);
          if (!principal.ok()) {
            Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                std::string(principal.status().message())));
            return;
          }
          text_ = *principal;
        }
        StartRead(&request_);
      }
      void OnReadDone(bool ok) override {
        if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "no request"));
        grpc::Slice slice(text_);
        response_ = grpc::ByteBuffer(&slice, 1);
        StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
      }
      void OnDone() override { delete this; }

     private:
      std::string text_;
      grpc::ByteBuffer request_, response_;
    };
    return new Reactor(ctx, auth_, options_);
  }

 private:
  const TokenAuthenticator* auth_;
  const CallAuthOptions options_;
  std::atomic<int> handled_{0};
};

struct CallResult {
  grpc::Status status;
  std::string body;
  std::string server_common_name;  // from the server certificate the client saw
};

CallResult Call(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                const std::string& authorization = "") {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) context.AddMetadata(kAuthorizationMetadata, authorization);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  absl::Notification done;
  CallResult result;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   result.status = std::move(status);
                   done.Notify();
                 });
  done.WaitForNotification();
  std::vector<grpc::Slice> slices;
  if (result.status.ok() && response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) result.body.append(s.begin(), s.end());
  }
  if (auto auth = context.auth_context(); auth != nullptr) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
      result.server_common_name.assign(cn.data(), cn.size());
    }
  }
  return result;
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TempDir;
    ASSERT_TRUE(certs_->ok());
    const std::string command =
        std::string("bash '") + RNNSERVE_MAKE_TEST_CERTS + "' '" + certs_->path() + "'";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    grpc::EnableDefaultHealthCheckService(true);
  }
  static void TearDownTestSuite() { delete certs_; }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  static std::string Path(const std::string& name) { return certs_->File(name); }
  static std::string Pem(const std::string& name) { return ReadFile(Path(name)).value(); }

  static TlsOptions ServerA(const std::string& client_ca = "") {
    TlsOptions options;
    options.cert_file = Path("server-a.crt");
    options.key_file = Path("server-a.key");
    if (!client_ca.empty()) options.client_ca_file = Path(client_ca);
    return options;
  }

  void Start(std::shared_ptr<grpc::ServerCredentials> credentials,
             const TokenAuthenticator* auth = nullptr, CallAuthOptions options = {}) {
    service_ = std::make_unique<WhoamiService>(auth, options);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port_);
    builder.RegisterCallbackGenericService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }

  // A channel with its own connection (no subchannel sharing between channels).
  std::shared_ptr<grpc::Channel> Connect(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_), credentials, args);
  }
  std::shared_ptr<grpc::Channel> ConnectTls(const std::string& ca,
                                            const std::string& client = "") {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Pem(ca + ".crt");
    if (!client.empty()) {
      options.pem_cert_chain = Pem(client + ".crt");
      options.pem_private_key = Pem(client + ".key");
    }
    return Connect(grpc::SslCredentials(options));
  }

  std::shared_ptr<TokenAuthenticator> Tokens() {
    return std::make_shared<TokenAuthenticator>(std::vector<TokenEntry>{
        {"alice", HashToken("token-alice")}, {"bob", HashToken("token-bob")}});
  }

  static TempDir* certs_;
  int port_ = 0;
  std::unique_ptr<WhoamiService> service_;
  std::unique_ptr<grpc::Server> server_;
};
TempDir* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, BadFilesFailUpFrontNamingTheFile) {
  TlsOptions missing = ServerA();
  missing.cert_file = Path("nope.crt");
  absl::Status status = MakeServerCredentials(missing).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("TLS certificate file"));
  EXPECT_THAT(status.message(), HasSubstr(Path("nope.crt")));

  TlsOptions swapped = ServerA();
  swapped.key_file = Path("server-b.key");
  status = MakeServerCredentials(swapped).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("does not hold the private key"));

  TlsOptions key_as_cert = ServerA();
  key_as_cert.cert_file = Path("server-a.key");
  EXPECT_THAT(MakeServerCredentials(key_as_cert).status().message(),
              HasSubstr("no PEM certificate"));

  TlsOptions cert_as_key = ServerA();
  cert_as_key.key_file = Path("server-a.crt");
  EXPECT_THAT(MakeServerCredentials(cert_as_key).status().message(),
              HasSubstr("no unencrypted PEM private key"));

  EXPECT_THAT(MakeServerCredentials(ServerA("ca1.key")).status().message(),
              HasSubstr("TLS client CA file \"" + Path("ca1.key") + "\": no PEM certificate"));
  EXPECT_EQ(MakeServerCredentials(TlsOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeServerCredentials(ServerA("ca1.crt")).ok());
}

TEST_F(TlsTest, TlsServesHealthToClientsTrustingTheCa) {
  Start(MakeServerCredentials(ServerA()).value());
  CallResult ok = Call(ConnectTls("ca1"), kHealthCheck);
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.body, kServingResponse);
  EXPECT_EQ(ok.server_common_name, "server-a");
  // A client that trusts another CA refuses the server; a plaintext client gets nowhere.
  EXPECT_EQ(Call(ConnectTls("ca2"), kHealthCheck).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Call(Connect(grpc::InsecureChannelCredentials()), kHealthCheck).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsRequiresACertificateFromTheClientCa) {
  Start(MakeServerCredentials(ServerA("ca1.crt")).value());
  EXPECT_FALSE(Call(ConnectTls("ca1"), kHealthCheck).status.ok());             // no cert
  EXPECT_FALSE(Call(ConnectTls("ca1", "client2"), kHealthCheck).status.ok());  // other CA
  CallResult ok = Call(ConnectTls("ca1", "client1"), kHealthCheck);
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.body, kServingResponse);
}

TEST_F(TlsTest, BearerTokenProcessorGatesEveryCallBeforeItsHandler) {
  std::shared_ptr<TokenAuthenticator> tokens = Tokens();
  std::shared_ptr<grpc::ServerCredentials> credentials = MakeServerCredentials(ServerA()).value();
  credentials->SetAuthMetadataProcessor(
      std::make_shared<BearerTokenProcessor>(tokens, CallAuthOptions{}));
  Start(credentials, tokens.get());
  std::shared_ptr<grpc::Channel> channel = ConnectTls("ca1");

  CallResult missing = Call(channel, kWhoami);
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.status.error_message(), HasSubstr("missing credentials"));
  CallResult wrong = Call(channel, kWhoami, "Bearer token-mallory");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.status.error_message(), HasSubstr("unknown bearer token"));
  EXPECT_THAT(wrong.status.error_message(), Not(HasSubstr("mallory")));
  EXPECT_EQ(Call(channel, kWhoami, "Basic dXNlcjpwYXNz").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(service_->handled(), 0);  // refused by the processor: no handler ran

  CallResult alice = Call(channel, kWhoami, "Bearer token-alice");
  ASSERT_TRUE(alice.status.ok()) << alice.status.error_message();
  EXPECT_EQ(alice.body, "alice");
  // The same connection: each call gets its own principal, and a later call without a token
  // is not carried by an earlier one.
  EXPECT_EQ(Call(channel, kWhoami, "Bearer token-bob").body, "bob");
  EXPECT_EQ(Call(channel, kWhoami).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(channel, kWhoami, "Bearer token-alice").body, "alice");
  EXPECT_EQ(service_->handled(), 3);
  // Methods with no handler of ours are covered too (probes use the plaintext health port).
  EXPECT_EQ(Call(channel, kHealthCheck).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(channel, kHealthCheck, "Bearer token-bob").body, kServingResponse);
}

TEST_F(TlsTest, ProcessorFollowsTokenReloads) {
  TempDir temp;
  ASSERT_TRUE(temp.ok());
  const std::string path = temp.File("tokens");
  auto line = [](const std::string& who, const std::string& token) {
    return who + " " + TokenHashHex(HashToken(token)) + "\n";
  };
  ASSERT_TRUE(WriteFile(path, line("alice", "token-alice")).ok());
  std::shared_ptr<TokenAuthenticator> tokens = TokenAuthenticator::FromFile(path).value();
  std::shared_ptr<grpc::ServerCredentials> credentials = MakeServerCredentials(ServerA()).value();
  credentials->SetAuthMetadataProcessor(
      std::make_shared<BearerTokenProcessor>(tokens, CallAuthOptions{}));
  Start(credentials, tokens.get());
  std::shared_ptr<grpc::Channel> channel = ConnectTls("ca1");
  EXPECT_EQ(Call(channel, kWhoami, "Bearer token-alice").body, "alice");

  ASSERT_TRUE(WriteFile(path, line("carol", "token-carol")).ok());  // alice revoked
  ASSERT_TRUE(tokens->ReloadIfChanged().value());
  EXPECT_EQ(Call(channel, kWhoami, "Bearer token-alice").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(channel, kWhoami, "Bearer token-carol").body, "carol");
}

TEST_F(TlsTest, ClientCertificateSubjectCanBeThePrincipal) {
  std::shared_ptr<TokenAuthenticator> tokens = Tokens();
  const CallAuthOptions options{/*accept_client_certificate=*/true};
  std::shared_ptr<grpc::ServerCredentials> credentials =
      MakeServerCredentials(ServerA("ca1.crt")).value();
  credentials->SetAuthMetadataProcessor(std::make_shared<BearerTokenProcessor>(tokens, options));
  Start(credentials, tokens.get(), options);
  std::shared_ptr<grpc::Channel> channel = ConnectTls("ca1", "client1");
  CallResult by_cert = Call(channel, kWhoami);
  ASSERT_TRUE(by_cert.status.ok()) << by_cert.status.error_message();
  EXPECT_THAT(by_cert.body, HasSubstr("CN=client1"));
  EXPECT_THAT(by_cert.body, HasSubstr("O=rnnserve-test"));
  EXPECT_EQ(Call(channel, kWhoami, "Bearer token-alice").body, "alice");
  EXPECT_THAT(Call(channel, kWhoami).body, HasSubstr("CN=client1"));
  // A token, when sent, is checked even though the certificate alone would do.
  EXPECT_EQ(Call(channel, kWhoami, "Bearer wrong").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(TlsTest, PlaintextHandlersAuthenticateTheCallThemselves) {
  std::shared_ptr<TokenAuthenticator> tokens = Tokens();
  Start(grpc::InsecureServerCredentials(), tokens.get(), CallAuthOptions{true});
  std::shared_ptr<grpc::Channel> channel = Connect(grpc::InsecureChannelCredentials());
  EXPECT_EQ(Call(channel, kWhoami).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(channel, kWhoami, "Bearer nope").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  CallResult alice = Call(channel, kWhoami, "Bearer token-alice");
  ASSERT_TRUE(alice.status.ok()) << alice.status.error_message();
  EXPECT_EQ(alice.body, "alice");
}

TEST_F(TlsTest, RotatedCertificateReachesNewConnectionsWhileOldOnesStayUp) {
  const std::string cert = Path("rotating.crt"), key = Path("rotating.key");
  ASSERT_TRUE(WriteFile(cert, Pem("server-a.crt")).ok());
  ASSERT_TRUE(WriteFile(key, Pem("server-a.key")).ok());
  TlsOptions options;
  options.cert_file = cert;
  options.key_file = key;
  options.refresh_interval = absl::Seconds(1);
  Start(MakeServerCredentials(options).value());

  std::shared_ptr<grpc::Channel> old_channel = ConnectTls("ca1");
  ASSERT_EQ(Call(old_channel, kHealthCheck).server_common_name, "server-a");

  ASSERT_TRUE(WriteFile(key, Pem("server-b.key")).ok());
  ASSERT_TRUE(WriteFile(cert, Pem("server-b.crt")).ok());
  // Poll with fresh connections until the watcher has re-read the files (bounded).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::string seen;
  int attempts = 0;
  while (absl::Now() < deadline) {
    ++attempts;
    CallResult result = Call(ConnectTls("ca1"), kHealthCheck);
    if (result.status.ok()) seen = result.server_common_name;
    if (seen == "server-b") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(seen, "server-b") << "after " << attempts << " connections";

  // The connection made before the rotation still works and still has the old certificate.
  CallResult old_result = Call(old_channel, kHealthCheck);
  ASSERT_TRUE(old_result.status.ok()) << old_result.status.error_message();
  EXPECT_EQ(old_result.server_common_name, "server-a");
}

}  // namespace
}  // namespace rnnserve
