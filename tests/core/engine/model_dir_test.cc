// LoadModelDir and SaveModelDir: the round trip through a real folder, and errors that name
// the file they are about.
#include "core/engine/model_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <set>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/engine/config_json.h"
#include "core/engine/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/engine/format_test_util.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using format_test::ExpectSameParameters;
using format_test::SmallConfig;

class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("model_dir_test_", info->name(), "_", ::getpid());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  void Write(const std::string& name, const std::string& contents) const {
    std::filesystem::create_directories(dir_);
    std::ofstream(Path(name), std::ios::binary) << contents;
  }
  absl::Status LoadError() const {
    absl::StatusOr<ModelFiles> loaded = LoadModelDir(dir_.string());
    EXPECT_FALSE(loaded.ok());
    return loaded.status();
  }

  std::filesystem::path dir_;
};

TEST_F(ModelDirTest, SaveThenLoadRoundTrips) {
  RnnConfig config = SmallConfig();
  config.num_layers = 2;
  config.bias = false;
  const ParameterMap params = RandomParameters(config, 11);
  const std::string nested = Path("a/b");
  ASSERT_TRUE(SaveModelDir(nested, config, params).ok());
  EXPECT_FALSE(std::filesystem::exists(nested + "/model.safetensors.tmp"));
  absl::StatusOr<ModelFiles> loaded = LoadModelDir(nested);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.rnn, config);
  ExpectSameParameters(loaded->parameters, params);
  // Saving again overwrites in place.
  ASSERT_TRUE(SaveModelDir(nested, config, RandomParameters(config, 12)).ok());
  ASSERT_TRUE(LoadModelDir(nested).ok());
}

TEST_F(ModelDirTest, SaveRefusesParametersThatDoNotMatch) {
  ParameterMap params = RandomParameters(SmallConfig(), 1);
  params.erase("weight_ih_l0");
  const absl::Status status = SaveModelDir(dir_.string(), SmallConfig(), params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("missing parameter 'weight_ih_l0'"));
  EXPECT_FALSE(std::filesystem::exists(dir_));
}

TEST_F(ModelDirTest, SaveReportsUnwritableFolder) {
  Write("blocker", "a file where a folder should go");
  const std::string target = Path("blocker/model");
  const absl::Status status =
      SaveModelDir(target, SmallConfig(), RandomParameters(SmallConfig(), 1));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("cannot create directory " + target));
}

TEST_F(ModelDirTest, MissingFolderNamesConfigPath) {
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(Path("config.json")));
}

TEST_F(ModelDirTest, MissingWeightsNamesWeightsPath) {
  Write("config.json", ConfigToJson(SmallConfig()));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("file not found: " + Path("model.safetensors")));
}

TEST_F(ModelDirTest, BadConfigNamesConfigPath) {
  Write("config.json", R"({"input_size": 3})");
  Write("model.safetensors", SerializeSafetensors(RandomParameters(SmallConfig(), 1)));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr(Path("config.json") + ": config is missing required key 'hidden_size'"));
}

TEST_F(ModelDirTest, CorruptWeightsNameWeightsPath) {
  Write("config.json", ConfigToJson(SmallConfig()));
  // Large enough for RNN(3, 2)'s 14 values, so the parser (not the size check) refuses it.
  Write("model.safetensors", std::string(8, '\0') + std::string(56, 'x'));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(Path("model.safetensors") + ": safetensors"));
}

TEST_F(ModelDirTest, WeightsNotMatchingConfigNameWeightsPath) {
  RnnConfig other = SmallConfig();
  other.hidden_size = 4;
  Write("config.json", ConfigToJson(SmallConfig()));
  Write("model.safetensors", SerializeSafetensors(RandomParameters(other, 1)));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(Path("model.safetensors") + ": parameters do not match"));
  EXPECT_THAT(status.message(), HasSubstr("parameter 'weight_hh_l0' has shape (4, 4), expected "
                                          "(2, 2)"));
}

TEST_F(ModelDirTest, ConfigThatIsADirectoryIsRefused) {
  std::filesystem::create_directories(dir_ / "config.json");
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("not a regular file: " + Path("config.json")));
}

TEST_F(ModelDirTest, FifoConfigIsRefusedWithoutWaitingForAWriter) {
  std::filesystem::create_directories(dir_);
  ASSERT_EQ(::mkfifo(Path("config.json").c_str(), 0600), 0);
  // Hanging here (no writer ever opens the FIFO) fails the test by its ctest timeout.
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("not a regular file: " + Path("config.json")));
}

