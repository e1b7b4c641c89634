// SessionTable, continued: lookups, closing, expiry and the ends of sessions, and the NOT_FOUND
// messages their tombstones give. See session_table.h.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "core/serving/client_text.h"
#include "core/serving/session_table.h"

namespace rnnserve {

absl::StatusOr<std::shared_ptr<Session>> SessionTable::LookupLocked(
    const std::string& principal, const std::string& id) const {
  // An id no start could have accepted (too long, say) matches nothing: not even hashed.
  if (id.size() > kMaxClientIdBytes) return UnknownSessionErrorLocked(principal, id);
  auto it = sessions_.find(Key(principal, id));
  if (it == sessions_.end()) return UnknownSessionErrorLocked(principal, id);
  return it->second;
}

SessionTable::Usage SessionTable::UsageLocked(const std::string& principal) const {
  auto it = usage_.find(principal);
  return it == usage_.end() ? Usage{} : it->second;
}

SessionTable::Usage SessionTable::ModelUsageLocked(const std::string& model) const {
  auto it = model_usage_.find(model);
  return it == model_usage_.end() ? Usage{} : it->second;
}

void SessionTable::CountLocked(const Session& session, int64_t sessions, int64_t bytes) {
  for (auto [map, name] : {std::pair{&usage_, &session.principal},
                           std::pair{&model_usage_, &session.model->name}}) {
    Usage& usage = (*map)[*name];
    usage.sessions += sessions;
    usage.bytes += bytes;
    if (usage.sessions == 0 && usage.bytes == 0) map->erase(*name);
  }
}

absl::Duration SessionTable::IdleTimeout(const ServedModel& model) const {
  return model.settings.session_idle_timeout.value_or(options_.session_idle_timeout);
}

int64_t SessionTable::ModelMemoryCap(const ServedModel& model) const {
  const double share = model.settings.state_memory_share;
  if (share <= 0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(share * options_.max_state_bytes));
}

absl::StatusOr<SessionSnapshot> SessionTable::GetSession(const std::string& session_id,
                                                         bool with_state,
                                                         const std::string& principal) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, LookupLocked(principal, session_id));
  return SnapshotLocked(*session, with_state);
}

absl::StatusOr<SessionSnapshot> SessionTable::CloseSession(const std::string& session_id,
                                                           SessionEvents& events,
                                                           const std::string& principal) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, LookupLocked(principal, session_id));
  SessionSnapshot snapshot = SnapshotLocked(*session, /*with_state=*/true);
  EndSessionLocked(session, SessionEndReason::kClosed, events);
  return snapshot;
}

void SessionTable::EndAll(SessionEvents& events) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> all;
  for (const auto& [key, session] : sessions_) all.push_back(session);
  for (const auto& session : all) EndSessionLocked(session, SessionEndReason::kShutdown, events);
}

int64_t SessionTable::ReapIdle(absl::Time now, SessionEvents& events) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> idle;
  for (const auto& [key, session] : sessions_) {
    session->mu.AssertHeld();
    // Start-only sessions (no state) expire like the others.
    if (session->phase != Session::Phase::kScheduled && session->pending.empty() &&
        now - session->last_used >= IdleTimeout(*session->model)) {
      idle.push_back(session);
    }
  }
  for (const auto& session : idle) {
    EndSessionLocked(session, SessionEndReason::kIdleTimeout, events);
  }
  return static_cast<int64_t>(idle.size());
}

absl::Status SessionTable::UnknownSessionError(const std::string& principal,
                                               const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);
  return UnknownSessionErrorLocked(principal, id);
}

