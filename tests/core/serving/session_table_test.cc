// SessionTable on its own, driven the way a ChunkBatch drives it: admission and per-session
// order, the state budget's eviction (never of a session with a chunk in flight), and that
// what happened reaches the observer only through Publish, after the lock.
#include "core/serving/session_table.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

class RecordingObserver : public ServingObserver {
 public:
  void SessionStarted(const std::string&) override { ++started; }
  void SessionEnded(const std::string&, SessionEndReason reason) override {
    ended.push_back(reason);
  }
  void StateBytes(int64_t bytes) override { state_bytes = bytes; }
  int started = 0;
  std::vector<SessionEndReason> ended;
  int64_t state_bytes = -1;
};

class SessionTableTest : public ::testing::Test {
 protected:
  void MakeTable(ServingOptions options) {
    options_ = options;
    RnnConfig config;
    config.input_size = 3;
    config.hidden_size = 4;
    ASSERT_TRUE(models_.Add("m", config, RandomParameters(config, 1)).ok());
    table_ = std::make_unique<SessionTable>(models_, options_, observer_);
  }

  // A task for `id` whose answer lands in answers_.
  ChunkTask* Task(const std::string& id, bool start, std::optional<Tensor> h0 = std::nullopt) {
    auto* task = new ChunkTask;
    task->request.session_id = id;
    task->request.model = "m";
    task->request.start = start;
    task->request.h0 = std::move(h0);
    task->submitted = absl::Now();
    task->done = [this](ChunkResult r) { answers_.push_back(std::move(r)); };
    return task;
  }

  // Admit's answer (go now or queued); a refusal fails the test.
  std::optional<bool> Admit(ChunkTask* task, SessionEvents& events) {
    absl::StatusOr<bool> admitted = table_->Admit(task, events);
    EXPECT_TRUE(admitted.ok()) << admitted.status();
    if (!admitted.ok()) return std::nullopt;
    return *admitted;
  }

  // Runs `task` through a batch that computes nothing, as a ChunkBatch would, answers it and
  // returns the session's next task, if any.
  ChunkTask* CompleteAndAnswer(ChunkTask* task) {
    std::vector<ChunkTask*> batch = {task};
    table_->BeginBatch(batch);
    SessionEvents events;
    std::vector<std::shared_ptr<Session>> handoff = table_->CompleteBatch(batch, events);
    AnswerChunk(task, observer_);
    table_->Publish(events);
    std::vector<BatchScheduler::Task*> next = table_->Handoff(handoff);
    return next.empty() ? nullptr : static_cast<ChunkTask*>(next.front());
  }

  ModelRegistry models_;
  ServingOptions options_;
  RecordingObserver observer_;
  std::unique_ptr<SessionTable> table_;
  std::vector<ChunkResult> answers_;
};

TEST_F(SessionTableTest, OneChunkInFlightOthersQueueInOrder) {
  MakeTable({});
  SessionEvents events;
  ChunkTask* first = Task("s", /*start=*/true);
  ASSERT_EQ(Admit(first, events), true) << "an idle session's chunk goes at once";
  ChunkTask* second = Task("s", false);
  ChunkTask* third = Task("s", false);
  EXPECT_EQ(Admit(second, events), false) << "queued behind the one in flight";
  EXPECT_EQ(Admit(third, events), false);
  EXPECT_EQ(observer_.started, 0) << "the observer was told before Publish";
  table_->Publish(events);
  EXPECT_EQ(observer_.started, 1);

  EXPECT_EQ(CompleteAndAnswer(first), second);
  // Closing with a chunk in flight answers the queued one NOT_FOUND; the running one finishes.
  ASSERT_TRUE(table_->CloseSession("s", events).ok());
  ASSERT_EQ(answers_.size(), 1u);
  table_->Publish(events);
  ASSERT_EQ(answers_.size(), 2u);
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(answers_[1].status.message(), HasSubstr("closed before this request was applied"));
  EXPECT_EQ(CompleteAndAnswer(second), nullptr);
  EXPECT_TRUE(answers_.back().ended);
  EXPECT_THAT(observer_.ended, ::testing::ElementsAre(SessionEndReason::kClosed));
}

