// CliOptions: the checks and conversions the commands share (the flags themselves are read in
// client/cli/main.cc only).
#include "client/cli/cli_options.h"

#include <cmath>
#include <limits>

#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace rnnserve {
namespace cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(ParseShapeTest, ReadsCommaSeparatedSizes) {
  EXPECT_THAT(ParseShape("5,2,100").value(), ElementsAre(5, 2, 100));
  EXPECT_THAT(ParseShape("7").value(), ElementsAre(7));
  EXPECT_THAT(ParseShape("3,0,4").value(), ElementsAre(3, 0, 4));
}

TEST(ParseShapeTest, RejectsWhatIsNotAShape) {
  for (const char* bad : {"5,x,100", "5,-1", "5.5", "a"}) {
    absl::StatusOr<Shape> shape = ParseShape(bad);
    ASSERT_FALSE(shape.ok()) << bad;
    EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(shape.status().message()),
                HasSubstr(std::string("'") + bad + "' is not a list of sizes like 5,2,100"));
  }
  for (const char* empty : {"", ","}) {
    EXPECT_THAT(std::string(ParseShape(empty).status().message()), HasSubstr("--shape is empty"))
        << empty;
  }
  // 2^28 elements at most; and products that overflow int64 are caught too.
  EXPECT_TRUE(ParseShape("16384,16384").ok());
  EXPECT_THAT(std::string(ParseShape("16384,16385").status().message()), HasSubstr("too large"));
  EXPECT_THAT(std::string(ParseShape("4294967296,4294967296,4").status().message()),
              HasSubstr("too large"));
}

TEST(CliOptionsTest, RandomInputNeedsAShapeAndIsSeeded) {
  CliOptions options;
  EXPECT_THAT(std::string(RandomInputFromShape(options).status().message()),
              HasSubstr("forward needs --input FILE.npy or --shape T,N,C"));
  options.shape = "4,2,3";
  options.seed = 7;
  const Tensor a = RandomInputFromShape(options).value();
  EXPECT_THAT(a.shape, ElementsAre(4, 2, 3));
  EXPECT_EQ(RandomInputFromShape(options)->values, a.values);
  options.seed = 8;
  EXPECT_NE(RandomInputFromShape(options)->values, a.values);
  options.shape = "4,,x";
  EXPECT_EQ(RandomInputFromShape(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CliOptionsTest, RandomStreamShapeFollowsTheLayout) {
  CliOptions options;
  options.steps = 6;
  options.batch = 2;
  EXPECT_THAT(RandomStreamShape(options, 5, /*batch_first=*/false).value(), ElementsAre(6, 2, 5));
  EXPECT_THAT(RandomStreamShape(options, 5, /*batch_first=*/true).value(), ElementsAre(2, 6, 5));
  options.batch = 0;
  EXPECT_THAT(RandomStreamShape(options, 5, /*batch_first=*/true).value(), ElementsAre(6, 5));
  options.batch = -1;
  EXPECT_THAT(std::string(RandomStreamShape(options, 5, false).status().message()),
              HasSubstr("--steps must be >= 1 and --batch >= 0"));
  options.batch = 1;
  options.steps = 0;
  EXPECT_EQ(RandomStreamShape(options, 5, false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CliOptionsTest, ValidateStreamOptions) {
  CliOptions options;
  EXPECT_TRUE(ValidateStreamOptions(options).ok());
  options.chunk_steps = 0;
  EXPECT_THAT(std::string(ValidateStreamOptions(options).message()),
              HasSubstr("--chunk_steps must be >= 1"));
  options.chunk_steps = 3;
  options.h0 = "h.npy";
  EXPECT_TRUE(ValidateStreamOptions(options).ok());
  options.session_id = "s";
  EXPECT_THAT(std::string(ValidateStreamOptions(options).message()),
              HasSubstr("--h0 starts a new session with that state; it cannot be combined with "
                        "--session_id"));
  // --c0 (an LSTM's cell state) is a new session's state too.
  options.h0 = "";
  options.c0 = "c.npy";
  EXPECT_THAT(std::string(ValidateStreamOptions(options).message()),
              HasSubstr("--c0 starts a new session with that state"));
  options.session_id = "";
  EXPECT_TRUE(ValidateStreamOptions(options).ok());
}

TEST(CliOptionsTest, ClientOptionsFromRawAndTimeout) {
  CliOptions options;
  client::ClientOptions c = ToClientOptions(options).value();
  EXPECT_EQ(c.encoding, TensorEncoding::kRaw);
  EXPECT_EQ(c.timeout, absl::Seconds(30));
  options.raw = false;
  options.timeout_s = 0;
  c = ToClientOptions(options).value();
  EXPECT_EQ(c.encoding, TensorEncoding::kValues);
  EXPECT_EQ(c.timeout, absl::InfiniteDuration());
  options.timeout_s = 0.25;
  EXPECT_EQ(ToClientOptions(options).value().timeout, absl::Milliseconds(250));
  EXPECT_EQ(c.max_message_bytes, int64_t{64} << 20);  // the server's default
}

TEST(CliOptionsTest, TlsFlagsAreCheckedAndPassedOn) {
  CliOptions options;
  client::ClientOptions c = ToClientOptions(options).value();
  EXPECT_EQ(c.tls_ca_file, "");
  EXPECT_EQ(c.token, "");
  options.tls_ca = "ca.crt";
  options.tls_cert = "c.crt";
  options.tls_key = "c.key";
  options.token = "tok";
  c = ToClientOptions(options).value();
  EXPECT_EQ(c.tls_ca_file, "ca.crt");
  EXPECT_EQ(c.tls_cert_file, "c.crt");
  EXPECT_EQ(c.tls_key_file, "c.key");
  EXPECT_EQ(c.token, "tok");

  options.tls_key = "";
  EXPECT_EQ(ToClientOptions(options).status().message(), "--tls_cert needs --tls_key");
  options.tls_key = "c.key";
  options.tls_cert = "";
  EXPECT_EQ(ToClientOptions(options).status().message(), "--tls_key needs --tls_cert");
  options.tls_cert = "c.crt";
  options.tls_ca = "";
  EXPECT_THAT(std::string(ToClientOptions(options).status().message()),
              HasSubstr("need --tls_ca"));
  options.tls_ca = "ca.crt";
  options.token_file = "token";
  EXPECT_EQ(ToClientOptions(options).status().message(),
            "give --token or --token_file, not both");
  options.token_file = "";
  options.token = "two words";
  absl::Status bad_token = ToClientOptions(options).status();
  EXPECT_EQ(bad_token.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_token.message()), HasSubstr("--token: "));
  EXPECT_THAT(std::string(bad_token.message()), Not(HasSubstr("words")));
}

TEST(CliOptionsTest, TokenFileIsItsFirstLineTrimmed) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(WriteFile(dir.File("token"), "  s3cret \r\nsecond line\n").ok());
  ASSERT_TRUE(WriteFile(dir.File("blank"), " \n\nlater").ok());
  EXPECT_EQ(ReadTokenFile(dir.File("token")).value(), "s3cret");
  CliOptions options;
  options.token_file = dir.File("token");
  EXPECT_EQ(ToClientOptions(options).value().token, "s3cret");

  absl::Status status = ReadTokenFile(dir.File("blank")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir.File("blank")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("first line is empty"));
  options.token_file = dir.File("missing");
  status = ToClientOptions(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("--token_file: "));
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir.File("missing")));
}

