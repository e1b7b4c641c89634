// RnnModel on pipelines (an input layer before the core, a head after it): the stages equal a
// naive double-precision reference of each piece around the core alone; Forward, its
// batch_first and unbatched layouts, ForwardTimeMajor, ForwardPiece, chunked streaming and
// StepBatch agree with each other; token-id input is checked (range, kind, shapes); one
// Workspace serves models of different sizes. The numbers against torch itself are the parity
// suite's (tests/parity: 200 pipeline cases).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_model.h"
#include "core/engine/rnn_parameters.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kVocabulary = 11;

// Embedding(11, 4, padding_idx=0) -> LayerNorm(4) -> Linear(4, 3) -> ReLU -> LSTM(3, 5,
// num_layers=2, proj_size=2) -> Linear(2, 6) -> GELU(tanh) -> Dropout -> LayerNorm(6, no
// affine) -> Linear(6, 4) -> Tanh -> LogSoftmax.
PipelineConfig IdsPipeline(bool batch_first = false) {
  PipelineConfig config;
  LayerConfig embed = MakeLayer(LayerType::kEmbedding, "embed", kVocabulary, 4);
  embed.padding_idx = 0;
  config.input_layer = {embed, MakeLayer(LayerType::kLayerNorm, "pre.0", 4, 4),
                        MakeLayer(LayerType::kLinear, "pre.1", 4, 3), MakeLayer(LayerType::kRelu, "pre.2")};
  config.rnn.module = RnnModule::kLstm;
  config.rnn.input_size = 3;
  config.rnn.hidden_size = 5;
  config.rnn.num_layers = 2;
  config.rnn.proj_size = 2;
  config.rnn.batch_first = batch_first;
  config.rnn_path = "encoder.lstm";
  LayerConfig gelu = MakeLayer(LayerType::kGelu, "head.1");
  gelu.gelu_tanh = true;
  LayerConfig norm = MakeLayer(LayerType::kLayerNorm, "head.3", 6, 6);
  norm.bias = false;
  norm.eps = 1e-3;
  config.head = {MakeLayer(LayerType::kLinear, "head.0", 2, 6), gelu,
                 MakeLayer(LayerType::kDropout, "head.2"),      norm,
                 MakeLayer(LayerType::kLinear, "head.4", 6, 4), MakeLayer(LayerType::kTanh, "head.5"),
                 MakeLayer(LayerType::kLogSoftmax, "head.6")};
  return config;
}

// Dropout -> Linear(5, 3) -> Sigmoid -> bidirectional GRU(3, 4, num_layers=2) -> Linear(8, 3,
// no bias) -> GELU -> Softmax.
PipelineConfig BidirectionalPipeline() {
  PipelineConfig config;
  config.input_layer = {MakeLayer(LayerType::kDropout, "pre.0"),
                        MakeLayer(LayerType::kLinear, "pre.1", 5, 3),
                        MakeLayer(LayerType::kSigmoid, "pre.2")};
  config.rnn.module = RnnModule::kGru;
  config.rnn.input_size = 3;
  config.rnn.hidden_size = 4;
  config.rnn.num_layers = 2;
  config.rnn.bidirectional = true;
  config.rnn_path = "rnn";
  LayerConfig linear = MakeLayer(LayerType::kLinear, "fc", 8, 3);
  linear.bias = false;
  config.head = {linear, MakeLayer(LayerType::kGelu, "act"), MakeLayer(LayerType::kSoftmax, "prob")};
  return config;
}

// Tanh -> RNN(3, 6, relu) -> Linear(6, 2) -> Sigmoid: an input layer of any width (3, the
// core's input_size).
PipelineConfig ActivationFirstPipeline(bool batch_first = false) {
  PipelineConfig config;
  config.input_layer = {MakeLayer(LayerType::kTanh, "squash")};
  config.rnn.input_size = 3;
  config.rnn.hidden_size = 6;
  config.rnn.nonlinearity = Nonlinearity::kRelu;
  config.rnn.batch_first = batch_first;
  config.rnn_path = "rnn";
  config.head = {MakeLayer(LayerType::kLinear, "fc", 6, 2), MakeLayer(LayerType::kSigmoid, "out")};
  return config;
}

