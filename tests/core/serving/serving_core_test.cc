// ServingCore: sessions, ordering, errors and limits, in process. Results are compared with
// RnnModel::Forward over the whole sequence (the engine itself is checked against torch by
// the parity suite).
#include "core/serving/serving_core.h"

#include <cmath>
#include <future>
#include <limits>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;


class CountingObserver : public ServingObserver {
 public:
  void ChunkDone(const std::string&, absl::Duration, absl::Duration, int64_t steps) override {
    timesteps += steps;
    ++chunks;
  }
  void BatchRun(const std::string&, int64_t n) override { max_batch = std::max<int64_t>(max_batch, n); }
  void SessionStarted(const std::string&) override { ++started; }
  void SessionEnded(const std::string&, SessionEndReason reason) override {
    ++ended[static_cast<int>(reason)];
  }
  std::atomic<int64_t> timesteps{0}, chunks{0}, started{0}, max_batch{0};
  std::atomic<int64_t> ended[4] = {};
};

class ServingCoreTest : public ::testing::Test {
 protected:
  void MakeCore(ServingOptions options = {}, bool bidirectional = false, bool batch_first = false) {
    auto registry = std::make_unique<ModelRegistry>();
    config_.input_size = 4;
    config_.hidden_size = 5;
    config_.num_layers = 2;
    config_.bidirectional = bidirectional;
    config_.batch_first = batch_first;
    params_ = RandomParameters(config_, 99);
    ASSERT_TRUE(registry->Add("m", config_, params_).ok());
    reference_ = std::move(RnnModel::Create(config_, params_)).value();
    if (options.threads == 0) options.threads = 2;
    core_ = std::make_unique<ServingCore>(std::move(registry), options, &observer_);
  }

  ChunkResult Submit(ChunkRequest request) {
    std::promise<ChunkResult> promise;
    auto future = promise.get_future();
    core_->SubmitChunk(std::move(request), [&](ChunkResult r) { promise.set_value(std::move(r)); });
    return future.get();
  }

  ChunkResult Start(const std::string& id, std::optional<Tensor> input = std::nullopt) {
    ChunkRequest r;
    r.session_id = id;
    r.model = "m";
    r.start = true;
    if (input.has_value()) r.input = TensorBytes::FromTensor(*input);
    return Submit(std::move(r));
  }

  ChunkResult Send(const std::string& id, Tensor input, std::optional<uint64_t> index = std::nullopt,
                   bool end = false) {
    ChunkRequest r;
    r.session_id = id;
    r.input = TensorBytes::FromTensor(input);
    r.chunk_index = index;
    r.end = end;
    return Submit(std::move(r));
  }

  RnnConfig config_;
  ParameterMap params_;
  std::unique_ptr<RnnModel> reference_;
  CountingObserver observer_;
  std::unique_ptr<ServingCore> core_;
};

TEST_F(ServingCoreTest, ChunkedSessionEqualsWholeSequence) {
  MakeCore();
  Tensor x = Random({12, 3, 4}, 1);
  auto whole = reference_->Forward(x);
  ASSERT_TRUE(whole.ok());
  ChunkResult started = Start("");
  ASSERT_TRUE(started.status.ok()) << started.status;
  const std::string id = started.session_id;
  EXPECT_EQ(id.size(), 32u);
  std::vector<float> out;
  ChunkResult last;
  for (auto [b, e] : {std::pair{0, 5}, {5, 6}, {6, 12}}) {
    last = Send(id, LeadingRows(x, b, e));
    ASSERT_TRUE(last.status.ok()) << last.status;
    out.insert(out.end(), last.output->values().begin(), last.output->values().end());
  }
  EXPECT_LT(MaxAbsDiff(out, whole->output.values), 1e-6);
  EXPECT_LT(MaxAbsDiff(last.h_n->values(), whole->h_n.values), 1e-6);
  EXPECT_EQ(last.steps_seen, 12);
  EXPECT_EQ(observer_.timesteps.load(), 36);
}

