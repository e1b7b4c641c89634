// ServingCore's one memory budget (state, buffered input, replay copy and ids, per session and
// in total, against --max_state_bytes and the per-principal quota), the buffered-steps cap,
// bounded tombstones, shared replays, idempotent starts and checksum-refused duplicates.
// Outputs are compared with RnnModel::Forward over the whole sequence.
#include <future>

#include "core/serving/serving_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

class MemoryObserver : public ServingObserver {
 public:
  void MemoryChanged(const MemoryUsage& usage) override {
    absl::MutexLock lock(&mu);
    last = usage;
  }
  absl::Mutex mu;
  MemoryUsage last;
};

// One session of N=1: two state buffers of L(2) * H(5) floats.
constexpr int64_t kStateBytes = 2 * 2 * 5 * 4;
int64_t IdBytes(const std::string& id) {
  return static_cast<int64_t>(id.size()) + kSessionOverheadBytes;
}

class SessionMemoryTest : public ::testing::Test {
 protected:
  void MakeCore(ServingOptions options = {}, bool bidirectional = false) {
    auto registry = std::make_unique<ModelRegistry>();
    config_.input_size = 4;
    config_.hidden_size = 5;
    config_.num_layers = 2;
    config_.bidirectional = bidirectional;
    ParameterMap params = RandomParameters(config_, 99);
    ASSERT_TRUE(registry->Add("m", config_, params).ok());
    reference_ = std::move(RnnModel::Create(config_, params)).value();
    options.threads = 2;
    core_.reset();
    core_ = std::make_unique<ServingCore>(std::move(registry), options, &observer_);
  }

  ChunkResult Submit(ChunkRequest request) {
    std::promise<ChunkResult> promise;
    auto future = promise.get_future();
    core_->SubmitChunk(std::move(request),
                       [&](ChunkResult r) { promise.set_value(std::move(r)); });
    return future.get();
  }

  static ChunkRequest Request(const std::string& id, bool start, std::optional<Tensor> input,
                              std::optional<uint64_t> index = std::nullopt, bool end = false) {
    ChunkRequest r;
    r.session_id = id;
    r.model = start ? "m" : "";
    r.start = start;
    if (input.has_value()) r.input = TensorBytes::FromTensor(*input);
    r.chunk_index = index;
    r.end = end;
    return r;
  }

  MemoryBytes Memory(const std::string& id) {
    absl::StatusOr<SessionSnapshot> s = core_->GetSession(id, false);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->memory : MemoryBytes();
  }

  // The totals as the core holds them; the observer is told them too (events are published
  // just after a chunk is answered, so it may lag an answer briefly: a bounded poll).
  MemoryUsage Totals() {
    MemoryUsage usage = core_->memory();
    absl::MutexLock lock(&observer_.mu);
    auto told = [&] {
      return observer_.last.sessions.parts == usage.sessions.parts &&
             observer_.last.tombstones == usage.tombstones;
    };
    observer_.mu.AwaitWithTimeout(absl::Condition(&told), absl::Seconds(10));
    EXPECT_EQ(observer_.last.sessions.parts, usage.sessions.parts);
    EXPECT_EQ(observer_.last.tombstones, usage.tombstones);
    return usage;
  }

  RnnConfig config_;
  std::unique_ptr<RnnModel> reference_;
  MemoryObserver observer_;
  std::unique_ptr<ServingCore> core_;
};

