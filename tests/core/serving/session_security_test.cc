// ServingCore as a hostile client meets it: random server ids, client id validation, sessions
// owned by the principal that started them (every operation of another principal gets the
// NOT_FOUND an unknown id gets), per-principal quotas, idle expiry that empty requests cannot
// stop, and bounded, escaped messages and log lines for huge or forged ids.
#include <cmath>
#include <future>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "base/log.h"
#include "core/serving/serving_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// True when a and b have the same size and differ by at most 1e-6 everywhere.
bool Near(absl::Span<const float> a, absl::Span<const float> b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::abs(a[i] - b[i]) <= 1e-6f)) return false;
  }
  return true;
}

constexpr char kAlice[] = "alice";
constexpr char kBob[] = "bob";

class SessionSecurityTest : public ::testing::Test {
 protected:
  void MakeCore(ServingOptions options = {}) {
    auto registry = std::make_unique<ModelRegistry>();
    config_.input_size = 4;
    config_.hidden_size = 5;
    config_.num_layers = 2;
    const ParameterMap params = RandomParameters(config_, 7);
    ASSERT_TRUE(registry->Add("m", config_, params).ok());
    reference_ = std::move(RnnModel::Create(config_, params)).value();
    options.threads = 1;
    core_ = std::make_unique<ServingCore>(std::move(registry), options, nullptr);
  }

  ChunkResult Submit(ChunkRequest request) {
    std::promise<ChunkResult> promise;
    auto future = promise.get_future();
    core_->SubmitChunk(std::move(request), [&](ChunkResult r) { promise.set_value(std::move(r)); });
    return future.get();
  }

  // A request of `principal` for session `id`; `input` (N=1 chunks) when given.
  static ChunkRequest Request(const std::string& principal, const std::string& id, bool start,
                              std::optional<Tensor> input = std::nullopt) {
    ChunkRequest r;
    r.principal = principal;
    r.session_id = id;
    r.start = start;
    if (start) r.model = "m";
    if (input.has_value()) r.input = TensorBytes::FromTensor(*input);
    return r;
  }

  // The state bytes of one N=1 session of the test model: 2 buffers * L(2) * H(5) * 4 bytes.
  static constexpr int64_t kSessionBytes = 2 * 2 * 5 * 4;
  // What a session's ids take besides: its id (32 characters when the server assigns it), its
  // principal and the fixed overhead.
  static constexpr int64_t IdBytes(int64_t id_size, const char* principal) {
    return id_size + static_cast<int64_t>(std::char_traits<char>::length(principal)) +
           kSessionOverheadBytes;
  }

  RnnConfig config_;
  std::unique_ptr<RnnModel> reference_;
  std::unique_ptr<ServingCore> core_;
};

TEST_F(SessionSecurityTest, ServerAssignedIdsAreRandomHexAndDistinct) {
  MakeCore();
  std::set<std::string> ids;
  for (int i = 0; i < 64; ++i) {
    ChunkResult r = Submit(Request(kAlice, "", /*start=*/true));
    ASSERT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.session_id.size(), 32u) << r.session_id;
    EXPECT_EQ(r.session_id.find_first_not_of("0123456789abcdef"), std::string::npos)
        << r.session_id;
    ids.insert(r.session_id);
  }
  EXPECT_EQ(ids.size(), 64u);
}

TEST_F(SessionSecurityTest, ClientChosenIdsAreValidatedOnStart) {
  MakeCore();
  for (const std::string& bad :
       {std::string(129, 'a'), std::string("two\nlines"), std::string("a b"),
        std::string("quote'd"), std::string("slash/")}) {
    ChunkResult r = Submit(Request(kAlice, bad, /*start=*/true));
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status.message(), HasSubstr("session_id"));
    EXPECT_THAT(std::string(r.status.message()), Not(HasSubstr("\n")));
    EXPECT_LT(r.status.message().size(), 400u);
  }
  EXPECT_EQ(core_->session_count(), 0) << "a refused start leaves nothing behind";
  const std::string longest(128, 'z');
  EXPECT_TRUE(Submit(Request(kAlice, longest, true)).status.ok());
  EXPECT_TRUE(Submit(Request(kAlice, "user@host:a.b_c-1", true)).status.ok());
}

