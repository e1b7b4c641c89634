// ServingCore with GRU and LSTM models: the state buffer is h then (LSTM) c, and every path
// that moves state (sliced Forward, state import with start, chunk results, snapshots) must
// carry both parts. Results are compared with RnnModel::Forward over the whole sequence (the
// engine itself is checked against torch by the parity suite).
#include <future>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/serving/serving_core.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

// LSTM(4, 6, num_layers=2, proj_size=3) as "lstm", and GRU(4, 5) as "gru".
class CellStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    lstm_config_.module = RnnModule::kLstm;
    lstm_config_.input_size = 4;
    lstm_config_.hidden_size = 6;
    lstm_config_.num_layers = 2;
    lstm_config_.proj_size = 3;
    gru_config_.module = RnnModule::kGru;
    gru_config_.input_size = 4;
    gru_config_.hidden_size = 5;
    lstm_params_ = RandomParameters(lstm_config_, 7);
    lstm_ = std::move(RnnModel::Create(lstm_config_, lstm_params_)).value();
    // Slices of 4 timestep-rows: a Forward or chunk of more runs in several turns.
    options_.slice_steps = 4;
    options_.threads = 2;
    core_ = MakeCore();
  }

  std::unique_ptr<ServingCore> MakeCore() {
    auto registry = std::make_unique<ModelRegistry>();
    EXPECT_TRUE(registry->Add("lstm", lstm_config_, lstm_params_).ok());
    EXPECT_TRUE(registry->Add("gru", gru_config_, RandomParameters(gru_config_, 8)).ok());
    return std::make_unique<ServingCore>(std::move(registry), options_, nullptr);
  }

  absl::StatusOr<ForwardResult> Forward(const std::string& model, Tensor x,
                                        std::optional<Tensor> h0, std::optional<Tensor> c0) {
    std::promise<absl::StatusOr<ForwardResult>> promise;
    core_->Forward(model, std::move(x), std::move(h0), std::move(c0),
                   [&](absl::StatusOr<ForwardResult> r) { promise.set_value(std::move(r)); });
    return promise.get_future().get();
  }

  static ChunkResult Submit(ServingCore& core, ChunkRequest request) {
    std::promise<ChunkResult> promise;
    core.SubmitChunk(std::move(request), [&](ChunkResult r) { promise.set_value(std::move(r)); });
    return promise.get_future().get();
  }

  static ChunkRequest Chunk(const std::string& id, const Tensor& x) {
    ChunkRequest r;
    r.session_id = id;
    r.input = TensorBytes::FromTensor(x);
    return r;
  }

  static ChunkRequest StartRequest(const std::string& id, const std::string& model,
                                   std::optional<Tensor> h0, std::optional<Tensor> c0) {
    ChunkRequest r;
    r.session_id = id;
    r.model = model;
    r.start = true;
    r.h0 = std::move(h0);
    r.c0 = std::move(c0);
    return r;
  }

  RnnConfig lstm_config_, gru_config_;
  ParameterMap lstm_params_;
  std::unique_ptr<RnnModel> lstm_;
  ServingOptions options_;
  std::unique_ptr<ServingCore> core_;
};

TEST_F(CellStateTest, SlicedForwardCarriesHAndC) {
  const Tensor x = Random({9, 2, 4}, 1);
  const Tensor h0 = Random({2, 2, 3}, 2, 0.5f);
  const Tensor c0 = Random({2, 2, 6}, 3, 0.5f);
  auto whole = lstm_->Forward(x, &h0, &c0, nullptr);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto got = Forward("lstm", x, h0, c0);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->h_n.shape, (Shape{2, 2, 3}));
  ASSERT_TRUE(got->c_n.has_value());
  EXPECT_EQ(got->c_n->shape, (Shape{2, 2, 6}));
  EXPECT_LT(MaxAbsDiff(got->output, whole->output), 1e-6);
  EXPECT_LT(MaxAbsDiff(got->h_n, whole->h_n), 1e-6);
  EXPECT_LT(MaxAbsDiff(*got->c_n, *whole->c_n), 1e-6);
  // c_0 alone: h_0 is zeros.
  const Tensor zeros = Tensor::Zeros({2, 2, 3});
  auto c_only = Forward("lstm", x, std::nullopt, c0);
  auto reference = lstm_->Forward(x, &zeros, &c0, nullptr);
  ASSERT_TRUE(c_only.ok() && reference.ok());
  EXPECT_LT(MaxAbsDiff(*c_only->c_n, *reference->c_n), 1e-6);
  // Unbatched.
  const Tensor x2 = Random({5, 4}, 4);
  auto unbatched = Forward("lstm", x2, std::nullopt, std::nullopt);
  ASSERT_TRUE(unbatched.ok());
  EXPECT_EQ(unbatched->h_n.shape, (Shape{2, 3}));
  EXPECT_EQ(unbatched->c_n->shape, (Shape{2, 6}));
}

