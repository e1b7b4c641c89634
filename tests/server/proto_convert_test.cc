// server/proto_convert: each message of the API converted to and from ServingCore's types,
// field by field, and hostile requests refused with INVALID_ARGUMENT naming the field. No
// server runs here; rnn_service_test covers the same conversions through gRPC.
#include "server/proto_convert.h"

#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_parameters.h"
#include "proto/status_codec.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ServedModel BidirectionalModel() {
  RnnConfig config;
  config.input_size = 3;
  config.hidden_size = 4;
  config.num_layers = 2;
  config.batch_first = true;
  config.bidirectional = true;
  ServedModel served;
  served.name = "bi";
  served.model = std::move(RnnModel::Create(config, RandomParameters(config, 7))).value();
  served.parameter_count = 1234;  // passed through as the registry computed it
  return served;
}

TEST(ProtoConvertTest, ModelInfoDescribesTheModelAsTorchDoes) {
  const ServedModel served = BidirectionalModel();
  v1::ModelInfo info;
  ModelInfoToProto(served, &info);
  EXPECT_EQ(info.name(), "bi");
  EXPECT_EQ(info.version(), 1);
  EXPECT_EQ(info.state(), "READY");
  EXPECT_EQ(info.config().input_size(), 3);
  EXPECT_EQ(info.config().hidden_size(), 4);
  EXPECT_EQ(info.config().num_layers(), 2);
  EXPECT_EQ(info.config().nonlinearity(), "tanh");
  EXPECT_TRUE(info.config().bias());
  EXPECT_TRUE(info.config().batch_first());
  EXPECT_TRUE(info.config().bidirectional());
  // torch's named_parameters() order: per layer, forward then reverse.
  ASSERT_EQ(info.parameters_size(), 16);
  EXPECT_EQ(info.parameters(0).name(), "weight_ih_l0");
  EXPECT_THAT(info.parameters(0).shape(), ElementsAre(4, 3));
  EXPECT_EQ(info.parameters(4).name(), "weight_ih_l0_reverse");
  EXPECT_EQ(info.parameters(8).name(), "weight_ih_l1");
  EXPECT_THAT(info.parameters(8).shape(), ElementsAre(4, 8));  // input is both directions
  EXPECT_EQ(info.parameters(15).name(), "bias_hh_l1_reverse");
  EXPECT_THAT(info.input_shape(), ElementsAre(-1, -1, 3));
  EXPECT_EQ(info.input_layout(), "(N, T, C)");
  EXPECT_THAT(info.state_shape(), ElementsAre(4, -1, 4));
  EXPECT_EQ(info.parameter_count(), 1234);
  EXPECT_TRUE(info.streaming_buffers_until_end());
  EXPECT_EQ(info.module(), "RNN(3, 4, num_layers=2, batch_first=True, bidirectional=True)");
  // A core-only model is a pipeline of one piece.
  EXPECT_EQ(info.pipeline(), info.module());
  EXPECT_EQ(info.input_kind(), "features");
  EXPECT_THAT(info.output_shape(), ElementsAre(-1, -1, 8));
  ASSERT_EQ(info.layers_size(), 1);
  EXPECT_EQ(info.layers(0).path(), "");
  EXPECT_EQ(info.layers(0).type(), "RNN");
  EXPECT_EQ(info.layers(0).repr(), info.module());
  EXPECT_EQ(info.layers(0).stage(), "core");
  EXPECT_EQ(info.layers(0).in_features(), 3);
  EXPECT_EQ(info.layers(0).out_features(), 8);
}

// Embedding(50, 8) -> LSTM(8, 6, batch_first=True) -> Linear(6, 6) -> ReLU() -> Linear(6, 4),
// the pieces under a user's attribute paths.
ServedModel TokenPipeline() {
  PipelineConfig pipeline;
  LayerConfig embed;
  embed.type = LayerType::kEmbedding;
  embed.path = "embed";
  embed.in_features = 50;
  embed.out_features = 8;
  pipeline.input_layer.push_back(embed);
  pipeline.rnn.module = RnnModule::kLstm;
  pipeline.rnn.input_size = 8;
  pipeline.rnn.hidden_size = 6;
  pipeline.rnn.batch_first = true;
  pipeline.rnn_path = "encoder.lstm";
  LayerConfig linear;
  linear.path = "head.0";
  linear.in_features = 6;
  linear.out_features = 6;
  LayerConfig relu;
  relu.type = LayerType::kRelu;
  relu.path = "head.1";
  LayerConfig out = linear;
  out.path = "head.2";
  out.out_features = 4;
  out.bias = false;
  pipeline.head = {linear, relu, out};
  ParameterMap parameters;
  uint64_t seed = 1;
  for (const ParameterSpec& spec : PipelineParameterSpecs(pipeline)) {
    parameters[spec.name] = Random(spec.shape, seed++, 0.3f);
  }
  ServedModel served;
  served.name = "tokens";
  auto model = RnnModel::Create(pipeline, parameters);
  EXPECT_TRUE(model.ok()) << model.status();
  if (model.ok()) served.model = std::move(model).value();
  return served;
}

