#include "core/serving/session_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/checksum.h"
#include "base/random_id.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "core/serving/client_text.h"

namespace rnnserve {
namespace {

// Stands for "no input" in a checksum (a real input's checksum differing from it is chance).
constexpr uint64_t kNoInputChecksum = 0x6e6f2d696e707574ull;

// Checksums a start or an indexed chunk is compared by when it is retried: the input's, and
// the whole start's (model, h_0, c_0, input, chunk_index).
void ComputeChecksums(ChunkTask* task) {
  const ChunkRequest& req = task->request;
  if (!req.decode_error.ok() || !(req.start || req.chunk_index.has_value())) return;
  task->input_checksum = req.input.has_value()
                             ? TensorChecksum(req.input->shape, req.input->bytes)
                             : kNoInputChecksum;
  if (!req.start) return;
  uint64_t sum = Checksum64(req.model, task->input_checksum);
  // The version as asked (0: the latest): a retry asks the same, a different ask is a new start.
  sum = Checksum64(absl::string_view(reinterpret_cast<const char*>(&req.model_version),
                                     sizeof(req.model_version)),
                   sum);
  if (req.h0.has_value()) {
    sum = TensorChecksum(req.h0->shape,
                         absl::string_view(reinterpret_cast<const char*>(req.h0->data()),
                                           req.h0->values.size() * sizeof(float)),
                         sum);
  } else {
    sum = Checksum64("no h_0", sum);
  }
  if (req.c0.has_value()) {
    sum = TensorChecksum(req.c0->shape,
                         absl::string_view(reinterpret_cast<const char*>(req.c0->data()),
                                           req.c0->values.size() * sizeof(float)),
                         Checksum64("c_0", sum));
  }
  const uint64_t index = req.chunk_index.value_or(0);
  sum = Checksum64(absl::string_view(reinterpret_cast<const char*>(&index), sizeof(index)),
                   sum ^ (req.chunk_index.has_value() ? 1 : 2));
  task->start_checksum = sum;
}

// OK when `key` is 1..kMaxClientIdBytes printable ASCII characters; else INVALID_ARGUMENT.
absl::Status ValidateIdempotencyKey(const std::string& key) {
  const bool printable = std::all_of(key.begin(), key.end(), [](char c) {
    return c >= 0x20 && c <= 0x7e;
  });
  if (printable && key.size() <= kMaxClientIdBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "idempotency_key must be 1 to ", kMaxClientIdBytes,
      " printable ASCII characters; got ", key.size(), " bytes: ", Quoted(key)));
}

// "(L*D, N, H), or (L*D, H) for unbatched input, with N >= 1; got [..]" for a state tensor.
absl::Status StateShapeError(const char* name, int64_t rows, int64_t features,
                             const Shape& got) {
  return absl::InvalidArgumentError(absl::StrCat(
      name, " must have shape (", rows, ", N, ", features, "), or (", rows, ", ", features,
      ") for unbatched input, with N >= 1; got ", ShapeToString(got)));
}

// State import: checks h_0 and c_0 against the model and finds the batch they fix.
absl::Status CheckImportedState(const RnnConfig& config, const ChunkRequest& req,
                                int64_t* batch, bool* batched) {
  if (req.c0.has_value() && !config.has_cell_state()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "c_0 was given, but model ", Quoted(req.model), " (", ConfigToString(config),
        ") has no cell state: only an LSTM takes c_0; import its state with h_0 alone"));
  }
  const Shape& first = req.h0.has_value() ? req.h0->shape : req.c0->shape;
  *batched = first.size() == 3;
  *batch = *batched ? first[1] : 1;
  const int64_t rows = config.num_state_rows();
  if (req.h0.has_value() &&
      ((first.size() != 2 && first.size() != 3) || *batch < 1 ||
       req.h0->shape != config.StateShape(*batch, *batched))) {
    return StateShapeError("h_0", rows, config.real_hidden_size(), req.h0->shape);
  }
  if (req.c0.has_value() &&
      ((first.size() != 2 && first.size() != 3) || *batch < 1 ||
       req.c0->shape != config.CellStateShape(*batch, *batched))) {
    if (req.h0.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "c_0 must have shape ", ShapeToString(config.CellStateShape(*batch, *batched)),
          " to match h_0 ", ShapeToString(req.h0->shape), "; got ",
          ShapeToString(req.c0->shape)));
    }
    return StateShapeError("c_0", rows, config.hidden_size, req.c0->shape);
  }
  if ((req.h0.has_value() && req.h0->num_elements() != NumElements(req.h0->shape)) ||
      (req.c0.has_value() && req.c0->num_elements() != NumElements(req.c0->shape))) {
    return absl::InvalidArgumentError("state tensor value count does not match its shape");
  }
  return absl::OkStatus();
}

}  // namespace