// LayerNorm(3) -> Linear(3, 3) -> Tanh -> RNN(3, 4) -> Linear(4, 5) -> Dropout -> ReLU -> Tanh
// -> Linear(5, 3) -> ReLU -> LayerNorm(3): a ReLU fused into the Linear before a Dropout, a
// Tanh after a fused ReLU run on its own, and a LayerNorm setting the input width.
PipelineConfig FusionPipeline() {
  PipelineConfig config;
  config.input_layer = {MakeLayer(LayerType::kLayerNorm, "pre.0", 3, 3),
                        MakeLayer(LayerType::kLinear, "pre.1", 3, 3), MakeLayer(LayerType::kTanh, "pre.2")};
  config.rnn.input_size = 3;
  config.rnn.hidden_size = 4;
  config.rnn_path = "rnn";
  config.head = {MakeLayer(LayerType::kLinear, "head.0", 4, 5),   MakeLayer(LayerType::kDropout, "head.1"),
                 MakeLayer(LayerType::kRelu, "head.2"),           MakeLayer(LayerType::kTanh, "head.3"),
                 MakeLayer(LayerType::kLinear, "head.4", 5, 3),   MakeLayer(LayerType::kRelu, "head.5"),
                 MakeLayer(LayerType::kLayerNorm, "head.6", 3, 3)};
  return config;
}

ParameterMap RandomPipelineParameters(const PipelineConfig& config, uint64_t seed) {
  ParameterMap params;
  for (const ParameterSpec& spec : PipelineParameterSpecs(config)) {
    params.emplace(spec.name, Random(spec.shape, seed++, 0.5f));
  }
  return params;
}

std::unique_ptr<RnnModel> MakeModel(const PipelineConfig& config, uint64_t seed) {
  absl::StatusOr<std::unique_ptr<RnnModel>> model =
      RnnModel::Create(config, RandomPipelineParameters(config, seed));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(model).value() : nullptr;
}

// `shape` of ids in [0, kVocabulary).
Tensor RandomIds(Shape shape, uint64_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> id(0, kVocabulary - 1);
  Tensor t = Tensor::Zeros(std::move(shape));
  for (float& v : t.values) v = static_cast<float>(id(rng));
  t.ids = true;
  return t;
}

Tensor RandomInput(const RnnModel& model, Shape shape, uint64_t seed) {
  return model.takes_ids() ? RandomIds(std::move(shape), seed) : Random(std::move(shape), seed);
}

// The pieces of one stage on column-major (features x cols) values, in double, from torch's
// definitions (docs: torch.nn.Linear, Embedding, LayerNorm, GELU, Softmax, ...).
std::vector<double> ReferenceStage(const std::vector<LayerConfig>& layers,
                                   const ParameterMap& params, std::vector<double> x,
                                   int64_t features, int64_t cols) {
  for (const LayerConfig& layer : layers) {
    std::vector<double> y;
    switch (layer.type) {
      case LayerType::kLinear: {
        const std::vector<float>& w = params.at(layer.path + ".weight").values;
        y.assign(layer.out_features * cols, 0.0);
        for (int64_t c = 0; c < cols; ++c) {
          for (int64_t o = 0; o < layer.out_features; ++o) {
            double acc = layer.bias ? params.at(layer.path + ".bias").values[o] : 0.0;
            for (int64_t i = 0; i < layer.in_features; ++i) {
              acc += w[o * layer.in_features + i] * x[c * features + i];
            }
            y[c * layer.out_features + o] = acc;
          }
        }
        features = layer.out_features;
        break;
      }
      case LayerType::kEmbedding: {
        const std::vector<float>& w = params.at(layer.path + ".weight").values;
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t id = static_cast<int64_t>(x[c]);
          y.insert(y.end(), w.begin() + id * layer.out_features,
                   w.begin() + (id + 1) * layer.out_features);
        }
        features = layer.out_features;
        break;
      }
      case LayerType::kLayerNorm:
        y.resize(x.size());
        for (int64_t c = 0; c < cols; ++c) {
          double mean = 0, var = 0;
          for (int64_t i = 0; i < features; ++i) mean += x[c * features + i] / features;
          for (int64_t i = 0; i < features; ++i) {
            var += (x[c * features + i] - mean) * (x[c * features + i] - mean) / features;
          }
          for (int64_t i = 0; i < features; ++i) {
            double v = (x[c * features + i] - mean) / std::sqrt(var + layer.eps);
            if (layer.bias) {
              v = v * params.at(layer.path + ".weight").values[i] +
                  params.at(layer.path + ".bias").values[i];
            }
            y[c * features + i] = v;
          }
        }
        break;
      case LayerType::kSoftmax:
      case LayerType::kLogSoftmax:
        y.resize(x.size());
        for (int64_t c = 0; c < cols; ++c) {
          double sum = 0;
          for (int64_t i = 0; i < features; ++i) sum += std::exp(x[c * features + i]);
          for (int64_t i = 0; i < features; ++i) {
            const double p = std::exp(x[c * features + i]) / sum;
            y[c * features + i] = layer.type == LayerType::kSoftmax ? p : std::log(p);
          }
        }
        break;
      default:
        for (double v : x) {
          switch (layer.type) {
            case LayerType::kRelu:
              v = std::max(v, 0.0);
              break;
            case LayerType::kTanh:
              v = std::tanh(v);
              break;
            case LayerType::kSigmoid:
              v = 1.0 / (1.0 + std::exp(-v));
              break;
            case LayerType::kGelu:
              v = layer.gelu_tanh
                      ? 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)))
                      : 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
              break;
            default:
              break;  // Dropout: the identity in eval()
          }
          y.push_back(v);
        }
        break;
    }
    x = std::move(y);
  }
  return x;
}