TEST(ProtoConvertTest, ModelInfoDescribesAPipelineAndItsIdsInput) {
  const ServedModel served = TokenPipeline();
  ASSERT_NE(served.model, nullptr);
  v1::ModelInfo info;
  ModelInfoToProto(served, &info);
  EXPECT_EQ(info.pipeline(),
            "Embedding(50, 8) -> LSTM(8, 6, batch_first=True) -> "
            "Linear(in_features=6, out_features=6, bias=True) -> ReLU() -> "
            "Linear(in_features=6, out_features=4, bias=False)");
  EXPECT_EQ(info.module(), "LSTM(8, 6, batch_first=True)") << "the core";
  EXPECT_EQ(info.config().input_size(), 8);
  EXPECT_EQ(info.input_kind(), "ids");
  EXPECT_THAT(info.input_shape(), ElementsAre(-1, -1));
  EXPECT_EQ(info.input_layout(), "(N, T)");
  EXPECT_THAT(info.output_shape(), ElementsAre(-1, -1, 4));
  EXPECT_THAT(info.state_shape(), ElementsAre(1, -1, 6));
  EXPECT_THAT(info.cell_state_shape(), ElementsAre(1, -1, 6));
  std::vector<std::string> names;
  for (const auto& p : info.parameters()) names.push_back(p.name());
  EXPECT_THAT(names, ElementsAre("embed.weight", "encoder.lstm.weight_ih_l0",
                                 "encoder.lstm.weight_hh_l0", "encoder.lstm.bias_ih_l0",
                                 "encoder.lstm.bias_hh_l0", "head.0.weight", "head.0.bias",
                                 "head.2.weight"));
  EXPECT_THAT(info.parameters(0).shape(), ElementsAre(50, 8));
  EXPECT_THAT(info.parameters(7).shape(), ElementsAre(4, 6));
  struct Piece {
    const char *path, *type, *stage;
    int64_t in, out;
  };
  const Piece want[] = {{"embed", "Embedding", "input_layer", 1, 8},
                        {"encoder.lstm", "LSTM", "core", 8, 6},
                        {"head.0", "Linear", "head", 6, 6},
                        {"head.1", "ReLU", "head", 6, 6},
                        {"head.2", "Linear", "head", 6, 4}};
  ASSERT_EQ(info.layers_size(), 5);
  std::vector<std::string> reprs;
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE(want[i].path);
    const v1::PipelineLayer& layer = info.layers(i);
    EXPECT_EQ(layer.path(), want[i].path);
    EXPECT_EQ(layer.type(), want[i].type);
    EXPECT_EQ(layer.stage(), want[i].stage);
    EXPECT_EQ(layer.in_features(), want[i].in);
    EXPECT_EQ(layer.out_features(), want[i].out);
    reprs.push_back(layer.repr());
  }
  EXPECT_EQ(absl::StrJoin(reprs, " -> "), info.pipeline());
}

