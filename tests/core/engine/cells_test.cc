// GRU and LSTM in the engine, below the numbers (tests/parity holds the engine to torch): the
// config's module and proj_size, the parameter list torch has, the state layout (h, then c),
// shape checks with torch's messages, and the loader refusing a state_dict of another module
// with a message naming the module it looks like.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "core/engine/config_json.h"
#include "core/engine/model_dir.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_model.h"
#include "core/engine/rnn_parameters.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

RnnConfig Make(RnnModule module, int64_t in, int64_t hidden, int64_t layers = 1,
               bool bidir = false, int64_t proj = 0) {
  RnnConfig c;
  c.module = module;
  c.input_size = in;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.bidirectional = bidir;
  c.proj_size = proj;
  return c;
}

std::vector<std::string> Listed(const RnnConfig& c) {
  std::vector<std::string> out;
  for (const ParameterSpec& spec : ParameterSpecs(c)) {
    out.push_back(spec.name + ShapeToString(spec.shape));
  }
  return out;
}

// Expected lists written from torch 1.13's named_parameters() for the same modules.
TEST(CellsConfigTest, ParameterSpecsFollowTorchOrderAndGateShapes) {
  EXPECT_EQ(Listed(Make(RnnModule::kGru, 5, 4, 2, true)),
            (std::vector<std::string>{
                "weight_ih_l0(12, 5)", "weight_hh_l0(12, 4)", "bias_ih_l0(12,)",
                "bias_hh_l0(12,)", "weight_ih_l0_reverse(12, 5)", "weight_hh_l0_reverse(12, 4)",
                "bias_ih_l0_reverse(12,)", "bias_hh_l0_reverse(12,)", "weight_ih_l1(12, 8)",
                "weight_hh_l1(12, 4)", "bias_ih_l1(12,)", "bias_hh_l1(12,)",
                "weight_ih_l1_reverse(12, 8)", "weight_hh_l1_reverse(12, 4)",
                "bias_ih_l1_reverse(12,)", "bias_hh_l1_reverse(12,)"}));
  // LSTM(80, 512, proj_size=128, num_layers=2, bidirectional=True): weight_hr after the biases;
  // layer 1 reads D * proj_size features.
  const std::vector<std::string> lstm = Listed(Make(RnnModule::kLstm, 80, 512, 2, true, 128));
  ASSERT_EQ(lstm.size(), 20u);
  EXPECT_EQ(std::vector<std::string>(lstm.begin(), lstm.begin() + 6),
            (std::vector<std::string>{"weight_ih_l0(2048, 80)", "weight_hh_l0(2048, 128)",
                                      "bias_ih_l0(2048,)", "bias_hh_l0(2048,)",
                                      "weight_hr_l0(128, 512)",
                                      "weight_ih_l0_reverse(2048, 80)"}));
  EXPECT_EQ(lstm[10], "weight_ih_l1(2048, 256)");
  EXPECT_EQ(lstm[19], "weight_hr_l1_reverse(128, 512)");
  RnnConfig no_bias = Make(RnnModule::kLstm, 3, 4);
  no_bias.bias = false;
  EXPECT_EQ(Listed(no_bias),
            (std::vector<std::string>{"weight_ih_l0(16, 3)", "weight_hh_l0(16, 4)"}));
}

TEST(CellsConfigTest, ParameterCountMatchesTheSpecs) {
  for (const RnnConfig& c :
       {Make(RnnModule::kGru, 5, 4, 3, true), Make(RnnModule::kLstm, 7, 6, 2, false, 3),
        Make(RnnModule::kLstm, 2, 9, 3, true, 1), Make(RnnModule::kRnn, 4, 3, 2, true)}) {
    int64_t total = 0;
    for (const ParameterSpec& spec : ParameterSpecs(c)) total += NumElements(spec.shape);
    EXPECT_EQ(ParameterCount(c), total) << ConfigToString(c);
  }
}

TEST(CellsConfigTest, StateShapesUseProjSizeForHAndHiddenSizeForC) {
  const RnnConfig c = Make(RnnModule::kLstm, 80, 512, 3, true, 128);
  EXPECT_EQ(c.real_hidden_size(), 128);
  EXPECT_EQ(c.output_size(), 256);
  EXPECT_EQ(c.layer_input_size(1), 256);
  EXPECT_EQ(c.StateShape(4, true), (Shape{6, 4, 128}));
  EXPECT_EQ(c.CellStateShape(4, true), (Shape{6, 4, 512}));
  EXPECT_EQ(c.CellStateShape(1, false), (Shape{6, 512}));
  EXPECT_EQ(c.OutputShape(10, 4, true), (Shape{10, 4, 256}));
  EXPECT_TRUE(c.has_cell_state());
  EXPECT_FALSE(Make(RnnModule::kGru, 1, 1).has_cell_state());
}

