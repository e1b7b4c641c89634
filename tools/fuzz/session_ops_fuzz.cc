// libFuzzer target over sequences of session operations on the serving core.
//
// The input's bytes decode into up to kMaxOps operations on a ServingCore with tiny limits
// (3 sessions, 2 per principal, memory for about two sessions, 3 tombstones, an injected clock),
// so refusals, evictions, expiry and tombstone turnover all happen within a few operations:
// start (client or server-assigned id, with or without h_0 or a first chunk, on the latest, a
// named or an unknown version of the model), chunk (right and wrong shapes, auto, next,
// duplicate or gapped chunk_index), a burst of chunks sent without waiting, end, close, get,
// another principal's access, expiry (advance the clock, reap), and unloading a version (its
// sessions finish on it; new starts on it are refused).
//
// After every operation the core is compared with a shadow model (CheckInvariants):
//   - every callback ran exactly once (and none after the core is gone);
//   - the live sessions are exactly the shadow's, with the same steps_seen: an error never
//     advanced a session, a duplicate never advanced it, and a session disappears only when it
//     ended, was closed, expired past the idle timeout, or was evicted while idle long enough;
//   - session_count() and state_bytes() match the snapshots, and stay within the limits;
//   - every applied chunk's output and h_n (and an LSTM's c_n) equal the engine run of the
//     session's own version on its whole sequence (h_0 included), and a replayed duplicate's
//     output equals the first answer;
//   - a session is pinned to the version it started on (the one asked for, else the latest
//     READY one), and a start on an unloaded or unknown version is refused;
//   - a gapped chunk_index and a wrong input size are refused.
// A failed check prints what differed and aborts (a crash for libFuzzer, a failure in ctest).
//
// Built two ways: with libFuzzer (scripts/fuzz.sh, build/fuzz) and as a plain replay of the
// checked-in corpus (session_ops_replay, ctest label unit; also under TSan). The served model is
// an RNN unless RNNSERVE_SESSION_OPS_MODULE names another RnnModule: session_ops_lstm_replay
// replays the same corpus on an LSTM with proj_size, whose state is h and c. Thread-safety:
// one fuzz input at a time; the core answers on its one worker thread, and RunRequests waits
// for the answers under a mutex.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/engine/rnn_parameters.h"
#include "base/log.h"
#include "core/serving/serving_core.h"

#ifndef RNNSERVE_SESSION_OPS_MODULE
#define RNNSERVE_SESSION_OPS_MODULE kRnn
#endif

