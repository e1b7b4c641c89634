// ParseConfigJson and ConfigToJson: torch's defaults, every key, the module (RNN, GRU, LSTM)
// and proj_size, the round trip, and every rejection with its message.
#include "core/engine/config_json.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/engine/format_test_util.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using format_test::SmallConfig;

std::string ConfigError(const std::string& json) {
  absl::StatusOr<RnnConfig> parsed = ParseConfigJson(json);
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  return std::string(parsed.status().message());
}

TEST(ConfigJsonTest, DefaultsFollowTorch) {
  absl::StatusOr<RnnConfig> config = ParseConfigJson(R"({"input_size": 3, "hidden_size": 2})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, SmallConfig());
  EXPECT_EQ(config->num_layers, 1);
  EXPECT_EQ(config->nonlinearity, Nonlinearity::kTanh);
  EXPECT_TRUE(config->bias);
  EXPECT_FALSE(config->batch_first);
  EXPECT_EQ(config->dropout, 0.0);
  EXPECT_FALSE(config->bidirectional);
}

TEST(ConfigJsonTest, ParsesEveryKey) {
  absl::StatusOr<RnnConfig> config = ParseConfigJson(R"({
    "input_size": 100, "hidden_size": 10, "num_layers": 2, "nonlinearity": "relu",
    "bias": false, "batch_first": true, "dropout": 0.5, "bidirectional": true})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->input_size, 100);
  EXPECT_EQ(config->hidden_size, 10);
  EXPECT_EQ(config->num_layers, 2);
  EXPECT_EQ(config->nonlinearity, Nonlinearity::kRelu);
  EXPECT_FALSE(config->bias);
  EXPECT_TRUE(config->batch_first);
  EXPECT_EQ(config->dropout, 0.5);
  EXPECT_TRUE(config->bidirectional);
  // torch accepts dropout=0 as an int.
  EXPECT_TRUE(ParseConfigJson(R"({"input_size": 1, "hidden_size": 1, "dropout": 0})").ok());
}

TEST(ConfigJsonTest, ToJsonWritesAllKeysAndRoundTrips) {
  RnnConfig config = SmallConfig();
  config.num_layers = 3;
  config.nonlinearity = Nonlinearity::kRelu;
  config.bias = false;
  config.batch_first = true;
  config.dropout = 0.25;
  config.bidirectional = true;
  const std::string json = ConfigToJson(config);
  absl::StatusOr<RnnConfig> parsed = ParseConfigJson(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, config);

  EXPECT_EQ(ConfigToJson(SmallConfig()),
            "{\n"
            "  \"module\": \"RNN\",\n"
            "  \"input_size\": 3,\n"
            "  \"hidden_size\": 2,\n"
            "  \"num_layers\": 1,\n"
            "  \"nonlinearity\": \"tanh\",\n"
            "  \"bias\": true,\n"
            "  \"batch_first\": false,\n"
            "  \"dropout\": 0.0,\n"
            "  \"bidirectional\": false\n"
            "}\n");
}

TEST(ConfigJsonTest, RejectsMalformedDocuments) {
  EXPECT_THAT(ConfigError("{"), HasSubstr("config is not valid JSON"));
  EXPECT_THAT(ConfigError("[3, 2]"), HasSubstr("config must be a JSON object, got array"));
  EXPECT_THAT(ConfigError(std::string(R"({"input_size": 3, "hidden_size": 2})"
                                      "\0{",
                                      37)),
              HasSubstr("config is not valid JSON: NUL byte at offset 35"));
  EXPECT_THAT(ConfigError(R"({"input_size": 3, "hidden_size": 2, "input_size": 4})"),
              HasSubstr("config has duplicate key 'input_size'"));
}

TEST(ConfigJsonTest, RequiresInputAndHiddenSize) {
  EXPECT_THAT(ConfigError(R"({"hidden_size": 2})"),
              HasSubstr("config is missing required key 'input_size'"));
  EXPECT_THAT(ConfigError(R"({"input_size": 2})"),
              HasSubstr("config is missing required key 'hidden_size'"));
}