TEST(ProtoConvertTest, SessionInfoCarriesEveryFieldAndStateInTheAskedEncoding) {
  SessionSnapshot s;
  s.session_id = "s1";
  s.model = "demo";
  s.model_version = 4;
  s.steps_seen = 12;
  s.next_chunk_index = 3;
  s.batch_size = 2;
  s.unbatched = false;
  s.h_n = Random({2, 2, 10}, 1);
  s.created = absl::FromUnixMillis(1000);
  s.last_used = absl::FromUnixMillis(2500);
  s.expires_in = absl::Milliseconds(4000);
  s.state_bytes = 320;
  s.buffered_steps = 5;
  s.memory[MemoryPart::kState] = 320;
  s.memory[MemoryPart::kBufferedInput] = 7;
  s.memory[MemoryPart::kReplay] = 11;
  s.memory[MemoryPart::kIds] = 514;
  for (TensorEncoding encoding : {TensorEncoding::kValues, TensorEncoding::kRaw}) {
    v1::SessionInfo info;
    SessionInfoToProto(s, encoding, &info);
    EXPECT_EQ(info.session_id(), "s1");
    EXPECT_EQ(info.model(), "demo");
    EXPECT_EQ(info.model_version(), 4);
    EXPECT_EQ(info.steps_seen(), 12);
    EXPECT_EQ(info.next_chunk_index(), 3u);
    EXPECT_EQ(info.batch_size(), 2);
    EXPECT_FALSE(info.unbatched());
    EXPECT_EQ(info.created_unix_ms(), 1000);
    EXPECT_EQ(info.last_used_unix_ms(), 2500);
    EXPECT_EQ(info.expires_in_ms(), 4000);
    EXPECT_EQ(info.state_bytes(), 320);
    EXPECT_EQ(info.buffered_steps(), 5);
    EXPECT_EQ(info.buffered_input_bytes(), 7);
    EXPECT_EQ(info.replay_bytes(), 11);
    EXPECT_EQ(info.id_bytes(), 514);
    EXPECT_EQ(info.memory_bytes(), 320 + 7 + 11 + 514);
    EXPECT_EQ(EncodingOf(info.h_n()), encoding);
    absl::StatusOr<Tensor> h_n = DecodeTensor(info.h_n(), "h_n");
    ASSERT_TRUE(h_n.ok()) << h_n.status();
    EXPECT_EQ(h_n->shape, s.h_n->shape);
    EXPECT_EQ(h_n->values, s.h_n->values);
  }
  s.h_n.reset();
  v1::SessionInfo info;
  SessionInfoToProto(s, TensorEncoding::kRaw, &info);
  EXPECT_TRUE(IsEmptyTensor(info.h_n())) << "no state: h_n absent";
}

TEST(ProtoConvertTest, StreamRequestBecomesAChunkAndMovesRawInput) {
  const Tensor x = Random({4, 2, 3}, 2);
  const Tensor h0 = Random({1, 2, 5}, 3);
  v1::StreamRequest request;
  request.set_session_id("abc");
  request.set_model("m");
  request.set_model_version(3);
  request.set_start(true);
  request.set_end(true);
  request.set_omit_state(true);
  request.set_request_id(77);
  request.set_chunk_index(0);
  EncodeTensor(x, TensorEncoding::kRaw, request.mutable_input());
  EncodeTensor(h0, TensorEncoding::kValues, request.mutable_h_0());
  const char* buffer = request.input().raw().data();

  DecodedStreamRequest decoded = StreamRequestToChunk(&request);
  EXPECT_EQ(decoded.request_id, 77u);
  EXPECT_EQ(decoded.encoding, TensorEncoding::kRaw);
  const ChunkRequest& chunk = decoded.chunk;
  EXPECT_TRUE(chunk.decode_error.ok()) << chunk.decode_error;
  EXPECT_EQ(chunk.session_id, "abc");
  EXPECT_EQ(chunk.model, "m");
  EXPECT_EQ(chunk.model_version, 3);
  EXPECT_TRUE(chunk.start);
  EXPECT_TRUE(chunk.end);
  EXPECT_TRUE(chunk.omit_state);
  ASSERT_TRUE(chunk.chunk_index.has_value()) << "chunk_index 0 is set, not absent";
  EXPECT_EQ(*chunk.chunk_index, 0u);
  ASSERT_TRUE(chunk.input.has_value());
  EXPECT_EQ(chunk.input->bytes.data(), buffer) << "the raw input was copied, not moved";
  EXPECT_EQ(chunk.input->shape, x.shape);
  EXPECT_EQ(chunk.input->ToTensor().values, x.values);
  ASSERT_TRUE(chunk.h0.has_value());
  EXPECT_EQ(chunk.h0->shape, h0.shape);
  EXPECT_EQ(chunk.h0->values, h0.values);

  // A bare request: no tensors, no chunk_index; values encoding for the response.
  v1::StreamRequest bare;
  bare.set_session_id("abc");
  decoded = StreamRequestToChunk(&bare);
  EXPECT_EQ(decoded.encoding, TensorEncoding::kValues);
  EXPECT_TRUE(decoded.chunk.decode_error.ok());
  EXPECT_FALSE(decoded.chunk.chunk_index.has_value());
  EXPECT_FALSE(decoded.chunk.input.has_value());
  EXPECT_FALSE(decoded.chunk.h0.has_value());
  EXPECT_FALSE(decoded.chunk.start || decoded.chunk.end || decoded.chunk.omit_state);
}