TEST_F(SessionMemoryTest, EveryPartIsCountedAndReleased) {
  MakeCore();
  ASSERT_TRUE(Submit(Request("s", true, std::nullopt)).status.ok());
  EXPECT_EQ(Memory("s")[MemoryPart::kIds], IdBytes("s"));
  EXPECT_EQ(Memory("s").total(), IdBytes("s"));
  Tensor x = Random({3, 1, 4}, 1);
  // Without chunk_index no replay copy is kept.
  ASSERT_TRUE(Submit(Request("s", false, LeadingRows(x, 0, 1))).status.ok());
  EXPECT_EQ(Memory("s")[MemoryPart::kState], kStateBytes);
  EXPECT_EQ(Memory("s")[MemoryPart::kReplay], 0);
  ChunkResult indexed = Submit(Request("s", false, LeadingRows(x, 1, 3), 1));
  ASSERT_TRUE(indexed.status.ok()) << indexed.status;
  const int64_t replay = ReplayBytes(*indexed.output);
  EXPECT_GT(replay, 2 * 5 * 4);
  MemoryBytes m = Memory("s");
  EXPECT_EQ(m[MemoryPart::kReplay], replay);
  EXPECT_EQ(m.total(), kStateBytes + replay + IdBytes("s"));
  EXPECT_EQ(Totals().sessions.parts, m.parts);
  EXPECT_EQ(core_->state_bytes(), kStateBytes);
  // An applied chunk without output (start-only is not one; an index-only chunk is) drops it.
  ASSERT_TRUE(Submit(Request("s", false, std::nullopt, 2)).status.ok());
  EXPECT_EQ(Memory("s")[MemoryPart::kReplay], 0);
  ASSERT_TRUE(core_->CloseSession("s").ok());
  EXPECT_EQ(Totals().sessions.total(), 0);
}

TEST_F(SessionMemoryTest, DuplicatesShareOneReplayCopy) {
  MakeCore();
  Tensor x = Random({4, 1, 4}, 2);
  ASSERT_TRUE(Submit(Request("r", true, std::nullopt)).status.ok());
  ChunkResult applied = Submit(Request("r", false, x, 0));
  ASSERT_TRUE(applied.status.ok());
  ChunkResult first = Submit(Request("r", false, x, 0));
  ChunkResult second = Submit(Request("r", false, x, 0));
  ASSERT_TRUE(first.duplicate && second.duplicate);
  ASSERT_NE(first.replayed_output, nullptr);
  EXPECT_FALSE(first.output.has_value());
  // The same buffer, not a copy per duplicate; counted once.
  EXPECT_EQ(first.replayed_output.get(), second.replayed_output.get());
  EXPECT_EQ(first.replayed_output->bytes, applied.output->bytes);
  EXPECT_EQ(Memory("r")[MemoryPart::kReplay], ReplayBytes(*applied.output));
}

TEST_F(SessionMemoryTest, ReplayCopyThatDoesNotFitIsNotKept) {
  ServingOptions options;
  // Room for the ids and the state, not for a 50-step output's copy.
  options.max_state_bytes = IdBytes("t") + kStateBytes + 100;
  MakeCore(options);
  Tensor x = Random({50, 1, 4}, 3);
  ASSERT_TRUE(Submit(Request("t", true, std::nullopt)).status.ok());
  ChunkResult applied = Submit(Request("t", false, x, 0));
  ASSERT_TRUE(applied.status.ok()) << applied.status;
  EXPECT_EQ(applied.output->num_elements(), 50 * 5);
  EXPECT_EQ(Memory("t")[MemoryPart::kReplay], 0);
  ChunkResult dup = Submit(Request("t", false, x, 0));
  EXPECT_TRUE(dup.status.ok());
  EXPECT_TRUE(dup.duplicate);
  EXPECT_EQ(dup.replayed_output, nullptr);
  EXPECT_FALSE(dup.output.has_value());
}

