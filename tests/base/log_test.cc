#include "base/log.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;

class LogTest : public ::testing::Test {
 protected:
  void TearDown() override { SetMinLogLevel(LogLevel::kInfo); }

  template <typename F>
  std::string Captured(F&& log) {
    ::testing::internal::CaptureStderr();
    log();
    return ::testing::internal::GetCapturedStderr();
  }
};

TEST_F(LogTest, DefaultLevelIsInfoAndDropsDebug) {
  EXPECT_EQ(MinLogLevel(), LogLevel::kInfo);
  EXPECT_THAT(Captured([] { LogDebug("per-session ", 1); }), IsEmpty());
  EXPECT_THAT(Captured([] { LogInfo("started ", 2); }),
              MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z INFO started 2\n"));
}

TEST_F(LogTest, DebugLevelShowsDebugLines) {
  SetMinLogLevel(LogLevel::kDebug);
  EXPECT_THAT(Captured([] { LogDebug("session ", "abc", " opened"); }),
              HasSubstr(" DEBUG session abc opened\n"));
}

TEST_F(LogTest, ErrorLevelDropsEverythingBelow) {
  SetMinLogLevel(LogLevel::kError);
  EXPECT_THAT(Captured([] {
                LogDebug("d");
                LogInfo("i");
                LogWarning("w");
              }),
              IsEmpty());
  EXPECT_THAT(Captured([] { LogError("bad"); }), HasSubstr(" ERROR bad\n"));
}

TEST_F(LogTest, WarningLevel) {
  SetMinLogLevel(LogLevel::kWarning);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kWarning));
  EXPECT_THAT(Captured([] { LogWarning("careful"); }), HasSubstr(" WARN careful\n"));
}

TEST_F(LogTest, ParseLogLevel) {
  EXPECT_EQ(ParseLogLevel("debug").value(), LogLevel::kDebug);
  EXPECT_EQ(ParseLogLevel("INFO").value(), LogLevel::kInfo);
  EXPECT_EQ(ParseLogLevel("warning").value(), LogLevel::kWarning);
  EXPECT_EQ(ParseLogLevel("warn").value(), LogLevel::kWarning);
  EXPECT_EQ(ParseLogLevel("Error").value(), LogLevel::kError);
  const absl::Status bad = ParseLogLevel("verbose\n").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(),
              HasSubstr("must be one of debug, info, warning, error; got \"verbose\\n\""));
  EXPECT_FALSE(ParseLogLevel("").ok());
}

}  // namespace
}  // namespace rnnserve
