// PipelineConfig and config.json's pipeline form: ParsePipelineJson / PipelineToJson round
// trips for every layer type, the core-only form, every rejection with its message, torch's
// reprs (LayerToString, PipelineToString), and the parameters a pipeline implies
// (PipelineParameterSpecs, CheckPipelineParameters, CoreParameters).
#include "core/engine/pipeline_config.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/engine/config_json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

RnnConfig Core(RnnModule module, int64_t input, int64_t hidden) {
  RnnConfig rnn;
  rnn.module = module;
  rnn.input_size = input;
  rnn.hidden_size = hidden;
  return rnn;
}

// Embedding(10, 4, padding_idx=-1) -> LayerNorm(4, no affine) -> Dropout(0.25) -> Linear(4, 3)
// -> bidirectional LSTM(3, 5, proj_size=2) -> every head piece: Linear(4, 6, no bias), ReLU,
// Tanh, Sigmoid, GELU both ways, LayerNorm(6, eps=1e-3), Dropout, Softmax, LogSoftmax.
PipelineConfig EveryLayerPipeline() {
  PipelineConfig config;
  LayerConfig embed = MakeLayer(LayerType::kEmbedding, "embed", 10, 4);
  embed.padding_idx = -1;
  LayerConfig norm = MakeLayer(LayerType::kLayerNorm, "pre.norm", 4, 4);
  norm.bias = false;
  LayerConfig drop = MakeLayer(LayerType::kDropout, "pre.drop");
  drop.dropout = 0.25;
  config.input_layer = {embed, norm, drop, MakeLayer(LayerType::kLinear, "pre.proj", 4, 3)};
  config.rnn = Core(RnnModule::kLstm, 3, 5);
  config.rnn.proj_size = 2;
  config.rnn.bidirectional = true;
  config.rnn.batch_first = true;
  config.rnn_path = "encoder.lstm";
  LayerConfig linear = MakeLayer(LayerType::kLinear, "head.0", 4, 6);
  linear.bias = false;
  LayerConfig gelu_tanh = MakeLayer(LayerType::kGelu, "head.5");
  gelu_tanh.gelu_tanh = true;
  LayerConfig head_norm = MakeLayer(LayerType::kLayerNorm, "head.6", 6, 6);
  head_norm.eps = 1e-3;
  config.head = {linear,
                 MakeLayer(LayerType::kRelu, "head.1"),
                 MakeLayer(LayerType::kTanh, "head.2"),
                 MakeLayer(LayerType::kSigmoid, "head.3"),
                 MakeLayer(LayerType::kGelu, "head.4"),
                 gelu_tanh,
                 head_norm,
                 MakeLayer(LayerType::kDropout, "head.7"),
                 MakeLayer(LayerType::kSoftmax, "head.8"),
                 MakeLayer(LayerType::kLogSoftmax, "head.9")};
  return config;
}

// Linear(3, 4) -> RNN(4, 2) -> Linear(2, 5): the smallest features pipeline.
PipelineConfig SmallPipeline() {
  PipelineConfig config;
  config.input_layer = {MakeLayer(LayerType::kLinear, "proj", 3, 4)};
  config.rnn = Core(RnnModule::kRnn, 4, 2);
  config.rnn_path = "rnn";
  config.head = {MakeLayer(LayerType::kLinear, "fc", 2, 5)};
  return config;
}