// |got - want| <= 1e-5 * max(1, |want|), the parity tolerance.
void ExpectClose(absl::Span<const float> got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LE(std::fabs(got[i] - want[i]), 1e-5 * std::max(1.0, std::fabs(want[i])))
        << "at " << i << ": " << got[i] << " vs " << want[i];
  }
}

std::vector<double> ToDouble(absl::Span<const float> v) { return {v.begin(), v.end()}; }

// The whole pipeline equals its input layer by hand, then the core alone (RnnModel on the
// core's own parameters), then the head by hand.
TEST(PipelineModelTest, EqualsStagesAroundTheCoreAlone) {
  for (const PipelineConfig& config :
       {IdsPipeline(), BidirectionalPipeline(), ActivationFirstPipeline(), FusionPipeline()}) {
    SCOPED_TRACE(PipelineToString(config));
    const ParameterMap params = RandomPipelineParameters(config, 7);
    auto model = std::move(RnnModel::Create(config, params)).value();
    auto core = std::move(RnnModel::Create(config.rnn, CoreParameters(config, params))).value();
    const int64_t steps = 6, batch = 3, cols = steps * batch;
    const Tensor x = model->takes_ids() ? RandomIds({steps, batch}, 8)
                                        : Random({steps, batch, model->input_features()}, 8);
    const Tensor h0 = Random(config.rnn.StateShape(batch, true), 9);

    std::vector<double> staged = ReferenceStage(config.input_layer, params, ToDouble(x.values),
                                                model->input_features(), cols);
    const Tensor core_in({steps, batch, config.rnn.input_size},
                         std::vector<float>(staged.begin(), staged.end()));
    absl::StatusOr<ForwardResult> want_core = core->Forward(core_in, &h0);
    ASSERT_TRUE(want_core.ok()) << want_core.status();
    const std::vector<double> want = ReferenceStage(
        config.head, params, ToDouble(want_core->output.values), config.rnn.output_size(), cols);

    absl::StatusOr<ForwardResult> got = model->Forward(x, &h0);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->output.shape, (Shape{steps, batch, model->output_features()}));
    ExpectClose(got->output.values, want);
    ExpectClose(got->h_n.values, ToDouble(want_core->h_n.values));
    ASSERT_EQ(got->c_n.has_value(), want_core->c_n.has_value());
    if (got->c_n) ExpectClose(got->c_n->values, ToDouble(want_core->c_n->values));
  }
}