TEST(ConfigJsonTest, RejectsUnknownKeys) {
  EXPECT_THAT(ConfigError(R"({"input_size": 3, "hidden_size": 2, "hiden_size": 2})"),
              HasSubstr("config has unknown key 'hiden_size'; known keys: module, input_size, "
                        "hidden_size, num_layers, nonlinearity, bias, batch_first, dropout, "
                        "bidirectional, proj_size"));
}

TEST(ConfigJsonTest, ModuleDefaultsToRnnAndNamesGruAndLstm) {
  absl::StatusOr<RnnConfig> rnn = ParseConfigJson(R"({"input_size": 3, "hidden_size": 2})");
  ASSERT_TRUE(rnn.ok()) << rnn.status();
  EXPECT_EQ(rnn->module, RnnModule::kRnn);
  EXPECT_EQ(rnn->proj_size, 0);
  absl::StatusOr<RnnConfig> gru =
      ParseConfigJson(R"({"module": "GRU", "input_size": 3, "hidden_size": 2})");
  ASSERT_TRUE(gru.ok()) << gru.status();
  EXPECT_EQ(gru->module, RnnModule::kGru);
  absl::StatusOr<RnnConfig> lstm = ParseConfigJson(
      R"({"module": "LSTM", "input_size": 80, "hidden_size": 512, "proj_size": 128,
          "num_layers": 3})");
  ASSERT_TRUE(lstm.ok()) << lstm.status();
  EXPECT_EQ(lstm->module, RnnModule::kLstm);
  EXPECT_EQ(lstm->proj_size, 128);
  EXPECT_EQ(ConfigToString(*lstm), "LSTM(80, 512, proj_size=128, num_layers=3)");
}

TEST(ConfigJsonTest, GruAndLstmRoundTripWithTheirOwnKeys) {
  RnnConfig lstm = SmallConfig();
  lstm.module = RnnModule::kLstm;
  lstm.hidden_size = 5;
  lstm.proj_size = 2;
  lstm.bidirectional = true;
  const std::string json = ConfigToJson(lstm);
  EXPECT_THAT(json, HasSubstr("\"module\": \"LSTM\""));
  EXPECT_THAT(json, HasSubstr("\"proj_size\": 2"));
  EXPECT_THAT(json, ::testing::Not(HasSubstr("nonlinearity")));
  absl::StatusOr<RnnConfig> parsed = ParseConfigJson(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, lstm);

  RnnConfig gru = SmallConfig();
  gru.module = RnnModule::kGru;
  const std::string gru_json = ConfigToJson(gru);
  EXPECT_THAT(gru_json, ::testing::Not(HasSubstr("nonlinearity")));
  EXPECT_THAT(gru_json, ::testing::Not(HasSubstr("proj_size")));
  parsed = ParseConfigJson(gru_json);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, gru);
}

