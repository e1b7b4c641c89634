// ParseServingJson and ReadServingFile: every key, the defaults, the three version policies,
// and every rejection (INVALID_ARGUMENT naming the key, bounded message); an absent file gives
// the defaults and a bad one names its path.
#include "core/serving/model_settings.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

std::string ServingError(const std::string& json) {
  absl::StatusOr<ServingFile> parsed = ParseServingJson(json);
  EXPECT_FALSE(parsed.ok()) << json;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_LT(parsed.status().message().size(), 500u) << parsed.status();
  return std::string(parsed.status().message());
}

TEST(ModelSettingsTest, EmptyObjectGivesDefaults) {
  absl::StatusOr<ServingFile> file = ParseServingJson("{}");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, ServingFile{});
  EXPECT_EQ(file->settings.max_batch, 0);
  EXPECT_FALSE(file->settings.max_queue_delay.has_value());
  EXPECT_EQ(file->settings.max_sessions, 0);
  EXPECT_FALSE(file->settings.session_idle_timeout.has_value());
  EXPECT_EQ(file->settings.state_memory_share, 0);
  EXPECT_EQ(file->version_policy.kind, VersionPolicy::Kind::kLatest);
  EXPECT_EQ(file->version_policy.latest, 1);
}

TEST(ModelSettingsTest, ParsesEveryKey) {
  absl::StatusOr<ServingFile> file = ParseServingJson(R"({
    "max_batch": 64, "max_queue_delay": "2ms", "max_sessions": 1000,
    "session_idle_timeout": "10m", "state_memory_share": 0.25,
    "version_policy": {"latest": 2}})");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->settings.max_batch, 64);
  EXPECT_EQ(file->settings.max_queue_delay, absl::Milliseconds(2));
  EXPECT_EQ(file->settings.max_sessions, 1000);
  EXPECT_EQ(file->settings.session_idle_timeout, absl::Minutes(10));
  EXPECT_EQ(file->settings.state_memory_share, 0.25);
  EXPECT_EQ(file->version_policy.kind, VersionPolicy::Kind::kLatest);
  EXPECT_EQ(file->version_policy.latest, 2);
}

TEST(ModelSettingsTest, ZeroQueueDelayIsEagerNotUnset) {
  absl::StatusOr<ServingFile> file = ParseServingJson(R"({"max_queue_delay": "0"})");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->settings.max_queue_delay, absl::ZeroDuration());
  file = ParseServingJson(R"({"max_queue_delay": "1.5ms", "session_idle_timeout": "1h30m"})");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->settings.max_queue_delay, absl::Microseconds(1500));
  EXPECT_EQ(file->settings.session_idle_timeout, absl::Minutes(90));
}

TEST(ModelSettingsTest, VersionPolicies) {
  absl::StatusOr<ServingFile> file = ParseServingJson(R"({"version_policy": {"all": true}})");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->version_policy.kind, VersionPolicy::Kind::kAll);
  file = ParseServingJson(R"({"version_policy": {"specific": [3, 1]}})");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->version_policy.kind, VersionPolicy::Kind::kSpecific);
  EXPECT_EQ(file->version_policy.versions, (std::vector<int64_t>{1, 3}));  // sorted
}

TEST(ModelSettingsTest, RejectsUnknownAndRepeatedKeys) {
  EXPECT_THAT(ServingError(R"({"max_batches": 4})"),
              HasSubstr("unknown key 'max_batches'; known keys: max_batch, max_queue_delay"));
  EXPECT_THAT(ServingError(R"({"max_batch": 4, "max_batch": 8})"),
              HasSubstr("duplicate key 'max_batch'"));
  EXPECT_THAT(ServingError(R"({"version_policy": {"newest": 1}})"),
              HasSubstr("'version_policy' has unknown key 'newest'"));
  // A hostile key is quoted only in part.
  const std::string long_key(10000, 'k');
  EXPECT_THAT(ServingError(absl::StrCat("{\"", long_key, "\": 1}")), HasSubstr("kkk...'"));
}