TEST_F(ServingCoreTest, BatchFirstAndUnbatchedSessions) {
  MakeCore({}, false, /*batch_first=*/true);
  Tensor x = Random({2, 6, 4}, 2);  // (N, T, C)
  auto whole = reference_->Forward(x);
  ASSERT_TRUE(whole.ok());
  const std::string id = Start("bf").session_id;
  // Chunk along T, which is dimension 1 here.
  auto chunk = [&](int64_t b, int64_t e) {
    Tensor c = Tensor::Zeros({2, e - b, 4});
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t t = b; t < e; ++t)
        for (int64_t k = 0; k < 4; ++k) c.values[(n * (e - b) + t - b) * 4 + k] = x.values[(n * 6 + t) * 4 + k];
    return c;
  };
  ChunkResult a = Send(id, chunk(0, 4));
  ChunkResult b = Send(id, chunk(4, 6));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.output->shape, (Shape{2, 4, 5}));
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t t = 0; t < 6; ++t) {
      const TensorBytes& part = t < 4 ? *a.output : *b.output;
      const int64_t steps = t < 4 ? 4 : 2, tt = t < 4 ? t : t - 4;
      for (int64_t k = 0; k < 5; ++k) {
        EXPECT_NEAR(part.values()[(n * steps + tt) * 5 + k], whole->output.values[(n * 6 + t) * 5 + k], 1e-6);
      }
    }
  }
  // Unbatched: (T, C) in, (T, H) and (L, H) out.
  const std::string u = Start("unbatched").session_id;
  ChunkResult r = Send(u, Random({3, 4}, 3));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.output->shape, (Shape{3, 5}));
  EXPECT_EQ(r.h_n->shape, (Shape{2, 5}));
  ChunkResult switched = Send(u, Random({1, 3, 4}, 3));
  EXPECT_EQ(switched.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(switched.status.message(), HasSubstr("takes unbatched 2-D input"));
}

TEST_F(ServingCoreTest, BidirectionalBuffersUntilEnd) {
  MakeCore({}, /*bidirectional=*/true);
  Tensor x = Random({7, 2, 4}, 4);
  Tensor h0 = Random({4, 2, 5}, 5);
  auto whole = reference_->Forward(x, &h0);
  ASSERT_TRUE(whole.ok());
  ChunkRequest start;
  start.model = "m";
  start.start = true;
  start.h0 = h0;
  const std::string id = Submit(start).session_id;
  ChunkResult a = Send(id, LeadingRows(x, 0, 3));
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_FALSE(a.output.has_value());
  auto info = core_->GetSession(id, true);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->buffered_steps, 3);
  ChunkResult b = Send(id, LeadingRows(x, 3, 7), std::nullopt, /*end=*/true);
  ASSERT_TRUE(b.status.ok()) << b.status;
  ASSERT_TRUE(b.output.has_value());
  EXPECT_TRUE(b.ended);
  EXPECT_EQ(b.output->shape, (Shape{7, 2, 10}));
  EXPECT_LT(MaxAbsDiff(b.output->values(), whole->output.values), 1e-6);
  EXPECT_LT(MaxAbsDiff(b.h_n->values(), whole->h_n.values), 1e-6);
  EXPECT_EQ(core_->GetSession(id, false).status().code(), absl::StatusCode::kNotFound);
}

// Many sessions submitted at once, each with several queued chunks: every session's chunks are
// applied in order, batches form, and each result equals its own sequence's.
TEST_F(ServingCoreTest, ConcurrentSessionsStayExactAndOrdered) {
  ServingOptions options;
  // Holds the first partial batch long enough for every session's first chunk to join it, so
  // that batches form however the threads are scheduled (eager dispatch could run each chunk
  // alone on a loaded machine).
  options.max_queue_delay = absl::Milliseconds(50);
  MakeCore(options);
  const int kSessions = 40, kChunks = 5, kSteps = 3;
  std::vector<Tensor> inputs;
  std::vector<std::string> ids;
  for (int s = 0; s < kSessions; ++s) {
    inputs.push_back(Random({kChunks * kSteps, 1, 4}, 100 + s));
    ids.push_back(Start("s" + std::to_string(s)).session_id);
  }
  std::mutex mu;
  std::vector<std::vector<std::pair<uint64_t, ChunkResult>>> results(kSessions);
  std::atomic<int> remaining{kSessions * kChunks};
  std::promise<void> all_done;
  for (int c = 0; c < kChunks; ++c) {
    for (int s = 0; s < kSessions; ++s) {
      ChunkRequest r;
      r.session_id = ids[s];
      r.input = TensorBytes::FromTensor(LeadingRows(inputs[s], c * kSteps, (c + 1) * kSteps));
      r.chunk_index = c;
      core_->SubmitChunk(std::move(r), [&, s](ChunkResult result) {
        {
          std::lock_guard<std::mutex> lock(mu);
          results[s].emplace_back(*result.chunk_index, std::move(result));
        }
        if (--remaining == 0) all_done.set_value();
      });
    }
  }
  all_done.get_future().wait();
  for (int s = 0; s < kSessions; ++s) {
    auto whole = reference_->Forward(inputs[s]);
    std::vector<float> out;
    ASSERT_EQ(results[s].size(), static_cast<size_t>(kChunks));
    for (int c = 0; c < kChunks; ++c) {
      EXPECT_EQ(results[s][c].first, static_cast<uint64_t>(c)) << "out of order in session " << s;
      ASSERT_TRUE(results[s][c].second.status.ok()) << results[s][c].second.status;
      const absl::Span<const float> v = results[s][c].second.output->values();
      out.insert(out.end(), v.begin(), v.end());
    }
    EXPECT_LT(MaxAbsDiff(out, whole->output.values), 1e-6) << "session " << s;
  }
  EXPECT_GT(observer_.max_batch.load(), 1) << "chunks of different sessions never batched";
}

