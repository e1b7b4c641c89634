// The C++ client and the CLI's commands against a real TLS server: the RnnService over a
// ServingCore with the demo model, on gRPC TLS credentials from server/auth
// (MakeServerCredentials) with the BearerTokenProcessor gating every call, as the server binary
// does with --tls_cert_file and --auth_tokens_file. Two servers: TLS (server-a's certificate)
// and mutual TLS (client certificates from ca1 required), both wanting a token. Certificates
// come from tests/server/auth/make_test_certs.sh at run time.
#include <grpcpp/server_builder.h>

#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "client/channel.h"
#include "client/cli/commands.h"
#include "client/cli/proto_json.h"
#include "client/rnnserve_client.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/auth_processor.h"
#include "server/auth/tls.h"
#include "server/auth/token_file.h"
#include "server/metrics.h"
#include "server/rnn_service.h"
#include "tests/temp_dir.h"
#include "tests/test_certs.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kToken[] = "alice-token-0123456789";

// The demo model's service on one TLS port, with the token processor.
class TlsServer {
 public:
  static std::unique_ptr<TlsServer> Start(const TlsOptions& tls) {
    auto s = std::unique_ptr<TlsServer>(new TlsServer);
    s->metrics_ = std::make_unique<Metrics>(std::vector<std::string>{kDemoModelName});
    ServingOptions serving;
    serving.threads = 2;
    s->core_ =
        std::make_unique<ServingCore>(ModelRegistry::WithDemoModel(), serving, s->metrics_.get());
    s->service_ = std::make_unique<RnnServiceImpl>(s->core_.get(), s->metrics_.get(),
                                                   ServiceOptions());
    auto credentials = MakeServerCredentials(tls);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    if (!credentials.ok()) return nullptr;
    auto tokens = std::make_shared<TokenAuthenticator>(
        std::vector<TokenEntry>{{"alice", HashToken(kToken)}});
    (*credentials)
        ->SetAuthMetadataProcessor(
            std::make_shared<BearerTokenProcessor>(std::move(tokens), CallAuthOptions()));
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *credentials, &s->port_);
    builder.RegisterService(s->service_.get());
    s->server_ = builder.BuildAndStart();
    if (s->server_ == nullptr || s->port_ == 0) return nullptr;
    return s;
  }
  ~TlsServer() {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    service_.reset();
    core_.reset();
  }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  TlsServer() = default;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ServingCore> core_;
  std::unique_ptr<RnnServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

struct CliRun {
  int exit_status = -1;
  std::string out, err;
};

class TlsClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TempDir;
    ASSERT_TRUE(certs_->ok());
    ASSERT_EQ(MakeTestCerts(certs_->path()), "");
    ASSERT_TRUE(WriteFile(Path("token"), absl::StrCat(kToken, "\n")).ok());
    TlsOptions tls;
    tls.cert_file = Path("server-a.crt");
    tls.key_file = Path("server-a.key");
    tls_server_ = TlsServer::Start(tls).release();
    tls.client_ca_file = Path("ca1.crt");
    mtls_server_ = TlsServer::Start(tls).release();
  }
  static void TearDownTestSuite() {
    delete tls_server_;
    delete mtls_server_;
    delete certs_;
  }
  void SetUp() override {
    ASSERT_NE(tls_server_, nullptr);
    ASSERT_NE(mtls_server_, nullptr);
  }

  static std::string Path(const std::string& name) { return certs_->File(name); }

  static client::ClientOptions Tls(const std::string& ca = "ca1",
                                   const std::string& token = kToken) {
    client::ClientOptions options;
    options.tls_ca_file = Path(ca + ".crt");
    options.token = token;
    options.timeout = absl::Seconds(20);
    return options;
  }
  static client::ClientOptions Mtls(const std::string& client) {
    client::ClientOptions options = Tls();
    options.tls_cert_file = Path(client + ".crt");
    options.tls_key_file = Path(client + ".key");
    return options;
  }

  static std::unique_ptr<client::RnnServeClient> Client(const TlsServer* server,
                                                        const client::ClientOptions& options) {
    return client::RnnServeClient::Connect(server->target(), options).value();
  }

  // Every RPC the client has: models, forward, a streamed session, its state, its close.
  static void ExpectEverythingWorks(client::RnnServeClient* c) {
    absl::StatusOr<std::vector<v1::ModelInfo>> models = c->ListModels();
    ASSERT_TRUE(models.ok()) << models.status();
    ASSERT_EQ(models->size(), 1u);
    const Tensor input = Tensor::Zeros({3, 1, 100});
    absl::StatusOr<client::ForwardResult> forward = c->Forward(kDemoModelName, input);
    ASSERT_TRUE(forward.ok()) << forward.status();
    EXPECT_EQ(forward->output.shape, (Shape{3, 1, 10}));
    auto stream = c->OpenStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    absl::StatusOr<client::ChunkResult> started =
        (*stream)->Start(kDemoModelName, "", nullptr, &input);
    ASSERT_TRUE(started.ok()) << started.status();
    absl::StatusOr<client::ChunkResult> next = (*stream)->SendChunk(started->session_id, input);
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(next->steps_seen, 6);
    absl::StatusOr<client::SessionState> state = c->GetSession(started->session_id);
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(state->info.steps_seen(), 6);
    EXPECT_TRUE(c->CloseSession(started->session_id).ok());
    EXPECT_TRUE((*stream)->Finish().ok());
  }

  CliRun Run(const TlsServer* server, cli::CliOptions options,
             const std::vector<std::string>& args) {
    options.server = server->target();
    std::ostringstream out, err;
    CliRun run;
    run.exit_status = cli::RunCli(args, options, out, err);
    run.out = out.str();
    run.err = err.str();
    EXPECT_THAT(run.out + run.err, Not(HasSubstr(kToken)));  // never printed
    return run;
  }
  static cli::CliOptions CliTls() {
    cli::CliOptions options;
    options.tls_ca = Path("ca1.crt");
    options.token_file = Path("token");
    return options;
  }

  static TempDir* certs_;
  static TlsServer* tls_server_;
  static TlsServer* mtls_server_;
};
TempDir* TlsClientTest::certs_ = nullptr;
TlsServer* TlsClientTest::tls_server_ = nullptr;
TlsServer* TlsClientTest::mtls_server_ = nullptr;

TEST_F(TlsClientTest, TlsWithTokenServesEveryRpc) {
  ExpectEverythingWorks(Client(tls_server_, Tls()).get());
}

TEST_F(TlsClientTest, MutualTlsWithClientCertificateAndToken) {
  ExpectEverythingWorks(Client(mtls_server_, Mtls("client1")).get());
}

TEST_F(TlsClientTest, MissingOrWrongTokenIsUnauthenticated) {
  for (const std::string token : {"", "wrong-token"}) {
    auto c = Client(tls_server_, Tls("ca1", token));
    absl::Status status = c->ListModels().status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
    // The stream is refused as well: it connects, then the first call ends UNAUTHENTICATED.
    auto stream = c->OpenStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    const Tensor input = Tensor::Zeros({1, 1, 100});
    status = (*stream)->Start(kDemoModelName, "", nullptr, &input).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
  }
}

TEST_F(TlsClientTest, ServerCertificateFromAnotherCaIsRefused) {
  absl::Status status = Client(tls_server_, Tls("ca2"))->ListModels().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("certificate")) << status;
}

TEST_F(TlsClientTest, MutualTlsRefusesNoCertificateAndOtherCasCertificate) {
  client::ClientOptions no_certificate = Tls();
  for (const client::ClientOptions& options : {no_certificate, Mtls("client2")}) {
    absl::Status status = Client(mtls_server_, options)->ListModels().status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  }
}