TEST_F(SessionTableTest, AdmissionRefusals) {
  ServingOptions options;
  options.max_sessions = 1;
  MakeTable(options);
  SessionEvents events;
  std::unique_ptr<ChunkTask> unknown(Task("ghost", false));
  EXPECT_THAT(table_->Admit(unknown.get(), events).status().message(),
              HasSubstr("unknown session 'ghost'"));
  ChunkTask* a = Task("a", true);
  ASSERT_TRUE(table_->Admit(a, events).ok());
  // The id of a live session, with other content than its start (h_0).
  std::unique_ptr<ChunkTask> again(Task("a", true, Tensor::Zeros({1, 1, 4})));
  EXPECT_EQ(table_->Admit(again.get(), events).status().code(), absl::StatusCode::kAlreadyExists);
  std::unique_ptr<ChunkTask> b(Task("b", true));
  EXPECT_EQ(table_->Admit(b.get(), events).status().code(),
            absl::StatusCode::kResourceExhausted);
  table_->BeginDrain();
  std::unique_ptr<ChunkTask> draining(Task("c", true));
  EXPECT_EQ(table_->Admit(draining.get(), events).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(CompleteAndAnswer(a), nullptr);
  table_->Publish(events);
}

TEST_F(SessionTableTest, BudgetEvictsTheLeastRecentlyUsedIdleSessionOnly) {
  ServingOptions options;
  // One session of N=1 takes 2 buffers * L(1) * H(4) * 4 bytes = 32 bytes of state, plus its
  // one-byte id and the fixed per-session overhead.
  options.max_state_bytes = 2 * (32 + 1 + kSessionOverheadBytes);
  options.evict_idle_after = absl::ZeroDuration();
  MakeTable(options);
  SessionEvents events;
  ChunkTask* a = Task("a", true, Tensor::Zeros({1, 1, 4}));
  ChunkTask* b = Task("b", true, Tensor::Zeros({1, 1, 4}));
  ASSERT_EQ(Admit(a, events), true);
  ASSERT_EQ(Admit(b, events), true);
  EXPECT_EQ(table_->state_bytes(), 64);
  // Both have a chunk in flight: nothing may be evicted.
  std::unique_ptr<ChunkTask> c(Task("c", true, Tensor::Zeros({1, 1, 4})));
  EXPECT_EQ(table_->Admit(c.get(), events).status().code(),
            absl::StatusCode::kResourceExhausted);
  // b completes first, so it is the least recently used once both are idle.
  EXPECT_EQ(CompleteAndAnswer(b), nullptr);
  EXPECT_EQ(CompleteAndAnswer(a), nullptr);
  table_->Publish(events);
  EXPECT_EQ(observer_.state_bytes, 64);

  ChunkTask* d = Task("d", true, Tensor::Zeros({1, 1, 4}));
  ASSERT_EQ(Admit(d, events), true);
  EXPECT_TRUE(observer_.ended.empty()) << "the observer was told under the lock";
  table_->Publish(events);
  EXPECT_THAT(observer_.ended, ::testing::ElementsAre(SessionEndReason::kEvicted));
  EXPECT_THAT(table_->GetSession("b", false).status().message(), HasSubstr("evicted"));
  EXPECT_TRUE(table_->GetSession("a", false).ok());
  EXPECT_EQ(table_->state_bytes(), 64);
  EXPECT_EQ(CompleteAndAnswer(d), nullptr);
  table_->EndAll(events);
  table_->Publish(events);
  EXPECT_EQ(observer_.state_bytes, 0);
}

}  // namespace
}  // namespace rnnserve