TEST_F(ServingCoreTest, ChunkIndexDuplicateAndGap) {
  MakeCore();
  const std::string id = Start("dup").session_id;
  Tensor x = Random({6, 1, 4}, 7);
  ChunkResult first = Send(id, LeadingRows(x, 0, 2), 0);
  ASSERT_TRUE(first.status.ok());
  ChunkResult replay = Send(id, LeadingRows(x, 0, 2), 0);
  ASSERT_TRUE(replay.status.ok());
  EXPECT_TRUE(replay.duplicate);
  ASSERT_NE(replay.replayed_output, nullptr);
  EXPECT_EQ(replay.replayed_output->bytes, first.output->bytes);
  EXPECT_EQ(replay.steps_seen, 2);
  ChunkResult gap = Send(id, LeadingRows(x, 2, 4), 2);
  EXPECT_EQ(gap.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(gap.status.message(), HasSubstr("expects chunk_index 1 next"));
  ChunkResult second = Send(id, LeadingRows(x, 2, 6), 1);
  ASSERT_TRUE(second.status.ok());
  auto whole = reference_->Forward(x);
  EXPECT_LT(MaxAbsDiff(second.h_n->values(), whole->h_n.values), 1e-6);
}

TEST_F(ServingCoreTest, ErrorsAreDistinctAndLeaveSessionsIntact) {
  ServingOptions options;
  options.max_sessions = 3;
  MakeCore(options);
  const std::string id = Start("a").session_id;
  Tensor x = Random({4, 2, 4}, 8);
  ASSERT_TRUE(Send(id, LeadingRows(x, 0, 2)).status.ok());

  ChunkRequest unknown_model;
  unknown_model.start = true;
  unknown_model.model = "nope";
  EXPECT_EQ(Submit(unknown_model).status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Submit(unknown_model).status.message(), HasSubstr("unknown model 'nope'"));
  EXPECT_THAT(Send("ghost", LeadingRows(x, 0, 1)).status.message(),
              HasSubstr("unknown session 'ghost'"));
  // A start of a live id with other content (a retried start is acknowledged instead).
  EXPECT_EQ(Start("a", Random({1, 2, 4}, 9)).status.code(), absl::StatusCode::kAlreadyExists);
  ChunkResult wrong_batch = Send(id, Random({1, 3, 4}, 1));
  EXPECT_EQ(wrong_batch.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_batch.status.message(), HasSubstr("has N=2, this chunk has N=3"));
  ChunkResult wrong_features = Send(id, Random({1, 2, 3}, 1));
  EXPECT_THAT(wrong_features.status.message(), HasSubstr("Expected 4, got 3"));
  Tensor nan = Random({1, 2, 4}, 1);
  nan.values[3] = std::nanf("");
  ChunkResult non_finite = Send(id, nan);
  EXPECT_EQ(non_finite.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(non_finite.status.message(), HasSubstr("non-finite"));
  ChunkRequest h0_late;
  h0_late.session_id = id;
  h0_late.h0 = Tensor::Zeros({2, 2, 5});
  EXPECT_THAT(Submit(h0_late).status.message(), HasSubstr("only accepted with start=true"));
  ChunkRequest decode;
  decode.session_id = id;
  decode.decode_error = absl::InvalidArgumentError("input: bad");
  EXPECT_EQ(Submit(decode).status.message(), "input: bad");
  ASSERT_TRUE(Start("b").status.ok());
  ASSERT_TRUE(Start("c").status.ok());
  ChunkResult too_many = Start("d");
  EXPECT_EQ(too_many.status.code(), absl::StatusCode::kResourceExhausted);

  // After all of that, the session goes on exactly.
  ChunkResult rest = Send(id, LeadingRows(x, 2, 4));
  ASSERT_TRUE(rest.status.ok());
  auto whole = reference_->Forward(x);
  EXPECT_LT(MaxAbsDiff(rest.h_n->values(), whole->h_n.values), 1e-6);
  EXPECT_EQ(rest.steps_seen, 4);
}

TEST_F(ServingCoreTest, TombstonesTellClosedFromExpiredFromUnknown) {
  ServingOptions options;
  options.session_idle_timeout = absl::Hours(1);
  MakeCore(options);
  const std::string closed = Start("closed").session_id;
  ASSERT_TRUE(core_->CloseSession(closed).ok());
  EXPECT_THAT(core_->GetSession(closed, false).status().message(), HasSubstr("was closed"));
  const std::string idle = Start("idle").session_id;
  EXPECT_EQ(core_->ReapIdleSessions(absl::Now()), 0);
  EXPECT_EQ(core_->ReapIdleSessions(absl::Now() + absl::Hours(2)), 1);
  auto expired = core_->GetSession(idle, false);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(expired.status().message(), HasSubstr("expired"));
  EXPECT_THAT(core_->GetSession("never", false).status().message(), HasSubstr("unknown session"));
  EXPECT_EQ(observer_.ended[static_cast<int>(SessionEndReason::kIdleTimeout)].load(), 1);
  EXPECT_EQ(observer_.ended[static_cast<int>(SessionEndReason::kClosed)].load(), 1);
}

// Only the newest max_tombstones ended ids are remembered: older ones become unknown.
TEST_F(ServingCoreTest, TombstonesArePrunedOldestFirst) {
  ServingOptions options;
  options.max_tombstones = 2;
  options.session_idle_timeout = absl::Hours(1);
  MakeCore(options);
  for (const char* id : {"first", "second", "third"}) {
    ASSERT_TRUE(Start(id).status.ok());
    if (std::string(id) != "third") {
      ASSERT_TRUE(core_->CloseSession(id).ok());
    }
  }
  ASSERT_EQ(core_->ReapIdleSessions(absl::Now() + absl::Hours(2)), 1);  // "third" expires
  EXPECT_THAT(core_->GetSession("first", false).status().message(),
              HasSubstr("unknown session 'first'"));
  EXPECT_THAT(core_->GetSession("second", false).status().message(), HasSubstr("was closed"));
  EXPECT_THAT(core_->GetSession("third", false).status().message(), HasSubstr("expired"));
  // A pruned id may be started again like any unknown one.
  EXPECT_TRUE(Start("first").status.ok());
}

TEST_F(ServingCoreTest, StateBudgetEvictsIdleSessionsOrRefuses) {
  ServingOptions options;
  // Room for two sessions of N=1: 2 buffers * L(2) * H(5) * 4 bytes = 80 bytes of state each,
  // plus a one-byte id and the fixed per-session overhead.
  options.max_state_bytes = 2 * (80 + 1 + kSessionOverheadBytes);
  options.evict_idle_after = absl::Hours(1);
  MakeCore(options);
  ASSERT_TRUE(Start("a", Random({1, 1, 4}, 1)).status.ok());
  ASSERT_TRUE(Start("b", Random({1, 1, 4}, 2)).status.ok());
  EXPECT_EQ(core_->state_bytes(), 160);
  ChunkResult full = Start("c", Random({1, 1, 4}, 3));
  EXPECT_EQ(full.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status.message(), HasSubstr("--max_state_bytes"));
  core_.reset();

  options.evict_idle_after = absl::ZeroDuration();
  MakeCore(options);
  ASSERT_TRUE(Start("a", Random({1, 1, 4}, 1)).status.ok());
  ASSERT_TRUE(Start("b", Random({1, 1, 4}, 2)).status.ok());
  ASSERT_TRUE(Start("c", Random({1, 1, 4}, 3)).status.ok());
  auto evicted = core_->GetSession("a", false);
  EXPECT_THAT(evicted.status().message(), HasSubstr("evicted"));
  EXPECT_TRUE(core_->GetSession("c", false).ok());
  EXPECT_EQ(core_->state_bytes(), 160);
}

TEST_F(ServingCoreTest, StateExportAndImportContinuesIdentically) {
  MakeCore();
  Tensor x = Random({8, 2, 4}, 9);
  const std::string id = Start("src").session_id;
  ASSERT_TRUE(Send(id, LeadingRows(x, 0, 5)).status.ok());
  auto exported = core_->GetSession(id, true);
  ASSERT_TRUE(exported.ok() && exported->h_n.has_value());
  ChunkRequest import;
  import.start = true;
  import.model = "m";
  import.session_id = "dst";
  import.h0 = exported->h_n;
  ASSERT_TRUE(Submit(import).status.ok());
  ChunkResult continued = Send("dst", LeadingRows(x, 5, 8));
  auto whole = reference_->Forward(x);
  EXPECT_LT(MaxAbsDiff(continued.h_n->values(), whole->h_n.values), 1e-6);
  ChunkRequest bad_import = import;
  bad_import.session_id = "bad";
  bad_import.h0 = Tensor::Zeros({2, 2, 6});
  EXPECT_THAT(Submit(bad_import).status.message(), HasSubstr("h_0 must have shape (2, N, 5)"));
}

TEST_F(ServingCoreTest, DrainingRefusesNewWorkButFinishesSessions) {
  MakeCore();
  const std::string id = Start("live").session_id;
  core_->BeginDrain();
  EXPECT_EQ(Start("new").status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(Send(id, Random({2, 1, 4}, 1)).status.ok());
  std::promise<absl::StatusOr<ForwardResult>> forward;
  core_->Forward("m", Random({2, 1, 4}, 1), std::nullopt,
                 [&](absl::StatusOr<ForwardResult> r) { forward.set_value(std::move(r)); });
  EXPECT_EQ(forward.get_future().get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(core_->WaitIdle(absl::Now() + absl::Seconds(10)));
  core_->EndAllSessions();
  EXPECT_EQ(core_->session_count(), 0);
  EXPECT_EQ(observer_.ended[static_cast<int>(SessionEndReason::kShutdown)].load(), 1);
}

TEST_F(ServingCoreTest, ForwardRefusesNonFiniteH0) {
  MakeCore();
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    Tensor h0 = Random({2, 3, 5}, 11);
    h0.values[7] = bad;
    std::promise<absl::StatusOr<ForwardResult>> promise;
    core_->Forward("m", Random({5, 3, 4}, 10), h0,
                   [&](absl::StatusOr<ForwardResult> r) { promise.set_value(std::move(r)); });
    auto got = promise.get_future().get();
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(got.status().message(), HasSubstr("h_0 holds a non-finite value"));
    EXPECT_THAT(got.status().message(), HasSubstr("at flat index 7"));
  }
}

TEST_F(ServingCoreTest, ForwardMatchesEngine) {
  MakeCore();
  Tensor x = Random({5, 3, 4}, 10);
  std::promise<absl::StatusOr<ForwardResult>> promise;
  core_->Forward("m", x, std::nullopt,
                 [&](absl::StatusOr<ForwardResult> r) { promise.set_value(std::move(r)); });
  auto got = promise.get_future().get();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->output.values, reference_->Forward(x)->output.values);
}

// Sizes before work (issue 11): with a 1000-float message budget (1024 bytes of overhead plus
// 5 bytes per float), responses that could not be sent are refused before compute.
constexpr int64_t kSmallResponseBytes = 1024 + 5 * 1000;

// `status` is the refusal of a response too large to send, advising `advice`.
void ExpectTooLarge(const absl::Status& status, const std::string& advice) {
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr(advice));
}

absl::StatusOr<ForwardResult> ForwardNow(ServingCore& core, Tensor x) {
  std::promise<absl::StatusOr<ForwardResult>> promise;
  auto future = promise.get_future();
  core.Forward("m", std::move(x), std::nullopt,
               [&](absl::StatusOr<ForwardResult> r) { promise.set_value(std::move(r)); });
  return future.get();
}

TEST_F(ServingCoreTest, ForwardOverTheMessageLimitIsRefusedBeforeCompute) {
  ServingOptions options;
  options.max_response_bytes = kSmallResponseBytes;
  MakeCore(options);
  // Output 100 * 2 * 5 = 1000 floats plus 20 of h_n: over the budget.
  absl::StatusOr<ForwardResult> big = ForwardNow(*core_, Random({100, 2, 4}, 1));
  ExpectTooLarge(big.status(), "limit of 6024 bytes");
  EXPECT_THAT(big.status().message(), HasSubstr("shorter sequence"));
  absl::StatusOr<ForwardResult> small = ForwardNow(*core_, Random({90, 2, 4}, 1));
  EXPECT_TRUE(small.ok()) << small.status();
}

TEST_F(ServingCoreTest, ChunkOverTheMessageLimitIsRefusedAndNotApplied) {
  ServingOptions options;
  options.max_response_bytes = kSmallResponseBytes;
  MakeCore(options);
  Tensor x = Random({4, 2, 4}, 2);
  ChunkResult started = Start("", LeadingRows(x, 0, 2));
  ASSERT_TRUE(started.status.ok()) << started.status;
  const std::string id = started.session_id;
  auto before = core_->GetSession(id, true);
  ASSERT_TRUE(before.ok());
  ChunkResult big = Send(id, Random({100, 2, 4}, 3));
  ExpectTooLarge(big.status, "shorter chunks");
  auto after = core_->GetSession(id, true);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->steps_seen, 2);
  EXPECT_EQ(after->h_n->values, before->h_n->values);
  // The session goes on exactly as if the refused chunk had never been sent.
  ChunkResult next = Send(id, LeadingRows(x, 2, 4));
  ASSERT_TRUE(next.status.ok()) << next.status;
  auto whole = reference_->Forward(x);
  ASSERT_TRUE(whole.ok());
  EXPECT_LT(MaxAbsDiff(next.output->values(),
                       absl::MakeConstSpan(whole->output.values).subspan(20)), 1e-6);
}