TEST(PipelineModelTest, DescribesItsInputAndOutput) {
  auto ids = MakeModel(IdsPipeline(), 1);
  EXPECT_TRUE(ids->takes_ids());
  EXPECT_EQ(ids->input_features(), 1);
  EXPECT_EQ(ids->output_features(), 4);
  EXPECT_EQ(ids->InputShape(5, 2, true), (Shape{5, 2}));
  EXPECT_EQ(ids->InputShape(5, 1, false), (Shape{5}));
  EXPECT_EQ(ids->OutputShape(5, 2, true), (Shape{5, 2, 4}));
  EXPECT_EQ(ids->InputSize(5, 2), 10);
  EXPECT_EQ(ids->OutputSize(5, 2), 40);
  EXPECT_EQ(ids->StateSize(2), 2 * 2 * 2 + 2 * 2 * 5);  // h (L, N, proj) + c (L, N, H)

  auto features = MakeModel(BidirectionalPipeline(), 1);
  EXPECT_FALSE(features->takes_ids());
  EXPECT_EQ(features->input_features(), 5);
  EXPECT_EQ(features->output_features(), 3);
  EXPECT_EQ(features->InputShape(5, 2, true), (Shape{5, 2, 5}));
  // The stages' Linear products count: 5*3 in, 8*3 out, besides the core's.
  auto core = std::move(RnnModel::Create(BidirectionalPipeline().rnn,
                                         RandomParameters(BidirectionalPipeline().rnn, 1)))
                  .value();
  EXPECT_EQ(features->MacsPerStep(), core->MacsPerStep() + 5 * 3 + 8 * 3);

  auto any_width = MakeModel(ActivationFirstPipeline(), 1);
  EXPECT_EQ(any_width->input_features(), 3);
  EXPECT_EQ(any_width->output_features(), 2);
}

// Forward (time-major, batch_first, unbatched), ForwardTimeMajor and ForwardPiece (pieces of
// one step; a workspace used by other calls between pieces) give the same output and state.
TEST(PipelineModelTest, ForwardVariantsAgree) {
  for (const PipelineConfig& config :
       {IdsPipeline(), BidirectionalPipeline(), ActivationFirstPipeline()}) {
    SCOPED_TRACE(PipelineToString(config));
    auto model = MakeModel(config, 3);
    const int64_t steps = 7, batch = 2;
    const Tensor x = model->takes_ids() ? RandomIds({steps, batch}, 4)
                                        : Random({steps, batch, model->input_features()}, 4);
    const Tensor h0 = Random({model->StateSize(batch)}, 5);
    std::vector<float> want_out(model->OutputSize(steps, batch));
    std::vector<float> want_state(model->StateSize(batch));
    Workspace ws;
    model->ForwardTimeMajor(x.data(), steps, batch, h0.data(), want_out.data(), want_state.data(),
                            ws);

    // Forward's h_0 and c_0 are the state buffer's two parts.
    const int64_t h_size = model->HiddenStateSize(batch);
    const Tensor h(config.rnn.StateShape(batch, true),
                   std::vector<float>(h0.values.begin(), h0.values.begin() + h_size));
    std::optional<Tensor> c;
    if (config.rnn.has_cell_state()) {
      c = Tensor(config.rnn.CellStateShape(batch, true),
                 std::vector<float>(h0.values.begin() + h_size, h0.values.end()));
    }
    absl::StatusOr<ForwardResult> forward = model->Forward(x, &h, c ? &*c : nullptr, &ws);
    ASSERT_TRUE(forward.ok()) << forward.status();
    EXPECT_EQ(forward->output.values, want_out);
    std::vector<float> state = forward->h_n.values;
    if (forward->c_n)
      state.insert(state.end(), forward->c_n->values.begin(), forward->c_n->values.end());
    EXPECT_EQ(state, want_state);

    for (int64_t max_steps : {1, 3, 0}) {
      SCOPED_TRACE(max_steps);
      Workspace piece_ws;
      std::vector<float> out(want_out.size()), piece_state(want_state.size());
      ForwardCursor cursor;
      int pieces = 0;
      while (!model->ForwardPiece(x.data(), steps, batch, h0.data(), out.data(), piece_state.data(),
                                  max_steps, cursor, piece_ws)) {
        ++pieces;
        // Another call through the same workspace between pieces must not disturb them.
        std::vector<float> o(model->OutputSize(1, 1)), s(model->StateSize(1));
        model->ForwardTimeMajor(x.data(), 1, 1, nullptr, o.data(), s.data(), piece_ws);
        ASSERT_LT(pieces, 1000);
      }
      if (max_steps == 1) {
        EXPECT_EQ(pieces + 1, steps * config.rnn.num_layers * config.rnn.num_directions());
      }
      EXPECT_LE(MaxAbsDiff(out, want_out), 1e-6);
      EXPECT_LE(MaxAbsDiff(piece_state, want_state), 1e-6);
      EXPECT_TRUE(cursor.stage_input.empty());
      EXPECT_TRUE(cursor.core_output.empty());
    }

    // Unbatched (T, ...) equals a batch of one.
    const Tensor one =
        model->takes_ids() ? RandomIds({steps}, 6) : Random({steps, model->input_features()}, 6);
    absl::StatusOr<ForwardResult> unbatched = model->Forward(one);
    ASSERT_TRUE(unbatched.ok()) << unbatched.status();
    EXPECT_EQ(unbatched->output.shape, (Shape{steps, model->output_features()}));
    std::vector<float> one_out(model->OutputSize(steps, 1)), one_state(model->StateSize(1));
    model->ForwardTimeMajor(one.data(), steps, 1, nullptr, one_out.data(), one_state.data(), ws);
    EXPECT_EQ(unbatched->output.values, one_out);
  }
}

