// The gRPC service in process: a real RnnServer on a free loopback port, called through the
// generated stub. Checks the proto <-> core conversions, status mapping, stream semantics
// (duplicates, back-pressure) and health; the Python suite covers the same against the real
// binary and torch.
#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <cmath>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"
#include "server/server.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

// Polls `condition` until it holds or `timeout` passes; true when it holds. For states another
// thread reaches (a counter), never as a stand-in for an event's order.
bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

v1::StreamRequest StartRequest(uint64_t request_id, const Tensor& input) {
  v1::StreamRequest request;
  request.set_model("demo");
  request.set_start(true);
  request.set_request_id(request_id);
  EncodeTensor(input, TensorEncoding::kRaw, request.mutable_input());
  return request;
}

class RnnServiceTest : public ::testing::Test {
 protected:
  static ServerOptions DefaultOptions() {
    ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.metrics_port = -1;
    options.max_message_bytes = 1 << 20;
    options.serving.threads = 2;
    return options;
  }

  void SetUp() override {
    StartServer(DefaultOptions());
    // The demo model's engine, for expected values.
    const RnnConfig config = DemoModelConfig();
    demo_ = std::move(RnnModel::Create(config, RandomParameters(config, kDemoModelSeed))).value();
  }

  // (Re)starts the server with `options`, on a free loopback port.
  void StartServer(const ServerOptions& options) {
    stub_.reset();
    channel_.reset();
    server_.reset();
    auto server = RnnServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::RnnService::NewStub(channel_);
  }

  grpc::Status Forward(const Tensor& input, const Tensor& h0, TensorEncoding encoding,
                       v1::ForwardResponse* response) {
    grpc::ClientContext ctx;
    v1::ForwardRequest request;
    request.set_model("demo");
    EncodeTensor(input, encoding, request.mutable_input());
    EncodeTensor(h0, encoding, request.mutable_h_0());
    return stub_->Forward(&ctx, request, response);
  }

  grpc::Status GetSession(const std::string& session_id, v1::SessionInfo* info) {
    grpc::ClientContext ctx;
    v1::GetSessionRequest request;
    request.set_session_id(session_id);
    return stub_->GetSession(&ctx, request, info);
  }

  std::unique_ptr<RnnServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RnnService::Stub> stub_;
  std::unique_ptr<RnnModel> demo_;
};

TEST(TensorCodecTest, TakeTensorBytesMovesRawBuffersAndChecksLikeDecode) {
  const Tensor x = Random({6, 2, 100}, 1);
  v1::Tensor raw;
  EncodeTensor(x, TensorEncoding::kRaw, &raw);
  const char* buffer = raw.raw().data();
  absl::StatusOr<TensorBytes> taken = TakeTensorBytes(&raw, "input");
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->bytes.data(), buffer) << "the raw buffer was copied, not moved";
  EXPECT_TRUE(raw.raw().empty());
  EXPECT_EQ(taken->shape, x.shape);
  EXPECT_EQ(taken->ToTensor().values, x.values);

  v1::Tensor values;
  EncodeTensor(x, TensorEncoding::kValues, &values);
  taken = TakeTensorBytes(&values, "input");
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->ToTensor().values, x.values);

  // Back into a response: the raw buffer moves again.
  v1::Tensor out;
  const char* moved = taken->bytes.data();
  EncodeTensor(std::move(*taken), TensorEncoding::kRaw, &out);
  EXPECT_EQ(out.raw().data(), moved);
  EXPECT_EQ(DecodeTensor(out, "output")->values, x.values);

  v1::Tensor bad;
  EncodeTensor(x, TensorEncoding::kRaw, &bad);
  bad.mutable_raw()->pop_back();
  const std::string message(DecodeTensor(bad, "input").status().message());
  EXPECT_THAT(message, HasSubstr("`raw` holds 4799 bytes, shape (6, 2, 100) needs 4800"));
  EXPECT_EQ(TakeTensorBytes(&bad, "input").status().message(), message);
}