TEST_F(ModelDirTest, HugeNumLayersIsRefusedWithAShortMessage) {
  Write("config.json", R"({"input_size": 3, "hidden_size": 2, "num_layers": 10000000})");
  Write("model.safetensors", SerializeSafetensors(RandomParameters(SmallConfig(), 1)));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("num_layers may be at most 1024, got 10000000"));
  EXPECT_LT(status.message().size(), 300u);
}

TEST_F(ModelDirTest, ManyMissingParametersAreListedUpToALimit) {
  RnnConfig config = SmallConfig();
  config.num_layers = 1000;  // 4000 parameters (12002 values) expected
  RnnConfig in_file = SmallConfig();
  in_file.hidden_size = 100;  // 10500 values: enough bytes, the wrong tensors
  Write("config.json", ConfigToJson(config));
  Write("model.safetensors", SerializeSafetensors(RandomParameters(in_file, 1)));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  // Layer 0's 4 parameters are misshaped, the 3996 of layers 1..999 missing; 20 are listed.
  EXPECT_THAT(status.message(),
              HasSubstr("parameter 'weight_hh_l0' has shape (100, 100), expected (2, 2)"));
  EXPECT_THAT(status.message(), HasSubstr("; and 3980 more"));
  EXPECT_THAT(status.message(), HasSubstr("needs 12002 parameter values, the file holds 10500"));
  EXPECT_LT(status.message().size(), 4000u);
}

TEST_F(ModelDirTest, ConfigClaimingMoreThanTheFileHoldsIsRefusedBeforeParsing) {
  RnnConfig config = SmallConfig();
  config.input_size = 1024;
  config.hidden_size = 1024;
  config.num_layers = 1024;  // within the caps: 2149580800 values, over 4 GB at 2 bytes each
  Write("config.json", ConfigToJson(config));
  const std::string weights = SerializeSafetensors(RandomParameters(SmallConfig(), 1));
  Write("model.safetensors", weights);
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr(absl::StrCat(Path("model.safetensors"), " is ", weights.size(),
                                     " bytes, too small for RNN(1024, 1024, num_layers=1024)")));
  EXPECT_THAT(status.message(), HasSubstr("needs 2149580800 parameter values"));
  EXPECT_LT(status.message().size(), 400u);
}

TEST_F(ModelDirTest, NonFiniteWeightsAreRefusedNamingTensorAndIndex) {
  ParameterMap params = RandomParameters(SmallConfig(), 1);
  params.at("weight_hh_l0").values[3] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(SaveModelDir(dir_.string(), SmallConfig(), params).ok());
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(Path("model.safetensors") +
                                          ": parameter 'weight_hh_l0' holds nan at flat index 3"));

  params.at("weight_hh_l0").values[3] = 0.5f;
  params.at("bias_ih_l0").values[1] = -std::numeric_limits<float>::infinity();
  ASSERT_TRUE(SaveModelDir(dir_.string(), SmallConfig(), params).ok());
  EXPECT_THAT(LoadError().message(),
              HasSubstr("parameter 'bias_ih_l0' holds -inf at flat index 1"));
}

TEST_F(ModelDirTest, NonFiniteWeightsLoadWhenAllowed) {
  ParameterMap params = RandomParameters(SmallConfig(), 1);
  params.at("weight_hh_l0").values[3] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(SaveModelDir(dir_.string(), SmallConfig(), params).ok());
  ModelDirOptions options;
  options.allow_non_finite_weights = true;
  absl::StatusOr<ModelFiles> loaded = LoadModelDir(dir_.string(), options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(std::isnan(loaded->parameters.at("weight_hh_l0").values[3]));
}

// GRU and LSTM folders: configs torch would refuse, and weight files that are corrupt or
// belong to another module or another proj_size, each refused at load naming the file.
RnnConfig Cell(RnnModule module, int64_t hidden, int64_t proj = 0) {
  RnnConfig config = SmallConfig();
  config.module = module;
  config.hidden_size = hidden;
  config.proj_size = proj;
  return config;
}

TEST_F(ModelDirTest, ProjSizeTorchWouldRefuseIsRefusedAtLoad) {
  const RnnConfig gru = Cell(RnnModule::kGru, 4);
  Write("model.safetensors", SerializeSafetensors(RandomParameters(gru, 1)));
  for (const auto& [config, message] : std::vector<std::pair<std::string, std::string>>{
           {R"({"module": "GRU", "input_size": 3, "hidden_size": 4, "proj_size": 2})",
            "proj_size argument is only supported for LSTM, not RNN or GRU"},
           {R"({"input_size": 3, "hidden_size": 4, "proj_size": 2})",
            "proj_size argument is only supported for LSTM, not RNN or GRU"},
           {R"({"module": "LSTM", "input_size": 3, "hidden_size": 4, "proj_size": 4})",
            "proj_size has to be smaller than hidden_size, got proj_size 4 and hidden_size 4"},
           {R"({"module": "LSTM", "input_size": 3, "hidden_size": 4, "proj_size": -1})",
            "proj_size should be a positive integer or zero to disable projections, got -1"}}) {
    Write("config.json", config);
    const absl::Status status = LoadError();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << config;
    EXPECT_THAT(status.message(), HasSubstr(Path("config.json") + ": ")) << config;
    EXPECT_THAT(status.message(), HasSubstr(message)) << config;
  }
}

TEST_F(ModelDirTest, GruStateDictUnderAnLstmConfigIsNamedAsAGru) {
  // GRU(3, 8)'s file is larger than LSTM(3, 4) needs, so it is parsed and its shapes read.
  Write("config.json", ConfigToJson(Cell(RnnModule::kLstm, 4)));
  Write("model.safetensors", SerializeSafetensors(RandomParameters(Cell(RnnModule::kGru, 8), 1)));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(Path("model.safetensors") + ": "));
  EXPECT_THAT(status.message(), HasSubstr("the weights look like a GRU"));
  EXPECT_THAT(status.message(), HasSubstr("but the config says LSTM(3, 4)"));
}