SessionTable::SessionTable(const ModelRegistry& models, const ServingOptions& options,
                           ServingObserver& observer)
    : models_(models), options_(options), publisher_(observer) {}

std::string SessionTable::Key(const std::string& principal, const std::string& id) {
  return absl::StrCat(principal.size(), ":", principal, id);
}

absl::StatusOr<bool> SessionTable::Admit(ChunkTask* task, SessionEvents& events,
                                         int64_t* response_bound) {
  const ChunkRequest& req = task->request;
  ComputeChecksums(task);  // outside the lock: a pass over the input
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<Session>> found =
      req.start ? StartLocked(task, events) : FindLocked(req);
  if (!found.ok()) return found.status();
  Session& session = **found;
  session.mu.AssertHeld();
  task->session = *std::move(found);
  task->key = session.model.get();
  task->settings = &session.model->settings;
  task->result.session_id = session.id;
  task->result.model = session.model->name;
  task->result.model_version = session.model->version;
  const int64_t fresh = ResponseBoundLocked(session, req);
  session.largest_response_bound = std::max(session.largest_response_bound, fresh);
  // Only a request with a chunk_index can be a duplicate (or a retried start) that replays an
  // earlier chunk's output.
  task->result.response_bound =
      req.chunk_index.has_value() || req.start ? session.largest_response_bound : fresh;
  if (response_bound != nullptr) *response_bound = task->result.response_bound;
  if (session.phase != Session::Phase::kIdle) {
    session.pending.push_back(task);
    return false;
  }
  session.phase = Session::Phase::kScheduled;
  return true;
}

absl::StatusOr<std::shared_ptr<Session>> SessionTable::RetriedStartLocked(
    const ChunkTask& task) const {
  const ChunkRequest& req = task.request;
  std::string id = req.session_id;
  if (id.empty()) {
    if (req.idempotency_key.empty()) return nullptr;
    auto key = idempotent_starts_.find(Key(req.principal, req.idempotency_key));
    if (key == idempotent_starts_.end()) return nullptr;
    id = key->second;
  }
  auto it = sessions_.find(Key(req.principal, id));
  if (it == sessions_.end()) return nullptr;
  if (it->second->start_checksum == task.start_checksum) return it->second;
  if (!req.session_id.empty()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "session ", Quoted(id), " is already live and was started with different content "
        "(model, model_version, h_0, c_0, input or chunk_index), so this is not a retry of its start; continue it "
        "without start=true, or choose another id"));
  }
  return absl::AlreadyExistsError(absl::StrCat(
      "idempotency_key ", Quoted(req.idempotency_key), " already started session ", Quoted(id),
      " with different content (model, model_version, h_0, c_0, input or chunk_index), so this is not a retry of "
      "that start; use a new key for a new session"));
}

