#include "core/engine/rnn_config.h"

#include <cmath>

#include "core/engine/rnn_parameters.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

RnnConfig Make(int64_t in, int64_t hidden, int64_t layers = 1, bool bidir = false,
               bool bias = true) {
  RnnConfig c;
  c.input_size = in;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.bidirectional = bidir;
  c.bias = bias;
  return c;
}

TEST(RnnConfigTest, DefaultsMatchTorch) {
  RnnConfig c;
  EXPECT_EQ(c.num_layers, 1);
  EXPECT_EQ(c.nonlinearity, Nonlinearity::kTanh);
  EXPECT_TRUE(c.bias);
  EXPECT_FALSE(c.batch_first);
  EXPECT_EQ(c.dropout, 0.0);
  EXPECT_FALSE(c.bidirectional);
}

TEST(RnnConfigTest, ValidateRejectsBadArguments) {
  EXPECT_TRUE(Make(100, 10).Validate().ok());
  EXPECT_THAT(Make(0, 10).Validate().message(), HasSubstr("input_size must be greater than zero, got 0"));
  EXPECT_THAT(Make(3, -2).Validate().message(), HasSubstr("hidden_size must be greater than zero, got -2"));
  EXPECT_THAT(Make(3, 2, 0).Validate().message(), HasSubstr("num_layers must be greater than zero"));
  RnnConfig c = Make(3, 2);
  c.dropout = 1.5;
  EXPECT_THAT(c.Validate().message(), HasSubstr("dropout should be a number in range [0, 1]"));
  c.dropout = std::nan("");
  EXPECT_FALSE(c.Validate().ok());
  c.dropout = 1.0;
  EXPECT_TRUE(c.Validate().ok());
}

TEST(RnnConfigTest, ParseNonlinearity) {
  EXPECT_EQ(*ParseNonlinearity("tanh"), Nonlinearity::kTanh);
  EXPECT_EQ(*ParseNonlinearity("relu"), Nonlinearity::kRelu);
  auto bad = ParseNonlinearity("sigmoid");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("Unknown nonlinearity 'sigmoid'"));
  EXPECT_EQ(NonlinearityName(Nonlinearity::kRelu), "relu");
}

TEST(RnnConfigTest, ConfigToStringLooksLikeTorch) {
  RnnConfig c = Make(100, 10, 2);
  c.dropout = 0.5;
  EXPECT_EQ(ConfigToString(c), "RNN(100, 10, num_layers=2, dropout=0.5)");
  EXPECT_EQ(ConfigToString(Make(100, 15, 2, true)), "RNN(100, 15, num_layers=2, bidirectional=True)");
}

// The seed notebook's named_parameters() listings.
TEST(RnnConfigTest, ParameterSpecsFollowTorchOrder) {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (const auto& spec : ParameterSpecs(Make(100, 10, 2))) {
    names.push_back(spec.name);
    shapes.push_back(spec.shape);
  }
  EXPECT_THAT(names, ::testing::ElementsAre("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                            "bias_hh_l0", "weight_ih_l1", "weight_hh_l1",
                                            "bias_ih_l1", "bias_hh_l1"));
  EXPECT_EQ(shapes[0], (Shape{10, 100}));
  EXPECT_EQ(shapes[4], (Shape{10, 10}));

  auto bidir = ParameterSpecs(Make(100, 15, 2, true));
  ASSERT_EQ(bidir.size(), 16u);
  EXPECT_EQ(bidir[4].name, "weight_ih_l0_reverse");
  EXPECT_EQ(bidir[8].name, "weight_ih_l1");
  EXPECT_EQ(bidir[8].shape, (Shape{15, 30}));
  EXPECT_EQ(bidir[15].name, "bias_hh_l1_reverse");

  auto no_bias = ParameterSpecs(Make(4, 3, 1, false, false));
  ASSERT_EQ(no_bias.size(), 2u);
  EXPECT_EQ(no_bias[1].name, "weight_hh_l0");
}

TEST(RnnParametersTest, RandomParametersAreBoundedAndSeeded) {
  RnnConfig c = Make(100, 16, 2, true);
  ParameterMap a = RandomParameters(c, 7);
  ParameterMap b = RandomParameters(c, 7);
  ParameterMap other = RandomParameters(c, 8);
  EXPECT_TRUE(CheckParameters(c, a).ok());
  const float bound = 1.0f / 4.0f;
  float lo = 1, hi = -1;
  for (const auto& [name, t] : a) {
    EXPECT_EQ(t.values, b.at(name).values) << name;
    EXPECT_NE(t.values, other.at(name).values) << name;
    for (float v : t.values) {
      EXPECT_LE(std::abs(v), bound);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  // Spread over the whole interval, not a constant.
  EXPECT_LT(lo, -0.9f * bound);
  EXPECT_GT(hi, 0.9f * bound);
}

TEST(RnnParametersTest, CheckParametersNamesEveryProblem) {
  RnnConfig c = Make(5, 3);
  ParameterMap p = RandomParameters(c, 1);
  p.erase("bias_hh_l0");
  p["weight_hh_l0"] = Tensor::Zeros({3, 4});
  p["weight_ih_l1"] = Tensor::Zeros({3, 3});
  absl::Status s = CheckParameters(c, p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("missing parameter 'bias_hh_l0' with shape (3,)"));
  EXPECT_THAT(s.message(), HasSubstr("parameter 'weight_hh_l0' has shape (3, 4), expected (3, 3)"));
  EXPECT_THAT(s.message(), HasSubstr("unexpected parameter 'weight_ih_l1'"));
}

}  // namespace
}  // namespace rnnserve