TEST_F(TlsClientTest, PlaintextClientAgainstTlsServerFails) {
  client::ClientOptions plaintext;
  plaintext.token = kToken;
  plaintext.timeout = absl::Seconds(20);
  absl::Status status = Client(tls_server_, plaintext)->ListModels().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

TEST_F(TlsClientTest, CliCommandsOverTlsAndMutualTls) {
  cli::CliOptions options = CliTls();
  CliRun run = Run(tls_server_, options, {"models"});
  ASSERT_EQ(run.exit_status, cli::kExitOk) << run.err;
  EXPECT_THAT(run.out, StartsWith("demo "));
  options.shape = "4,2,100";
  run = Run(tls_server_, options, {"forward", "demo"});
  ASSERT_EQ(run.exit_status, cli::kExitOk) << run.err;
  options.json = true;
  run = Run(tls_server_, options, {"stream", "demo"});
  ASSERT_EQ(run.exit_status, cli::kExitOk) << run.err;
  const std::string id = cli::Json::parse(run.out.substr(0, run.out.find('\n')))["session_id"];
  run = Run(tls_server_, options, {"session", "get", id});
  ASSERT_EQ(run.exit_status, cli::kExitOk) << run.err;
  run = Run(tls_server_, options, {"session", "close", id});
  ASSERT_EQ(run.exit_status, cli::kExitOk) << run.err;

  // bench opens its own channels: they carry TLS and the token too.
  options.sessions = 2;
  options.duration_s = 0.3;
  options.channels = 2;
  run = Run(tls_server_, options, {"bench", "demo"});
  ASSERT_EQ(run.exit_status, cli::kExitOk) << run.err << run.out;
  const cli::Json report = cli::Json::parse(run.out);
  EXPECT_GT(report["chunks"].get<int64_t>(), 0);
  EXPECT_EQ(report["errors"].get<int64_t>(), 0);

  options = CliTls();
  options.tls_cert = Path("client1.crt");
  options.tls_key = Path("client1.key");
  options.token_file = "";
  options.token = kToken;
  run = Run(mtls_server_, options, {"models"});
  ASSERT_EQ(run.exit_status, cli::kExitOk) << run.err;
}

TEST_F(TlsClientTest, CliFailuresAreClear) {
  cli::CliOptions options = CliTls();
  options.token_file = "";
  CliRun run = Run(tls_server_, options, {"models"});
  EXPECT_EQ(run.exit_status, cli::kExitFailed);
  EXPECT_THAT(run.err, StartsWith("rnnserve-client: UNAUTHENTICATED: "));

  options = CliTls();
  options.sessions = 1;
  options.duration_s = 0.2;
  options.token_file = "";
  options.token = "wrong-token";
  run = Run(tls_server_, options, {"bench", "demo"});
  EXPECT_EQ(run.exit_status, cli::kExitFailed);  // GetModel first: refused before any load
  EXPECT_THAT(run.err, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(run.err, Not(HasSubstr("wrong-token")));

  options = CliTls();
  options.tls_ca = Path("ca2.crt");
  run = Run(tls_server_, options, {"models"});
  EXPECT_EQ(run.exit_status, cli::kExitFailed);
  EXPECT_THAT(run.err, StartsWith("rnnserve-client: UNAVAILABLE: "));
  EXPECT_THAT(run.err, HasSubstr("certificate verify failed"));
  EXPECT_THAT(run.err, HasSubstr("must chain to --tls_ca"));

  // An mTLS server closes the handshake of a client without a certificate: gRPC says only
  // "Socket closed", so the CLI says what to check.
  options = CliTls();
  run = Run(mtls_server_, options, {"models"});
  EXPECT_EQ(run.exit_status, cli::kExitFailed);
  EXPECT_THAT(run.err, StartsWith("rnnserve-client: UNAVAILABLE: "));
  EXPECT_THAT(run.err, HasSubstr("--tls_cert/--tls_key from a CA it trusts"));

  options = cli::CliOptions();
  run = Run(tls_server_, options, {"models"});
  EXPECT_EQ(run.exit_status, cli::kExitFailed);
  EXPECT_THAT(run.err, HasSubstr("A TLS server needs --tls_ca"));

  // Flags that cannot make a connection: exit 2 naming the flag or file, nothing sent.
  struct BadFlags {
    void (*change)(cli::CliOptions*);
    std::string expected;
  };
  for (const BadFlags& bad : std::vector<BadFlags>{
           {[](cli::CliOptions* o) { o->tls_ca = Path("nope.crt"); }, Path("nope.crt")},
           {[](cli::CliOptions* o) { o->tls_cert = Path("client1.crt"); },
            "--tls_cert needs --tls_key"},
           {[](cli::CliOptions* o) { o->token_file = Path("missing-token"); },
            Path("missing-token")}}) {
    options = CliTls();
    bad.change(&options);
    run = Run(mtls_server_, options, {"models"});
    EXPECT_EQ(run.exit_status, cli::kExitUsageError) << bad.expected;
    EXPECT_THAT(run.err, HasSubstr(bad.expected));
  }
}

}  // namespace
}  // namespace rnnserve
