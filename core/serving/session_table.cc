#include "core/serving/session_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace rnnserve {
namespace {

int64_t StateBytesFor(const RnnModel& model, int64_t batch) {
  // Two buffers: one readable while the other is written.
  return 2 * model.StateSize(batch) * static_cast<int64_t>(sizeof(float));
}

}  // namespace

SessionTable::SessionTable(const ModelRegistry& models, const ServingOptions& options,
                           ServingObserver& observer)
    : models_(models), options_(options), publisher_(observer), id_rng_(std::random_device{}()) {}

absl::StatusOr<bool> SessionTable::Admit(ChunkTask* task, SessionEvents& events) {
  const ChunkRequest& req = task->request;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<Session>> found =
      req.start ? StartLocked(req, task->submitted, events) : FindLocked(req);
  if (!found.ok()) return found.status();
  Session& session = **found;
  session.mu.AssertHeld();
  task->session = *std::move(found);
  task->key = session.model;
  task->result.session_id = session.id;
  task->result.model = session.model->name;
  if (session.phase != Session::Phase::kIdle) {
    session.pending.push_back(task);
    return false;
  }
  session.phase = Session::Phase::kScheduled;
  return true;
}

absl::StatusOr<std::shared_ptr<Session>> SessionTable::StartLocked(const ChunkRequest& req,
                                                                   absl::Time now,
                                                                   SessionEvents& events) {
  const ServedModel* model = req.model.empty() ? nullptr : models_.Find(req.model);
  if (draining_) {
    return absl::UnavailableError(
        "server is draining for shutdown and starts no new sessions; start the session on "
        "another replica (import its state with h_0)");
  }
  if (!req.decode_error.ok()) return req.decode_error;
  if (req.model.empty()) {
    return absl::InvalidArgumentError("a request with start=true needs `model`");
  }
  if (model == nullptr) return models_.UnknownModelError(req.model);
  if (!req.session_id.empty() && sessions_.count(req.session_id)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "session '", req.session_id,
        "' is already live; continue it without start=true, or choose another id"));
  }
  if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many sessions: ", sessions_.size(), " are live, the limit is ",
        options_.max_sessions, " (--max_sessions); close finished sessions"));
  }
  const std::string id = req.session_id.empty()
                             ? absl::StrFormat("%016x%016x", id_rng_(), id_rng_())
                             : req.session_id;
  auto session = std::make_shared<Session>(id, model, now, mu_);
  session->mu.AssertHeld();
  if (req.h0.has_value()) {
    // State import: h_0 fixes the batch size.
    const RnnConfig& config = model->model->config();
    const Shape& shape = req.h0->shape;
    const bool batched = shape.size() == 3;
    const int64_t batch = batched ? shape[1] : 1;
    if ((shape.size() != 2 && shape.size() != 3) || shape != config.StateShape(batch, batched) ||
        batch < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "h_0 must have shape (", config.num_state_rows(), ", N, ", config.hidden_size,
          "), or (", config.num_state_rows(), ", ", config.hidden_size,
          ") for unbatched input, with N >= 1; got ", ShapeToString(shape)));
    }
    RETURN_IF_ERROR(CheckFinite(req.h0->values, "h_0", options_));
    const int64_t bytes = StateBytesFor(*model->model, batch);
    RETURN_IF_ERROR(ReserveStateBytes(bytes, session.get(), events));
    session->batch = batch;
    session->unbatched = !batched;
    session->state_bytes = bytes;
    // Before its first chunk, the work fields belong to the thread creating the session.
    session->work.state[0] = req.h0->values;
    session->work.state[1].resize(req.h0->values.size());
  }
  tombstones_.erase(id);
  sessions_.emplace(id, session);
  events.started.push_back({id, model->name, req.h0.has_value()});
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionTable::FindLocked(
    const ChunkRequest& req) const {
  if (req.session_id.empty()) {
    return absl::InvalidArgumentError(
        "`session_id` is empty: set it, or set start=true to begin a new session");
  }
  auto it = sessions_.find(req.session_id);
  if (it == sessions_.end()) return UnknownSessionErrorLocked(req.session_id);
  if (req.h0.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "h_0 is only accepted with start=true (state import); session '", req.session_id,
        "' already has its state"));
  }
  if (!req.model.empty() && req.model != it->second->model->name) {
    return absl::InvalidArgumentError(absl::StrCat("session '", req.session_id, "' runs model '",
                                                   it->second->model->name, "', not '",
                                                   req.model, "'"));
  }
  return it->second;
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