void ExpectRoundTrip(const PipelineConfig& config) {
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();
  const std::string json = PipelineToJson(config);
  absl::StatusOr<PipelineConfig> parsed = ParsePipelineJson(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << json;
  EXPECT_EQ(*parsed, config) << json;
  EXPECT_EQ(PipelineToJson(*parsed), json);
}

TEST(PipelineConfigTest, RoundTripsEveryLayerType) {
  ExpectRoundTrip(EveryLayerPipeline());
  ExpectRoundTrip(SmallPipeline());
  // Every piece type on its own in the head (Embedding: the input layer's first).
  for (LayerType type : {LayerType::kRelu, LayerType::kTanh, LayerType::kSigmoid, LayerType::kGelu,
                         LayerType::kDropout, LayerType::kSoftmax, LayerType::kLogSoftmax}) {
    PipelineConfig config = SmallPipeline();
    config.head = {MakeLayer(type, "act")};
    SCOPED_TRACE(LayerTypeName(type));
    ExpectRoundTrip(config);
  }
  PipelineConfig ids = SmallPipeline();
  ids.input_layer = {MakeLayer(LayerType::kEmbedding, "embed", 1 << 24, 4)};
  ids.input_layer[0].padding_idx = 0;
  ExpectRoundTrip(ids);
  // A core at a path with no other piece is still a pipeline (its names carry the path).
  PipelineConfig bare;
  bare.rnn = Core(RnnModule::kGru, 3, 2);
  bare.rnn_path = "model.rnn_1";
  EXPECT_FALSE(bare.core_only());
  ExpectRoundTrip(bare);
}

TEST(PipelineConfigTest, LayersTakeTorchDefaults) {
  absl::StatusOr<PipelineConfig> parsed = ParsePipelineJson(R"({
    "input_layer": [{"type": "Embedding", "path": "e", "num_embeddings": 5,
                     "embedding_dim": 3, "padding_idx": null}],
    "rnn": {"path": "rnn", "input_size": 3, "hidden_size": 2},
    "head": [{"type": "Linear", "path": "h.0", "in_features": 2, "out_features": 2},
             {"type": "LayerNorm", "path": "h.1", "normalized_shape": [2]},
             {"type": "GELU", "path": "h.2"}, {"type": "Dropout", "path": "h.3"},
             {"type": "Softmax", "path": "h.4", "dim": -1}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->takes_ids());
  EXPECT_EQ(parsed->num_embeddings(), 5);
  EXPECT_EQ(parsed->input_features(), 1);
  EXPECT_EQ(parsed->output_features(), 2);
  EXPECT_FALSE(parsed->input_layer[0].padding_idx.has_value());
  EXPECT_EQ(parsed->rnn, Core(RnnModule::kRnn, 3, 2));
  EXPECT_TRUE(parsed->head[0].bias);
  EXPECT_EQ(parsed->head[1].eps, 1e-5);
  EXPECT_TRUE(parsed->head[1].bias);  // elementwise_affine
  EXPECT_FALSE(parsed->head[2].gelu_tanh);
  EXPECT_EQ(parsed->head[3].dropout, 0.5);
  EXPECT_EQ(PipelineToString(*parsed),
            "Embedding(5, 3) -> RNN(3, 2) -> Linear(in_features=2, out_features=2, bias=True) -> "
            "LayerNorm((2,), eps=1e-05, elementwise_affine=True) -> GELU(approximate='none') -> "
            "Dropout(p=0.5, inplace=False) -> Softmax(dim=-1)");
}

TEST(PipelineConfigTest, CoreOnlyFormStillParses) {
  const std::string json = R"({"module": "GRU", "input_size": 3, "hidden_size": 2,
                               "bidirectional": true})";
  absl::StatusOr<PipelineConfig> parsed = ParsePipelineJson(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->core_only());
  absl::StatusOr<RnnConfig> core = ParseConfigJson(json);
  ASSERT_TRUE(core.ok());
  EXPECT_EQ(*parsed, CorePipeline(*core));
  EXPECT_EQ(PipelineToJson(*parsed), ConfigToJson(*core));
  EXPECT_EQ(PipelineToString(*parsed), "GRU(3, 2, bidirectional=True)");
  EXPECT_EQ(parsed->input_features(), 3);
  EXPECT_EQ(parsed->output_features(), 4);
  EXPECT_EQ(parsed->num_embeddings(), 0);
  // The core-only form's own errors are unchanged.
  absl::StatusOr<PipelineConfig> bad = ParsePipelineJson(R"({"input_size": 3})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("missing required key 'hidden_size'"));
}

// An input layer that starts with pieces taking any width (Dropout, an activation) takes what
// the first Linear or LayerNorm takes, or the core's input_size when none follows: torch runs
// nn.Sequential(nn.Dropout(0.1), nn.Tanh()) before a GRU(3, 2) on 3 features.
TEST(PipelineConfigTest, InputLayerMayStartWithAPieceOfAnyWidth) {
  PipelineConfig config = SmallPipeline();
  config.input_layer = {MakeLayer(LayerType::kDropout, "pre.0"), MakeLayer(LayerType::kTanh, "pre.1")};
  config.rnn.input_size = 3;
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();
  EXPECT_EQ(config.input_features(), 3);
  ExpectRoundTrip(config);

  config.input_layer = {MakeLayer(LayerType::kRelu, "pre.0"), MakeLayer(LayerType::kLinear, "pre.1", 7, 3)};
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();
  EXPECT_EQ(config.input_features(), 7);
  ExpectRoundTrip(config);

  config.input_layer = {MakeLayer(LayerType::kSigmoid, "pre.0"),
                        MakeLayer(LayerType::kLayerNorm, "pre.1", 3, 3)};
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();
  EXPECT_EQ(config.input_features(), 3);
}

// A pipeline config around SmallPipeline's core, with `input_layer` and `head` spliced in.
std::string PipelineJson(const std::string& input_layer, const std::string& head,
                         const std::string& rnn = R"("path": "rnn", "input_size": 4,
                                                     "hidden_size": 2)") {
  return absl::StrCat(R"({"input_layer": [)", input_layer, R"(], "rnn": {)", rnn, R"(}, "head": [)",
                      head, "]}");
}

std::string PipelineError(const std::string& json) {
  absl::StatusOr<PipelineConfig> parsed = ParsePipelineJson(json);
  EXPECT_FALSE(parsed.ok()) << json;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  return std::string(parsed.status().message());
}