absl::StatusOr<std::shared_ptr<Session>> SessionTable::StartLocked(ChunkTask* task,
                                                                   SessionEvents& events) {
  const ChunkRequest& req = task->request;
  if (!req.decode_error.ok()) return req.decode_error;
  if (req.model.empty()) {
    return absl::InvalidArgumentError("a request with start=true needs `model`");
  }
  // The client's id and key are checked before anything else is looked up with them.
  if (!req.session_id.empty()) RETURN_IF_ERROR(ValidateClientId(req.session_id, "session_id"));
  if (!req.idempotency_key.empty()) RETURN_IF_ERROR(ValidateIdempotencyKey(req.idempotency_key));
  // A retried start is acknowledged even while draining, and even when its version has been
  // unloaded since: it starts nothing. Ids are per principal (see the header): only the owner
  // learns that its id is taken.
  ASSIGN_OR_RETURN(std::shared_ptr<Session> retried, RetriedStartLocked(*task));
  if (retried != nullptr) {
    task->retried_start = true;
    return retried;
  }
  // An unloaded version refuses new sessions at once (its live ones finish on it).
  ASSIGN_OR_RETURN(std::shared_ptr<const ServedModel> model,
                   models_.Lookup(req.model, req.model_version));
  if (draining_) {
    return absl::UnavailableError(
        "server is draining for shutdown and starts no new sessions; start the session on "
        "another replica (import its state with h_0)");
  }
  if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many sessions: ", sessions_.size(), " are live, the limit is ",
        options_.max_sessions, " (--max_sessions); close finished sessions"));
  }
  if (const int64_t cap = model->settings.max_sessions;
      cap > 0 && ModelUsageLocked(model->name).sessions >= cap) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many sessions of model ", Quoted(model->name), ": ",
        ModelUsageLocked(model->name).sessions, " are live, the limit is ", cap,
        " (max_sessions in its serving.json); close finished sessions of this model"));
  }
  const int64_t own_sessions = UsageLocked(req.principal).sessions;
  if (options_.max_sessions_per_principal > 0 &&
      own_sessions >= options_.max_sessions_per_principal) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many sessions for ", DescribePrincipal(req.principal), ": it has ", own_sessions,
        " live, the limit is ", options_.max_sessions_per_principal,
        " (--max_sessions_per_principal); close finished sessions"));
  }
  int64_t batch = 0;
  bool batched = true;
  const bool imported = req.h0.has_value() || req.c0.has_value();
  if (imported) {
    // State import: h_0 (and c_0) fix the batch size.
    RETURN_IF_ERROR(CheckImportedState(model->model->config(), req, &batch, &batched));
    RETURN_IF_ERROR(CheckStateFits(model->model->StateSize(1), batch, options_));
    if (req.h0.has_value()) RETURN_IF_ERROR(CheckFinite(req.h0->values, "h_0", options_));
    if (req.c0.has_value()) RETURN_IF_ERROR(CheckFinite(req.c0->values, "c_0", options_));
  }
  ASSIGN_OR_RETURN(std::string id, NewSessionIdLocked(req));
  auto session = std::make_shared<Session>(id, req.principal, model, options_.clock(), mu_);
  session->mu.AssertHeld();
  if (req.session_id.empty()) session->idempotency_key = req.idempotency_key;
  session->start_checksum = task->start_checksum;
  // `start` with chunk_index K begins the numbering at K.
  session->first_chunk_index = session->next_chunk_index = req.chunk_index.value_or(0);
  const int64_t id_bytes = static_cast<int64_t>(id.size() + req.principal.size() +
                                                session->idempotency_key.size()) +
                           kSessionOverheadBytes;
  RETURN_IF_ERROR(ReserveLocked(*session, MemoryPart::kIds, id_bytes, /*evict=*/true, events));
  if (imported) {
    const RnnModel& rnn = *model->model;
    const int64_t bytes = 2 * rnn.StateSize(batch) * static_cast<int64_t>(sizeof(float));
    absl::Status reserved =
        ReserveLocked(*session, MemoryPart::kState, bytes, /*evict=*/true, events);
    if (!reserved.ok()) {
      ReleaseLocked(*session, MemoryPart::kIds, events);
      return reserved;
    }
    session->batch = batch;
    session->unbatched = !batched;
    // Before its first chunk, the work fields belong to the thread creating the session.
    // One buffer: h at the front, c (LSTM) after it; a part not given is zeros.
    std::vector<float>& state = session->work.state[0];
    state.assign(rnn.StateSize(batch), 0.0f);
    session->work.state[1].assign(rnn.StateSize(batch), 0.0f);
    if (req.h0.has_value()) std::copy(req.h0->values.begin(), req.h0->values.end(), state.begin());
    if (req.c0.has_value()) {
      std::copy(req.c0->values.begin(), req.c0->values.end(),
                state.begin() + rnn.HiddenStateSize(batch));
    }
  }
  const std::string key = Key(req.principal, id);
  tombstones_.erase(key);
  sessions_.emplace(key, session);
  CountLocked(*session, 1, 0);
  if (!session->idempotency_key.empty()) {
    idempotent_starts_.emplace(Key(req.principal, session->idempotency_key), id);
  }
  events.started.push_back({id, req.principal, model->name, imported});
  return session;
}

absl::StatusOr<std::string> SessionTable::NewSessionIdLocked(const ChunkRequest& req) const {
  if (!req.session_id.empty()) return req.session_id;
  // 128 bits from the OS: unguessable, so a server-assigned id is never taken already.
  absl::StatusOr<std::string> id = NewRandomId();
  if (!id.ok()) {
    return absl::InternalError(absl::StrCat("could not make a session id: ",
                                            id.status().message(), "; retry the start"));
  }
  if (sessions_.count(Key(req.principal, *id))) {
    return absl::InternalError("a new random session id collided; retry the start");
  }
  return id;
}