TEST(CellsConfigTest, ConfigToStringIsTorchsRepr) {
  EXPECT_EQ(ConfigToString(Make(RnnModule::kLstm, 80, 512, 3, false, 128)),
            "LSTM(80, 512, proj_size=128, num_layers=3)");
  RnnConfig gru = Make(RnnModule::kGru, 3, 4, 2);
  gru.bias = false;
  gru.batch_first = true;
  gru.dropout = 0.5;
  EXPECT_EQ(ConfigToString(gru),
            "GRU(3, 4, num_layers=2, bias=False, batch_first=True, dropout=0.5)");
  EXPECT_EQ(ConfigToString(Make(RnnModule::kLstm, 3, 4)), "LSTM(3, 4)");
}

TEST(CellsConfigTest, ValidateRejectsWhatTorchRejects) {
  EXPECT_THAT(Make(RnnModule::kLstm, 3, 4, 1, false, 4).Validate().message(),
              HasSubstr("proj_size has to be smaller than hidden_size"));
  EXPECT_THAT(Make(RnnModule::kLstm, 3, 4, 1, false, -1).Validate().message(),
              HasSubstr("proj_size should be a positive integer or zero"));
  EXPECT_THAT(Make(RnnModule::kGru, 3, 4, 1, false, 2).Validate().message(),
              HasSubstr("proj_size argument is only supported for LSTM, not RNN or GRU"));
  RnnConfig relu_gru = Make(RnnModule::kGru, 3, 4);
  relu_gru.nonlinearity = Nonlinearity::kRelu;
  EXPECT_THAT(relu_gru.Validate().message(), HasSubstr("nonlinearity applies only to RNN"));
  EXPECT_TRUE(Make(RnnModule::kLstm, 3, 4, 1, false, 3).Validate().ok());
}

// A state_dict of another module: the message names what the weights look like.
TEST(CellsParametersTest, WrongModuleIsNamed) {
  const RnnConfig lstm = Make(RnnModule::kLstm, 3, 4);
  const RnnConfig gru = Make(RnnModule::kGru, 3, 4);
  absl::Status s = CheckParameters(gru, RandomParameters(lstm, 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("the weights look like an LSTM (weight_hh_l0 is (16, 4)"));
  EXPECT_THAT(s.message(), HasSubstr("but the config says GRU(3, 4)"));
  EXPECT_THAT(s.message(),
              HasSubstr("parameter 'weight_ih_l0' has shape (16, 3), expected (12, 3)"));

  s = CheckParameters(Make(RnnModule::kRnn, 3, 4), RandomParameters(gru, 1));
  EXPECT_THAT(s.message(), HasSubstr("the weights look like a GRU"));
  s = CheckParameters(lstm, RandomParameters(Make(RnnModule::kRnn, 3, 4), 1));
  EXPECT_THAT(s.message(), HasSubstr("the weights look like an RNN"));
  s = CheckParameters(lstm, RandomParameters(Make(RnnModule::kLstm, 3, 4, 1, false, 2), 1));
  EXPECT_THAT(s.message(), HasSubstr("the weights look like an LSTM with proj_size=2"));
  // Same module, wrong size: no guess, just the list.
  s = CheckParameters(lstm, RandomParameters(Make(RnnModule::kLstm, 3, 5), 1));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("look like")));
}

class CellsModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("cells_test_", ::getpid());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(CellsModelDirTest, LstmRoundTripsAndAnotherModulesWeightsAreRefused) {
  const RnnConfig lstm = Make(RnnModule::kLstm, 3, 5, 2, true, 2);
  ASSERT_TRUE(SaveModelDir(dir_.string(), lstm, RandomParameters(lstm, 3)).ok());
  absl::StatusOr<ModelFiles> loaded = LoadModelDir(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.rnn, lstm);

  std::ofstream((dir_ / "config.json").string())
      << R"({"module": "GRU", "input_size": 3, "hidden_size": 5, "num_layers": 2,
             "bidirectional": true})";
  loaded = LoadModelDir(dir_.string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr((dir_ / "model.safetensors").string()));
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("the weights look like an LSTM with proj_size=2"));
}

// The size check before parsing counts the gates and the projection: another module's much
// smaller file is refused before it is parsed, naming the config.
TEST_F(CellsModelDirTest, WeightsFileTooSmallForTheGatedConfigIsRefusedUnparsed) {
  const RnnConfig gru = Make(RnnModule::kGru, 3, 2);
  ASSERT_TRUE(SaveModelDir(dir_.string(), gru, RandomParameters(gru, 3)).ok());
  const RnnConfig lstm = Make(RnnModule::kLstm, 3, 9, 2, true, 4);
  std::ofstream((dir_ / "config.json").string()) << ConfigToJson(lstm);
  absl::StatusOr<ModelFiles> loaded = LoadModelDir(dir_.string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              HasSubstr(absl::StrCat("too small for LSTM(3, 9, proj_size=4, num_layers=2, "
                                     "bidirectional=True)")));
  EXPECT_THAT(loaded.status().message(),
              HasSubstr(absl::StrCat("it needs ", ParameterCount(lstm), " parameter values")));
}