std::string ValidateError(const PipelineConfig& config) {
  const absl::Status status = config.Validate();
  EXPECT_FALSE(status.ok()) << PipelineToString(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  return std::string(status.message());
}

constexpr char kLinear[] =
    R"({"type": "Linear", "path": "fc", "in_features": 2, "out_features": 3})";

TEST(PipelineConfigTest, RejectsTopLevelAndCoreErrors) {
  // The reference config parses; each case below breaks one thing in it.
  ASSERT_TRUE(ParsePipelineJson(PipelineJson("", kLinear)).ok());
  EXPECT_THAT(PipelineError(R"({"rnn": {"path": "rnn", "input_size": 4, "hidden_size": 2},
                                "heads": []})"),
              AllOf(HasSubstr("unknown key 'heads'"), HasSubstr("input_layer, rnn, head")));
  EXPECT_THAT(PipelineError(R"({"rnn": {"input_size": 4, "hidden_size": 2}})"),
              HasSubstr("config 'rnn' needs a string key 'path'"));
  EXPECT_THAT(PipelineError(R"({"rnn": {"path": 3, "input_size": 4, "hidden_size": 2}})"),
              HasSubstr("config 'rnn' needs a string key 'path'"));
  EXPECT_THAT(PipelineError(R"({"rnn": {"path": "", "input_size": 4, "hidden_size": 2}})"),
              HasSubstr("'path' must not be empty"));
  EXPECT_THAT(PipelineError(R"({"rnn": [4, 2]})"),
              HasSubstr("config key 'rnn' must be an object, got array"));
  EXPECT_THAT(PipelineError(R"({"rnn": {"path": "rnn", "hidden_size": 2}})"),
              HasSubstr("config 'rnn' is missing required key 'input_size'"));
  EXPECT_THAT(PipelineError(PipelineJson("", "", R"("path": "rnn", "input_size": 4,
                                                    "hidden_size": 2, "layers": 2)")),
              AllOf(HasSubstr("config 'rnn'"), HasSubstr("unknown key 'layers'")));
  EXPECT_THAT(PipelineError(PipelineJson("", "", R"("path": "rnn", "input_size": 4,
                                                    "hidden_size": "2")")),
              AllOf(HasSubstr("config 'rnn'"), HasSubstr("'hidden_size' must be an integer")));
  EXPECT_THAT(PipelineError(PipelineJson("", "", R"("path": "a b", "input_size": 4,
                                                    "hidden_size": 2)")),
              AllOf(HasSubstr("the core's path"), HasSubstr("[A-Za-z0-9_.]"), HasSubstr("'a b'")));
  EXPECT_THAT(PipelineError(R"({"rnn": {"path": "rnn", "input_size": 4, "hidden_size": 2},
                                "head": {}})"),
              HasSubstr("config key 'head' must be an array of layers, got object"));
  EXPECT_THAT(PipelineError(R"({"rnn": {"path": "rnn", "input_size": 4, "hidden_size": 2},
                                "input_layer": "Linear"})"),
              HasSubstr("config key 'input_layer' must be an array of layers, got string"));
  // Repeated keys, at the top or inside a layer, are refused (nlohmann keeps the last).
  EXPECT_THAT(PipelineError(R"({"rnn": {"path": "rnn", "input_size": 4, "hidden_size": 2},
                                "head": [], "head": []})"),
              HasSubstr("head"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "ReLU", "path": "a", "path": "b"})")),
              HasSubstr("path"));
}

TEST(PipelineConfigTest, RejectsLayerObjectErrors) {
  // Not an object; "type" and "path" missing or not strings.
  EXPECT_THAT(PipelineError(PipelineJson("", "3")),
              HasSubstr("config 'head'[0] must be an object, got number"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"path": "fc"})")),
              HasSubstr("config 'head'[0] needs a string key 'type'"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "ReLU"})")),
              HasSubstr("config 'head'[0] needs a string key 'path'"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "ReLU", "path": ["a"]})")),
              HasSubstr("config 'head'[0] needs a string key 'path'"));
  // An unknown type names the layer and lists the supported ones.
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "Conv1d", "path": "conv"})")),
              AllOf(HasSubstr("config 'head'[0]"), HasSubstr("unsupported layer type 'Conv1d'"),
                    HasSubstr("supported: Linear, Embedding, LayerNorm, ReLU, Tanh, Sigmoid, "
                              "GELU, Dropout, Softmax, LogSoftmax")));
  // Unknown keys list what the type takes.
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "Linear", "path": "fc", "in_features": 2,
                                        "out_features": 3, "dtype": "float16"})")),
              AllOf(HasSubstr("config 'head'[0] (Linear) has unknown key 'dtype'"),
                    HasSubstr("it takes: type, path, in_features, out_features, bias")));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "ReLU", "path": "a", "inplace": true})")),
              AllOf(HasSubstr("(ReLU) has unknown key 'inplace'"), HasSubstr("takes: type, path")));
  EXPECT_THAT(PipelineError(PipelineJson(
                  "", R"({"type": "Dropout", "path": "d", "p": 0.1, "inplace": false})")),
              AllOf(HasSubstr("(Dropout) has unknown key 'inplace'"), HasSubstr("path, p")));
  // Required arguments.
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "Linear", "path": "fc",
                                                "in_features": 2})")),
              HasSubstr("config 'head'[0] (Linear) is missing key 'out_features'"));
  EXPECT_THAT(PipelineError(PipelineJson(R"({"type": "Embedding", "path": "e",
                                           "embedding_dim": 4})",
                                         "")),
              HasSubstr("config 'input_layer'[0] (Embedding) is missing key 'num_embeddings'"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "LayerNorm", "path": "n"})")),
              HasSubstr("(LayerNorm) is missing key 'normalized_shape'"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "Softmax", "path": "s"})")),
              HasSubstr("(Softmax) is missing key 'dim'"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "LogSoftmax", "path": "s"})")),
              HasSubstr("(LogSoftmax) is missing key 'dim'"));
}