TEST(TensorCodecTest, IdsDecodeToExactFloatsMarkedAsIds) {
  const int64_t top = kMaxTokenId - 1;  // the largest id an Embedding can have
  v1::Tensor proto;
  EncodeIds({3, 2}, {0, 1, 2, top, 5, 999}, &proto);
  EXPECT_FALSE(IsEmptyTensor(proto));
  EXPECT_EQ(EncodingOf(proto), TensorEncoding::kValues) << "ids requests are answered in values";
  absl::StatusOr<Tensor> decoded = DecodeTensor(proto, "input");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->ids);
  EXPECT_EQ(decoded->shape, (Shape{3, 2}));
  EXPECT_EQ(decoded->values, (std::vector<float>{0, 1, 2, static_cast<float>(top), 5, 999}));
  EXPECT_EQ(static_cast<int64_t>(decoded->values[3]), top) << "2^24 - 1 is exact in float";

  absl::StatusOr<TensorBytes> taken = TakeTensorBytes(&proto, "input");
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_TRUE(taken->ids);
  EXPECT_EQ(taken->shape, decoded->shape);
  EXPECT_EQ(taken->ToTensor().values, decoded->values);
  EXPECT_TRUE(taken->ToTensor().ids);

  // Encoding an ids tensor (the C++ client's int .npy) gives `ids` whatever the encoding.
  for (TensorEncoding encoding : {TensorEncoding::kRaw, TensorEncoding::kValues}) {
    v1::Tensor again;
    EncodeTensor(*decoded, encoding, &again);
    EXPECT_TRUE(again.raw().empty());
    EXPECT_EQ(again.values_size(), 0);
    EXPECT_THAT(again.ids(), ::testing::ElementsAre(0, 1, 2, top, 5, 999));
    EXPECT_THAT(again.shape(), ::testing::ElementsAre(3, 2));
  }
}

TEST(TensorCodecTest, IdsOutsideAnyVocabularyAreClampedAndStayOutside) {
  const int64_t big = std::numeric_limits<int64_t>::max();
  const int64_t small = std::numeric_limits<int64_t>::min();
  v1::Tensor proto;
  EncodeIds({6}, {-5, -1, kMaxTokenId, kMaxTokenId + 1, big, small}, &proto);
  absl::StatusOr<Tensor> decoded = DecodeTensor(proto, "input");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const float top = static_cast<float>(kMaxTokenId);
  EXPECT_EQ(decoded->values, (std::vector<float>{-1, -1, top, top, top, -1}));
  // Ids above 2^24 are not all floats (2^24 + 3 would round to 2^24 + 4): clamped, every
  // invalid id is one of the two, and every valid one is exact.
  EXPECT_EQ(TokenIdAsFloat(kMaxTokenId + 3), top);
  EXPECT_EQ(TokenIdAsFloat(kMaxTokenId - 1), top - 1);
}

TEST(TensorCodecTest, ExactlyOneOfValuesRawAndIdsNamingWhatCame) {
  const struct {
    bool values, raw, ids;
    const char* message;
  } cases[] = {
      {true, false, true, "set exactly one of `values`, `raw` and `ids`, got `values` and `ids`"},
      {false, true, true, "got `raw` and `ids`"},
      {true, true, false, "got `values` and `raw`"},
      {true, true, true, "got `values` and `raw` and `ids`"},
      {false, false, false,
       "input: shape (2, 3) needs 6 elements and none came: set one of `values`, `raw`"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.message);
    v1::Tensor proto;
    proto.add_shape(2);
    proto.add_shape(3);
    if (c.values) proto.mutable_values()->Resize(6, 0.5f);
    if (c.raw) proto.set_raw(std::string(24, '\0'));
    if (c.ids) proto.mutable_ids()->Resize(6, 1);
    EXPECT_THAT(std::string(DecodeTensor(proto, "input").status().message()),
                HasSubstr(c.message));
    EXPECT_THAT(std::string(TakeTensorBytes(&proto, "input").status().message()),
                HasSubstr(c.message));
  }
  v1::Tensor short_ids;
  EncodeIds({2, 3}, {1, 2, 3, 4, 5}, &short_ids);
  EXPECT_EQ(DecodeTensor(short_ids, "input").status().message(),
            "input: `ids` holds 5 ids, shape (2, 3) needs 6");
  EXPECT_EQ(DecodeTensor(short_ids, "input").status().code(),
            absl::StatusCode::kInvalidArgument);
  // An empty shape's element count is zero: nothing needs to come.
  v1::Tensor empty;
  EncodeIds({0, 3}, {}, &empty);
  EXPECT_TRUE(DecodeTensor(empty, "input").ok());
}