namespace rnnserve {
namespace {

constexpr RnnModule kModule = RnnModule::RNNSERVE_SESSION_OPS_MODULE;
constexpr int kMaxOps = 64;
constexpr int64_t kInputSize = 2;
constexpr int64_t kHidden = 3;
constexpr int64_t kLayers = 2;
constexpr int kSlots = 4;  // session slots the operations pick from
constexpr int64_t kVersions = 2;  // versions 1 and 2 of "m", each with its own weights
constexpr absl::Duration kIdleTimeout = absl::Seconds(10);
constexpr absl::Duration kEvictAfter = absl::Seconds(3);
const char* const kPrincipals[2] = {"", "bob"};

#define FUZZ_CHECK(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "session_ops_fuzz: check failed: %s (%s:%d): %s\n", #cond, \
                   __FILE__, __LINE__, absl::StrCat(__VA_ARGS__).c_str());           \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

// The fuzzer's bytes, read one field at a time; zeros once they run out.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t Next() { return pos_ < size_ ? data_[pos_++] : 0; }
  int Pick(int n) { return Next() % n; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// The fake time sessions are measured by (ServingOptions::clock); read from the worker and
// the reaper threads too.
class FakeClock {
 public:
  absl::Time Now() const {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1700000000);
};

// What the core should hold for one live session.
struct ShadowSession {
  std::string principal;
  std::string id;
  int64_t version = 0;  // the model version it is pinned to
  absl::Time last_used;
  bool has_state = false;  // h_0 or a first chunk fixed the batch
  int64_t batch = 0;
  bool batched = true;
  std::optional<Tensor> h0;
  std::vector<float> inputs;  // every applied step, time-major, concatenated
  int64_t steps = 0;
  // The last applied chunk, for exact duplicates.
  std::optional<uint64_t> last_index;
  std::optional<TensorBytes> last_input;
  std::optional<TensorBytes> last_output;
};

std::string Key(const std::string& principal, const std::string& id) {
  return absl::StrCat(principal.size(), ":", principal, id);
}

Tensor Values(Shape shape, Bytes& in) {
  Tensor t = Tensor::Zeros(std::move(shape));
  const uint8_t seed = in.Next();
  for (size_t i = 0; i < t.values.size(); ++i) {
    t.values[i] = static_cast<float>(static_cast<int>((seed * 31 + i * 17) % 41) - 20) / 16.0f;
  }
  return t;
}

class Harness {
 public:
  Harness() {
    SetMinLogLevel(LogLevel::kWarning);  // expiry and eviction lines would flood the fuzzer
    config_.input_size = kInputSize;
    config_.hidden_size = kHidden;
    config_.num_layers = kLayers;
    config_.module = kModule;
    if (kModule == RnnModule::kLstm) config_.proj_size = kHidden - 1;  // h narrower than c
    auto registry = std::make_unique<ModelRegistry>();
    for (int64_t version = 1; version <= kVersions; ++version) {
      const ParameterMap params = RandomParameters(config_, 6 + version);
      references_[version] = std::move(RnnModel::Create(config_, params)).value();
      FUZZ_CHECK(registry->Add("m", config_, params, version).ok(), "model version ", version);
    }
    ServingOptions options;
    options.threads = 1;
    options.max_sessions = 3;
    options.max_sessions_per_principal = 2;
    // Two sessions of N=2: each counts 2 buffers of StateSize(2) floats (96 bytes for the RNN)
    // plus its id and kSessionOverheadBytes; a few bytes to spare. (The budget counts the ids
    // and overhead since the memory accounting grew them; a budget of state bytes alone
    // refused every session.)
    options.max_state_bytes =
        2 * (2 * references_[1]->StateSize(2) * 4 + kSessionOverheadBytes + 2) + 8;
    options.max_tombstones = 3;
    options.session_idle_timeout = kIdleTimeout;
    options.evict_idle_after = kEvictAfter;
    options.clock = [this] { return clock_.Now(); };
    core_ = std::make_unique<ServingCore>(std::move(registry), options, nullptr);
  }

  ~Harness() {
    core_.reset();
    absl::MutexLock lock(&mu_);
    FUZZ_CHECK(answered_ == submitted_, "answers after shutdown: ", answered_, " of ",
               submitted_);
  }

  void Run(Bytes& in) {
    for (int op = 0; op < kMaxOps && !in.empty(); ++op) {
      Step(in);
      CheckInvariants();
    }
  }

 private:
  struct Slot {
    int principal = 0;
    std::string id;  // "" until a server-assigned start succeeded
    bool server_assigned = false;
  };
  // A request and what the harness knows about it for checking its answer.
  struct Sent {
    ChunkRequest request;
    std::optional<Tensor> input;
    bool expect_error = false;  // a gap, a wrong size: must be refused
  };

  void Step(Bytes& in) {
    op_allocates_ = false;
    op_reaps_ = false;
    const int kind = in.Pick(11);
    Slot& slot = slots_[in.Pick(kSlots)];
    switch (kind) {
      case 0:
      case 1:
        return Start(slot, in);
      case 2:
      case 3:
        return RunRequests({ChunkFor(slot, in, /*index_mode=*/in.Pick(4))});
      case 4: {  // a burst: up to three chunks in a row, answered in order
        std::vector<Sent> burst;
        const int n = 1 + in.Pick(3);
        for (int i = 0; i < n; ++i) burst.push_back(ChunkFor(slot, in, 0));
        return RunRequests(std::move(burst));
      }
      case 5: {  // end, with or without a last chunk
        Sent sent = in.Pick(2) ? ChunkFor(slot, in, 0) : Sent{Request(slot), {}, false};
        sent.request.end = true;
        return RunRequests({std::move(sent)});
      }
      case 6:
        return Close(slot, in);
      case 7:
        return Get(slot, in);
      case 8: {  // expiry: advance the injected clock and reap
        clock_.Advance(absl::Milliseconds(500) * (1 + in.Pick(16)));
        op_reaps_ = true;
        core_->ReapIdleSessions(clock_.Now());
        return;
      }
      case 9:
        return Duplicate(slot, in);
      default:
        return Unload(in);
    }
  }

  // UnloadModel of one version: OK once (then it refuses new starts), NOT_FOUND after; its
  // live sessions go on (CheckInvariants and their next chunks check them).
  void Unload(Bytes& in) {
    const int64_t version = 1 + in.Pick(kVersions);
    const absl::Status status = core_->mutable_models().UnloadModel("m", version);
    if (unloaded_.count(version)) {
      FUZZ_CHECK(status.code() == absl::StatusCode::kNotFound, "second unload of version ",
                 version, ": ", status.ToString());
      return;
    }
    FUZZ_CHECK(status.ok(), "unload of version ", version, ": ", status.ToString());
    unloaded_.insert(version);
  }

  // The version a new session asking for `asked` gets (0: the latest READY); 0 if none.
  int64_t ExpectedVersion(int64_t asked) const {
    if (asked != 0) return asked <= kVersions && !unloaded_.count(asked) ? asked : 0;
    for (int64_t v = kVersions; v >= 1; --v) {
      if (!unloaded_.count(v)) return v;
    }
    return 0;
  }

  ChunkRequest Request(const Slot& slot) const {
    ChunkRequest r;
    r.principal = kPrincipals[slot.principal];
    r.session_id = slot.id.empty() ? "never-started" : slot.id;
    return r;
  }

  ShadowSession* Find(const Slot& slot) {
    auto it = shadow_.find(Key(kPrincipals[slot.principal], slot.id));
    return it == shadow_.end() ? nullptr : &it->second;
  }

  void Start(Slot& slot, Bytes& in) {
    const int flags = in.Next();
    const bool live = Find(slot) != nullptr;
    if (!live) {  // a new identity for the slot; a live one retries its start
      slot.principal = (flags >> 1) & 1;
      slot.server_assigned = (flags >> 2) & 1;
      slot.id = slot.server_assigned ? "" : absl::StrCat("s", in.Pick(6));
    }
    Sent sent;
    sent.request.principal = kPrincipals[slot.principal];
    sent.request.session_id = slot.server_assigned ? "" : slot.id;
    sent.request.model = (flags & 8) && (flags & 16) ? "no-such-model" : "m";
    sent.request.start = true;
    sent.request.model_version = in.Pick(kVersions + 2);  // 0 latest, 1, 2, 3 unknown
    const int64_t batch = 1 + ((flags >> 5) & 1);
    const bool batched = !((flags >> 6) & 1) || batch > 1;
    if ((flags & 8) && !(flags & 16)) {  // h_0: right shape, or wrong when flags say so
      Shape shape = config_.StateShape(batch, batched);
      if (flags & 128) shape.back() += 1;
      sent.request.h0 = Values(shape, in);
    }
    if (!live && (flags & 4) == 0 && !slot.server_assigned) {
      // A start carrying its first chunk.
      Shape shape = batched ? Shape{1 + in.Pick(3), batch, kInputSize}
                            : Shape{1 + in.Pick(3), kInputSize};
      sent.input = Values(shape, in);
      sent.request.input = TensorBytes::FromTensor(*sent.input);
    }
    pending_start_ = &slot;
    RunRequests({std::move(sent)});
    pending_start_ = nullptr;
  }

  // index_mode: 0 none, 1 the next index, 2 a gap past it, 3 a wrong input size.
  Sent ChunkFor(const Slot& slot, Bytes& in, int index_mode) {
    Sent sent{Request(slot), {}, false};
    const ShadowSession* s = Find(slot);
    int64_t batch = s && s->has_state ? s->batch : 1 + in.Pick(2);
    bool batched = s && s->has_state ? s->batched : (batch > 1 || in.Pick(2));
    const int shape_mode = in.Pick(8);
    int64_t channels = kInputSize;
    if (index_mode == 3 || shape_mode == 0) {
      channels = kInputSize + 1;
      sent.expect_error = true;
    } else if (shape_mode == 1 && s && s->has_state && batched) {
      batch += 1;  // a different N than the session's
      sent.expect_error = true;
    }
    const int64_t steps = shape_mode == 2 ? 0 : 1 + in.Pick(3);
    Shape shape = batched ? Shape{steps, batch, channels} : Shape{steps, channels};
    sent.input = Values(shape, in);
    sent.request.input = TensorBytes::FromTensor(*sent.input);
    if (s != nullptr && (index_mode == 1 || index_mode == 2)) {
      absl::StatusOr<SessionSnapshot> snap = core_->GetSession(s->id, false, s->principal);
      FUZZ_CHECK(snap.ok(), "shadow session ", s->id, " missing: ", snap.status().ToString());
      sent.request.chunk_index = snap->next_chunk_index + (index_mode == 2 ? 1 + in.Pick(3) : 0);
      if (index_mode == 2) sent.expect_error = true;
    }
    if (s == nullptr) sent.expect_error = true;  // no such session for this principal
    return sent;
  }

  void Duplicate(const Slot& slot, Bytes& in) {
    const ShadowSession* s = Find(slot);
    if (s == nullptr || !s->last_index.has_value()) {
      // Another principal's access to this slot's id: unknown to it unless it holds a session
      // of that id itself; never touches this slot's session.
      Sent sent{Request(slot), Tensor::Zeros({1, 1, kInputSize}), false};
      sent.request.principal = kPrincipals[1 - slot.principal];
      sent.request.input = TensorBytes::FromTensor(*sent.input);
      sent.expect_error = !shadow_.count(Key(sent.request.principal, sent.request.session_id));
      return RunRequests({std::move(sent)});
    }
    Sent sent{Request(slot), {}, false};
    sent.request.chunk_index = *s->last_index;
    sent.request.input = *s->last_input;
    if (in.Pick(3) == 0 && sent.request.input->num_elements() > 0) {
      sent.request.input->data()[0] += 1.0f;  // same index, other data
    }
    RunRequests({std::move(sent)});
  }

  void Close(const Slot& slot, Bytes& in) {
    const std::string principal = kPrincipals[in.Pick(4) == 0 ? 1 - slot.principal : slot.principal];
    const std::string id = slot.id.empty() ? "never-started" : slot.id;
    absl::StatusOr<SessionSnapshot> closed = core_->CloseSession(id, principal);
    auto it = shadow_.find(Key(principal, id));
    if (it == shadow_.end()) {
      FUZZ_CHECK(!closed.ok() && closed.status().code() == absl::StatusCode::kNotFound,
                 "close of an unknown session: ", closed.status().ToString());
      return;
    }
    FUZZ_CHECK(closed.ok(), "close of live ", id, ": ", closed.status().ToString());
    FUZZ_CHECK(closed->steps_seen == it->second.steps, "close steps ", closed->steps_seen);
    shadow_.erase(it);
  }

  void Get(const Slot& slot, Bytes& in) {
    const std::string principal = kPrincipals[in.Pick(4) == 0 ? 1 - slot.principal : slot.principal];
    const std::string id = slot.id.empty() ? "never-started" : slot.id;
    absl::StatusOr<SessionSnapshot> got = core_->GetSession(id, true, principal);
    auto it = shadow_.find(Key(principal, id));
    if (it == shadow_.end()) {
      FUZZ_CHECK(got.status().code() == absl::StatusCode::kNotFound, "get of unknown ", id,
                 ": ", got.status().ToString());
      return;
    }
    FUZZ_CHECK(got.ok(), "get of live ", id, ": ", got.status().ToString());
    const ShadowSession& s = it->second;
    if (s.has_state) {
      FUZZ_CHECK(got->h_n.has_value(), "no h_n for ", id);
      FUZZ_CHECK(got->c_n.has_value() == (kModule == RnnModule::kLstm), "c_n of ", id);
      CheckState(s, got->h_n->values, got->c_n);
    }
  }

  // Submits every request without waiting, then waits for all answers and checks them in
  // order (a session answers its chunks in request order).
  void RunRequests(std::vector<Sent> sent) {
    op_allocates_ = true;  // a start with h_0 or a first chunk may evict idle sessions
    std::vector<std::optional<ChunkResult>> results(sent.size());
    for (size_t i = 0; i < sent.size(); ++i) {
      {
        absl::MutexLock lock(&mu_);
        ++submitted_;
      }
      ChunkRequest request = sent[i].request;
      core_->SubmitChunk(std::move(request), [this, &results, i](ChunkResult r) {
        absl::MutexLock lock(&mu_);
        FUZZ_CHECK(!results[i].has_value(), "callback ran twice for request ", i);
        results[i] = std::move(r);
        ++answered_;
      });
    }
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Harness::AllAnswered));
    }
    for (size_t i = 0; i < sent.size(); ++i) Check(sent[i], *results[i]);
  }

  void Check(const Sent& sent, const ChunkResult& result) {
    const ChunkRequest& req = sent.request;
    const bool ok = result.status.ok();
    if (sent.expect_error && !req.start) {
      FUZZ_CHECK(!ok, "expected a refusal for ", req.session_id, " got OK");
    }
    if (!ok) {
      FUZZ_CHECK(!result.output.has_value(), "error with an output: ",
                 result.status.ToString());
      return;
    }
    std::string id = result.session_id;
    auto it = shadow_.find(Key(req.principal, id));
    if (req.start) {
      FUZZ_CHECK(!id.empty(), "started session has no id");
      if (it == shadow_.end()) {
        const int64_t version = ExpectedVersion(req.model_version);
        FUZZ_CHECK(version != 0, "a start on version ", req.model_version,
                   " (unloaded or unknown) was accepted");
        FUZZ_CHECK(result.model_version == version, "new session on version ",
                   result.model_version, ", want ", version);
        ShadowSession s;
        s.principal = req.principal;
        s.id = id;
        s.version = version;
        s.last_used = clock_.Now();
        if (req.h0.has_value()) {
          s.has_state = true;
          s.h0 = *req.h0;
          s.batched = req.h0->shape.size() == 3;
          s.batch = s.batched ? req.h0->shape[1] : 1;
        }
        it = shadow_.emplace(Key(req.principal, id), std::move(s)).first;
        if (pending_start_ != nullptr && pending_start_->server_assigned) {
          pending_start_->id = id;
        }
      }
    }
    FUZZ_CHECK(it != shadow_.end(), "OK answer for a session the shadow lacks: ", id);
    ShadowSession& s = it->second;
    FUZZ_CHECK(result.model_version == s.version, "session ", id, " answered on version ",
               result.model_version, ", pinned to ", s.version);
    if (result.duplicate && req.start) {
      // A retried start (same content as the live session's start): acknowledged, not applied.
      FUZZ_CHECK(!result.output.has_value(), "retried start computed an output for ", id);
    } else if (result.duplicate) {
      FUZZ_CHECK(req.chunk_index.has_value() && s.last_index.has_value() &&
                     *req.chunk_index <= *s.last_index,
                 "duplicate flag on a new chunk of ", id);
      // A replay is the session's shared copy (replayed_output), never a fresh output.
      FUZZ_CHECK(!result.output.has_value(), "duplicate computed an output for ", id);
      if (result.replayed_output != nullptr && *req.chunk_index == *s.last_index &&
          s.last_output.has_value()) {
        FUZZ_CHECK(result.replayed_output->bytes == s.last_output->bytes, "replay differs for ",
                   id);
      }
    } else if (sent.input.has_value()) {
      Apply(s, sent, result);
    }
    if (req.start || req.end || req.input.has_value()) {
      if (!result.duplicate) s.last_used = clock_.Now();
    }
    if (req.end) {
      FUZZ_CHECK(result.ended, "end answered without ended for ", id);
      shadow_.erase(it);
      absl::StatusOr<SessionSnapshot> gone = core_->GetSession(id, false, req.principal);
      FUZZ_CHECK(gone.status().code() == absl::StatusCode::kNotFound, "ended session ", id,
                 " still answers: ", gone.status().ToString());
    }
  }

  // An applied chunk: its output must be the tail of the engine's run on the whole sequence.
  void Apply(ShadowSession& s, const Sent& sent, const ChunkResult& result) {
    const Tensor& input = *sent.input;
    const bool batched = input.shape.size() == 3;
    const int64_t steps = input.shape[0];
    if (!s.has_state) {
      s.has_state = true;
      s.batched = batched;
      s.batch = batched ? input.shape[1] : 1;
    }
    FUZZ_CHECK(batched == s.batched && (!batched || input.shape[1] == s.batch),
               "chunk of shape ", ShapeToString(input.shape), " applied to a session of N=",
               s.batch);
    s.inputs.insert(s.inputs.end(), input.values.begin(), input.values.end());
    s.steps += steps;
    // The core keeps the last answer for replays only for chunks that carried an index.
    if (sent.request.chunk_index.has_value()) {
      s.last_index = sent.request.chunk_index;
      s.last_input = *sent.request.input;
      s.last_output = result.output;
    } else {
      s.last_index.reset();
      s.last_input.reset();
      s.last_output.reset();
    }
    if (steps == 0) return;
    ForwardResult whole = Reference(s);
    FUZZ_CHECK(result.output.has_value(), "applied chunk without output");
    const int64_t row = s.batch * config_.output_size();
    const std::vector<float>& all = whole.output.values;
    CheckClose(absl::MakeConstSpan(all).subspan(all.size() - steps * row),
               result.output->values(), "output of " + s.id);
    if (result.h_n.has_value()) CheckClose(whole.h_n.values, result.h_n->values(), "h_n of " + s.id);
    FUZZ_CHECK(result.c_n.has_value() == (result.h_n.has_value() && whole.c_n.has_value()),
               "c_n of ", s.id, " present exactly with h_n for an LSTM");
    if (result.c_n.has_value()) CheckClose(whole.c_n->values, result.c_n->values(), "c_n of " + s.id);
  }

  ForwardResult Reference(const ShadowSession& s) const {
    const int64_t steps = s.steps;
    Shape shape = s.batched ? Shape{steps, s.batch, kInputSize} : Shape{steps, kInputSize};
    Tensor whole(shape, s.inputs);
    absl::StatusOr<ForwardResult> run =
        references_.at(s.version)->Forward(whole, s.h0.has_value() ? &*s.h0 : nullptr);
    FUZZ_CHECK(run.ok(), run.status().ToString());
    return *std::move(run);
  }

  // c_n: an LSTM's cell state (zeros until a chunk ran: the sessions start without c_0).
  void CheckState(const ShadowSession& s, absl::Span<const float> h_n,
                  const std::optional<Tensor>& c_n) const {
    if (s.steps == 0) {
      if (s.h0.has_value()) CheckClose(s.h0->values, h_n, "h_0 of " + s.id);
      if (c_n.has_value()) {
        CheckClose(std::vector<float>(c_n->values.size(), 0.0f), c_n->values, "c_0 of " + s.id);
      }
      return;
    }
    const ForwardResult whole = Reference(s);
    CheckClose(whole.h_n.values, h_n, "state of " + s.id);
    if (c_n.has_value()) CheckClose(whole.c_n->values, c_n->values, "cell state of " + s.id);
  }

  static void CheckClose(absl::Span<const float> want, absl::Span<const float> got,
                         const std::string& what) {
    FUZZ_CHECK(want.size() == got.size(), what, ": ", got.size(), " values, want ",
               want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      FUZZ_CHECK(std::fabs(want[i] - got[i]) <= 1e-5f, what, "[", i, "] = ", got[i], ", want ",
                 want[i]);
    }
  }

  // The core holds exactly the shadow's sessions; counts and bytes agree and stay in bounds.
  void CheckInvariants() {
    {
      absl::MutexLock lock(&mu_);
      FUZZ_CHECK(answered_ == submitted_, answered_, " of ", submitted_, " answered");
    }
    const absl::Time now = clock_.Now();
    int64_t bytes = 0;
    for (auto it = shadow_.begin(); it != shadow_.end();) {
      const ShadowSession& s = it->second;
      absl::StatusOr<SessionSnapshot> snap = core_->GetSession(s.id, false, s.principal);
      if (!snap.ok()) {
        FUZZ_CHECK(snap.status().code() == absl::StatusCode::kNotFound, snap.status().ToString());
        const bool expired = op_reaps_ && now - s.last_used >= kIdleTimeout;
        const bool evicted = op_allocates_ && s.has_state && now - s.last_used >= kEvictAfter;
        FUZZ_CHECK(expired || evicted, "session ", s.id, " vanished (idle ",
                   absl::FormatDuration(now - s.last_used), "): ", snap.status().ToString());
        it = shadow_.erase(it);
        continue;
      }
      FUZZ_CHECK(snap->steps_seen == s.steps, "session ", s.id, " steps_seen ", snap->steps_seen,
                 ", want ", s.steps);
      FUZZ_CHECK(snap->model_version == s.version, "session ", s.id, " on version ",
                 snap->model_version, ", pinned to ", s.version);
      FUZZ_CHECK(!op_reaps_ || now - s.last_used < kIdleTimeout, "session ", s.id,
                 " outlived the idle timeout");
      if (s.has_state) FUZZ_CHECK(snap->batch_size == s.batch, "batch of ", s.id);
      bytes += snap->state_bytes;
      ++it;
    }
    FUZZ_CHECK(core_->session_count() == static_cast<int64_t>(shadow_.size()), "session_count ",
               core_->session_count(), ", shadow ", shadow_.size());
    FUZZ_CHECK(core_->state_bytes() == bytes, "state_bytes ", core_->state_bytes(),
               ", sessions hold ", bytes);
    FUZZ_CHECK(bytes <= core_->options().max_state_bytes, "state over budget: ", bytes);
    FUZZ_CHECK(core_->session_count() <= core_->options().max_sessions, "sessions over limit");
  }

  bool AllAnswered() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return answered_ == submitted_; }

  RnnConfig config_;
  std::map<int64_t, std::unique_ptr<RnnModel>> references_;  // by version
  std::set<int64_t> unloaded_;  // versions UnloadModel made UNAVAILABLE
  FakeClock clock_;
  std::unique_ptr<ServingCore> core_;
  Slot slots_[kSlots];
  std::map<std::string, ShadowSession> shadow_;
  Slot* pending_start_ = nullptr;
  bool op_allocates_ = false;  // this operation may evict idle sessions to make room
  bool op_reaps_ = false;      // this operation advanced the clock and reaped

  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  int64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t answered_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace
}  // namespace rnnserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rnnserve::Bytes in(data, size);
  rnnserve::Harness harness;
  harness.Run(in);
  return 0;
}