TEST(PipelineConfigTest, RejectsWrongJsonTypes) {
  struct Case {
    std::string layer;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"type": "Linear", "path": "fc", "in_features": "2", "out_features": 3})",
       "config 'head'[0] key 'in_features' must be an integer, got string"},
      {R"({"type": "Linear", "path": "fc", "in_features": 2, "out_features": 3.5})",
       "key 'out_features' must be an integer, got number"},
      {R"({"type": "Linear", "path": "fc", "in_features": 2, "out_features": 3, "bias": 1})",
       "key 'bias' must be a boolean, got number"},
      {R"({"type": "LayerNorm", "path": "n", "normalized_shape": "2"})",
       "key 'normalized_shape' must be an integer or [integer], got string"},
      {R"({"type": "LayerNorm", "path": "n", "normalized_shape": [2.5]})",
       "key 'normalized_shape' must be an integer or [integer]"},
      {R"({"type": "LayerNorm", "path": "n", "normalized_shape": [1, 2]})",
       "normalized_shape must have one dimension (the features), got [1,2]"},
      {R"({"type": "LayerNorm", "path": "n", "normalized_shape": [2], "eps": "1e-5"})",
       "key 'eps' must be a number, got string"},
      {R"({"type": "LayerNorm", "path": "n", "normalized_shape": [2],
           "elementwise_affine": null})",
       "key 'elementwise_affine' must be a boolean, got null"},
      {R"({"type": "GELU", "path": "g", "approximate": "fast"})",
       "key 'approximate' must be \"none\" or \"tanh\", got string \"fast\""},
      {R"({"type": "GELU", "path": "g", "approximate": true})",
       "key 'approximate' must be \"none\" or \"tanh\", got boolean"},
      {R"({"type": "Dropout", "path": "d", "p": "0.5"})", "key 'p' must be a number, got string"},
      {R"({"type": "Softmax", "path": "s", "dim": "-1"})",
       "key 'dim' must be an integer, got string"},
      {R"({"type": "LogSoftmax", "path": "s", "dim": -1.0})",
       "key 'dim' must be an integer, got number"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(PipelineError(PipelineJson("", c.layer)), HasSubstr(c.expected)) << c.layer;
  }
  EXPECT_THAT(PipelineError(PipelineJson(R"({"type": "Embedding", "path": "e",
                                           "num_embeddings": 5, "embedding_dim": 4,
                                           "padding_idx": "0"})",
                                         "")),
              HasSubstr("config 'input_layer'[0] key 'padding_idx' must be an integer"));
  EXPECT_THAT(PipelineError(PipelineJson(R"({"type": "Embedding", "path": "e",
                                           "num_embeddings": 5.0, "embedding_dim": 4})",
                                         "")),
              HasSubstr("key 'num_embeddings' must be an integer, got number"));
}

TEST(PipelineConfigTest, RejectsEmbeddingAnywhereButFirstInTheInputLayer) {
  constexpr char kEmbedding[] =
      R"({"type": "Embedding", "path": "e", "num_embeddings": 5, "embedding_dim": 4})";
  ASSERT_TRUE(ParsePipelineJson(PipelineJson(kEmbedding, "")).ok());
  EXPECT_THAT(PipelineError(
                  PipelineJson(absl::StrCat(R"({"type": "ReLU", "path": "a"}, )", kEmbedding), "")),
              AllOf(HasSubstr("layer 'e' (Embedding)"),
                    HasSubstr("an Embedding may only be the first piece of the input layer")));
  EXPECT_THAT(
      PipelineError(PipelineJson(
          "", R"({"type": "Embedding", "path": "e", "num_embeddings": 5, "embedding_dim": 2})")),
      AllOf(HasSubstr("layer 'e' (Embedding)"),
            HasSubstr("an Embedding may only be the first piece of the input layer")));
}