// Every operation of another principal on a live session, with the correct id, gets the very
// message it gets for an id nobody uses; the owner goes on exactly.
TEST_F(SessionSecurityTest, AnotherPrincipalGetsExactlyTheUnknownIdAnswer) {
  MakeCore();
  const std::string id = "owned-by-alice";
  const std::string unknown = std::string(core_->GetSession(id, false, kBob).status().message());
  ASSERT_THAT(unknown, HasSubstr("unknown session 'owned-by-alice'"));

  Tensor x = Random({6, 1, 4}, 3);
  ChunkRequest first = Request(kAlice, id, true, LeadingRows(x, 0, 2));
  first.chunk_index = 0;
  ASSERT_TRUE(Submit(std::move(first)).status.ok());

  auto expect_unknown = [&](const absl::Status& status, const char* what) {
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << what;
    EXPECT_EQ(status.message(), unknown) << what;
  };
  for (const std::string& intruder : {std::string(kBob), std::string("")}) {
    expect_unknown(core_->GetSession(id, true, intruder).status(), "GetSession");
    expect_unknown(core_->CloseSession(id, intruder).status(), "CloseSession");
    expect_unknown(Submit(Request(intruder, id, false, LeadingRows(x, 2, 4))).status, "chunk");
    ChunkRequest duplicate = Request(intruder, id, false, LeadingRows(x, 0, 2));
    duplicate.chunk_index = 0;
    ChunkResult dup = Submit(std::move(duplicate));
    expect_unknown(dup.status, "duplicate chunk");
    EXPECT_FALSE(dup.duplicate);
    EXPECT_FALSE(dup.output.has_value()) << "a replay must not leak the owner's output";
    ChunkRequest end = Request(intruder, id, false);
    end.end = true;
    expect_unknown(Submit(std::move(end)).status, "end");
    ChunkRequest empty = Request(intruder, id, false);
    expect_unknown(Submit(std::move(empty)).status, "empty request");
  }

  // Alice's session is untouched: same counters, and the rest of the sequence is exact.
  absl::StatusOr<SessionSnapshot> snapshot = core_->GetSession(id, false, kAlice);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->steps_seen, 2);
  EXPECT_EQ(snapshot->next_chunk_index, 1u);
  ChunkRequest rest = Request(kAlice, id, false, LeadingRows(x, 2, 6));
  rest.chunk_index = 1;
  rest.end = true;
  ChunkResult last = Submit(std::move(rest));
  ASSERT_TRUE(last.status.ok()) << last.status;
  absl::StatusOr<ForwardResult> whole = reference_->Forward(x);
  ASSERT_TRUE(whole.ok());
  EXPECT_TRUE(Near(last.h_n->values(), whole->h_n.values));
  EXPECT_EQ(last.steps_seen, 6);
  EXPECT_TRUE(last.ended);
}

// A tombstone is the owner's: for anyone else an ended session is simply unknown.
TEST_F(SessionSecurityTest, AnotherPrincipalsTombstonesLookUnknown) {
  ServingOptions options;
  options.session_idle_timeout = absl::Hours(1);
  MakeCore(options);
  const std::string unknown_closed(core_->GetSession("c1", false, kBob).status().message());
  const std::string unknown_idle(core_->GetSession("i1", false, kBob).status().message());
  ASSERT_TRUE(Submit(Request(kAlice, "c1", true)).status.ok());
  ASSERT_TRUE(core_->CloseSession("c1", kAlice).ok());
  ASSERT_TRUE(Submit(Request(kAlice, "i1", true)).status.ok());
  ASSERT_EQ(core_->ReapIdleSessions(absl::Now() + absl::Hours(2)), 1);

  EXPECT_THAT(core_->GetSession("c1", false, kAlice).status().message(), HasSubstr("was closed"));
  EXPECT_THAT(core_->GetSession("i1", false, kAlice).status().message(), HasSubstr("expired"));
  EXPECT_EQ(core_->GetSession("c1", false, kBob).status().message(), unknown_closed);
  EXPECT_EQ(core_->CloseSession("c1", kBob).status().message(), unknown_closed);
  EXPECT_EQ(Submit(Request(kBob, "c1", false, Random({1, 1, 4}, 1))).status.message(),
            unknown_closed);
  EXPECT_EQ(core_->GetSession("i1", false, kBob).status().message(), unknown_idle);
}

// Ids are per principal: a clash with another principal's live id is invisible (the start
// succeeds, as a fresh one would); only the owner hears ALREADY_EXISTS.
TEST_F(SessionSecurityTest, SessionIdsArePerPrincipal) {
  MakeCore();
  Tensor xa = Random({3, 1, 4}, 4), xb = Random({3, 1, 4}, 5);
  ASSERT_TRUE(Submit(Request(kAlice, "same", true, LeadingRows(xa, 0, 1))).status.ok());
  ChunkResult bob = Submit(Request(kBob, "same", true, LeadingRows(xb, 0, 1)));
  ASSERT_TRUE(bob.status.ok()) << bob.status;
  EXPECT_EQ(bob.session_id, "same");
  ChunkResult again = Submit(Request(kAlice, "same", true));
  EXPECT_EQ(again.status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status.message(), HasSubstr("'same' is already live"));
  ASSERT_TRUE(Submit(Request(kBob, "same", false, LeadingRows(xb, 1, 3))).status.ok());
  ASSERT_TRUE(Submit(Request(kAlice, "same", false, LeadingRows(xa, 1, 3))).status.ok());
  for (auto [principal, x] : {std::pair{kAlice, &xa}, {kBob, &xb}}) {
    absl::StatusOr<SessionSnapshot> s = core_->GetSession("same", true, principal);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_TRUE(Near(s->h_n->values, reference_->Forward(*x).value().h_n.values)) << principal;
  }
  EXPECT_EQ(core_->session_count(), 2);
}