// (N, T) ids / (N, T, C) features for a batch_first core equal the time-major model's output
// transposed.
TEST(PipelineModelTest, BatchFirstEqualsTimeMajorTransposed) {
  for (const auto& [time_major, batch_first] :
       {std::make_pair(IdsPipeline(false), IdsPipeline(true)),
        std::make_pair(ActivationFirstPipeline(false), ActivationFirstPipeline(true))}) {
    SCOPED_TRACE(PipelineToString(batch_first));
    const ParameterMap params = RandomPipelineParameters(time_major, 12);
    auto tm = std::move(RnnModel::Create(time_major, params)).value();
    auto bf = std::move(RnnModel::Create(batch_first, params)).value();
    const int64_t steps = 5, batch = 3, c = tm->input_features();
    const Tensor x = RandomInput(*tm, tm->InputShape(steps, batch, true), 13);
    Tensor x_bf = Tensor::Zeros(bf->InputShape(steps, batch, true));
    x_bf.ids = x.ids;
    SwapLeadingDims(x.data(), steps, batch, tm->takes_ids() ? 1 : c, x_bf.data());
    absl::StatusOr<ForwardResult> want = tm->Forward(x);
    absl::StatusOr<ForwardResult> got = bf->Forward(x_bf);
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
    ASSERT_EQ(got->output.shape, (Shape{batch, steps, tm->output_features()}));
    std::vector<float> transposed(want->output.values.size());
    SwapLeadingDims(got->output.data(), batch, steps, tm->output_features(), transposed.data());
    EXPECT_EQ(transposed, want->output.values);
    EXPECT_EQ(got->h_n.values, want->h_n.values);
  }
}

TEST(PipelineModelTest, ChunkedStreamingEqualsOneCall) {
  for (const PipelineConfig& config : {IdsPipeline(), ActivationFirstPipeline()}) {
    SCOPED_TRACE(PipelineToString(config));
    auto model = MakeModel(config, 14);
    const int64_t steps = 13, batch = 2, row = batch * model->input_features();
    const Tensor x = RandomInput(*model, model->InputShape(steps, batch, true), 15);
    absl::StatusOr<ForwardResult> whole = model->Forward(x);
    ASSERT_TRUE(whole.ok()) << whole.status();
    std::optional<Tensor> h, c;
    std::vector<float> streamed;
    int64_t t = 0;
    for (int64_t len : {1, 4, 1, 5, 2}) {
      Tensor chunk(
          model->InputShape(len, batch, true),
          std::vector<float>(x.values.begin() + t * row, x.values.begin() + (t + len) * row));
      chunk.ids = x.ids;
      absl::StatusOr<ForwardResult> r =
          model->Forward(chunk, h ? &*h : nullptr, c ? &*c : nullptr, nullptr);
      ASSERT_TRUE(r.ok()) << r.status();
      streamed.insert(streamed.end(), r->output.values.begin(), r->output.values.end());
      h = r->h_n;
      c = r->c_n;
      t += len;
    }
    ASSERT_EQ(t, steps);
    EXPECT_LE(MaxAbsDiff(streamed, whole->output.values), 1e-6);
    EXPECT_LE(MaxAbsDiff(*h, whole->h_n), 1e-6);
    if (c) {
      EXPECT_LE(MaxAbsDiff(*c, *whole->c_n), 1e-6);
    }
  }
}

