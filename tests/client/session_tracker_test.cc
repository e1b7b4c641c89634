// SessionTracker, the resume bookkeeping of the C++ client's StreamChannel: numbering, the
// restart request after a lost session (h_0 = last h_n, next chunk_index, the chunk carried),
// steps counted across restarts, omit_state stripped for the caller, bidirectional replay.
#include "client/session_tracker.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace rnnserve {
namespace client {
namespace {

v1::Tensor State(float value) {
  v1::Tensor t;
  t.add_shape(1);
  t.add_shape(1);
  t.add_shape(1);
  t.add_values(value);
  return t;
}

v1::StreamRequest Chunk(const std::string& id, uint64_t request_id, bool start = false) {
  v1::StreamRequest r;
  r.set_session_id(id);
  r.set_request_id(request_id);
  r.set_start(start);
  if (start) r.set_model("m");
  r.mutable_input()->add_shape(2);
  r.mutable_input()->add_shape(1);
  r.mutable_input()->add_shape(1);
  return r;
}

// The server's answer to `request`: its chunk_index, `steps` so far, state `h`.
v1::StreamResponse Answer(const v1::StreamRequest& request, int64_t steps, float h) {
  v1::StreamResponse r;
  r.set_request_id(request.request_id());
  r.set_session_id(request.session_id());
  if (request.has_chunk_index()) r.set_chunk_index(request.chunk_index());
  r.set_steps_seen(steps);
  *r.mutable_h_n() = State(h);
  return r;
}

TEST(SessionTrackerTest, NumbersChunksAndRestartsFromTheLastState) {
  SessionTracker tracker;
  v1::StreamRequest start = Chunk("s", 1, /*start=*/true);
  start.set_omit_state(true);
  ASSERT_TRUE(tracker.Tracks(start));
  EXPECT_TRUE(tracker.Prepare(&start, /*bidirectional=*/false));  // the caller's omit_state
  EXPECT_FALSE(start.omit_state());                                // the library wants h_n
  EXPECT_EQ(start.chunk_index(), 0u);
  v1::StreamRequest second = Chunk("s", 2);  // pipelined behind the unanswered start
  ASSERT_TRUE(tracker.Tracks(second));
  EXPECT_FALSE(tracker.Prepare(&second, false));
  EXPECT_EQ(second.chunk_index(), 1u);

  v1::StreamResponse answer = Answer(start, 2, 0.5f);
  tracker.Answered(start, /*caller_omit=*/true, &answer);
  EXPECT_FALSE(answer.has_h_n());  // stripped for the caller
  answer = Answer(second, 4, 0.25f);
  tracker.Answered(second, false, &answer);

  v1::StreamRequest third = Chunk("s", 3);
  tracker.Prepare(&third, false);
  EXPECT_EQ(third.chunk_index(), 2u);
  v1::StreamResponse lost;
  lost.set_error_code(5);  // NOT_FOUND: a replaced replica
  ASSERT_TRUE(tracker.ShouldRestart(third, lost));
  const std::vector<v1::StreamRequest> restart = tracker.RestartRequests(third);
  ASSERT_EQ(restart.size(), 1u);
  EXPECT_TRUE(restart[0].start());
  EXPECT_EQ(restart[0].model(), "m");
  EXPECT_EQ(restart[0].session_id(), "s");
  EXPECT_EQ(restart[0].chunk_index(), 2u);
  EXPECT_EQ(restart[0].h_0().values(0), 0.25f);
  EXPECT_TRUE(restart[0].has_input());
  // The restarted session counts from 0 on the server; the caller sees 4 + 2.
  answer = Answer(third, 2, 0.125f);
  tracker.Answered(third, false, &answer);
  EXPECT_EQ(answer.steps_seen(), 6);
  EXPECT_EQ(tracker.ResumeState("s")->values(0), 0.125f);
}

// A session started on "the latest" is pinned by the server to a version; a restart (on a
// replica where another version may be the latest) asks for that version, not the latest.
TEST(SessionTrackerTest, RestartKeepsTheVersionTheServerPinned) {
  SessionTracker tracker;
  v1::StreamRequest start = Chunk("s", 1, /*start=*/true);  // model_version 0: the latest
  tracker.Prepare(&start, false);
  v1::StreamResponse answer = Answer(start, 2, 0.5f);
  answer.set_model_version(3);
  tracker.Answered(start, false, &answer);
  v1::StreamRequest second = Chunk("s", 2);
  tracker.Prepare(&second, false);
  std::vector<v1::StreamRequest> restart = tracker.RestartRequests(second);
  ASSERT_EQ(restart.size(), 1u);
  EXPECT_EQ(restart[0].model_version(), 3);

  // Lost before any answer said: the restart asks what the start asked.
  v1::StreamRequest pinned = Chunk("p", 3, /*start=*/true);
  pinned.set_model_version(7);
  tracker.Prepare(&pinned, false);
  v1::StreamResponse bare;
  bare.set_request_id(3);
  bare.set_session_id("p");
  bare.set_chunk_index(0);
  tracker.Answered(pinned, false, &bare);
  v1::StreamRequest next = Chunk("p", 4);
  tracker.Prepare(&next, false);
  restart = tracker.RestartRequests(next);
  ASSERT_EQ(restart.size(), 1u);
  EXPECT_EQ(restart[0].model_version(), 7);
}

TEST(SessionTrackerTest, LstmRestartCarriesTheCellStateToo) {
  SessionTracker tracker;
  v1::StreamRequest start = Chunk("l", 1, /*start=*/true);
  *start.mutable_h_0() = State(0.5f);
  *start.mutable_c_0() = State(-0.5f);
  tracker.Prepare(&start, false);
  // Lost before its first answer carried a state: the restart resumes from h_0 and c_0.
  v1::StreamResponse answer;
  answer.set_request_id(1);
  answer.set_session_id("l");
  answer.set_chunk_index(0);
  tracker.Answered(start, false, &answer);
  EXPECT_EQ(tracker.ResumeCellState("l")->values(0), -0.5f);
  v1::StreamRequest second = Chunk("l", 2);
  tracker.Prepare(&second, false);
  answer = Answer(second, 4, 0.25f);
  *answer.mutable_c_n() = State(-0.25f);
  tracker.Answered(second, /*caller_omit=*/true, &answer);
  EXPECT_FALSE(answer.has_h_n());  // both parts stripped for the caller
  EXPECT_FALSE(answer.has_c_n());
  v1::StreamRequest third = Chunk("l", 3);
  tracker.Prepare(&third, false);
  const std::vector<v1::StreamRequest> restart = tracker.RestartRequests(third);
  ASSERT_EQ(restart.size(), 1u);
  EXPECT_EQ(restart[0].h_0().values(0), 0.25f);
  EXPECT_EQ(restart[0].c_0().values(0), -0.25f);
  // A state without c (a model without cell state) leaves none to resume from.
  tracker.SetResumeState("l", State(1.0f));
  EXPECT_EQ(tracker.ResumeCellState("l"), nullptr);
}

TEST(SessionTrackerTest, RefusedChunkGivesItsIndexBackAndEndForgets) {
  SessionTracker tracker;
  v1::StreamRequest start = Chunk("s", 1, true);
  tracker.Prepare(&start, false);
  v1::StreamResponse answer = Answer(start, 2, 1.0f);
  tracker.Answered(start, false, &answer);
  v1::StreamRequest bad = Chunk("s", 2);
  tracker.Prepare(&bad, false);
  v1::StreamResponse refused;
  refused.set_error_code(3);
  tracker.Answered(bad, false, &refused);
  v1::StreamRequest next = Chunk("s", 3);
  next.set_end(true);
  tracker.Prepare(&next, false);
  EXPECT_EQ(next.chunk_index(), 1u);
  answer = Answer(next, 4, 2.0f);
  answer.set_ended(true);
  tracker.Answered(next, false, &answer);
  v1::StreamRequest after = Chunk("s", 4);
  EXPECT_FALSE(tracker.Tracks(after));
}

TEST(SessionTrackerTest, BidirectionalSessionReplaysFromItsStart) {
  SessionTracker tracker;
  v1::StreamRequest start = Chunk("b", 1, true);
  tracker.Prepare(&start, /*bidirectional=*/true);
  v1::StreamResponse answer = Answer(start, 2, 0.0f);
  tracker.Answered(start, false, &answer);
  v1::StreamRequest second = Chunk("b", 2);
  tracker.Prepare(&second, false);
  answer = Answer(second, 4, 0.0f);
  tracker.Answered(second, false, &answer);
  EXPECT_TRUE(tracker.Bidirectional("b"));
  EXPECT_EQ(tracker.ResumeState("b"), nullptr);  // no state stands for a buffered past

  v1::StreamRequest last = Chunk("b", 3);
  last.set_end(true);
  tracker.Prepare(&last, false);
  const std::vector<v1::StreamRequest> replay = tracker.RestartRequests(last);
  ASSERT_EQ(replay.size(), 3u);
  EXPECT_TRUE(replay[0].start());
  EXPECT_FALSE(replay[0].has_h_0());
  EXPECT_EQ(replay[1].chunk_index(), 1u);
  EXPECT_EQ(replay[2].chunk_index(), 2u);
  EXPECT_TRUE(replay[2].end());
}

TEST(SessionTrackerTest, ServerAssignedStartGetsAnIdempotencyKey) {
  SessionTracker tracker;
  v1::StreamRequest start = Chunk("", 1, true);
  tracker.Prepare(&start, false);
  EXPECT_FALSE(start.idempotency_key().empty());
  EXPECT_LE(start.idempotency_key().size(), 128u);
  v1::StreamRequest other = Chunk("", 2, true);
  tracker.Prepare(&other, false);
  EXPECT_NE(start.idempotency_key(), other.idempotency_key());
}

}  // namespace
}  // namespace client
}  // namespace rnnserve