TEST(ConfigJsonTest, RejectsModuleArgumentsTorchRejects) {
  EXPECT_THAT(ConfigError(R"({"module": "Transformer", "input_size": 3, "hidden_size": 2})"),
              HasSubstr("Unknown module 'Transformer'. Select from 'RNN', 'GRU' or 'LSTM'."));
  EXPECT_THAT(ConfigError(R"({"module": "lstm", "input_size": 3, "hidden_size": 2})"),
              HasSubstr("Unknown module 'lstm'"));
  EXPECT_THAT(ConfigError(R"({"module": 1, "input_size": 3, "hidden_size": 2})"),
              HasSubstr("config key 'module' must be a string, got number"));
  // torch.nn.GRU/LSTM take no nonlinearity argument, whatever its value; the key's position
  // does not matter.
  EXPECT_THAT(ConfigError(R"({"nonlinearity": "tanh", "module": "GRU", "input_size": 3,
                              "hidden_size": 2})"),
              HasSubstr("config key 'nonlinearity' applies only to module RNN; this config's "
                        "module is GRU"));
  EXPECT_THAT(
      ConfigError(R"({"module": "LSTM", "input_size": 3, "hidden_size": 4, "proj_size": 4})"),
      HasSubstr("proj_size has to be smaller than hidden_size"));
  EXPECT_THAT(
      ConfigError(R"({"module": "LSTM", "input_size": 3, "hidden_size": 4, "proj_size": -1})"),
      HasSubstr("proj_size should be a positive integer or zero to disable projections"));
  EXPECT_THAT(
      ConfigError(R"({"module": "GRU", "input_size": 3, "hidden_size": 4, "proj_size": 2})"),
      HasSubstr("proj_size argument is only supported for LSTM, not RNN or GRU"));
  EXPECT_THAT(ConfigError(R"({"input_size": 3, "hidden_size": 4, "proj_size": 2})"),
              HasSubstr("proj_size argument is only supported for LSTM"));
  EXPECT_THAT(
      ConfigError(R"({"module": "LSTM", "input_size": 3, "hidden_size": 4, "proj_size": 1.0})"),
      HasSubstr("config key 'proj_size' must be an integer"));
}

TEST(ConfigJsonTest, RejectsWrongTypesNamingKeyAndType) {
  const std::string base = R"({"input_size": 3, "hidden_size": 2, )";
  EXPECT_THAT(ConfigError(base + R"("num_layers": "2"})"),
              HasSubstr("config key 'num_layers' must be an integer, got string \"2\""));
  EXPECT_THAT(ConfigError(base + R"("num_layers": 2.0})"),
              HasSubstr("config key 'num_layers' must be an integer, got number 2.0"));
  EXPECT_THAT(ConfigError(base + R"("num_layers": 18446744073709551615})"),
              HasSubstr("config key 'num_layers' must be an integer"));
  EXPECT_THAT(ConfigError(R"({"input_size": true, "hidden_size": 2})"),
              HasSubstr("config key 'input_size' must be an integer, got boolean true"));
  EXPECT_THAT(ConfigError(base + R"("bias": 1})"),
              HasSubstr("config key 'bias' must be a boolean, got number 1"));
  EXPECT_THAT(ConfigError(base + R"("batch_first": "yes"})"),
              HasSubstr("config key 'batch_first' must be a boolean"));
  EXPECT_THAT(ConfigError(base + R"("bidirectional": null})"),
              HasSubstr("config key 'bidirectional' must be a boolean, got null"));
  EXPECT_THAT(ConfigError(base + R"("nonlinearity": 1})"),
              HasSubstr("config key 'nonlinearity' must be a string, got number"));
  EXPECT_THAT(ConfigError(base + R"("dropout": "0.1"})"),
              HasSubstr("config key 'dropout' must be a number, got string"));
}

TEST(ConfigJsonTest, RejectsValuesTorchRejects) {
  const std::string base = R"({"input_size": 3, "hidden_size": 2, )";
  EXPECT_THAT(ConfigError(base + R"("nonlinearity": "sigmoid"})"),
              HasSubstr("Unknown nonlinearity 'sigmoid'"));
  EXPECT_THAT(ConfigError(base + R"("dropout": 1.5})"), HasSubstr("dropout should be a number"));
  EXPECT_THAT(ConfigError(base + R"("num_layers": 0})"),
              HasSubstr("num_layers must be greater than zero"));
  EXPECT_THAT(ConfigError(R"({"input_size": 3, "hidden_size": -2})"),
              HasSubstr("hidden_size must be greater than zero"));
}

TEST(ConfigJsonTest, DeeplyNestedValueIsNotPrintedRecursively) {
  const int depth = 200000;
  const std::string nested = std::string(depth, '[') + std::string(depth, ']');
  EXPECT_THAT(
      ConfigError(absl::StrCat(R"({"input_size": 3, "hidden_size": 2, "bias": )", nested, "}")),
      HasSubstr("config key 'bias' must be a boolean, got array [...]"));
}

}  // namespace
}  // namespace rnnserve