TEST_F(SessionMemoryTest, ReplayCopiesGiveWayBeforeAnySessionIsRefused) {
  ServingOptions options;
  options.evict_idle_after = absl::Hours(1);  // no session may be evicted
  Tensor x = Random({4, 1, 4}, 12);
  // Two sessions' ids, a's state and its replay copy, but not b's state too.
  const int64_t replay = ReplayBytes(TensorBytes::Zeros({4, 1, 5}));
  options.max_state_bytes = IdBytes("a") + IdBytes("b") + 2 * kStateBytes + replay - 1;
  MakeCore(options);
  ASSERT_TRUE(Submit(Request("a", true, std::nullopt)).status.ok());
  ChunkResult applied = Submit(Request("a", false, x, 0));
  ASSERT_TRUE(applied.status.ok());
  ASSERT_EQ(Memory("a")[MemoryPart::kReplay], replay);
  ASSERT_TRUE(Submit(Request("b", true, std::nullopt)).status.ok());
  ASSERT_EQ(Memory("a")[MemoryPart::kReplay], replay);
  // b's state needs the replay's room: the copy goes, b is served, a is untouched. (Only an
  // idle session's copy goes, and a turns idle just after its answer: a refused chunk is not
  // applied, so the client may send it again; bounded.)
  ChunkResult b = Submit(Request("b", false, x));
  for (int i = 0; i < 1000 && b.status.code() == absl::StatusCode::kResourceExhausted; ++i) {
    absl::SleepFor(absl::Milliseconds(2));
    b = Submit(Request("b", false, x));
  }
  ASSERT_TRUE(b.status.ok()) << b.status;
  EXPECT_EQ(Memory("a")[MemoryPart::kReplay], 0);
  EXPECT_EQ(Totals().sessions[MemoryPart::kReplay], 0);
  ChunkResult dup = Submit(Request("a", false, x, 0));
  EXPECT_TRUE(dup.status.ok() && dup.duplicate);
  EXPECT_EQ(dup.replayed_output, nullptr);
  EXPECT_EQ(core_->GetSession("a", false)->steps_seen, 4);
}

TEST_F(SessionMemoryTest, BufferedStepsCapRefusesWithoutApplying) {
  ServingOptions options;
  options.max_buffered_steps = 10;
  MakeCore(options, /*bidirectional=*/true);
  Tensor x = Random({10, 1, 4}, 4);
  ASSERT_TRUE(Submit(Request("b", true, LeadingRows(x, 0, 6), 0)).status.ok());
  ChunkResult over = Submit(Request("b", false, Random({5, 1, 4}, 9), 1));
  EXPECT_EQ(over.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status.message(), HasSubstr("6 timesteps buffered"));
  EXPECT_THAT(over.status.message(), HasSubstr("T=5"));
  EXPECT_THAT(over.status.message(), HasSubstr("cap of 10 (--max_buffered_steps)"));
  EXPECT_THAT(over.status.message(), HasSubstr("end the sequence sooner"));
  absl::StatusOr<SessionSnapshot> s = core_->GetSession("b", false);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->buffered_steps, 6);
  EXPECT_EQ(s->next_chunk_index, 1u);
  // Still usable: the rest of the sequence, then the whole output equals torch's.
  ChunkResult end = Submit(Request("b", false, LeadingRows(x, 6, 10), 1, /*end=*/true));
  ASSERT_TRUE(end.status.ok()) << end.status;
  auto whole = reference_->Forward(x);
  EXPECT_LT(MaxAbsDiff(end.output->values(), whole->output.values), 1e-5);
  EXPECT_EQ(Totals().sessions.total(), 0);
}

TEST_F(SessionMemoryTest, BufferedInputCountsAgainstTheBudget) {
  ServingOptions options;
  // Ids, state (both directions: twice a unidirectional one's) and 100 buffered steps' input
  // (4 floats each), not more.
  options.max_state_bytes = IdBytes("b") + 2 * kStateBytes + 100 * 4 * 4;
  MakeCore(options, /*bidirectional=*/true);
  Tensor x = Random({100, 1, 4}, 5);
  ASSERT_TRUE(Submit(Request("b", true, LeadingRows(x, 0, 60))).status.ok());
  EXPECT_EQ(Memory("b")[MemoryPart::kBufferedInput], 60 * 4 * 4);
  ChunkResult over = Submit(Request("b", false, Random({41, 1, 4}, 6)));
  EXPECT_EQ(over.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status.message(), HasSubstr("session memory is full"));
  EXPECT_THAT(over.status.message(), HasSubstr("buffered input"));
  EXPECT_EQ(core_->GetSession("b", false)->buffered_steps, 60);
  ChunkResult end = Submit(Request("b", false, LeadingRows(x, 60, 100), std::nullopt, true));
  ASSERT_TRUE(end.status.ok()) << end.status;
  auto whole = reference_->Forward(x);
  EXPECT_LT(MaxAbsDiff(end.output->values(), whole->output.values), 1e-5);
  EXPECT_EQ(Totals().sessions.total(), 0);
}