TEST(PipelineConfigTest, RejectsFeatureMismatches) {
  // A head Linear whose in_features is not the core's D * H_out.
  EXPECT_THAT(PipelineError(PipelineJson(
                  "", R"({"type": "Linear", "path": "fc", "in_features": 3, "out_features": 3})")),
              HasSubstr("layer 'fc' (Linear): in_features is 3 but 2 features reach it"));
  PipelineConfig config = SmallPipeline();
  config.rnn.bidirectional = true;  // D * H_out = 4 now
  EXPECT_THAT(ValidateError(config),
              HasSubstr("layer 'fc' (Linear): in_features is 2 but 4 features reach it"));
  // Further down the head: what the previous Linear gives.
  config = SmallPipeline();
  config.head.push_back(MakeLayer(LayerType::kRelu, "act"));
  config.head.push_back(MakeLayer(LayerType::kLinear, "out", 4, 1));
  EXPECT_THAT(ValidateError(config),
              HasSubstr("layer 'out' (Linear): in_features is 4 but 5 features reach it"));
  // The input layer's output against rnn.input_size; an Embedding gives embedding_dim.
  config = SmallPipeline();
  config.input_layer[0].out_features = 6;
  EXPECT_THAT(ValidateError(config),
              AllOf(HasSubstr("the input layer gives 6 features per step"),
                    HasSubstr("the core 'rnn' (RNN(4, 2)) takes input_size 4")));
  config.input_layer = {MakeLayer(LayerType::kEmbedding, "e", 9, 5)};
  EXPECT_THAT(ValidateError(config), HasSubstr("the input layer gives 5 features per step"));
  config.input_layer = {MakeLayer(LayerType::kLinear, "a", 3, 5), MakeLayer(LayerType::kLinear, "b", 4, 4)};
  EXPECT_THAT(ValidateError(config),
              HasSubstr("layer 'b' (Linear): in_features is 4 but 5 features reach it"));
  // LayerNorm's normalized_shape against the features reaching it.
  EXPECT_THAT(PipelineError(PipelineJson(
                  "", R"({"type": "LayerNorm", "path": "n", "normalized_shape": [3]})")),
              AllOf(HasSubstr("layer 'n' (LayerNorm)"),
                    HasSubstr("normalized_shape is (3,) but 2 features reach it")));
  config = SmallPipeline();
  config.input_layer.push_back(MakeLayer(LayerType::kLayerNorm, "n", 3, 3));
  EXPECT_THAT(ValidateError(config),
              HasSubstr("layer 'n' (LayerNorm): normalized_shape is (3,) but 4 features reach it"));
}

TEST(PipelineConfigTest, RejectsArgumentsTorchOrTheServerRefuses) {
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "Softmax", "path": "s", "dim": 1})")),
              AllOf(HasSubstr("layer 's' (Softmax)"),
                    HasSubstr("only dim=-1 (over the features) is served, got dim=1")));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "LogSoftmax", "path": "s", "dim": 2})")),
              HasSubstr("layer 's' (LogSoftmax): only dim=-1"));
  EXPECT_THAT(PipelineError(PipelineJson("", R"({"type": "Dropout", "path": "d", "p": 1.5})")),
              HasSubstr("layer 'd' (Dropout): p must be in [0, 1], got 1.5"));
  EXPECT_THAT(
      PipelineError(PipelineJson("", R"({"type": "LayerNorm", "path": "n", "normalized_shape": [2],
                          "eps": -1})")),
      HasSubstr("layer 'n' (LayerNorm): eps must be a finite number >= 0"));
  EXPECT_THAT(PipelineError(PipelineJson(
                  "", R"({"type": "Linear", "path": "fc", "in_features": 2, "out_features": 0})")),
              HasSubstr("layer 'fc' (Linear): out_features must be in [1, 1048576], got 0"));
  // num_embeddings: at most 2^24 (ids travel as exact floats).
  PipelineConfig config = SmallPipeline();
  config.input_layer = {MakeLayer(LayerType::kEmbedding, "e", (1 << 24) + 1, 4)};
  EXPECT_THAT(ValidateError(config),
              HasSubstr("layer 'e' (Embedding): num_embeddings must be in [1, 16777216], got "
                        "16777217"));
  config.input_layer[0].in_features = 0;
  EXPECT_THAT(ValidateError(config), HasSubstr("num_embeddings must be in [1, 16777216], got 0"));
  config.input_layer[0].in_features = 1 << 24;
  EXPECT_TRUE(config.Validate().ok());
  config.input_layer[0].out_features = 0;
  EXPECT_THAT(ValidateError(config), HasSubstr("embedding_dim must be in [1, 1048576], got 0"));
  config.input_layer[0] = MakeLayer(LayerType::kEmbedding, "e", 10, 4);
  config.input_layer[0].padding_idx = 10;
  EXPECT_THAT(ValidateError(config),
              HasSubstr("padding_idx must be within num_embeddings (10), got 10"));
  config.input_layer[0].padding_idx = -11;
  EXPECT_THAT(ValidateError(config), HasSubstr("got -11"));
  config.input_layer[0].padding_idx = -10;
  EXPECT_TRUE(config.Validate().ok());
  // The input layer's first Linear or LayerNorm sets the model's input width: in [1, 2^20].
  for (int64_t in : {int64_t{-3}, int64_t{0}, (int64_t{1} << 20) + 1, int64_t{1} << 62}) {
    config = SmallPipeline();
    config.input_layer[0].in_features = in;
    EXPECT_THAT(ValidateError(config),
                HasSubstr(absl::StrCat("layer 'proj' (Linear): in_features must be in [1, "
                                       "1048576], got ",
                                       in)));
    config.input_layer = {MakeLayer(LayerType::kLayerNorm, "n", in, in),
                          MakeLayer(LayerType::kLinear, "proj", in, 4)};
    EXPECT_THAT(ValidateError(config),
                HasSubstr(absl::StrCat("layer 'n' (LayerNorm): normalized_shape must be in [1, "
                                       "1048576], got ",
                                       in)));
  }
}