// Hostile tensors, each in the input, h_0 and c_0. The request is still turned into a chunk
// (its error is answered in the session's order), carrying INVALID_ARGUMENT and no tensors.
struct HostileCase {
  const char* name;
  void (*spoil)(v1::Tensor* tensor);
  const char* message;
};

const HostileCase kHostile[] = {
    {"both values and raw",
     [](v1::Tensor* t) { t->add_values(1.0f); },
     "set exactly one of `values`, `raw` and `ids`, got `values` and `raw`"},
    {"raw one byte short",
     [](v1::Tensor* t) { t->mutable_raw()->pop_back(); },
     "`raw` holds 23 bytes, shape (1, 2, 3) needs 24"},
    {"raw one byte long",
     [](v1::Tensor* t) { t->mutable_raw()->push_back('x'); },
     "`raw` holds 25 bytes, shape (1, 2, 3) needs 24"},
    {"negative dimension",
     [](v1::Tensor* t) { t->set_shape(1, -2); },
     "shape (1, -2, 3) is invalid"},
    {"values without raw, too few",
     [](v1::Tensor* t) {
       t->clear_raw();
       t->add_values(1.0f);
     },
     "`values` holds 1 values, shape (1, 2, 3) needs 6"},
    {"overflowing element count",
     [](v1::Tensor* t) {
       t->clear_shape();
       for (int i = 0; i < 3; ++i) t->add_shape(int64_t{1} << 30);
     },
     "is invalid"},
};

// Runs `check` on `request` with both tensors valid but one spoiled, for every case and field.
template <typename Request>
void ForEachHostileTensor(
    const Request& request,
    const std::function<void(Request&, const HostileCase&, const char* field)>& check) {
  for (const HostileCase& c : kHostile) {
    for (const char* field : {"input", "h_0", "c_0"}) {
      SCOPED_TRACE(absl::StrCat(c.name, " in ", field));
      Request spoiled = request;
      EncodeTensor(Random({1, 2, 3}, 4), TensorEncoding::kRaw, spoiled.mutable_input());
      EncodeTensor(Random({1, 2, 3}, 5), TensorEncoding::kRaw, spoiled.mutable_h_0());
      EncodeTensor(Random({1, 2, 3}, 6), TensorEncoding::kRaw, spoiled.mutable_c_0());
      const std::string name = field;
      c.spoil(name == "input" ? spoiled.mutable_input()
              : name == "h_0" ? spoiled.mutable_h_0()
                              : spoiled.mutable_c_0());
      check(spoiled, c, field);
    }
  }
}