TEST_F(RnnServiceTest, ListAndGetModel) {
  grpc::ClientContext ctx;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&ctx, {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  const v1::ModelInfo& demo = models.models(0);
  EXPECT_EQ(demo.name(), "demo");
  EXPECT_EQ(demo.config().input_size(), 100);
  EXPECT_EQ(demo.config().num_layers(), 2);
  ASSERT_EQ(demo.parameters_size(), 8);
  EXPECT_EQ(demo.parameters(4).name(), "weight_ih_l1");
  EXPECT_EQ(demo.parameter_count(), 1340);
  EXPECT_THAT(demo.state_shape(), ::testing::ElementsAre(2, -1, 10));

  grpc::ClientContext ctx2;
  v1::GetModelRequest request;
  request.set_model("missing");
  v1::ModelInfo info;
  grpc::Status status = stub_->GetModel(&ctx2, request, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("unknown model 'missing'"));
}

TEST_F(RnnServiceTest, ForwardInBothEncodings) {
  Tensor x = Random({6, 2, 100}, 1);
  Tensor h0 = Random({2, 2, 10}, 2);
  auto want = demo_->Forward(x, &h0);
  ASSERT_TRUE(want.ok());
  for (TensorEncoding encoding : {TensorEncoding::kValues, TensorEncoding::kRaw}) {
    v1::ForwardResponse response;
    ASSERT_TRUE(Forward(x, h0, encoding, &response).ok());
    EXPECT_EQ(EncodingOf(response.output()), encoding);
    auto output = DecodeTensor(response.output(), "output");
    auto h_n = DecodeTensor(response.h_n(), "h_n");
    ASSERT_TRUE(output.ok() && h_n.ok());
    EXPECT_EQ(output->values, want->output.values);
    EXPECT_EQ(h_n->values, want->h_n.values);
  }
}

TEST_F(RnnServiceTest, ForwardErrorsMapToCodes) {
  grpc::ClientContext ctx;
  v1::ForwardRequest request;
  request.set_model("demo");
  EncodeTensor(Random({3, 1, 50}, 1), TensorEncoding::kValues, request.mutable_input());
  v1::ForwardResponse response;
  grpc::Status status = stub_->Forward(&ctx, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("Expected 100, got 50"));

  grpc::ClientContext ctx2;
  request.mutable_input()->add_values(1.0f);  // one value too many
  status = stub_->Forward(&ctx2, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("`values` holds 151 values, shape (3, 1, 50) needs 150"));

  grpc::ClientContext ctx3;
  v1::ForwardRequest big;
  big.set_model("demo");
  EncodeTensor(Random({3000, 1, 100}, 1), TensorEncoding::kRaw, big.mutable_input());
  status = stub_->Forward(&ctx3, big, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

// Two sessions interleaved on one stream, chunk by chunk, with an error in between that does
// not disturb either.
TEST_F(RnnServiceTest, StreamInterleavesSessions) {
  grpc::ClientContext ctx;
  auto stream = stub_->Stream(&ctx);
  Tensor xa = Random({8, 1, 100}, 3), xb = Random({8, 1, 100}, 4);
  auto send = [&](const std::string& id, bool start, const Tensor* chunk, uint64_t request_id) {
    v1::StreamRequest r;
    r.set_session_id(id);
    r.set_model("demo");
    r.set_start(start);
    r.set_request_id(request_id);
    if (chunk) EncodeTensor(*chunk, TensorEncoding::kRaw, r.mutable_input());
    ASSERT_TRUE(stream->Write(r));
  };
  auto chunk_of = [](const Tensor& x, int64_t b, int64_t e) {
    return Tensor({e - b, 1, 100}, std::vector<float>(x.values.begin() + b * 100, x.values.begin() + e * 100));
  };
  std::map<uint64_t, v1::StreamResponse> responses;
  auto read = [&] {
    v1::StreamResponse r;
    ASSERT_TRUE(stream->Read(&r));
    responses[r.request_id()] = r;
  };
  send("a", true, nullptr, 1);
  send("b", true, nullptr, 2);
  read();
  read();
  uint64_t id = 10;
  for (int64_t c = 0; c < 4; ++c) {
    Tensor ca = chunk_of(xa, 2 * c, 2 * c + 2), cb = chunk_of(xb, 2 * c, 2 * c + 2);
    send("a", false, &ca, id++);
    send("b", false, &cb, id++);
    Tensor bad = Random({1, 1, 7}, 5);
    send("a", false, &bad, id++);
  }
  for (int i = 0; i < 12; ++i) read();
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  for (uint64_t r = 12; r < id; r += 3) {
    EXPECT_EQ(responses[r].error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(responses[r].error_message(), HasSubstr("Expected 100, got 7"));
  }
  auto last_a = DecodeTensor(responses[id - 3].h_n(), "h_n");
  auto last_b = DecodeTensor(responses[id - 2].h_n(), "h_n");
  ASSERT_TRUE(last_a.ok() && last_b.ok());
  // Chunked and batched with another session: equal to one call up to float rounding.
  EXPECT_THAT(last_a->values, ::testing::Pointwise(::testing::FloatNear(1e-6), demo_->Forward(xa)->h_n.values));
  EXPECT_THAT(last_b->values, ::testing::Pointwise(::testing::FloatNear(1e-6), demo_->Forward(xb)->h_n.values));
  EXPECT_EQ(responses[id - 2].steps_seen(), 8);

  // The sessions outlive the stream: export, then close.
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession("a", &info).ok());
  EXPECT_EQ(info.steps_seen(), 8);
  EXPECT_EQ(info.next_chunk_index(), 4u);
  EXPECT_EQ(DecodeTensor(info.h_n(), "h_n")->values, last_a->values);
  grpc::ClientContext close_ctx;
  v1::CloseSessionRequest close;
  close.set_session_id("a");
  v1::CloseSessionResponse closed;
  ASSERT_TRUE(stub_->CloseSession(&close_ctx, close, &closed).ok());
  grpc::Status gone = GetSession("a", &info);
  EXPECT_EQ(gone.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(gone.error_message(), HasSubstr("was closed"));
}

TEST_F(RnnServiceTest, CancelledStreamLeavesServerServing) {
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Stream(&ctx);
    for (int i = 0; i < 50; ++i) {
      v1::StreamRequest r;
      r.set_model("demo");
      r.set_start(true);
      EncodeTensor(Random({4, 1, 100}, i), TensorEncoding::kRaw, r.mutable_input());
      if (!stream->Write(r)) break;
    }
    ctx.TryCancel();
    v1::StreamResponse ignored;
    while (stream->Read(&ignored)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  grpc::ClientContext ctx;
  v1::ForwardRequest request;
  request.set_model("demo");
  Tensor x = Random({2, 1, 100}, 9);
  EncodeTensor(x, TensorEncoding::kValues, request.mutable_input());
  v1::ForwardResponse response;
  ASSERT_TRUE(stub_->Forward(&ctx, request, &response).ok());
  EXPECT_EQ(DecodeTensor(response.h_n(), "h_n")->values, demo_->Forward(x)->h_n.values);
}

// NaN and Inf in a Forward's h_0 are refused like those in the input, naming h_0.
TEST_F(RnnServiceTest, ForwardRefusesNonFiniteH0) {
  const Tensor x = Random({3, 2, 100}, 20);
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    for (TensorEncoding encoding : {TensorEncoding::kValues, TensorEncoding::kRaw}) {
      SCOPED_TRACE(absl::StrCat(bad, encoding == TensorEncoding::kRaw ? " raw" : " values"));
      Tensor h0 = Random({2, 2, 10}, 21);
      h0.values[17] = bad;
      v1::ForwardResponse response;
      grpc::Status status = Forward(x, h0, encoding, &response);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_THAT(status.error_message(), HasSubstr("h_0 holds a non-finite value"));
      EXPECT_THAT(status.error_message(), HasSubstr("at flat index 17"));
      EXPECT_FALSE(response.has_output());
    }
  }
}

// A retried chunk_index is acknowledged and never applied twice: the last applied chunk's
// output is replayed, an older chunk gets no output, and the state is the current one.
TEST_F(RnnServiceTest, DuplicateChunkIndexReplaysTheLastOutput) {
  grpc::ClientContext ctx;
  auto stream = stub_->Stream(&ctx);
  const Tensor x0 = Random({3, 1, 100}, 30), x1 = Random({2, 1, 100}, 31);
  auto exchange = [&](uint64_t index, const Tensor& input, bool start) {
    v1::StreamRequest request;
    request.set_session_id("dup");
    request.set_model("demo");
    request.set_start(start);
    request.set_chunk_index(index);
    EncodeTensor(input, TensorEncoding::kRaw, request.mutable_input());
    EXPECT_TRUE(stream->Write(request));
    v1::StreamResponse response;
    EXPECT_TRUE(stream->Read(&response));
    return response;
  };
  const v1::StreamResponse first0 = exchange(0, x0, true);
  const v1::StreamResponse first1 = exchange(1, x1, false);
  ASSERT_EQ(first1.error_code(), 0) << first1.error_message();
  EXPECT_FALSE(first1.duplicate());
  EXPECT_EQ(first1.steps_seen(), 5);

  // A retry must carry the applied chunk's data (compared by checksum); other data is refused.
  const v1::StreamResponse changed1 = exchange(1, Random({2, 1, 100}, 99), false);
  EXPECT_EQ(changed1.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(changed1.error_message(), HasSubstr("already applied with different input"));
  const v1::StreamResponse again1 = exchange(1, x1, false);
  EXPECT_EQ(again1.error_code(), 0) << again1.error_message();
  EXPECT_TRUE(again1.duplicate());
  EXPECT_EQ(again1.chunk_index(), 1u);
  EXPECT_EQ(again1.steps_seen(), 5);
  EXPECT_EQ(again1.output().SerializeAsString(), first1.output().SerializeAsString());
  EXPECT_EQ(again1.h_n().SerializeAsString(), first1.h_n().SerializeAsString());

  const v1::StreamResponse again0 = exchange(0, x0, false);
  EXPECT_TRUE(again0.duplicate());
  EXPECT_EQ(again0.chunk_index(), 0u);
  EXPECT_TRUE(IsEmptyTensor(again0.output())) << "only the last chunk's output is kept";
  EXPECT_EQ(again0.h_n().SerializeAsString(), first1.h_n().SerializeAsString());
  EXPECT_EQ(again0.steps_seen(), 5);

  const v1::StreamResponse gap = exchange(3, x1, false);
  EXPECT_EQ(gap.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(gap.error_message(), HasSubstr("expects chunk_index 2 next"));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  v1::SessionInfo info;
  ASSERT_TRUE(GetSession("dup", &info).ok());
  EXPECT_EQ(info.steps_seen(), 5);
  EXPECT_EQ(info.next_chunk_index(), 2u);
}

// --max_in_flight_per_stream: with K requests of a stream submitted and unanswered, the server
// reads no more of it until responses are written. The core holds partial batches (an hour's
// queue delay, batches of 4), so nothing is answered until a batch fills: the piped stream's
// first K requests wait and the server stops reading it, with the rest of its requests sent.
// Two requests on other streams fill each batch; only then does the server read the piped
// stream's next K. Without the cap the piped stream's own requests would fill the batch and
// the server would never pause; with a cap off by one it would read K+1.
TEST_F(RnnServiceTest, StreamStopsReadingAtMaxInFlight) {
  constexpr int kMaxInFlight = 2;
  constexpr int kRounds = 3;
  ServerOptions options = DefaultOptions();
  options.serving.threads = 1;
  options.serving.max_batch = 2 * kMaxInFlight;
  options.serving.max_queue_delay = absl::Hours(1);
  options.service.max_in_flight_per_stream = kMaxInFlight;
  StartServer(options);
  ServingCore& core = server_->core();
  Metrics& metrics = server_->metrics();

  grpc::ClientContext piped_ctx;
  auto piped = stub_->Stream(&piped_ctx);
  // Small requests: they all fit in the transport's window whether or not the server reads.
  const int piped_requests = kRounds * kMaxInFlight;
  for (int i = 0; i < piped_requests; ++i) {
    ASSERT_TRUE(piped->Write(StartRequest(i, Random({1, 1, 100}, i))));
  }
  piped->WritesDone();

  // One request per stream, so that only the piped stream can reach the limit.
  std::vector<std::unique_ptr<grpc::ClientContext>> filler_contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>>>
      fillers;
  auto add_filler = [&](uint64_t request_id) {
    filler_contexts.push_back(std::make_unique<grpc::ClientContext>());
    fillers.push_back(stub_->Stream(filler_contexts.back().get()));
    ASSERT_TRUE(fillers.back()->Write(StartRequest(request_id, Random({1, 1, 100}, request_id))));
    fillers.back()->WritesDone();
  };
  for (int round = 0; round < kRounds; ++round) {
    // Each request starts a session as it is read. Paused with this many read is a state that
    // lasts: the K requests read last wait for a batch that only fillers can complete.
    const int64_t want_sessions = (round + 1) * kMaxInFlight + round * kMaxInFlight;
    ASSERT_TRUE(WaitUntil([&] {
      return metrics.streams_read_paused() == 1 && core.session_count() == want_sessions;
    })) << "round " << round << ": " << metrics.streams_read_paused()
        << " streams paused, sessions started: " << core.session_count() << ", want "
        << want_sessions;
    for (int i = 0; i < kMaxInFlight; ++i) add_filler(100 + round * kMaxInFlight + i);
  }

  std::map<uint64_t, v1::StreamResponse> answered;
  v1::StreamResponse response;
  while (piped->Read(&response)) answered[response.request_id()] = response;
  EXPECT_TRUE(piped->Finish().ok());
  ASSERT_EQ(answered.size(), static_cast<size_t>(piped_requests));
  for (const auto& [id, r] : answered) {
    EXPECT_EQ(r.error_code(), 0) << id << ": " << r.error_message();
    EXPECT_EQ(r.steps_seen(), 1);
  }
  for (auto& filler : fillers) {
    ASSERT_TRUE(filler->Read(&response));
    EXPECT_EQ(response.error_code(), 0) << response.error_message();
    EXPECT_TRUE(filler->Finish().ok());
  }
  EXPECT_EQ(metrics.streams_read_paused(), 0);
  EXPECT_GE(metrics.stream_read_pauses(), kRounds);
}

}  // namespace
}  // namespace rnnserve