TEST(PipelineConfigTest, RejectsBadPathsAndTooManyLayers) {
  for (const std::string& path : {std::string(""), std::string("head 0"), std::string("h/0"),
                                  std::string("h\xc3\xa9"), std::string(257, 'a')}) {
    PipelineConfig config = SmallPipeline();
    config.head[0].path = path;
    EXPECT_THAT(ValidateError(config),
                AllOf(HasSubstr("a Linear layer's path must be 1 to 256 characters of "
                                "[A-Za-z0-9_.]"),
                      HasSubstr(absl::StrCat("got '", path.substr(0, 64), "'"))));
    config = SmallPipeline();
    config.rnn_path = path.empty() ? "x y" : path;
    EXPECT_THAT(ValidateError(config), HasSubstr("the core's path must be 1 to 256 characters"));
  }
  PipelineConfig config = SmallPipeline();
  config.head[0].path = std::string(256, 'a');
  EXPECT_TRUE(config.Validate().ok());

  // 64 pieces per stage at most, in the JSON and in Validate.
  std::vector<std::string> relus;
  for (int i = 0; i < 65; ++i)
    relus.push_back(absl::StrCat(R"({"type": "ReLU", "path": "r)", i, R"("})"));
  EXPECT_THAT(PipelineError(PipelineJson("", absl::StrJoin(relus, ", "))),
              HasSubstr("config key 'head' has 65 layers, more than the 64 allowed"));
  EXPECT_THAT(
      PipelineError(PipelineJson(absl::StrCat(R"({"type": "Linear", "path": "p", "in_features": 4,
                                  "out_features": 4}, )",
                                              absl::StrJoin(relus, ", ")),
                                 "")),
      HasSubstr("config key 'input_layer' has 66 layers, more than the 64 allowed"));
  relus.pop_back();
  EXPECT_TRUE(ParsePipelineJson(PipelineJson("", absl::StrJoin(relus, ", "))).ok());
  config = SmallPipeline();
  config.head.assign(65, MakeLayer(LayerType::kTanh, "t"));
  EXPECT_THAT(ValidateError(config), HasSubstr("the head has 65 pieces, more than the 64 allowed"));
}

TEST(PipelineConfigTest, RejectsDuplicateParameterPaths) {
  PipelineConfig config = SmallPipeline();
  config.head.push_back(MakeLayer(LayerType::kLinear, "fc", 5, 5));
  EXPECT_THAT(ValidateError(config),
              AllOf(HasSubstr("layer 'fc' (Linear)"),
                    HasSubstr("its path is used by another piece with parameters")));
  config = SmallPipeline();
  config.head[0].path = "rnn";  // the core's
  EXPECT_THAT(ValidateError(config), HasSubstr("layer 'rnn' (Linear): its path is used"));
  config = SmallPipeline();
  config.head[0].path = "proj";  // the input layer's Linear
  EXPECT_THAT(ValidateError(config), HasSubstr("layer 'proj' (Linear): its path is used"));
  config = SmallPipeline();
  config.input_layer.push_back(MakeLayer(LayerType::kLayerNorm, "proj", 4, 4));
  EXPECT_THAT(ValidateError(config), HasSubstr("layer 'proj' (LayerNorm): its path is used"));
  // A parameterless piece may be used under one path in both stages (one shared nn.Tanh).
  config = SmallPipeline();
  config.input_layer.push_back(MakeLayer(LayerType::kTanh, "act"));
  config.head.push_back(MakeLayer(LayerType::kTanh, "act"));
  EXPECT_TRUE(config.Validate().ok()) << config.Validate();
}