// Every NOT_FOUND for a session comes from here, so an id of another principal and an id never
// used give byte-identical messages.
absl::Status SessionTable::UnknownSessionErrorLocked(const std::string& principal,
                                                     const std::string& id) const {
  const std::string quoted = Quoted(id);
  auto it = id.size() > kMaxClientIdBytes ? tombstones_.end()
                                           : tombstones_.find(Key(principal, id));
  if (it == tombstones_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "unknown session ", quoted, ": no live session has this id; start one with start=true"));
  }
  const std::string when =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", it->second.when, absl::UTCTimeZone());
  switch (it->second.reason) {
    case SessionEndReason::kIdleTimeout:
      return absl::NotFoundError(absl::StrCat(
          "session ", quoted, " expired: it was idle for longer than the session idle timeout (",
          absl::FormatDuration(it->second.idle_timeout), ") and was removed at ", when,
          "; start a new session, passing the last h_n (and c_n) you exported as h_0 (and c_0) "
          "to continue"));
    case SessionEndReason::kEvicted:
      return absl::NotFoundError(absl::StrCat(
          "session ", quoted, " was evicted at ", when,
          " to free state memory for other sessions; start a new session, passing the last h_n "
          "(and c_n) you exported as h_0 (and c_0) to continue"));
    case SessionEndReason::kClosed:
      return absl::NotFoundError(absl::StrCat("session ", quoted, " was closed at ", when,
                                              "; start a new session to continue"));
    case SessionEndReason::kShutdown:
      break;
  }
  return absl::NotFoundError(absl::StrCat("session ", quoted, " ended at server shutdown"));
}

void SessionTable::EndSessionLocked(const std::shared_ptr<Session>& session,
                                    SessionEndReason reason, SessionEvents& events) {
  session->mu.AssertHeld();
  if (session->ended) return;
  session->ended = true;
  const std::string key = Key(session->principal, session->id);
  if (sessions_.erase(key) > 0) CountLocked(*session, -1, 0);
  if (!session->idempotency_key.empty()) {
    idempotent_starts_.erase(Key(session->principal, session->idempotency_key));
  }
  // Every part goes (the buffers themselves go with the last reference to the session).
  for (int part = 0; part < kMemoryParts; ++part) {
    ReleaseLocked(*session, static_cast<MemoryPart>(part), events);
  }
  // An evicted or expired session has no queued chunks (only idle sessions are chosen).
  for (ChunkTask* task : session->pending) {
    task->result.status =
        reason == SessionEndReason::kShutdown
            ? absl::UnavailableError("server shut down before this request was applied")
            : absl::NotFoundError(absl::StrCat("session ", Quoted(session->id),
                                               " was closed before this request was applied"));
    events.orphans.push_back(task);
  }
  session->pending.clear();
  if (reason != SessionEndReason::kShutdown) {
    AddTombstoneLocked(key, reason, IdleTimeout(*session->model), events);
  }
  events.ended.push_back({session->id, session->principal, session->model->name, reason,
                          session->steps_seen, session->last_used});
}

SessionSnapshot SessionTable::SnapshotLocked(const Session& session, bool with_state) const {
  session.mu.AssertReaderHeld();
  SessionSnapshot s;
  s.session_id = session.id;
  s.model = session.model->name;
  s.model_version = session.model->version;
  s.steps_seen = session.steps_seen;
  s.next_chunk_index = session.next_chunk_index;
  s.batch_size = session.batch;
  s.unbatched = session.unbatched;
  if (with_state && session.batch > 0) {
    // The state buffer: h, then (LSTM) c.
    const RnnModel& model = *session.model->model;
    const RnnConfig& config = model.config();
    const std::vector<float>& state = session.work.state[session.current];
    const int64_t hidden_floats = model.HiddenStateSize(session.batch);
    s.h_n = Tensor(config.StateShape(session.batch, !session.unbatched),
                   std::vector<float>(state.begin(), state.begin() + hidden_floats));
    if (config.has_cell_state()) {
      s.c_n = Tensor(config.CellStateShape(session.batch, !session.unbatched),
                     std::vector<float>(state.begin() + hidden_floats,
                                        state.begin() + model.StateSize(session.batch)));
    }
  }
  s.created = session.created;
  s.last_used = session.last_used;
  s.expires_in = std::max(absl::ZeroDuration(),
                          session.last_used + IdleTimeout(*session.model) - options_.clock());
  s.state_bytes = session.memory[MemoryPart::kState];
  s.buffered_steps = session.buffered_steps;
  s.memory = session.memory;
  return s;
}

}  // namespace rnnserve