// Sessions of different chunk lengths and batch sizes, advanced together (the input layer and
// head run once over all of them), equal separate calls; twice, through one workspace.
TEST(PipelineModelTest, StepBatchEqualsSeparateCalls) {
  for (const PipelineConfig& config : {IdsPipeline(), ActivationFirstPipeline()}) {
    SCOPED_TRACE(PipelineToString(config));
    auto model = MakeModel(config, 16);
    struct Session {
      Tensor x;
      std::vector<float> state, out;
    };
    const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 1}, {1, 2}, {8, 1},
                                                             {5, 3}, {0, 1}, {2, 1}};
    std::vector<Session> sessions;
    std::vector<StreamChunk> chunks;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto [steps, batch] = shapes[i];
      sessions.push_back({RandomInput(*model, {steps, batch, model->input_features()}, 20 + i),
                          Random({model->StateSize(batch)}, 30 + i).values,
                          std::vector<float>(model->OutputSize(steps, batch))});
    }
    for (Session& s : sessions) {
      chunks.push_back(
          {s.x.data(), s.x.shape[0], s.x.shape[1], s.state.data(), s.state.data(), s.out.data()});
    }
    Workspace ws;
    for (int round = 0; round < 2; ++round) {
      std::vector<std::vector<float>> before;
      for (const Session& s : sessions) before.push_back(s.state);
      ASSERT_TRUE(model->StepBatch(chunks, &ws).ok());
      for (size_t i = 0; i < sessions.size(); ++i) {
        SCOPED_TRACE(testing::Message() << "round " << round << " session " << i);
        const auto [steps, batch] = shapes[i];
        if (steps == 0) {
          EXPECT_EQ(sessions[i].state, before[i]);
          continue;
        }
        std::vector<float> out(model->OutputSize(steps, batch)), state(model->StateSize(batch));
        Workspace own;
        model->ForwardTimeMajor(sessions[i].x.data(), steps, batch, before[i].data(), out.data(),
                                state.data(), own);
        EXPECT_LE(MaxAbsDiff(sessions[i].out, out), 1e-6);
        EXPECT_LE(MaxAbsDiff(sessions[i].state, state), 1e-6);
      }
    }
  }
  auto bidirectional = MakeModel(BidirectionalPipeline(), 17);
  Workspace ws;
  EXPECT_EQ(bidirectional->StepBatch({}, &ws).code(), absl::StatusCode::kFailedPrecondition);
}

std::string InputError(const RnnModel& model, const Tensor& input) {
  absl::StatusOr<ForwardResult> result = model.Forward(input);
  EXPECT_FALSE(result.ok());
  if (result.ok()) return "";
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  return std::string(result.status().message());
}