TEST(ModelSettingsTest, RejectsWrongTypesAndRanges) {
  EXPECT_THAT(ServingError(R"({"max_batch": "64"})"),
              HasSubstr("key 'max_batch' must be an integer in [1, 1048576], got string \"64\""));
  EXPECT_THAT(ServingError(R"({"max_batch": 0})"), HasSubstr("key 'max_batch'"));
  EXPECT_THAT(ServingError(R"({"max_batch": 1.5})"), HasSubstr("key 'max_batch'"));
  EXPECT_THAT(ServingError(R"({"max_batch": 99999999999999999999})"), HasSubstr("'max_batch'"));
  EXPECT_THAT(ServingError(R"({"max_sessions": -1})"), HasSubstr("key 'max_sessions'"));
  EXPECT_THAT(ServingError(R"({"max_queue_delay": 2})"),
              HasSubstr("key 'max_queue_delay' must be a duration string such as \"2ms\""));
  EXPECT_THAT(ServingError(R"({"max_queue_delay": "2 ms"})"), HasSubstr("'max_queue_delay'"));
  EXPECT_THAT(ServingError(R"({"max_queue_delay": "-1ms"})"), HasSubstr("'max_queue_delay'"));
  EXPECT_THAT(ServingError(R"({"max_queue_delay": "inf"})"), HasSubstr("'max_queue_delay'"));
  EXPECT_THAT(ServingError(R"({"max_queue_delay": "2h"})"), HasSubstr("'max_queue_delay'"));
  EXPECT_THAT(ServingError(R"({"session_idle_timeout": "0s"})"),
              HasSubstr("key 'session_idle_timeout' must be a duration string"));
  EXPECT_THAT(ServingError(R"({"session_idle_timeout": null})"),
              HasSubstr("'session_idle_timeout'"));
  EXPECT_THAT(ServingError(R"({"state_memory_share": 0})"),
              HasSubstr("key 'state_memory_share' must be a number in (0, 1], got number 0"));
  EXPECT_THAT(ServingError(R"({"state_memory_share": 1.01})"), HasSubstr("'state_memory_share'"));
  EXPECT_THAT(ServingError(R"({"state_memory_share": "0.5"})"), HasSubstr("'state_memory_share'"));
  EXPECT_TRUE(ParseServingJson(R"({"state_memory_share": 1})").ok());
}

TEST(ModelSettingsTest, RejectsBadVersionPolicies) {
  EXPECT_THAT(ServingError(R"({"version_policy": 2})"), HasSubstr("key 'version_policy'"));
  EXPECT_THAT(ServingError(R"({"version_policy": {}})"), HasSubstr("key 'version_policy'"));
  EXPECT_THAT(ServingError(R"({"version_policy": {"latest": 1, "all": true}})"),
              HasSubstr("key 'version_policy' must be an object with one of"));
  EXPECT_THAT(ServingError(R"({"version_policy": {"latest": 0}})"),
              HasSubstr("key 'version_policy.latest'"));
  EXPECT_THAT(ServingError(R"({"version_policy": {"all": false}})"),
              HasSubstr("key 'version_policy.all' must be true"));
  EXPECT_THAT(ServingError(R"({"version_policy": {"specific": []}})"),
              HasSubstr("key 'version_policy.specific'"));
  EXPECT_THAT(ServingError(R"({"version_policy": {"specific": [1, -2]}})"),
              HasSubstr("key 'version_policy.specific' must be an integer"));
  EXPECT_THAT(ServingError(R"({"version_policy": {"specific": [2, 2]}})"),
              HasSubstr("lists version 2 twice"));
}

TEST(ModelSettingsTest, RejectsNonObjectsAndBrokenJson) {
  EXPECT_THAT(ServingError("[]"), HasSubstr("serving.json must be a JSON object"));
  EXPECT_THAT(ServingError(""), HasSubstr("serving.json is not valid JSON"));
  EXPECT_THAT(ServingError(std::string("{}\0{", 3)), HasSubstr("NUL byte"));
  // A deeply nested value is described, not dumped.
  const std::string deep = std::string(1000, '[') + std::string(1000, ']');
  EXPECT_THAT(ServingError(absl::StrCat(R"({"max_batch": )", deep, "}")),
              HasSubstr("got array [...]"));
}

class ReadServingFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (std::filesystem::path(::testing::TempDir()) /
            absl::StrCat("model_settings_test_", info->name(), "_", ::getpid()))
               .string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ReadServingFileTest, AbsentFileGivesDefaults) {
  absl::StatusOr<ServingFile> file = ReadServingFile(dir_);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, ServingFile{});
}

TEST_F(ReadServingFileTest, ReadsTheFile) {
  ASSERT_TRUE(WriteFile(dir_ + "/serving.json", R"({"max_batch": 2})").ok());
  absl::StatusOr<ServingFile> file = ReadServingFile(dir_);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->settings.max_batch, 2);
}

TEST_F(ReadServingFileTest, BadFileNamesThePathAndKey) {
  ASSERT_TRUE(WriteFile(dir_ + "/serving.json", R"({"max_batch": true})").ok());
  absl::StatusOr<ServingFile> file = ReadServingFile(dir_);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(dir_ + "/serving.json: serving.json key "
                                                        "'max_batch' must be"));
}

TEST_F(ReadServingFileTest, DirectoryAndOversizedFileAreErrors) {
  std::filesystem::create_directories(dir_ + "/serving.json");
  EXPECT_EQ(ReadServingFile(dir_).status().code(), absl::StatusCode::kFailedPrecondition);
  std::filesystem::remove_all(dir_ + "/serving.json");
  ASSERT_TRUE(
      WriteFile(dir_ + "/serving.json", std::string(kMaxServingFileBytes + 1, ' ')).ok());
  EXPECT_FALSE(ReadServingFile(dir_).ok());
}

}  // namespace
}  // namespace rnnserve
