// ServingCore with GRU and LSTM models: the state buffer is h then (LSTM) c, and every path
// that moves state (sliced Forward, state import with start, chunk results, snapshots) must
// carry both parts. Results are compared with RnnModel::Forward over the whole sequence (the
// engine itself is checked against torch by the parity suite). And the serving mechanisms hold
// for them as for RNN: memory accounting (h and c, h of proj_size) against --max_state_bytes to
// the byte, LRU eviction and its tombstone, idempotent starts whose checksum covers c_0, and
// batching of many GRU/LSTM sessions' chunks into one StepBatch call per model.
#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/serving/serving_core.h"
#include "tests/core/serving/batch_observer.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

// LSTM(4, 6, num_layers=2, proj_size=3) as "lstm", GRU(4, 5) as "gru" and RNN(4, 5) as "rnn".
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
    rnn_config_.input_size = 4;
    rnn_config_.hidden_size = 5;
    lstm_params_ = RandomParameters(lstm_config_, 7);
    gru_params_ = RandomParameters(gru_config_, 8);
    lstm_ = std::move(RnnModel::Create(lstm_config_, lstm_params_)).value();
    gru_ = std::move(RnnModel::Create(gru_config_, gru_params_)).value();
    // Slices of 4 timestep-rows: a Forward or chunk of more runs in several turns.
    options_.slice_steps = 4;
    options_.threads = 2;
    core_ = MakeCore();
  }

  std::unique_ptr<ServingCore> MakeCore(ServingObserver* observer = nullptr) {
    auto registry = std::make_unique<ModelRegistry>();
    EXPECT_TRUE(registry->Add("lstm", lstm_config_, lstm_params_).ok());
    EXPECT_TRUE(registry->Add("gru", gru_config_, gru_params_).ok());
    EXPECT_TRUE(registry->Add("rnn", rnn_config_, RandomParameters(rnn_config_, 9)).ok());
    return std::make_unique<ServingCore>(std::move(registry), options_, observer);
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

  RnnConfig lstm_config_, gru_config_, rnn_config_;
  ParameterMap lstm_params_, gru_params_;
  std::unique_ptr<RnnModel> lstm_, gru_;
  ServingOptions options_;
  std::atomic<int64_t> now_ms_{0};  // the fake clock of the eviction tests; outlives core_
  std::unique_ptr<ServingCore> core_;
};

// State bytes of one session of N = 1: two buffers (in and out) of h and, for an LSTM, c.
// LSTM(4, 6, L=2, proj_size=3): h is L*H_out = 6 floats, c is L*H = 12.
constexpr int64_t kLstmStateBytes = 2 * (2 * 3 + 2 * 6) * 4;  // 144
constexpr int64_t kGruStateBytes = 2 * 5 * 4;                 // 40, as RNN(4, 5)'s
// A session's whole budget share: state, a one-character id and the fixed overhead.
constexpr int64_t SessionBytes(int64_t state) { return state + 1 + kSessionOverheadBytes; }

ChunkRequest StartWithInput(const std::string& id, const std::string& model, const Tensor& x) {
  ChunkRequest r;
  r.session_id = id;
  r.model = model;
  r.start = true;
  r.input = TensorBytes::FromTensor(x);
  return r;
}

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