absl::StatusOr<std::shared_ptr<Session>> SessionTable::FindLocked(
    const ChunkRequest& req) const {
  if (req.session_id.empty()) {
    return absl::InvalidArgumentError(
        "`session_id` is empty: set it, or set start=true to begin a new session");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session,
                   LookupLocked(req.principal, req.session_id));
  if (req.h0.has_value() || req.c0.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        req.h0.has_value() ? "h_0" : "c_0",
        " is only accepted with start=true (state import); session ", Quoted(req.session_id),
        " already has its state"));
  }
  if (!req.model.empty() && req.model != session->model->name) {
    return absl::InvalidArgumentError(absl::StrCat("session ", Quoted(req.session_id),
                                                   " runs model ", Quoted(session->model->name),
                                                   ", not ", Quoted(req.model)));
  }
  if (req.model_version != 0 && req.model_version != session->model->version) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session ", Quoted(req.session_id), " is pinned to version ", session->model->version,
        " of model ", Quoted(session->model->name), ", not version ", req.model_version));
  }
  return session;
}

void SessionTable::BeginBatch(absl::Span<ChunkTask* const> tasks) {
  absl::MutexLock lock(&mu_);
  for (ChunkTask* task : tasks) {
    const Session& session = *task->session;
    session.mu.AssertHeld();
    task->seen = {session.ended, session.batch, session.unbatched, session.next_chunk_index,
                  session.current};
  }
}

std::vector<std::shared_ptr<Session>> SessionTable::CompleteBatch(
    absl::Span<ChunkTask* const> tasks, SessionEvents& events) {
  std::vector<std::shared_ptr<Session>> handoff;
  const absl::Time now = options_.clock();
  absl::MutexLock lock(&mu_);
  for (ChunkTask* task : tasks) {
    Session& session = *task->session;
    session.mu.AssertHeld();
    const ChunkRequest& req = task->request;
    ChunkResult& result = task->result;
    const bool applied = result.status.ok() && !result.duplicate;
    const bool bidirectional = session.model->model->config().bidirectional;
    if (applied && req.input.has_value()) {
      session.steps_seen =
          bidirectional ? session.work.buffered_steps : session.steps_seen + task->steps;
    }
    if (task->compute) {
      session.current = 1 - session.current;
      if (bidirectional) {
        session.work.buffered.clear();
        session.work.buffered.shrink_to_fit();
        session.work.buffered_steps = 0;
        ReleaseLocked(session, MemoryPart::kBufferedInput, events);
      }
    }
    session.buffered_steps = session.work.buffered_steps;
    // A start without input leaves the numbering where the start put it.
    if (applied && (req.input.has_value() || (req.chunk_index.has_value() && !req.start))) {
      ++session.next_chunk_index;
    }
    if (applied) {
      // The previous replay copy goes (Finish replaces it); the new one is kept only if it
      // fits, without evicting anyone: a duplicate of an unkept chunk gets no output.
      ReleaseLocked(session, MemoryPart::kReplay, events);
      task->keep_replay =
          req.chunk_index.has_value() && result.output.has_value() && !session.ended &&
          ReserveLocked(session, MemoryPart::kReplay, ReplayBytes(*result.output),
                        /*evict=*/false, events)
              .ok();
    }
    // Only an applied request that does something keeps a session alive: one with no input,
    // start or end (or a failed or duplicate one) must not hold a session past its timeout.
    if (applied && (req.start || req.end || req.input.has_value())) session.last_used = now;
    result.steps_seen = session.steps_seen;
    // This worker still owns the state: the buffer is read after the lock is released.
    task->report_state = session.batch > 0 && !req.omit_state
                             ? session.work.state[session.current].data()
                             : nullptr;
    if (session.ended) {
      result.ended = true;
    } else if ((!result.status.ok() && req.start && !task->retried_start) ||
               (applied && req.end)) {
      // A start whose first chunk failed leaves no session behind: failed requests have no
      // effect, so the client can fix the chunk and start again with the same id.
      result.ended = true;
      EndSessionLocked(task->session, SessionEndReason::kClosed, events);
    } else {
      session.phase = Session::Phase::kAnswering;
      handoff.push_back(task->session);
    }
  }
  return handoff;
}

std::vector<BatchScheduler::Task*> SessionTable::Handoff(
    absl::Span<const std::shared_ptr<Session>> sessions) {
  std::vector<BatchScheduler::Task*> next;
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<Session>& session : sessions) {
    session->mu.AssertHeld();
    if (session->ended || session->pending.empty()) {
      session->phase = Session::Phase::kIdle;
      continue;
    }
    session->phase = Session::Phase::kScheduled;
    next.push_back(session->pending.front());
    session->pending.erase(session->pending.begin());
  }
  return next;
}

void SessionTable::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool SessionTable::draining() const {
  absl::ReaderMutexLock lock(&mu_);
  return draining_;
}

int64_t SessionTable::session_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return static_cast<int64_t>(sessions_.size());
}


}  // namespace rnnserve