TEST(PipelineModelTest, IdsOutOfRangeOrOfTheWrongKindAreRefused) {
  auto ids = MakeModel(IdsPipeline(), 18);
  const std::string embedding = "Embedding(11, 4, padding_idx=0)";
  Tensor x = RandomIds({4, 2}, 19);
  ASSERT_TRUE(ids->Forward(x).ok());
  x.values[0] = 0;
  x.values[7] = kVocabulary - 1;
  ASSERT_TRUE(ids->Forward(x).ok());

  Tensor bad = x;
  bad.values[3] = kVocabulary;
  EXPECT_THAT(InputError(*ids, bad),
              AllOf(HasSubstr("input.ids[3] is 11"), HasSubstr("ids must be in [0, 11)"),
                    HasSubstr(embedding)));
  bad = x;
  bad.values[5] = -1;
  EXPECT_THAT(InputError(*ids, bad),
              AllOf(HasSubstr("input.ids[5] is negative"), HasSubstr("[0, 11)")));
  bad.values[5] = static_cast<float>(int64_t{1} << 24);  // where the wire clamps
  EXPECT_THAT(InputError(*ids, bad),
              AllOf(HasSubstr("input.ids[5] is >= 16777216"), HasSubstr("[0, 11)")));
  bad.values[5] = 2.5f;
  EXPECT_THAT(InputError(*ids, bad), AllOf(HasSubstr("input.ids[5] is 2.5"),
                                           HasSubstr("not an integer"), HasSubstr("[0, 11)")));
  bad.values[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(InputError(*ids, bad), AllOf(HasSubstr("input.ids[5]"), HasSubstr("[0, 11)")));
  // CheckInputValues itself, as the serving layer calls it.
  EXPECT_TRUE(ids->CheckInputValues(x.data(), x.num_elements(), true).ok());
  absl::Status status = ids->CheckInputValues(bad.data(), bad.num_elements(), true, "chunk");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("chunk.ids[5]"));

  // Floats sent to an ids model, ids to a features model.
  Tensor floats = x;
  floats.ids = false;
  EXPECT_THAT(InputError(*ids, floats), AllOf(HasSubstr("this model takes token ids"),
                                              HasSubstr(embedding), HasSubstr("input.ids")));
  auto features = MakeModel(BidirectionalPipeline(), 18);
  Tensor as_ids = Random({4, 2, 5}, 20);
  as_ids.ids = true;
  EXPECT_THAT(InputError(*features, as_ids),
              AllOf(HasSubstr("this model takes float features (5 per step)"),
                    HasSubstr("not `input.ids`")));
  EXPECT_EQ(features->CheckInputValues(as_ids.data(), as_ids.num_elements(), true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(features->CheckInputValues(as_ids.data(), as_ids.num_elements(), false).ok());
}

TEST(PipelineModelTest, IdsShapes) {
  auto model = MakeModel(IdsPipeline(), 21);
  // (T,), (T, N); (N, T) for a batch_first core: BatchFirstEqualsTimeMajorTransposed.
  absl::StatusOr<InputDims> dims = model->CheckShapes({7}, nullptr);
  ASSERT_TRUE(dims.ok()) << dims.status();
  EXPECT_FALSE(dims->batched);
  EXPECT_EQ(dims->steps, 7);
  EXPECT_EQ(dims->batch, 1);
  dims = model->CheckShapes({7, 3}, nullptr);
  ASSERT_TRUE(dims.ok()) << dims.status();
  EXPECT_TRUE(dims->batched);
  EXPECT_EQ(dims->steps, 7);
  EXPECT_EQ(dims->batch, 3);
  auto batch_first = MakeModel(IdsPipeline(true), 21);
  dims = batch_first->CheckShapes({7, 3}, nullptr);
  ASSERT_TRUE(dims.ok()) << dims.status();
  EXPECT_EQ(dims->steps, 3);
  EXPECT_EQ(dims->batch, 7);

  // A feature dimension, or none at all, is refused with the ids layouts named.
  Tensor three_d = RandomIds({4, 2, 1}, 22);
  EXPECT_THAT(InputError(*model, three_d),
              AllOf(HasSubstr("token ids: expected input to be 1D (T,) or 2D (T, N)"),
                    HasSubstr("got 3D")));
  EXPECT_THAT(InputError(*batch_first, three_d), HasSubstr("2D (N, T)"));
  Tensor scalar = RandomIds({}, 22);
  EXPECT_THAT(InputError(*model, scalar), HasSubstr("got 0D"));
  // h_0 must match the batch of the ids.
  const Tensor h0 = Tensor::Zeros({2, 3, 2});
  absl::StatusOr<ForwardResult> r = model->Forward(RandomIds({4, 2}, 23), &h0);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("Expected hidden[0] size (2, 2, 2), got [2, 3, 2]"));
  // An empty batch gives empty results, as in torch.
  r = model->Forward(RandomIds({4, 0}, 23));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->output.shape, (Shape{4, 0, 4}));
  // So do the unchecked entry points, given an empty batch.
  float none[1] = {0.0f};
  ForwardCursor cursor;
  Workspace ws;
  EXPECT_TRUE(model->ForwardPiece(none, 4, 0, none, none, none, 1, cursor, ws));
  ASSERT_TRUE(model->StepBatch({StreamChunk{none, 4, 0, none, none, none}}, &ws).ok());
  // A features model still wants its C: the first Linear's in_features.
  auto features = MakeModel(BidirectionalPipeline(), 21);
  EXPECT_THAT(InputError(*features, Random({4, 2, 3}, 24)),
              HasSubstr("input.size(-1) must be equal to in_features. Expected 5, got 3"));
  EXPECT_THAT(InputError(*features, Random({4}, 24)), HasSubstr("Expected input to be 2D or 3D"));
}