TEST_F(CellStateTest, ForwardRefusesC0WithoutCellStateAndBadShapes) {
  auto gru = Forward("gru", Random({3, 1, 4}, 5), std::nullopt, Tensor::Zeros({1, 1, 5}));
  EXPECT_EQ(gru.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(gru.status().message(), HasSubstr("only an LSTM takes c_0"));
  auto no_c = Forward("gru", Random({3, 1, 4}, 5), std::nullopt, std::nullopt);
  ASSERT_TRUE(no_c.ok());
  EXPECT_FALSE(no_c->c_n.has_value());
  auto wrong = Forward("lstm", Random({3, 1, 4}, 5), std::nullopt, Tensor::Zeros({2, 1, 3}));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CellStateTest, SessionImportChunksAndSnapshotCarryC) {
  const Tensor x = Random({10, 2, 4}, 6);
  const Tensor h0 = Random({2, 2, 3}, 7, 0.5f);
  const Tensor c0 = Random({2, 2, 6}, 8, 0.5f);
  auto whole = lstm_->Forward(x, &h0, &c0, nullptr);
  ASSERT_TRUE(whole.ok());
  ChunkResult started = Submit(*core_, StartRequest("s", "lstm", h0, c0));
  ASSERT_TRUE(started.status.ok()) << started.status;
  ASSERT_TRUE(started.c_n.has_value());
  EXPECT_EQ(started.c_n->ToTensor().values, c0.values);
  EXPECT_EQ(started.h_n->ToTensor().values, h0.values);
  ChunkResult last;
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 3}, {3, 9}, {9, 10}}) {
    last = Submit(*core_, Chunk("s", LeadingRows(x, begin, end)));
    ASSERT_TRUE(last.status.ok()) << last.status;
    EXPECT_LT(MaxAbsDiff(last.output->ToTensor(), LeadingRows(whole->output, begin, end)), 1e-6);
  }
  ASSERT_TRUE(last.h_n.has_value() && last.c_n.has_value());
  EXPECT_LT(MaxAbsDiff(last.h_n->ToTensor(), whole->h_n), 1e-6);
  EXPECT_LT(MaxAbsDiff(last.c_n->ToTensor(), *whole->c_n), 1e-6);
  auto snapshot = core_->GetSession("s", /*with_state=*/true);
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->h_n->values, last.h_n->ToTensor().values);
  EXPECT_EQ(snapshot->c_n->values, last.c_n->ToTensor().values);
  EXPECT_EQ(snapshot->c_n->shape, (Shape{2, 2, 6}));
  // Two buffers of h (2*2*3) and c (2*2*6) floats.
  EXPECT_EQ(snapshot->state_bytes, 2 * (12 + 24) * 4);
  EXPECT_FALSE(core_->GetSession("s", /*with_state=*/false)->c_n.has_value());
  // omit_state leaves both out.
  ChunkRequest quiet = Chunk("s", LeadingRows(x, 0, 1));
  quiet.omit_state = true;
  ChunkResult omitted = Submit(*core_, std::move(quiet));
  ASSERT_TRUE(omitted.status.ok());
  EXPECT_FALSE(omitted.h_n.has_value());
  EXPECT_FALSE(omitted.c_n.has_value());
}