TEST_F(SessionSecurityTest, SessionQuotaPerPrincipalCountsStartOnlySessions) {
  ServingOptions options;
  options.max_sessions_per_principal = 2;
  MakeCore(options);
  ASSERT_TRUE(Submit(Request(kAlice, "", true)).status.ok());
  const std::string second = Submit(Request(kAlice, "", true)).session_id;
  ChunkResult third = Submit(Request(kAlice, "", true));
  EXPECT_EQ(third.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status.message(), HasSubstr("--max_sessions_per_principal"));
  EXPECT_THAT(third.status.message(), HasSubstr("principal 'alice'"));
  EXPECT_THAT(third.status.message(), HasSubstr("it has 2 live, the limit is 2"));
  // Bob and the anonymous principal have their own quota.
  for (const char* other : {kBob, ""}) {
    EXPECT_TRUE(Submit(Request(other, "", true)).status.ok()) << other;
    EXPECT_TRUE(Submit(Request(other, "", true)).status.ok()) << other;
    EXPECT_EQ(Submit(Request(other, "", true)).status.code(),
              absl::StatusCode::kResourceExhausted);
  }
  ASSERT_TRUE(core_->CloseSession(second, kAlice).ok());
  EXPECT_TRUE(Submit(Request(kAlice, "", true)).status.ok()) << "a closed session frees a slot";
}

TEST_F(SessionSecurityTest, StateQuotaPerPrincipalRefusesWhenNothingOfItsOwnIsIdle) {
  ServingOptions options;
  // Two sessions with state, and the ids of a third.
  const int64_t ids = IdBytes(32, kAlice);
  const int64_t quota = 2 * (kSessionBytes + ids) + ids;
  options.max_state_bytes_per_principal = quota;
  options.evict_idle_after = absl::Hours(1);  // nothing is evictable
  MakeCore(options);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(Submit(Request(kAlice, "", true, Random({1, 1, 4}, i))).status.ok());
  }
  ChunkResult refused = Submit(Request(kAlice, "", true, Random({1, 1, 4}, 9)));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status.message(), HasSubstr("--max_state_bytes_per_principal"));
  EXPECT_THAT(refused.status.message(), HasSubstr("principal 'alice'"));
  EXPECT_THAT(refused.status.message(), HasSubstr(absl::StrCat(quota, " of ", quota)));
  EXPECT_THAT(refused.status.message(),
              HasSubstr(absl::StrCat("needs ", kSessionBytes, " more for its state")));
  // A start-only session holds only its ids, which fit once the refused start left.
  EXPECT_TRUE(Submit(Request(kAlice, "", true)).status.ok());
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(Submit(Request(kBob, "", true, Random({1, 1, 4}, i))).status.ok());
  }
  EXPECT_EQ(core_->state_bytes(), 4 * kSessionBytes);
}

// Over its quota a principal's own least recently used idle session is evicted, never another
// principal's, even an older one.
TEST_F(SessionSecurityTest, StateQuotaPerPrincipalEvictsOnlyItsOwnIdleSessions) {
  ServingOptions options;
  options.max_state_bytes_per_principal = 2 * (kSessionBytes + IdBytes(2, kAlice));
  options.evict_idle_after = absl::ZeroDuration();
  MakeCore(options);
  ASSERT_TRUE(Submit(Request(kBob, "bob-old", true, Random({1, 1, 4}, 1))).status.ok());
  ASSERT_TRUE(Submit(Request(kAlice, "a1", true, Random({1, 1, 4}, 2))).status.ok());
  ASSERT_TRUE(Submit(Request(kAlice, "a2", true, Random({1, 1, 4}, 3))).status.ok());
  ASSERT_TRUE(Submit(Request(kAlice, "a3", true, Random({1, 1, 4}, 4))).status.ok());
  EXPECT_THAT(core_->GetSession("a1", false, kAlice).status().message(), HasSubstr("evicted"));
  EXPECT_TRUE(core_->GetSession("a2", false, kAlice).ok());
  EXPECT_TRUE(core_->GetSession("bob-old", false, kBob).ok());
  EXPECT_EQ(core_->state_bytes(), 3 * kSessionBytes);
}