absl::Status SessionTable::AllocateState(ChunkTask* task, int64_t batch, bool unbatched,
                                         SessionEvents& events) {
  Session& session = *task->session;
  const RnnModel& model = *session.model->model;
  const int64_t bytes = StateBytesFor(model, batch);
  absl::MutexLock lock(&mu_);
  session.mu.AssertHeld();
  // Closed since the batch began: reserving now would count bytes no one ever releases.
  if (session.ended) return UnknownSessionErrorLocked(session.id);
  RETURN_IF_ERROR(ReserveStateBytes(bytes, &session, events));
  session.batch = task->seen.batch = batch;
  session.unbatched = task->seen.unbatched = unbatched;
  session.state_bytes = bytes;
  // Allocated under the lock: snapshots read state[current] as soon as `batch` is set.
  session.work.state[0].assign(model.StateSize(batch), 0.0f);
  session.work.state[1].assign(model.StateSize(batch), 0.0f);
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Session>> SessionTable::CompleteBatch(
    absl::Span<ChunkTask* const> tasks, SessionEvents& events) {
  std::vector<std::shared_ptr<Session>> handoff;
  const absl::Time now = absl::Now();
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
      }
    }
    session.buffered_steps = session.work.buffered_steps;
    if (applied && (req.chunk_index.has_value() || req.input.has_value())) {
      ++session.next_chunk_index;
    }
    session.last_used = now;
    result.steps_seen = session.steps_seen;
    // This worker still owns the state: the buffer is read after the lock is released.
    task->report_state = session.batch > 0 && !req.omit_state
                             ? session.work.state[session.current].data()
                             : nullptr;
    if (session.ended) {
      result.ended = true;
    } else if ((!result.status.ok() && req.start) || (applied && req.end)) {
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

absl::StatusOr<SessionSnapshot> SessionTable::GetSession(const std::string& session_id,
                                                         bool with_state) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return UnknownSessionErrorLocked(session_id);
  return SnapshotLocked(*it->second, with_state);
}

absl::StatusOr<SessionSnapshot> SessionTable::CloseSession(const std::string& session_id,
                                                           SessionEvents& events) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return UnknownSessionErrorLocked(session_id);
  std::shared_ptr<Session> session = it->second;
  SessionSnapshot snapshot = SnapshotLocked(*session, /*with_state=*/true);
  EndSessionLocked(session, SessionEndReason::kClosed, events);
  return snapshot;
}

void SessionTable::EndAll(SessionEvents& events) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> all;
  for (const auto& [id, session] : sessions_) all.push_back(session);
  for (const auto& session : all) EndSessionLocked(session, SessionEndReason::kShutdown, events);
}

int64_t SessionTable::ReapIdle(absl::Time now, SessionEvents& events) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> idle;
  for (const auto& [id, session] : sessions_) {
    session->mu.AssertHeld();
    if (session->phase != Session::Phase::kScheduled && session->pending.empty() &&
        now - session->last_used >= options_.session_idle_timeout) {
      idle.push_back(session);
    }
  }
  for (const auto& session : idle) {
    EndSessionLocked(session, SessionEndReason::kIdleTimeout, events);
  }
  return static_cast<int64_t>(idle.size());
}

absl::Status SessionTable::UnknownSessionError(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);
  return UnknownSessionErrorLocked(id);
}

absl::Status SessionTable::UnknownSessionErrorLocked(const std::string& id) const {
  auto it = tombstones_.find(id);
  if (it == tombstones_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "unknown session '", id, "': no live session has this id; start one with start=true"));
  }
  const std::string when =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", it->second.when, absl::UTCTimeZone());
  switch (it->second.reason) {
    case SessionEndReason::kIdleTimeout:
      return absl::NotFoundError(absl::StrCat(
          "session '", id, "' expired: it was idle for longer than the session idle timeout (",
          absl::FormatDuration(options_.session_idle_timeout), ") and was removed at ", when,
          "; start a new session, passing the last h_n you exported as h_0 to continue"));
    case SessionEndReason::kEvicted:
      return absl::NotFoundError(absl::StrCat(
          "session '", id, "' was evicted at ", when,
          " to free state memory for other sessions; start a new session, passing the last h_n "
          "you exported as h_0 to continue"));
    case SessionEndReason::kClosed:
      return absl::NotFoundError(absl::StrCat("session '", id, "' was closed at ", when,
                                              "; start a new session to continue"));
    case SessionEndReason::kShutdown:
      break;
  }
  return absl::NotFoundError(absl::StrCat("session '", id, "' ended at server shutdown"));
}