TEST_F(ServingCoreTest, SessionWhoseStateCannotFitIsRefusedNamingTheLargestN) {
  ServingOptions options;
  options.max_response_bytes = kSmallResponseBytes;
  MakeCore(options);
  // h_n holds 2 * N * 5 floats: N = 100 fits 1000, N = 101 does not.
  ChunkResult wide = Start("", Random({1, 101, 4}, 4));
  ExpectTooLarge(wide.status, "the largest N that fits is 100");
  ChunkRequest import;
  import.model = "m";
  import.start = true;
  import.h0 = Random({2, 101, 5}, 5);
  ChunkResult imported = Submit(import);
  ExpectTooLarge(imported.status, "the largest N that fits is 100");
  import.h0 = Random({2, 100, 5}, 5);
  ChunkResult fits = Submit(import);
  ASSERT_TRUE(fits.status.ok()) << fits.status;
  EXPECT_TRUE(core_->GetSession(fits.session_id, true).ok());
  EXPECT_TRUE(core_->CloseSession(fits.session_id).ok());
}

TEST_F(ServingCoreTest, BidirectionalBufferingIsRefusedAtTheChunkThatWouldOverflow) {
  ServingOptions options;
  options.max_response_bytes = kSmallResponseBytes;
  MakeCore(options, /*bidirectional=*/true);
  // Output 10 floats per step for N = 1, h_n 20: at most 98 steps in all.
  Tensor x = Random({60, 1, 4}, 6);
  ChunkResult started = Start("", LeadingRows(x, 0, 50));
  ASSERT_TRUE(started.status.ok()) << started.status;
  const std::string id = started.session_id;
  ChunkResult overflow = Send(id, Random({50, 1, 4}, 7));
  ExpectTooLarge(overflow.status, "end the sequence sooner");
  auto info = core_->GetSession(id, false);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->buffered_steps, 50);
  ChunkResult last = Send(id, LeadingRows(x, 50, 60), std::nullopt, /*end=*/true);
  ASSERT_TRUE(last.status.ok()) << last.status;
  auto whole = reference_->Forward(x);
  ASSERT_TRUE(whole.ok());
  EXPECT_LT(MaxAbsDiff(last.output->values(), whole->output.values), 1e-6);
}

}  // namespace
}  // namespace rnnserve