// Strings verified against torch 1.13's repr() (/usr/bin/python3).
TEST(PipelineConfigTest, LayerToStringIsTorchRepr) {
  LayerConfig linear = MakeLayer(LayerType::kLinear, "fc", 256, 40);
  EXPECT_EQ(LayerToString(linear), "Linear(in_features=256, out_features=40, bias=True)");
  linear = MakeLayer(LayerType::kLinear, "fc", 3, 5);
  linear.bias = false;
  EXPECT_EQ(LayerToString(linear), "Linear(in_features=3, out_features=5, bias=False)");
  LayerConfig embed = MakeLayer(LayerType::kEmbedding, "e", 1000, 64);
  EXPECT_EQ(LayerToString(embed), "Embedding(1000, 64)");
  embed.padding_idx = 0;
  EXPECT_EQ(LayerToString(embed), "Embedding(1000, 64, padding_idx=0)");
  embed = MakeLayer(LayerType::kEmbedding, "e", 10, 3);
  embed.padding_idx = -1;  // torch counts it from the end
  EXPECT_EQ(LayerToString(embed), "Embedding(10, 3, padding_idx=9)");
  LayerConfig norm = MakeLayer(LayerType::kLayerNorm, "n", 256, 256);
  EXPECT_EQ(LayerToString(norm), "LayerNorm((256,), eps=1e-05, elementwise_affine=True)");
  norm = MakeLayer(LayerType::kLayerNorm, "n", 8, 8);
  norm.eps = 1e-3;
  norm.bias = false;
  EXPECT_EQ(LayerToString(norm), "LayerNorm((8,), eps=0.001, elementwise_affine=False)");
  norm.eps = 1e-12;
  norm.bias = true;
  EXPECT_EQ(LayerToString(norm), "LayerNorm((8,), eps=1e-12, elementwise_affine=True)");
  EXPECT_EQ(LayerToString(MakeLayer(LayerType::kRelu, "a")), "ReLU()");
  EXPECT_EQ(LayerToString(MakeLayer(LayerType::kTanh, "a")), "Tanh()");
  EXPECT_EQ(LayerToString(MakeLayer(LayerType::kSigmoid, "a")), "Sigmoid()");
  LayerConfig gelu = MakeLayer(LayerType::kGelu, "g");
  EXPECT_EQ(LayerToString(gelu), "GELU(approximate='none')");
  gelu.gelu_tanh = true;
  EXPECT_EQ(LayerToString(gelu), "GELU(approximate='tanh')");
  LayerConfig drop = MakeLayer(LayerType::kDropout, "d");
  EXPECT_EQ(LayerToString(drop), "Dropout(p=0.5, inplace=False)");
  drop.dropout = 0.1;
  EXPECT_EQ(LayerToString(drop), "Dropout(p=0.1, inplace=False)");
  drop.dropout = 0.0;
  EXPECT_EQ(LayerToString(drop), "Dropout(p=0.0, inplace=False)");
  EXPECT_EQ(LayerToString(MakeLayer(LayerType::kSoftmax, "s")), "Softmax(dim=-1)");
  EXPECT_EQ(LayerToString(MakeLayer(LayerType::kLogSoftmax, "s")), "LogSoftmax(dim=-1)");

  PipelineConfig config;
  config.input_layer = {MakeLayer(LayerType::kEmbedding, "e", 1000, 64)};
  config.rnn = Core(RnnModule::kLstm, 64, 256);
  config.rnn.num_layers = 2;
  config.rnn_path = "rnn";
  config.head = {MakeLayer(LayerType::kLinear, "fc", 256, 40)};
  EXPECT_EQ(PipelineToString(config),
            "Embedding(1000, 64) -> LSTM(64, 256, num_layers=2) -> "
            "Linear(in_features=256, out_features=40, bias=True)");
}

TEST(PipelineConfigTest, LayerTypeNames) {
  const std::vector<std::pair<LayerType, std::string>> names = {
      {LayerType::kLinear, "Linear"},       {LayerType::kEmbedding, "Embedding"},
      {LayerType::kLayerNorm, "LayerNorm"}, {LayerType::kRelu, "ReLU"},
      {LayerType::kTanh, "Tanh"},           {LayerType::kSigmoid, "Sigmoid"},
      {LayerType::kGelu, "GELU"},           {LayerType::kDropout, "Dropout"},
      {LayerType::kSoftmax, "Softmax"},     {LayerType::kLogSoftmax, "LogSoftmax"}};
  for (const auto& [type, name] : names) {
    EXPECT_EQ(LayerTypeName(type), name);
    absl::StatusOr<LayerType> parsed = ParseLayerType(name);
    ASSERT_TRUE(parsed.ok()) << name;
    EXPECT_EQ(*parsed, type);
  }
  // torch's class names are case-sensitive.
  EXPECT_EQ(ParseLayerType("relu").status().code(), absl::StatusCode::kInvalidArgument);
}

std::vector<std::pair<std::string, Shape>> Specs(const PipelineConfig& config) {
  std::vector<std::pair<std::string, Shape>> out;
  for (const ParameterSpec& spec : PipelineParameterSpecs(config)) {
    out.emplace_back(spec.name, spec.shape);
  }
  return out;
}

