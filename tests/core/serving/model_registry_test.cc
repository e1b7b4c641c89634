// ModelRegistry::LoadRepository against hostile repository folders: symlink loops, dangling
// links, a FIFO named config.json, absurd configs and non-finite weights give an error naming
// the path (never an exception, a hang or a huge message).
#include "core/serving/model_registry.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/engine/model_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

RnnConfig TinyConfig() {
  RnnConfig config;
  config.input_size = 3;
  config.hidden_size = 2;
  return config;
}

class ModelRegistryLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    repo_ = std::filesystem::path(::testing::TempDir()) /
            absl::StrCat("model_registry_test_", info->name(), "_", ::getpid());
    std::filesystem::remove_all(repo_);
    std::filesystem::create_directories(repo_);
  }
  void TearDown() override { std::filesystem::remove_all(repo_); }

  std::string Path(const std::string& name) const { return (repo_ / name).string(); }
  void SaveGood(const std::string& name) const {
    ASSERT_TRUE(SaveModelDir(Path(name), TinyConfig(), RandomParameters(TinyConfig(), 1)).ok());
  }
  // Strict (--strict_model_repository): the first bad folder fails the load, as before
  // versions; the resilient default is tested in model_lifecycle_test.
  absl::Status LoadError(ModelLoadOptions options = {}) const {
    options.strict = true;
    absl::StatusOr<std::unique_ptr<ModelRegistry>> loaded =
        ModelRegistry::LoadRepository(repo_.string(), options);
    EXPECT_FALSE(loaded.ok());
    return loaded.ok() ? absl::OkStatus() : loaded.status();
  }

  std::filesystem::path repo_;
};

TEST_F(ModelRegistryLoadTest, GoodRepositoryLoads) {
  SaveGood("tiny");
  absl::StatusOr<std::unique_ptr<ModelRegistry>> loaded =
      ModelRegistry::LoadRepository(repo_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_NE((*loaded)->Find("tiny"), nullptr);
}

TEST_F(ModelRegistryLoadTest, SymlinkLoopIsAnErrorNamingThePath) {
  SaveGood("tiny");
  std::filesystem::create_symlink("loop", repo_ / "loop");  // a link to itself
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("model repository entry '" + Path("loop") + "'"));
}

TEST_F(ModelRegistryLoadTest, DanglingSymlinkIsAnErrorNamingThePath) {
  SaveGood("tiny");
  std::filesystem::create_symlink(repo_ / "nowhere", repo_ / "gone");
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(Path("gone") + "' is a symlink to nothing"));
}

TEST_F(ModelRegistryLoadTest, RepositoryThatIsASymlinkLoopIsRefused) {
  std::filesystem::create_symlink(repo_ / "self", repo_ / "self");
  absl::StatusOr<std::unique_ptr<ModelRegistry>> loaded =
      ModelRegistry::LoadRepository(Path("self"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr(Path("self") + "' is not a readable directory"));
}

TEST_F(ModelRegistryLoadTest, FifoConfigReturnsPromptly) {
  std::filesystem::create_directories(repo_ / "fifo");
  ASSERT_EQ(::mkfifo(Path("fifo/config.json").c_str(), 0600), 0);
  // A hang (no writer ever comes) fails this test by its ctest timeout.
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("not a regular file: " + Path("fifo/config.json")));
}

TEST_F(ModelRegistryLoadTest, HugeNumLayersGivesABoundedMessage) {
  SaveGood("huge");
  std::ofstream(Path("huge/config.json"))
      << R"({"input_size": 3, "hidden_size": 2, "num_layers": 100000})";
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("num_layers may be at most 1024, got 100000"));
  EXPECT_LT(status.message().size(), 500u);
}

TEST_F(ModelRegistryLoadTest, NonFiniteWeightsAreRefusedUnlessAllowed) {
  ParameterMap params = RandomParameters(TinyConfig(), 1);
  params.at("weight_ih_l0").values[5] = std::numeric_limits<float>::infinity();
  ASSERT_TRUE(SaveModelDir(Path("inf"), TinyConfig(), params).ok());
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("model 'inf'"));
  EXPECT_THAT(status.message(), HasSubstr("parameter 'weight_ih_l0' holds inf at flat index 5"));

  ModelLoadOptions allow;
  allow.model_dir.allow_non_finite_weights = true;
  absl::StatusOr<std::unique_ptr<ModelRegistry>> loaded =
      ModelRegistry::LoadRepository(repo_.string(), allow);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_NE((*loaded)->Find("inf"), nullptr);
}

}  // namespace
}  // namespace rnnserve