// One workspace through models of different widths, larger and smaller in turn, in every entry
// point: results equal those of a fresh workspace.
TEST(PipelineModelTest, WorkspaceIsReusedAcrossModels) {
  std::vector<std::unique_ptr<RnnModel>> models;
  models.push_back(MakeModel(IdsPipeline(), 25));
  models.push_back(MakeModel(BidirectionalPipeline(), 26));
  models.push_back(MakeModel(ActivationFirstPipeline(), 27));
  PipelineConfig wide = ActivationFirstPipeline();
  wide.rnn.hidden_size = 48;
  wide.head = {MakeLayer(LayerType::kLinear, "fc", 48, 64), MakeLayer(LayerType::kLayerNorm, "n", 64, 64),
               MakeLayer(LayerType::kLinear, "out", 64, 2)};
  models.push_back(MakeModel(wide, 28));
  RnnConfig core;
  core.input_size = 3;
  core.hidden_size = 2;
  models.push_back(std::move(RnnModel::Create(core, RandomParameters(core, 29))).value());

  Workspace shared;
  for (int round = 0; round < 3; ++round) {
    for (size_t m = 0; m < models.size(); ++m) {
      const RnnModel& model = *models[(m * 3 + round) % models.size()];
      SCOPED_TRACE(PipelineToString(model.pipeline()));
      const int64_t steps = 3 + 4 * round, batch = 1 + round;
      const Tensor x = RandomInput(model, model.InputShape(steps, batch, true), 30 + m);
      absl::StatusOr<ForwardResult> got = model.Forward(x, nullptr, &shared);
      Workspace fresh;
      absl::StatusOr<ForwardResult> want = model.Forward(x, nullptr, &fresh);
      ASSERT_TRUE(got.ok() && want.ok());
      EXPECT_EQ(got->output.values, want->output.values);
      EXPECT_EQ(got->h_n.values, want->h_n.values);

      std::vector<float> out(model.OutputSize(steps, batch)), state(model.StateSize(batch));
      ForwardCursor cursor;
      while (!model.ForwardPiece(x.data(), steps, batch, nullptr, out.data(), state.data(), 2,
                                 cursor, shared)) {
      }
      ExpectClose(out, ToDouble(want->output.values));
      if (!model.config().bidirectional) {
        std::vector<float> state_in(model.StateSize(batch), 0.0f);
        StreamChunk chunk{x.data(), steps, batch, state_in.data(), state.data(), out.data()};
        ASSERT_TRUE(model.StepBatch({chunk}, &shared).ok());
        ExpectClose(out, ToDouble(want->output.values));
      }
    }
  }
}

TEST(PipelineModelTest, CreateChecksConfigAndParameters) {
  const PipelineConfig config = IdsPipeline();
  ParameterMap params = RandomPipelineParameters(config, 40);
  params.erase("head.4.bias");
  absl::StatusOr<std::unique_ptr<RnnModel>> model = RnnModel::Create(config, params);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("missing parameter 'head.4.bias'"));

  PipelineConfig bad = config;
  bad.head[0].in_features = 3;
  model = RnnModel::Create(bad, RandomPipelineParameters(bad, 40));
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("in_features is 3 but 2 features reach it"));

  // A core-only pipeline is the core model itself, under torch.nn.RNN's own names.
  const PipelineConfig core_only = CorePipeline(config.rnn);
  model = RnnModel::Create(core_only, RandomParameters(config.rnn, 41));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->pipeline().core_only());
  EXPECT_EQ((*model)->input_features(), 3);
}

}  // namespace
}  // namespace rnnserve