// The order torch's named_parameters() lists for a module holding the pieces in pipeline order.
TEST(PipelineConfigTest, ParameterSpecsFollowTorchNamedParameters) {
  const std::vector<std::pair<std::string, Shape>> expected = {
      {"embed.weight", {10, 4}},
      {"pre.proj.weight", {3, 4}},
      {"pre.proj.bias", {3}},
      {"encoder.lstm.weight_ih_l0", {20, 3}},
      {"encoder.lstm.weight_hh_l0", {20, 2}},
      {"encoder.lstm.bias_ih_l0", {20}},
      {"encoder.lstm.bias_hh_l0", {20}},
      {"encoder.lstm.weight_hr_l0", {2, 5}},
      {"encoder.lstm.weight_ih_l0_reverse", {20, 3}},
      {"encoder.lstm.weight_hh_l0_reverse", {20, 2}},
      {"encoder.lstm.bias_ih_l0_reverse", {20}},
      {"encoder.lstm.bias_hh_l0_reverse", {20}},
      {"encoder.lstm.weight_hr_l0_reverse", {2, 5}},
      {"head.0.weight", {6, 4}},  // no bias
      {"head.6.weight", {6}},
      {"head.6.bias", {6}},
  };
  const PipelineConfig config = EveryLayerPipeline();
  EXPECT_EQ(Specs(config), expected);
  int64_t count = 0;
  for (const auto& [name, shape] : expected) count += NumElements(shape);
  EXPECT_EQ(PipelineParameterCount(config), count);

  // Core only: torch.nn.RNN's own names, unchanged.
  const PipelineConfig core = CorePipeline(Core(RnnModule::kRnn, 3, 2));
  EXPECT_EQ(Specs(core), (std::vector<std::pair<std::string, Shape>>{{"weight_ih_l0", {2, 3}},
                                                                     {"weight_hh_l0", {2, 2}},
                                                                     {"bias_ih_l0", {2}},
                                                                     {"bias_hh_l0", {2}}}));
  EXPECT_EQ(PipelineParameterCount(core), 14);
}

ParameterMap ZeroParameters(const PipelineConfig& config) {
  ParameterMap params;
  for (const ParameterSpec& spec : PipelineParameterSpecs(config)) {
    params.emplace(spec.name, Tensor::Zeros(spec.shape));
  }
  return params;
}

TEST(PipelineConfigTest, CheckPipelineParametersNamesWhatIsWrong) {
  const PipelineConfig config = SmallPipeline();
  const ParameterMap good = ZeroParameters(config);
  ASSERT_TRUE(CheckPipelineParameters(config, good).ok());
  const std::string model = PipelineToString(config);

  ParameterMap params = good;
  params.erase("fc.bias");
  absl::Status status = CheckPipelineParameters(config, params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(absl::StrCat("do not match ", model)),
                                      HasSubstr("missing parameter 'fc.bias' with shape (5,)")));

  params = good;
  params.emplace("fc.running_mean", Tensor::Zeros({5}));
  status = CheckPipelineParameters(config, params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr(absl::StrCat("unexpected parameter 'fc.running_mean' for ", model)));

  // The core's parameters carry its path: bare torch.nn.RNN names are unexpected here.
  params = good;
  params.emplace("weight_ih_l0", params.at("rnn.weight_ih_l0"));
  params.erase("rnn.weight_ih_l0");
  status = CheckPipelineParameters(config, params);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("missing parameter 'rnn.weight_ih_l0'"),
                                      HasSubstr("unexpected parameter 'weight_ih_l0'")));

  params = good;
  params["proj.weight"] = Tensor::Zeros({3, 4});  // transposed
  status = CheckPipelineParameters(config, params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("parameter 'proj.weight' has shape (3, 4), expected (4, 3)"));

  params = good;
  params["fc.weight"].values.pop_back();
  status = CheckPipelineParameters(config, params);
  EXPECT_THAT(status.message(), HasSubstr("parameter 'fc.weight' holds 9 values"));
}

TEST(PipelineConfigTest, CoreParametersDropThePath) {
  const PipelineConfig config = EveryLayerPipeline();
  ParameterMap params = ZeroParameters(config);
  params["encoder.lstm.weight_hr_l0_reverse"] = Tensor::Filled({2, 5}, 7.0f);
  const ParameterMap core = CoreParameters(config, params);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : core) names.push_back(name);
  std::vector<std::string> expected;
  for (const ParameterSpec& spec : ParameterSpecs(config.rnn)) expected.push_back(spec.name);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
  EXPECT_EQ(core.at("weight_hr_l0_reverse").values, std::vector<float>(10, 7.0f));
  EXPECT_TRUE(CheckParameters(config.rnn, core).ok());
}

}  // namespace
}  // namespace rnnserve