TEST_F(SessionMemoryTest, PrincipalQuotaCountsEveryPart) {
  ServingOptions options;
  options.max_state_bytes_per_principal = IdBytes("q1") + kStateBytes + IdBytes("q2") - 1;
  MakeCore(options);
  ASSERT_TRUE(Submit(Request("q1", true, Random({1, 1, 4}, 1))).status.ok());
  ChunkResult second = Submit(Request("q2", true, std::nullopt));
  EXPECT_EQ(second.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status.message(), HasSubstr("--max_state_bytes_per_principal"));
  EXPECT_THAT(second.status.message(), HasSubstr("ids"));
}

TEST_F(SessionMemoryTest, TombstonesAreBoundedInBytes) {
  ServingOptions options;
  const std::string long_id(100, 'x');
  options.max_tombstone_bytes = 3 * (long_id.size() + 4 + kTombstoneOverheadBytes);
  MakeCore(options);
  for (int i = 0; i < 5; ++i) {
    const std::string id = long_id + std::to_string(i);
    ASSERT_TRUE(Submit(Request(id, true, std::nullopt)).status.ok());
    ASSERT_TRUE(core_->CloseSession(id).ok());
  }
  MemoryUsage usage = Totals();
  EXPECT_EQ(usage.tombstones, 3);
  EXPECT_LE(usage.tombstone_bytes, options.max_tombstone_bytes);
  EXPECT_THAT(core_->GetSession(long_id + "0", false).status().message(),
              HasSubstr("unknown session"));
  EXPECT_THAT(core_->GetSession(long_id + "4", false).status().message(),
              HasSubstr("was closed"));
  EXPECT_EQ(usage.sessions.total(), 0);
}