absl::Status SessionTable::ReserveStateBytes(int64_t bytes, const Session* requester,
                                             SessionEvents& events) {
  const absl::Time now = absl::Now();
  while (state_bytes_ + bytes > options_.max_state_bytes) {
    // The least recently used session that is idle, holds state and has been idle long enough.
    std::shared_ptr<Session> victim;
    for (const auto& [id, session] : sessions_) {
      session->mu.AssertHeld();
      if (session.get() == requester || session->phase == Session::Phase::kScheduled ||
          !session->pending.empty() || session->state_bytes == 0 ||
          now - session->last_used < options_.evict_idle_after) {
        continue;
      }
      if (victim == nullptr) {
        victim = session;
      } else {
        victim->mu.AssertHeld();
        if (session->last_used < victim->last_used) victim = session;
      }
    }
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "session state memory is full: ", state_bytes_, " of ", options_.max_state_bytes,
          " bytes in use by ", sessions_.size(), " sessions and this session needs ", bytes,
          " more; close finished sessions or raise --max_state_bytes"));
    }
    EndSessionLocked(victim, SessionEndReason::kEvicted, events);
  }
  AddStateBytes(bytes, events);
  return absl::OkStatus();
}

void SessionTable::AddStateBytes(int64_t bytes, SessionEvents& events) {
  state_bytes_ += bytes;
  events.state_bytes.emplace(++state_bytes_changes_, state_bytes_);
}

void SessionTable::EndSessionLocked(const std::shared_ptr<Session>& session,
                                    SessionEndReason reason, SessionEvents& events) {
  session->mu.AssertHeld();
  if (session->ended) return;
  session->ended = true;
  sessions_.erase(session->id);
  AddStateBytes(-session->state_bytes, events);
  session->state_bytes = 0;
  // An evicted or expired session has no queued chunks (only idle sessions are chosen).
  for (ChunkTask* task : session->pending) {
    task->result.status =
        reason == SessionEndReason::kShutdown
            ? absl::UnavailableError("server shut down before this request was applied")
            : absl::NotFoundError(absl::StrCat(
                  "session '", session->id, "' was closed before this request was applied"));
    events.orphans.push_back(task);
  }
  session->pending.clear();
  if (reason != SessionEndReason::kShutdown) {
    tombstones_[session->id] = Tombstone{reason, absl::Now()};
    tombstone_order_.push_back(session->id);
    while (static_cast<int64_t>(tombstone_order_.size()) > options_.max_tombstones) {
      tombstones_.erase(tombstone_order_.front());
      tombstone_order_.pop_front();
    }
  }
  events.ended.push_back(
      {session->id, session->model->name, reason, session->steps_seen, session->last_used});
}

SessionSnapshot SessionTable::SnapshotLocked(const Session& session, bool with_state) const {
  session.mu.AssertReaderHeld();
  SessionSnapshot s;
  s.session_id = session.id;
  s.model = session.model->name;
  s.steps_seen = session.steps_seen;
  s.next_chunk_index = session.next_chunk_index;
  s.batch_size = session.batch;
  s.unbatched = session.unbatched;
  if (with_state && session.batch > 0) {
    s.h_n = Tensor(session.model->model->config().StateShape(session.batch, !session.unbatched),
                   session.work.state[session.current]);
  }
  s.created = session.created;
  s.last_used = session.last_used;
  s.expires_in = std::max(absl::ZeroDuration(),
                          session.last_used + options_.session_idle_timeout - absl::Now());
  s.state_bytes = session.state_bytes;
  s.buffered_steps = session.buffered_steps;
  return s;
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

int64_t SessionTable::state_bytes() const {
  absl::ReaderMutexLock lock(&mu_);
  return state_bytes_;
}

}  // namespace rnnserve