TEST_F(CellStateTest, LstmStateBytesCountHAndCToTheByte) {
  options_.evict_idle_after = absl::Hours(1);  // nothing may be evicted: refuse instead
  options_.max_state_bytes = 2 * SessionBytes(kLstmStateBytes);
  core_ = MakeCore();
  ASSERT_TRUE(Submit(*core_, StartWithInput("a", "lstm", Random({1, 1, 4}, 1))).status.ok());
  ASSERT_TRUE(Submit(*core_, StartWithInput("b", "lstm", Random({1, 1, 4}, 2))).status.ok());
  EXPECT_EQ(core_->GetSession("a", false)->state_bytes, kLstmStateBytes);
  EXPECT_EQ(core_->GetSession("a", false)->memory[MemoryPart::kState], kLstmStateBytes);
  EXPECT_EQ(core_->state_bytes(), 2 * kLstmStateBytes);
  ChunkResult full = Submit(*core_, StartWithInput("c", "lstm", Random({1, 1, 4}, 3)));
  EXPECT_EQ(full.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status.message(), HasSubstr("--max_state_bytes"));
  // One byte less and the second LSTM session no longer fits (counting h of hidden_size, or h
  // alone, would have let it in).
  options_.max_state_bytes = 2 * SessionBytes(kLstmStateBytes) - 1;
  core_ = MakeCore();
  ASSERT_TRUE(Submit(*core_, StartWithInput("a", "lstm", Random({1, 1, 4}, 1))).status.ok());
  EXPECT_EQ(Submit(*core_, StartWithInput("b", "lstm", Random({1, 1, 4}, 2))).status.code(),
            absl::StatusCode::kResourceExhausted);
  // A GRU session (h only) still fits in what is left; the state grows with N.
  options_.max_state_bytes = int64_t{1} << 30;
  core_ = MakeCore();
  ASSERT_TRUE(Submit(*core_, StartWithInput("g", "gru", Random({1, 3, 4}, 4))).status.ok());
  ASSERT_TRUE(Submit(*core_, StartWithInput("l", "lstm", Random({1, 3, 4}, 5))).status.ok());
  EXPECT_EQ(core_->GetSession("g", false)->state_bytes, 3 * kGruStateBytes);
  EXPECT_EQ(core_->GetSession("l", false)->state_bytes, 3 * kLstmStateBytes);
  EXPECT_EQ(core_->state_bytes(), 3 * (kGruStateBytes + kLstmStateBytes));
}

TEST_F(CellStateTest, IdleGruAndLstmSessionsAreEvictedLeastRecentlyUsedFirst) {
  options_.clock = [this] { return absl::FromUnixMillis(now_ms_.load()); };
  options_.evict_idle_after = absl::Seconds(5);
  options_.max_state_bytes = SessionBytes(kLstmStateBytes) + SessionBytes(kGruStateBytes);
  core_ = MakeCore();
  ASSERT_TRUE(Submit(*core_, StartWithInput("a", "lstm", Random({1, 1, 4}, 1))).status.ok());
  now_ms_ = 1000;
  ASSERT_TRUE(Submit(*core_, StartWithInput("g", "gru", Random({1, 1, 4}, 2))).status.ok());
  now_ms_ = 2000;
  ASSERT_TRUE(Submit(*core_, Chunk("a", Random({1, 1, 4}, 3))).status.ok());  // a is newer now
  // Full: a new GRU session evicts the least recently used idle one, g, which frees enough.
  now_ms_ = 10000;
  ASSERT_TRUE(Submit(*core_, StartWithInput("c", "gru", Random({1, 1, 4}, 4))).status.ok());
  EXPECT_THAT(core_->GetSession("g", false).status().message(), HasSubstr("evicted"));
  EXPECT_TRUE(core_->GetSession("a", false).ok());
  // Then the LSTM session, now the least recently used.
  now_ms_ = 20000;
  ASSERT_TRUE(Submit(*core_, StartWithInput("d", "gru", Random({1, 1, 4}, 5))).status.ok());
  ChunkResult gone = Submit(*core_, Chunk("a", Random({1, 1, 4}, 6)));
  EXPECT_EQ(gone.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status.message(), HasSubstr("evicted"));
  EXPECT_TRUE(core_->GetSession("c", false).ok());
  EXPECT_TRUE(core_->GetSession("d", false).ok());
  EXPECT_EQ(core_->state_bytes(), 2 * kGruStateBytes);
}