TEST_F(ModelDirTest, LstmWeightsWithoutProjectionUnderAProjConfigAreNamed) {
  // weight_hh_l0 is (4H, H) = (20, 5) where proj_size=2 needs (20, 2), and weight_hr_l0 is
  // missing.
  Write("config.json", ConfigToJson(Cell(RnnModule::kLstm, 5, 2)));
  Write("model.safetensors", SerializeSafetensors(RandomParameters(Cell(RnnModule::kLstm, 5), 1)));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("the weights look like an LSTM (weight_hh_l0"));
  EXPECT_THAT(status.message(),
              HasSubstr("parameter 'weight_hh_l0' has shape (20, 5), expected (20, 2)"));
  EXPECT_THAT(status.message(), HasSubstr("weight_hr_l0"));
}

TEST_F(ModelDirTest, ShortWeightHrIsRefusedNamingItsShape) {
  const RnnConfig lstm = Cell(RnnModule::kLstm, 5, 2);
  ParameterMap params = RandomParameters(lstm, 1);
  params["weight_hr_l0"] = Tensor::Zeros({2, 4});  // one column short of (proj_size, H)
  Write("config.json", ConfigToJson(lstm));
  Write("model.safetensors", SerializeSafetensors(params));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(Path("model.safetensors") + ": parameters do not match"));
  EXPECT_THAT(status.message(),
              HasSubstr("parameter 'weight_hr_l0' has shape (2, 4), expected (2, 5)"));
}

TEST_F(ModelDirTest, TruncatedLstmProjFileIsRefusedNamingTheFile) {
  const RnnConfig lstm = Cell(RnnModule::kLstm, 5, 2);
  const std::string weights = SerializeSafetensors(RandomParameters(lstm, 1));
  Write("config.json", ConfigToJson(lstm));
  // Cut inside the last tensor's data: the header's offsets now pass the end of the file.
  Write("model.safetensors", weights.substr(0, weights.size() - 6));
  const absl::Status status = LoadError();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(Path("model.safetensors")));
  EXPECT_THAT(status.message(),
              HasSubstr(Path("model.safetensors") + ": tensor 'weight_ih_l0' has data_offsets"));
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("beyond the data section of ")));
}

// The loader fuzzers' seeds (tools/fuzz/corpus/{config_json,safetensors}/NAME, replayed through
// the parsers by ctest) are real exports: each pair loads as a model folder, RNN, GRU and LSTM
// with proj_size among them, so the fuzzers start from files that pass every check.
TEST_F(ModelDirTest, FuzzSeedsAreLoadableModelsOfEveryModule) {
  const std::filesystem::path corpus(RNNSERVE_FUZZ_CORPUS);
  std::set<std::string> modules;
  bool projection = false;
  for (const auto& entry : std::filesystem::directory_iterator(corpus / "config_json")) {
    const std::string name = entry.path().filename().string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::filesystem::copy_file(entry.path(), Path("config.json"));
    std::filesystem::copy_file(corpus / "safetensors" / name, Path("model.safetensors"));
    absl::StatusOr<ModelFiles> loaded = LoadModelDir(dir_.string());
    ASSERT_TRUE(loaded.ok()) << name << ": " << loaded.status();
    modules.insert(std::string(ModuleName(loaded->config.rnn.module)));
    projection = projection || loaded->config.rnn.proj_size > 0;
  }
  EXPECT_EQ(modules, (std::set<std::string>{"RNN", "GRU", "LSTM"}));
  EXPECT_TRUE(projection);
}

}  // namespace
}  // namespace rnnserve
