// CliOptions: the checks and conversions the commands share (the flags themselves are read in
// client/cli/main.cc only).
#include "client/cli/cli_options.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

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
              HasSubstr("cannot be combined with --session_id"));
}

TEST(CliOptionsTest, ClientOptionsFromRawAndTimeout) {
  CliOptions options;
  client::ClientOptions c = ToClientOptions(options);
  EXPECT_EQ(c.encoding, TensorEncoding::kRaw);
  EXPECT_EQ(c.timeout, absl::Seconds(30));
  options.raw = false;
  options.timeout_s = 0;
  c = ToClientOptions(options);
  EXPECT_EQ(c.encoding, TensorEncoding::kValues);
  EXPECT_EQ(c.timeout, absl::InfiniteDuration());
  options.timeout_s = 0.25;
  EXPECT_EQ(ToClientOptions(options).timeout, absl::Milliseconds(250));
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
  options.channels = 0;
  EXPECT_THAT(std::string(ToStreamBenchOptions(options, "m").status().message()),
              HasSubstr("--channels must be >= 1"));
}

}  // namespace
}  // namespace cli
}  // namespace rnnserve