// A start-only session expires on the idle timeout; requests with no input, start or end do
// not renew it (a chunk with input does).
TEST_F(SessionSecurityTest, EmptyRequestsDoNotKeepASessionAlive) {
  ServingOptions options;
  options.session_idle_timeout = absl::Hours(1);
  MakeCore(options);
  const std::string idle = Submit(Request(kAlice, "", true)).session_id;
  const std::string busy = Submit(Request(kAlice, "", true)).session_id;
  const absl::Time started = core_->GetSession(idle, false, kAlice)->last_used;
  // Bounded wait until the clock has moved, so a renewal would show.
  for (int i = 0; i < 1000 && absl::Now() <= started; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_GT(absl::Now(), started);
  for (int i = 0; i < 3; ++i) {
    ChunkResult r = Submit(Request(kAlice, idle, false));
    EXPECT_TRUE(r.status.ok()) << r.status;
    ChunkRequest index_only = Request(kAlice, idle, false);
    index_only.chunk_index = 5;  // skips ahead on purpose: a refused request renews nothing
    EXPECT_FALSE(Submit(std::move(index_only)).status.ok());
  }
  EXPECT_EQ(core_->GetSession(idle, false, kAlice)->last_used, started);
  ASSERT_TRUE(Submit(Request(kAlice, busy, false, Random({1, 1, 4}, 1))).status.ok());
  const absl::Time renewed = core_->GetSession(busy, false, kAlice)->last_used;
  EXPECT_GT(renewed, started) << "a chunk with input renews";

  EXPECT_EQ(core_->ReapIdleSessions(started + absl::Hours(1)), 1);
  EXPECT_THAT(core_->GetSession(idle, false, kAlice).status().message(), HasSubstr("expired"));
  EXPECT_TRUE(core_->GetSession(busy, false, kAlice).ok());
}

// A 1 MiB id with a newline: NOT_FOUND (not RESOURCE_EXHAUSTED) with a short, escaped message
// on every operation, and one short, escaped DEBUG log line for the refused request.
TEST_F(SessionSecurityTest, HugeForgedIdsGiveBoundedEscapedAnswers) {
  MakeCore();
  const std::string huge = "x\n2026-01-01 INFO forged" + std::string(1 << 20, 'y');
  auto expect_bounded = [](const absl::Status& status, absl::StatusCode code, const char* what) {
    EXPECT_EQ(status.code(), code) << what;
    EXPECT_LT(status.message().size(), 300u) << what;
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("\n"))) << what;
    EXPECT_THAT(status.message(), HasSubstr("x\\n2026-01-01 INFO forged")) << what;
  };
  expect_bounded(core_->GetSession(huge, false, kAlice).status(), absl::StatusCode::kNotFound,
                 "GetSession");
  expect_bounded(core_->CloseSession(huge).status(), absl::StatusCode::kNotFound, "Close");
  expect_bounded(Submit(Request(kAlice, huge, true)).status, absl::StatusCode::kInvalidArgument,
                 "start");
  ChunkRequest unknown_model = Request(kAlice, "", true);
  unknown_model.model = huge;
  expect_bounded(Submit(std::move(unknown_model)).status, absl::StatusCode::kNotFound, "model");

  const LogLevel level = MinLogLevel();
  SetMinLogLevel(LogLevel::kDebug);
  ::testing::internal::CaptureStderr();
  ChunkResult chunk = Submit(Request(kAlice, huge, false, Random({1, 1, 4}, 1)));
  const std::string log = ::testing::internal::GetCapturedStderr();
  SetMinLogLevel(level);
  expect_bounded(chunk.status, absl::StatusCode::kNotFound, "chunk");
  EXPECT_EQ(chunk.session_id, "") << "a forged id is never echoed back";
  std::vector<std::string> lines = absl::StrSplit(log, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << log.substr(0, 2000);
  EXPECT_THAT(lines[0], HasSubstr("DEBUG"));
  EXPECT_THAT(lines[0], HasSubstr("request refused"));
  EXPECT_LT(lines[0].size(), 800u);
}

TEST_F(SessionSecurityTest, UnknownModelListsAtMostTwentyServedNames) {
  auto registry = std::make_unique<ModelRegistry>();
  RnnConfig config;
  config.input_size = 2;
  config.hidden_size = 2;
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE(registry->Add(absl::StrCat("model", 100 + i), config,
                              RandomParameters(config, i)).ok());
  }
  const absl::Status status = registry->UnknownModelError("nope");
  EXPECT_THAT(status.message(), HasSubstr("unknown model 'nope'"));
  EXPECT_THAT(status.message(), HasSubstr("'model119'"));
  EXPECT_THAT(status.message(), Not(HasSubstr("model120")));
  EXPECT_THAT(status.message(), HasSubstr("and 5 more"));
}

}  // namespace
}  // namespace rnnserve