TEST_F(CellStateTest, AChunkToAnEvictedSessionGetsTheSameErrorForEveryModule) {
  options_.evict_idle_after = absl::ZeroDuration();
  std::map<std::string, absl::Status> errors;
  for (const auto& [model, state] : std::map<std::string, int64_t>{
           {"rnn", kGruStateBytes}, {"gru", kGruStateBytes}, {"lstm", kLstmStateBytes}}) {
    options_.max_state_bytes = SessionBytes(state);  // room for one session
    core_ = MakeCore();
    ASSERT_TRUE(Submit(*core_, StartWithInput("x", model, Random({1, 1, 4}, 1))).status.ok());
    ASSERT_TRUE(Submit(*core_, StartWithInput("y", model, Random({1, 1, 4}, 2))).status.ok());
    errors[model] = Submit(*core_, Chunk("x", Random({1, 1, 4}, 3))).status;
  }
  EXPECT_EQ(errors["rnn"].code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(errors["rnn"].message(), HasSubstr("evicted"));
  EXPECT_EQ(errors["gru"], errors["rnn"]);
  EXPECT_EQ(errors["lstm"], errors["rnn"]);
}

TEST_F(CellStateTest, RetriedLstmStartsAndDuplicateChunksCarryC) {
  const Tensor x = Random({5, 2, 4}, 20);
  const Tensor h0 = Random({2, 2, 3}, 21, 0.5f);
  const Tensor c0 = Random({2, 2, 6}, 22, 0.5f);
  auto start = [&](std::optional<Tensor> c) {
    ChunkRequest r = StartRequest("i", "lstm", h0, std::move(c));
    r.input = TensorBytes::FromTensor(LeadingRows(x, 0, 2));
    r.chunk_index = 0;
    return r;
  };
  ChunkResult first = Submit(*core_, start(c0));
  ASSERT_TRUE(first.status.ok()) << first.status;
  ChunkResult retry = Submit(*core_, start(c0));
  ASSERT_TRUE(retry.status.ok()) << retry.status;
  EXPECT_TRUE(retry.duplicate);
  ASSERT_NE(retry.replayed_output, nullptr);
  EXPECT_EQ(retry.replayed_output->bytes, first.output->bytes);
  EXPECT_EQ(retry.c_n->bytes, first.c_n->bytes);
  // The start's checksum covers c_0: another c_0 (or none) is another start.
  for (std::optional<Tensor> other : {std::optional<Tensor>(Random({2, 2, 6}, 23, 0.5f)),
                                      std::optional<Tensor>()}) {
    ChunkResult refused = Submit(*core_, start(other));
    EXPECT_EQ(refused.status.code(), absl::StatusCode::kAlreadyExists);
    EXPECT_THAT(refused.status.message(), HasSubstr("different content"));
  }
  // A duplicate chunk_index replays the chunk's output with the session's current h and c.
  ChunkRequest next = Chunk("i", LeadingRows(x, 2, 5));
  next.chunk_index = 1;
  ChunkResult applied = Submit(*core_, next);
  ASSERT_TRUE(applied.status.ok()) << applied.status;
  ChunkResult duplicate = Submit(*core_, next);
  ASSERT_TRUE(duplicate.status.ok()) << duplicate.status;
  EXPECT_TRUE(duplicate.duplicate);
  EXPECT_EQ(duplicate.steps_seen, 5);
  ASSERT_NE(duplicate.replayed_output, nullptr);
  EXPECT_EQ(duplicate.replayed_output->bytes, applied.output->bytes);
  EXPECT_EQ(duplicate.h_n->bytes, applied.h_n->bytes);
  EXPECT_EQ(duplicate.c_n->bytes, applied.c_n->bytes);
  auto whole = lstm_->Forward(x, &h0, &c0, nullptr);
  ASSERT_TRUE(whole.ok());
  EXPECT_LT(MaxAbsDiff(duplicate.c_n->ToTensor(), *whole->c_n), 1e-6);
  EXPECT_LT(MaxAbsDiff(duplicate.replayed_output->ToTensor(), LeadingRows(whole->output, 2, 5)),
            1e-6);
}

TEST_F(CellStateTest, ManySessionsRunInOneStepBatchPerModel) {
  // One worker that holds a partial batch until it is full (8 chunks): a round of 8 LSTM and 8
  // GRU chunks must then run as one StepBatch call per model, whatever the timing.
  options_.threads = 1;
  options_.max_batch = 8;
  options_.max_queue_delay = absl::Seconds(60);
  options_.slice_steps = 0;
  BatchObserver observer;
  core_ = MakeCore(&observer);
  // The core reports to `observer` until it is destroyed, so it goes first, on every exit.
  absl::Cleanup destroy_core_first = [this] { core_.reset(); };
  constexpr int kSessions = 8;
  constexpr int kRounds = 3;
  struct Stream {
    std::string id, model;
    RnnModel* reference;
    Tensor x;                      // every round's input, (T, N, 4)
    std::vector<int64_t> bounds;   // round k covers timesteps bounds[k]..bounds[k + 1]
    std::vector<ChunkResult> results;
  };
  std::vector<Stream> streams;
  for (int i = 0; i < 2 * kSessions; ++i) {
    Stream s;
    const bool lstm = i % 2 == 0;
    s.id = absl::StrCat(lstm ? "lstm-" : "gru-", i);
    s.model = lstm ? "lstm" : "gru";
    s.reference = lstm ? lstm_.get() : gru_.get();
    s.bounds = {0};
    for (int k = 0; k < kRounds; ++k) s.bounds.push_back(s.bounds.back() + 1 + (i + k) % 3);
    s.x = Random({s.bounds.back(), 1 + i % 3, 4}, 100 + i);  // mixed lengths and batches
    streams.push_back(std::move(s));
  }
  for (int k = 0; k < kRounds; ++k) {
    std::vector<std::promise<ChunkResult>> promises(streams.size());
    for (size_t i = 0; i < streams.size(); ++i) {
      Stream& s = streams[i];
      const Tensor chunk = LeadingRows(s.x, s.bounds[k], s.bounds[k + 1]);
      ChunkRequest r = k == 0 ? StartWithInput(s.id, s.model, chunk) : Chunk(s.id, chunk);
      core_->SubmitChunk(std::move(r),
                         [&promises, i](ChunkResult result) { promises[i].set_value(result); });
    }
    for (size_t i = 0; i < streams.size(); ++i) {
      streams[i].results.push_back(promises[i].get_future().get());
    }
  }
  {
    absl::MutexLock lock(&observer.mu);
    EXPECT_EQ(observer.runs["lstm"], std::vector<int64_t>(kRounds, kSessions));
    EXPECT_EQ(observer.runs["gru"], std::vector<int64_t>(kRounds, kSessions));
  }
  // Each session's numbers are its own: the uninterrupted sequence through the engine.
  for (const Stream& s : streams) {
    auto whole = s.reference->Forward(s.x);
    ASSERT_TRUE(whole.ok()) << whole.status();
    for (int k = 0; k < kRounds; ++k) {
      const ChunkResult& r = s.results[k];
      ASSERT_TRUE(r.status.ok()) << s.id << " round " << k << ": " << r.status;
      EXPECT_LT(MaxAbsDiff(r.output->ToTensor(),
                           LeadingRows(whole->output, s.bounds[k], s.bounds[k + 1])),
                1e-6)
          << s.id << " round " << k;
    }
    EXPECT_LT(MaxAbsDiff(s.results.back().h_n->ToTensor(), whole->h_n), 1e-6) << s.id;
    EXPECT_EQ(s.results.back().c_n.has_value(), s.model == "lstm") << s.id;
    if (s.model == "lstm") {
      EXPECT_LT(MaxAbsDiff(s.results.back().c_n->ToTensor(), *whole->c_n), 1e-6) << s.id;
    }
  }
}

}  // namespace
}  // namespace rnnserve