TEST(ProtoConvertTest, HostileStreamTensorsAreInvalidArgumentNamingTheField) {
  v1::StreamRequest request;
  request.set_session_id("s");
  request.set_start(true);
  ForEachHostileTensor<v1::StreamRequest>(
      request, [](v1::StreamRequest& spoiled, const HostileCase& c, const char* field) {
        DecodedStreamRequest decoded = StreamRequestToChunk(&spoiled);
        EXPECT_EQ(decoded.chunk.decode_error.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(decoded.chunk.decode_error.message(), HasSubstr(absl::StrCat(field, ": ")));
        EXPECT_THAT(decoded.chunk.decode_error.message(), HasSubstr(c.message));
        EXPECT_FALSE(decoded.chunk.input.has_value());
        EXPECT_FALSE(decoded.chunk.h0.has_value());
        EXPECT_FALSE(decoded.chunk.c0.has_value());
        EXPECT_EQ(decoded.chunk.session_id, "s") << "answered in the session's order";
      });
}

TEST(ProtoConvertTest, HostileForwardTensorsAreInvalidArgumentNamingTheField) {
  v1::ForwardRequest request;
  request.set_model("demo");
  ForEachHostileTensor<v1::ForwardRequest>(
      request, [](v1::ForwardRequest& spoiled, const HostileCase& c, const char* field) {
        absl::StatusOr<ForwardArgs> args = ForwardRequestToArgs(spoiled);
        EXPECT_EQ(args.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(args.status().message(), HasSubstr(absl::StrCat(field, ": ")));
        EXPECT_THAT(args.status().message(), HasSubstr(c.message));
      });
  // Forward needs an input; an absent one is a scalar with no value.
  v1::ForwardRequest empty;
  empty.set_model("demo");
  EXPECT_EQ(ForwardRequestToArgs(empty).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ProtoConvertTest, IdsInputBecomesAnIdsTensorAndIdsStatesAreRefused) {
  v1::StreamRequest chunk;
  chunk.set_session_id("s");
  EncodeIds({4, 2}, {0, 1, 2, 3, 4, 5, 6, -7}, chunk.mutable_input());
  v1::ForwardRequest forward;
  forward.set_model("m");
  *forward.mutable_input() = chunk.input();
  const std::vector<float> want = {0, 1, 2, 3, 4, 5, 6, -1};

  v1::StreamRequest stream_copy = chunk;
  DecodedStreamRequest decoded = StreamRequestToChunk(&stream_copy);
  ASSERT_TRUE(decoded.chunk.decode_error.ok()) << decoded.chunk.decode_error;
  ASSERT_TRUE(decoded.chunk.input.has_value());
  EXPECT_TRUE(decoded.chunk.input->ids);
  EXPECT_EQ(decoded.chunk.input->shape, (Shape{4, 2}));
  EXPECT_EQ(decoded.chunk.input->ToTensor().values, want);
  EXPECT_EQ(decoded.encoding, TensorEncoding::kValues) << "answered in values";
  absl::StatusOr<ForwardArgs> args = ForwardRequestToArgs(forward);
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_TRUE(args->input.ids);
  EXPECT_EQ(args->input.values, want);

  for (const char* field : {"h_0", "c_0"}) {
    SCOPED_TRACE(field);
    v1::StreamRequest bad_chunk = chunk;
    v1::ForwardRequest bad_forward = forward;
    const bool h = std::string(field) == "h_0";
    EncodeIds({1, 2, 1}, {1, 2}, h ? bad_chunk.mutable_h_0() : bad_chunk.mutable_c_0());
    EncodeIds({1, 2, 1}, {1, 2}, h ? bad_forward.mutable_h_0() : bad_forward.mutable_c_0());
    const std::string message = absl::StrCat(field, ": a state is float32: set `values` or `raw`");
    decoded = StreamRequestToChunk(&bad_chunk);
    EXPECT_EQ(decoded.chunk.decode_error.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(decoded.chunk.decode_error.message(), HasSubstr(message));
    EXPECT_FALSE(decoded.chunk.input.has_value());
    EXPECT_EQ(ForwardRequestToArgs(bad_forward).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ForwardRequestToArgs(bad_forward).status().message(), HasSubstr(message));
  }
}

TEST(ProtoConvertTest, ForwardRequestAndResultInBothEncodings) {
  const Tensor x = Random({5, 2, 3}, 6);
  const Tensor h0 = Random({2, 2, 4}, 7);
  for (TensorEncoding encoding : {TensorEncoding::kValues, TensorEncoding::kRaw}) {
    v1::ForwardRequest request;
    request.set_model("m");
    request.set_model_version(2);
    EncodeTensor(x, encoding, request.mutable_input());
    absl::StatusOr<ForwardArgs> args = ForwardRequestToArgs(request);
    ASSERT_TRUE(args.ok()) << args.status();
    EXPECT_EQ(args->model, "m");
    EXPECT_EQ(args->model_version, 2);
    EXPECT_EQ(args->encoding, encoding);
    EXPECT_EQ(args->input.shape, x.shape);
    EXPECT_EQ(args->input.values, x.values);
    EXPECT_FALSE(args->h0.has_value()) << "absent h_0 means zeros, left to the core";

    EncodeTensor(h0, encoding, request.mutable_h_0());
    args = ForwardRequestToArgs(request);
    ASSERT_TRUE(args.ok()) << args.status();
    ASSERT_TRUE(args->h0.has_value());
    EXPECT_EQ(args->h0->values, h0.values);

    ForwardResult result{Random({5, 2, 4}, 8), Random({2, 2, 4}, 9), std::nullopt};
    v1::ForwardResponse response;
    ForwardResultToResponse(result, encoding, &response);
    EXPECT_EQ(EncodingOf(response.output()), encoding);
    EXPECT_EQ(EncodingOf(response.h_n()), encoding);
    EXPECT_EQ(DecodeTensor(response.output(), "output")->values, result.output.values);
    EXPECT_EQ(DecodeTensor(response.output(), "output")->shape, result.output.shape);
    EXPECT_EQ(DecodeTensor(response.h_n(), "h_n")->values, result.h_n.values);
  }
}

ChunkResult FullResult() {
  ChunkResult result;
  result.session_id = "s9";
  result.model = "demo";
  result.output = TensorBytes::FromTensor(Random({3, 1, 10}, 10));
  result.h_n = TensorBytes::FromTensor(Random({2, 1, 10}, 11));
  result.steps_seen = 9;
  result.chunk_index = 4;
  result.duplicate = true;
  result.ended = true;
  return result;
}

TEST(ProtoConvertTest, ChunkResultBecomesAResponseAndMovesRawBuffers) {
  ChunkResult result = FullResult();
  const Tensor output = result.output->ToTensor(), h_n = result.h_n->ToTensor();
  const char* output_buffer = result.output->bytes.data();
  v1::StreamResponse response =
      ChunkResultToResponse(std::move(result), 42, TensorEncoding::kRaw, 1 << 20);
  EXPECT_EQ(response.request_id(), 42u);
  EXPECT_EQ(response.session_id(), "s9");
  EXPECT_EQ(response.error_code(), 0);
  EXPECT_EQ(response.error_message(), "");
  EXPECT_EQ(response.output().raw().data(), output_buffer) << "output copied, not moved";
  EXPECT_EQ(DecodeTensor(response.output(), "output")->values, output.values);
  EXPECT_THAT(response.output().shape(), ElementsAre(3, 1, 10));
  EXPECT_EQ(DecodeTensor(response.h_n(), "h_n")->values, h_n.values);
  EXPECT_EQ(response.steps_seen(), 9);
  ASSERT_TRUE(response.has_chunk_index());
  EXPECT_EQ(response.chunk_index(), 4u);
  EXPECT_TRUE(response.duplicate());
  EXPECT_TRUE(response.ended());

  response = ChunkResultToResponse(FullResult(), 1, TensorEncoding::kValues, 1 << 20);
  EXPECT_EQ(EncodingOf(response.output()), TensorEncoding::kValues);
  EXPECT_EQ(DecodeTensor(response.output(), "output")->values, output.values);

  // A duplicate's replay is encoded from the session's shared copy, which stays intact.
  ChunkResult replayed;
  replayed.duplicate = true;
  replayed.replayed_output = std::make_shared<const TensorBytes>(TensorBytes::FromTensor(output));
  for (TensorEncoding encoding : {TensorEncoding::kRaw, TensorEncoding::kValues}) {
    ChunkResult copy = replayed;
    response = ChunkResultToResponse(std::move(copy), 3, encoding, 1 << 20);
    EXPECT_EQ(DecodeTensor(response.output(), "output")->values, output.values);
    EXPECT_THAT(response.output().shape(), ElementsAre(3, 1, 10));
  }
  EXPECT_EQ(replayed.replayed_output->ToTensor().values, output.values);

  // An error: code and message, no tensors, no chunk_index when the request had none.
  ChunkResult failed;
  failed.session_id = "s9";
  failed.status = absl::FailedPreconditionError("chunk_index 7 skips ahead");
  response = ChunkResultToResponse(std::move(failed), 2, TensorEncoding::kRaw, 1 << 20);
  EXPECT_EQ(response.error_code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(response.error_message(), "chunk_index 7 skips ahead");
  EXPECT_TRUE(IsEmptyTensor(response.output()));
  EXPECT_TRUE(IsEmptyTensor(response.h_n()));
  EXPECT_FALSE(response.has_chunk_index());
}

// An applied chunk whose answer cannot be sent stays a success (an error code means "not
// applied"): output_truncated says the tensors are missing.
TEST(ProtoConvertTest, OversizedAppliedResponseIsASuccessMarkedTruncated) {
  const int64_t limit = 100;  // a 30-value output alone is 120 bytes raw
  v1::StreamResponse response =
      ChunkResultToResponse(FullResult(), 5, TensorEncoding::kRaw, limit);
  EXPECT_EQ(response.error_code(), 0);
  EXPECT_EQ(response.error_message(), "");
  EXPECT_TRUE(response.output_truncated());
  EXPECT_TRUE(IsEmptyTensor(response.output()));
  EXPECT_TRUE(IsEmptyTensor(response.h_n()));
  // What the client needs to carry on is still there.
  EXPECT_EQ(response.request_id(), 5u);
  EXPECT_EQ(response.session_id(), "s9");
  EXPECT_EQ(response.steps_seen(), 9);
  EXPECT_EQ(response.chunk_index(), 4u);
  EXPECT_LE(static_cast<int64_t>(response.ByteSizeLong()), 1000);
  // At the limit exactly, the response goes out whole.
  const int64_t whole =
      static_cast<int64_t>(ChunkResultToResponse(FullResult(), 5, TensorEncoding::kRaw, 1 << 20)
                               .ByteSizeLong());
  response = ChunkResultToResponse(FullResult(), 5, TensorEncoding::kRaw, whole);
  EXPECT_EQ(response.error_code(), 0);
  EXPECT_FALSE(IsEmptyTensor(response.output()));
}

TEST(ProtoConvertTest, DecodeOptionalTellsAbsentFromInvalid) {
  absl::StatusOr<std::optional<Tensor>> absent = DecodeOptional(v1::Tensor(), "h_0");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->has_value());
  v1::Tensor present;
  EncodeTensor(Random({2, 3}, 12), TensorEncoding::kRaw, &present);
  absl::StatusOr<std::optional<Tensor>> decoded = DecodeOptional(present, "h_0");
  ASSERT_TRUE(decoded.ok() && decoded->has_value());
  EXPECT_EQ((*decoded)->shape, Shape({2, 3}));
  v1::Tensor shape_only;
  shape_only.add_shape(2);  // a shape with no data is not "absent"
  EXPECT_EQ(DecodeOptional(shape_only, "h_0").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A stream error crosses the wire as (error_code, error_message) and comes back the same.
TEST(ProtoConvertTest, StreamErrorsRoundTripThroughTheStatusCodec) {
  for (int code = 0; code <= static_cast<int>(absl::StatusCode::kUnauthenticated); ++code) {
    const absl::Status status(static_cast<absl::StatusCode>(code), code == 0 ? "" : "why");
    ChunkResult result;
    result.status = status;
    const v1::StreamResponse response =
        ChunkResultToResponse(std::move(result), 1, TensorEncoding::kRaw, 1 << 20);
    EXPECT_EQ(response.error_code(), code);
    EXPECT_EQ(FromStreamError(response.error_code(), response.error_message()), status);
  }
}

// Whatever a message echoes, the code stays true and the message fits well within gRPC's
// trailer limit (an 8 KiB trailer would turn NOT_FOUND into RESOURCE_EXHAUSTED).
TEST(ProtoConvertTest, LongMessagesAreCutAndKeepTheirCode) {
  const std::string huge(1 << 20, 'a');
  const absl::Status not_found = absl::NotFoundError(absl::StrCat("unknown session ", huge));
  const grpc::Status wire = ToGrpcStatus(not_found);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_LE(wire.error_message().size(), kMaxWireMessageBytes + 30);
  EXPECT_THAT(wire.error_message(), HasSubstr("unknown session aaa"));
  EXPECT_THAT(wire.error_message(), HasSubstr(absl::StrCat("...(+", (1 << 20) + 16 - 1024,
                                                           " bytes)")));
  // Short messages pass unchanged; a cut never splits a UTF-8 character.
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("short")).error_message(), "short");
  const std::string utf8 =
      WireMessage(absl::NotFoundError(std::string(1023, 'x') + "\xc3\xa9z"));
  EXPECT_EQ(utf8, std::string(1023, 'x') + "...(+3 bytes)");

  ChunkResult result;
  result.status = not_found;
  result.session_id = huge;
  const v1::StreamResponse response =
      ChunkResultToResponse(std::move(result), 3, TensorEncoding::kRaw, 1 << 20);
  EXPECT_EQ(response.error_code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_LE(response.error_message().size(), kMaxWireMessageBytes + 30);
  EXPECT_EQ(response.session_id(), "");  // a megabyte is no id: not echoed
  EXPECT_EQ(response.request_id(), 3u);
}

// Only an applied chunk may say it was applied: a refused request whose answer is too large
// (here: a limit smaller than its bounded id and message) keeps its own error.
TEST(ProtoConvertTest, OversizedRefusalKeepsItsCodeAndNeverClaimsApplied) {
  ChunkResult result;
  result.status = absl::NotFoundError("unknown session \"s9\"");
  result.session_id = "s9";
  const v1::StreamResponse response =
      ChunkResultToResponse(std::move(result), 5, TensorEncoding::kRaw, 10);
  EXPECT_EQ(response.error_code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_FALSE(response.output_truncated());
}

ServedModel ProjectedLstm() {
  RnnConfig config;
  config.module = RnnModule::kLstm;
  config.input_size = 3;
  config.hidden_size = 6;
  config.proj_size = 2;
  config.num_layers = 2;
  config.bidirectional = true;
  ServedModel served;
  served.name = "lstm";
  served.model = std::move(RnnModel::Create(config, RandomParameters(config, 8))).value();
  return served;
}

TEST(ProtoConvertTest, ModelInfoOfCellsNamesModuleAndBothStateShapes) {
  v1::ModelInfo info;
  ModelInfoToProto(ProjectedLstm(), &info);
  EXPECT_EQ(info.config().module(), "LSTM");
  EXPECT_EQ(info.config().proj_size(), 2);
  EXPECT_EQ(info.config().nonlinearity(), "") << "torch's LSTM has no nonlinearity";
  EXPECT_THAT(info.state_shape(), ElementsAre(4, -1, 2));       // H_out = proj_size
  EXPECT_THAT(info.cell_state_shape(), ElementsAre(4, -1, 6));  // H
  EXPECT_EQ(info.parameters(3).name(), "bias_hh_l0");
  EXPECT_EQ(info.parameters(4).name(), "weight_hr_l0");
  EXPECT_THAT(info.parameters(4).shape(), ElementsAre(2, 6));
  v1::ModelInfo rnn;
  ModelInfoToProto(BidirectionalModel(), &rnn);
  EXPECT_EQ(rnn.config().module(), "RNN");
  EXPECT_EQ(rnn.cell_state_shape_size(), 0);
}

TEST(ProtoConvertTest, CellStateCrossesTheWireBothWays) {
  const Tensor c = Random({2, 1, 6}, 20);
  for (TensorEncoding encoding : {TensorEncoding::kValues, TensorEncoding::kRaw}) {
    v1::StreamRequest request;
    request.set_start(true);
    EncodeTensor(c, encoding, request.mutable_c_0());
    DecodedStreamRequest decoded = StreamRequestToChunk(&request);
    ASSERT_TRUE(decoded.chunk.decode_error.ok());
    ASSERT_TRUE(decoded.chunk.c0.has_value());
    EXPECT_EQ(decoded.chunk.c0->values, c.values);
    EXPECT_FALSE(decoded.chunk.h0.has_value());

    v1::ForwardRequest forward;
    EncodeTensor(Random({2, 1, 3}, 21), encoding, forward.mutable_input());
    EncodeTensor(c, encoding, forward.mutable_c_0());
    absl::StatusOr<ForwardArgs> args = ForwardRequestToArgs(forward);
    ASSERT_TRUE(args.ok() && args->c0.has_value());
    EXPECT_EQ(args->c0->shape, c.shape);

    ForwardResult result{Random({2, 1, 2}, 22), Random({2, 1, 2}, 23), c};
    v1::ForwardResponse response;
    ForwardResultToResponse(result, encoding, &response);
    EXPECT_EQ(EncodingOf(response.c_n()), encoding);
    EXPECT_EQ(DecodeTensor(response.c_n(), "c_n")->values, c.values);
    result.c_n.reset();
    response.Clear();
    ForwardResultToResponse(result, encoding, &response);
    EXPECT_FALSE(response.has_c_n());

    ChunkResult chunk = FullResult();
    chunk.c_n = TensorBytes::FromTensor(c);
    v1::StreamResponse streamed = ChunkResultToResponse(std::move(chunk), 1, encoding, 1 << 20);
    EXPECT_EQ(DecodeTensor(streamed.c_n(), "c_n")->values, c.values);
    // Truncated: both parts of the state go.
    chunk = FullResult();
    chunk.c_n = TensorBytes::FromTensor(c);
    streamed = ChunkResultToResponse(std::move(chunk), 1, encoding, 100);
    EXPECT_TRUE(streamed.output_truncated());
    EXPECT_FALSE(streamed.has_c_n());

    SessionSnapshot snapshot;
    snapshot.h_n = Random({2, 1, 2}, 24);
    snapshot.c_n = c;
    v1::SessionInfo info;
    SessionInfoToProto(snapshot, encoding, &info);
    EXPECT_EQ(EncodingOf(info.c_n()), encoding);
    EXPECT_EQ(DecodeTensor(info.c_n(), "c_n")->values, c.values);
  }
}

}  // namespace
}  // namespace rnnserve