TEST(CliOptionsTest, StreamBenchOptions) {
  CliOptions options;
  options.sessions = 9;
  options.streams = 3;
  options.chunk_steps = 4;
  options.duration_s = 1.5;
  options.max_chunks = 6;
  options.omit_state = true;
  options.raw = false;
  client::StreamBenchOptions b = ToStreamBenchOptions(options, "m").value();
  EXPECT_EQ(b.model, "m");
  EXPECT_EQ(b.sessions, 9);
  EXPECT_EQ(b.streams, 3);
  EXPECT_EQ(b.chunk_steps, 4);
  EXPECT_EQ(b.duration_s, 1.5);
  EXPECT_EQ(b.max_chunks, 6);
  EXPECT_TRUE(b.omit_state);
  EXPECT_EQ(b.encoding, TensorEncoding::kValues);
  EXPECT_EQ(b.chunks_per_second, 0);  // unpaced unless asked
  options.channels = 0;
  EXPECT_THAT(std::string(ToStreamBenchOptions(options, "m").status().message()),
              HasSubstr("--channels must be >= 1"));
}

TEST(CliOptionsTest, StreamBenchPacing) {
  CliOptions options;
  options.chunks_per_second = 10;
  EXPECT_EQ(ToStreamBenchOptions(options, "m").value().chunks_per_second, 10);
  options.chunks_per_second = 0.5;  // one chunk every 2 s
  EXPECT_EQ(ToStreamBenchOptions(options, "m").value().chunks_per_second, 0.5);
  for (double bad : {-1.0, std::nan(""), 2e6, std::numeric_limits<double>::infinity()}) {
    options.chunks_per_second = bad;
    const absl::Status status = ToStreamBenchOptions(options, "m").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("--chunks_per_second must be in [0, 1e6] (0: unpaced), got "))
        << bad;
  }
}

}  // namespace
}  // namespace cli
}  // namespace rnnserve

namespace rnnserve {
namespace cli {
namespace {

TEST(CliOptionsTest, ConnectionHintOnlyForFailedConnections) {
  CliOptions options;
  const absl::Status refused = absl::UnavailableError("failed to connect to all addresses");
  EXPECT_THAT(ConnectionHint(options, refused), HasSubstr("A TLS server needs --tls_ca"));
  options.tls_ca = "ca.crt";
  EXPECT_THAT(ConnectionHint(options, refused), HasSubstr("must chain to --tls_ca"));
  EXPECT_EQ(ConnectionHint(options, absl::UnavailableError("the server is draining")), "");
  EXPECT_EQ(ConnectionHint(options, absl::UnauthenticatedError("failed to connect")), "");
}

}  // namespace
}  // namespace cli
}  // namespace rnnserve