TEST_F(CellStateTest, ExportedStateContinuesIdenticallyInAnotherCore) {
  const Tensor x = Random({8, 3, 4}, 9);
  ChunkRequest start = StartRequest("a", "lstm", std::nullopt, std::nullopt);
  start.input = TensorBytes::FromTensor(LeadingRows(x, 0, 4));
  ASSERT_TRUE(Submit(*core_, std::move(start)).status.ok());
  auto exported = core_->GetSession("a", /*with_state=*/true);
  ASSERT_TRUE(exported.ok());
  ChunkResult staying = Submit(*core_, Chunk("a", LeadingRows(x, 4, 8)));
  std::unique_ptr<ServingCore> other = MakeCore();
  ChunkRequest import = StartRequest("a", "lstm", exported->h_n, exported->c_n);
  import.input = TensorBytes::FromTensor(LeadingRows(x, 4, 8));
  ChunkResult moved = Submit(*other, std::move(import));
  ASSERT_TRUE(staying.status.ok() && moved.status.ok()) << moved.status;
  EXPECT_EQ(moved.output->ToTensor().values, staying.output->ToTensor().values);
  EXPECT_EQ(moved.h_n->ToTensor().values, staying.h_n->ToTensor().values);
  EXPECT_EQ(moved.c_n->ToTensor().values, staying.c_n->ToTensor().values);
  // Without c_0 the import would start from c = 0: a different continuation.
  ChunkRequest h_only = StartRequest("b", "lstm", exported->h_n, std::nullopt);
  h_only.input = TensorBytes::FromTensor(LeadingRows(x, 4, 8));
  ChunkResult differs = Submit(*other, std::move(h_only));
  ASSERT_TRUE(differs.status.ok());
  EXPECT_GT(MaxAbsDiff(differs.output->ToTensor(), moved.output->ToTensor()), 1e-4);
}

TEST_F(CellStateTest, StateImportChecks) {
  ChunkResult gru =
      Submit(*core_, StartRequest("g", "gru", std::nullopt, Tensor::Zeros({1, 1, 5})));
  EXPECT_EQ(gru.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(gru.status.message(), HasSubstr("has no cell state: only an LSTM takes c_0"));
  EXPECT_FALSE(core_->GetSession("g", false).ok());
  ChunkResult mismatch =
      Submit(*core_, StartRequest("m", "lstm", Tensor::Zeros({2, 2, 3}), Tensor::Zeros({2, 1, 6})));
  EXPECT_THAT(mismatch.status.message(),
              HasSubstr("c_0 must have shape (2, 2, 6) to match h_0 (2, 2, 3)"));
  ChunkResult wide_h =
      Submit(*core_, StartRequest("w", "lstm", Tensor::Zeros({2, 1, 6}), std::nullopt));
  EXPECT_THAT(wide_h.status.message(), HasSubstr("h_0 must have shape (2, N, 3)"));
  ChunkResult bad_c =
      Submit(*core_, StartRequest("c", "lstm", std::nullopt, Tensor::Zeros({2, 1, 3})));
  EXPECT_THAT(bad_c.status.message(), HasSubstr("c_0 must have shape (2, N, 6)"));
  Tensor short_c({2, 1, 6}, std::vector<float>(5, 0.0f));  // fewer values than its shape
  ChunkResult inconsistent = Submit(*core_, StartRequest("i", "lstm", std::nullopt, short_c));
  EXPECT_EQ(inconsistent.status.code(), absl::StatusCode::kInvalidArgument);
  // c_0 alone fixes the batch; later c_0 is refused and changes nothing.
  const Tensor c0 = Random({2, 2, 6}, 10, 0.5f);
  ASSERT_TRUE(Submit(*core_, StartRequest("ok", "lstm", std::nullopt, c0)).status.ok());
  ChunkRequest late = Chunk("ok", Random({1, 2, 4}, 11));
  late.c0 = Random({2, 2, 6}, 12);
  ChunkResult refused = Submit(*core_, std::move(late));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status.message(), HasSubstr("c_0 is only accepted with start=true"));
  auto info = core_->GetSession("ok", true);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->batch_size, 2);
  EXPECT_EQ(info->c_n->values, c0.values);
  EXPECT_EQ(info->h_n->values, std::vector<float>(12, 0.0f));
}

}  // namespace
}  // namespace rnnserve