absl::StatusOr<std::unique_ptr<RnnModel>> Model(const RnnConfig& c) {
  return RnnModel::Create(c, RandomParameters(c, 7));
}

TEST(CellsModelTest, StateIsHThenC) {
  auto lstm = Model(Make(RnnModule::kLstm, 3, 5, 2, true, 2));
  ASSERT_TRUE(lstm.ok()) << lstm.status();
  EXPECT_EQ((*lstm)->HiddenStateSize(3), 2 * 2 * 3 * 2);
  EXPECT_EQ((*lstm)->CellStateSize(3), 2 * 2 * 3 * 5);
  EXPECT_EQ((*lstm)->StateSize(3), (*lstm)->HiddenStateSize(3) + (*lstm)->CellStateSize(3));
  EXPECT_EQ((*lstm)->OutputSize(4, 3), 4 * 3 * 4);
  auto gru = Model(Make(RnnModule::kGru, 3, 5, 2));
  ASSERT_TRUE(gru.ok()) << gru.status();
  EXPECT_EQ((*gru)->CellStateSize(3), 0);
  EXPECT_EQ((*gru)->StateSize(3), 2 * 3 * 5);
  // Multiply-adds per step: G*H*(in + H_out) per layer and direction, plus the projection.
  EXPECT_EQ((*gru)->MacsPerStep(), 15 * (3 + 5) + 15 * (5 + 5));
  auto proj = Model(Make(RnnModule::kLstm, 3, 5, 1, false, 2));
  ASSERT_TRUE(proj.ok());
  EXPECT_EQ((*proj)->MacsPerStep(), 20 * (3 + 2) + 2 * 5);
}

TEST(CellsModelTest, ForwardReturnsCnOnlyForLstmAndChecksC0) {
  auto lstm = Model(Make(RnnModule::kLstm, 3, 5, 1, false, 2));
  ASSERT_TRUE(lstm.ok());
  const Tensor x = Tensor::Zeros({4, 2, 3});
  absl::StatusOr<ForwardResult> r = (*lstm)->Forward(x);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->c_n.has_value());
  EXPECT_EQ(r->c_n->shape, (Shape{1, 2, 5}));
  EXPECT_EQ(r->h_n.shape, (Shape{1, 2, 2}));
  EXPECT_EQ(r->output.shape, (Shape{4, 2, 2}));

  const Tensor bad_c0 = Tensor::Zeros({1, 2, 2});
  r = (*lstm)->Forward(x, nullptr, &bad_c0, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("Expected hidden[1] size (1, 2, 5), got [1, 2, 2]"));
  const Tensor c0_2d = Tensor::Zeros({1, 5});
  r = (*lstm)->Forward(x, nullptr, &c0_2d, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("For batched 3-D input, cx should also be 3-D but got 2-D tensor"));

  // c_0 alone equals (zeros, c_0); c_0 changes the result.
  Tensor c0 = Tensor::Zeros({1, 2, 5});
  for (size_t i = 0; i < c0.values.size(); ++i) c0.values[i] = 0.1f * static_cast<float>(i);
  const Tensor h0 = Tensor::Zeros({1, 2, 2});
  absl::StatusOr<ForwardResult> alone = (*lstm)->Forward(x, nullptr, &c0, nullptr);
  absl::StatusOr<ForwardResult> both = (*lstm)->Forward(x, &h0, &c0, nullptr);
  absl::StatusOr<ForwardResult> neither = (*lstm)->Forward(x);
  ASSERT_TRUE(alone.ok() && both.ok() && neither.ok());
  EXPECT_EQ(alone->output.values, both->output.values);
  EXPECT_EQ(alone->c_n->values, both->c_n->values);
  EXPECT_NE(alone->c_n->values, neither->c_n->values);

  auto gru = Model(Make(RnnModule::kGru, 3, 5));
  ASSERT_TRUE(gru.ok());
  r = (*gru)->Forward(x);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->c_n.has_value());
  const Tensor gru_c0 = Tensor::Zeros({1, 2, 5});
  r = (*gru)->Forward(x, nullptr, &gru_c0, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("GRU(3, 5) has no cell state"));
}

// Steady state allocates nothing: a second call of the same shape does not grow the Workspace.
TEST(CellsModelTest, WorkspaceStopsGrowingAfterTheFirstCall) {
  for (const RnnConfig& c : {Make(RnnModule::kGru, 6, 9, 2, true),
                             Make(RnnModule::kLstm, 6, 9, 2, false, 4)}) {
    auto model = Model(c);
    ASSERT_TRUE(model.ok());
    Workspace ws;
    Tensor x = Tensor::Zeros({7, 3, 6});
    ASSERT_TRUE((*model)->Forward(x, nullptr, &ws).ok());
    const int64_t bytes = ws.bytes();
    ASSERT_TRUE((*model)->Forward(x, nullptr, &ws).ok());
    EXPECT_EQ(ws.bytes(), bytes) << ConfigToString(c);
  }
}

}  // namespace
}  // namespace rnnserve