TEST_F(SessionMemoryTest, RetriedStartIsAcknowledged) {
  MakeCore();
  Tensor x = Random({5, 1, 4}, 7);
  ChunkResult first = Submit(Request("i", true, LeadingRows(x, 0, 2), 0));
  ASSERT_TRUE(first.status.ok()) << first.status;
  ChunkResult retry = Submit(Request("i", true, LeadingRows(x, 0, 2), 0));
  ASSERT_TRUE(retry.status.ok()) << retry.status;
  EXPECT_TRUE(retry.duplicate);
  EXPECT_EQ(retry.steps_seen, 2);
  ASSERT_NE(retry.replayed_output, nullptr);
  EXPECT_EQ(retry.replayed_output->bytes, first.output->bytes);
  EXPECT_EQ(retry.h_n->bytes, first.h_n->bytes);
  // Different content is another start: ALREADY_EXISTS, saying so.
  ChunkResult other = Submit(Request("i", true, LeadingRows(x, 0, 1), 0));
  EXPECT_EQ(other.status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(other.status.message(), HasSubstr("different content"));
  ASSERT_TRUE(Submit(Request("i", false, LeadingRows(x, 2, 5), 1)).status.ok());
  // Still a duplicate later, now without output (it is no longer the last chunk).
  retry = Submit(Request("i", true, LeadingRows(x, 0, 2), 0));
  EXPECT_TRUE(retry.status.ok() && retry.duplicate);
  EXPECT_EQ(retry.replayed_output, nullptr);
  EXPECT_EQ(retry.steps_seen, 5);
  auto whole = reference_->Forward(x);
  EXPECT_LT(MaxAbsDiff(retry.h_n->values(), whole->h_n.values), 1e-5);
  EXPECT_EQ(core_->session_count(), 1);
}

TEST_F(SessionMemoryTest, IdempotencyKeyMakesServerAssignedStartsIdempotent) {
  MakeCore();
  ChunkRequest start = Request("", true, Random({2, 1, 4}, 8));
  start.idempotency_key = "client-token 1";
  ChunkResult first = Submit(start);
  ASSERT_TRUE(first.status.ok()) << first.status;
  ChunkResult retry = Submit(start);
  ASSERT_TRUE(retry.status.ok()) << retry.status;
  EXPECT_TRUE(retry.duplicate);
  EXPECT_EQ(retry.session_id, first.session_id);
  EXPECT_EQ(core_->session_count(), 1);
  EXPECT_EQ(Memory(first.session_id)[MemoryPart::kIds],
            IdBytes(first.session_id) + static_cast<int64_t>(start.idempotency_key.size()));
  ChunkRequest changed = start;
  changed.input = TensorBytes::FromTensor(Random({2, 1, 4}, 9));
  EXPECT_EQ(Submit(changed).status.code(), absl::StatusCode::kAlreadyExists);
  for (const std::string& bad : {std::string(129, 'k'), std::string("new\nline")}) {
    ChunkRequest invalid = start;
    invalid.idempotency_key = bad;
    ChunkResult refused = Submit(invalid);
    EXPECT_EQ(refused.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(refused.status.message(), HasSubstr("idempotency_key must be 1 to 128"));
  }
  // The key lives as long as the session: once closed, the key starts a new one.
  ASSERT_TRUE(core_->CloseSession(first.session_id).ok());
  ChunkResult again = Submit(start);
  ASSERT_TRUE(again.status.ok());
  EXPECT_FALSE(again.duplicate);
  EXPECT_NE(again.session_id, first.session_id);
}

TEST_F(SessionMemoryTest, StartWithChunkIndexBeginsTheNumbering) {
  MakeCore();
  Tensor x = Random({4, 1, 4}, 10);
  ASSERT_TRUE(Submit(Request("k", true, std::nullopt, 7)).status.ok());
  EXPECT_EQ(core_->GetSession("k", false)->next_chunk_index, 7u);
  ASSERT_TRUE(Submit(Request("k", false, LeadingRows(x, 0, 2), 7)).status.ok());
  ChunkResult gap = Submit(Request("k", false, LeadingRows(x, 2, 4), 9));
  EXPECT_EQ(gap.status.code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Submit(Request("with-input", true, LeadingRows(x, 0, 2), 40)).status.ok());
  EXPECT_EQ(core_->GetSession("with-input", false)->next_chunk_index, 41u);
}

TEST_F(SessionMemoryTest, DuplicateWithDifferentInputIsRefused) {
  MakeCore();
  Tensor x = Random({6, 1, 4}, 11);
  ASSERT_TRUE(Submit(Request("d", true, std::nullopt)).status.ok());
  ASSERT_TRUE(Submit(Request("d", false, LeadingRows(x, 0, 2), 0)).status.ok());
  ASSERT_TRUE(Submit(Request("d", false, LeadingRows(x, 2, 4), 1)).status.ok());
  // Index 0 is no longer the last chunk, but its checksum is still kept.
  for (uint64_t index : {0, 1}) {
    ChunkResult changed = Submit(Request("d", false, Random({2, 1, 4}, 50 + index), index));
    EXPECT_EQ(changed.status.code(), absl::StatusCode::kFailedPrecondition) << index;
    EXPECT_THAT(changed.status.message(), HasSubstr("already applied with different input"));
    ChunkResult same = Submit(Request("d", false, LeadingRows(x, 2 * index, 2 * index + 2), index));
    EXPECT_TRUE(same.status.ok() && same.duplicate) << index;
  }
  ChunkResult last = Submit(Request("d", false, LeadingRows(x, 4, 6), 2));
  auto whole = reference_->Forward(x);
  EXPECT_LT(MaxAbsDiff(last.h_n->values(), whole->h_n.values), 1e-5);
}

}  // namespace
}  // namespace rnnserve
