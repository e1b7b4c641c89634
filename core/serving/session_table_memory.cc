// SessionTable, continued: the memory budget (every part of every session against
// --max_state_bytes and the per-principal quota, with LRU eviction of idle sessions), the
// first chunk's state allocation, buffered-input reservations, the tombstones' bounds and each
// request's response bound (what a stream reserves for its answer).
// See session_table.h.
#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "core/serving/client_text.h"
#include "core/serving/session_table.h"

namespace rnnserve {
namespace {

int64_t StateBytesFor(const RnnModel& model, int64_t batch) {
  // Two buffers: one readable while the other is written.
  return 2 * model.StateSize(batch) * static_cast<int64_t>(sizeof(float));
}

const char* PartDescription(MemoryPart part) {
  switch (part) {
    case MemoryPart::kState:
      return "its state (h_n, and c_n for an LSTM)";
    case MemoryPart::kBufferedInput:
      return "buffered input";
    case MemoryPart::kReplay:
      return "the copy kept for replays";
    case MemoryPart::kIds:
      return "its ids and bookkeeping";
  }
  return "memory";
}

}  // namespace

absl::Status SessionTable::AllocateState(ChunkTask* task, int64_t batch, bool unbatched,
                                         int64_t buffered_bytes, SessionEvents& events) {
  Session& session = *task->session;
  const RnnModel& model = *session.model->model;
  const int64_t bytes = StateBytesFor(model, batch);
  absl::MutexLock lock(&mu_);
  session.mu.AssertHeld();
  // Closed since the batch began: reserving now would count bytes no one ever releases.
  if (session.ended) return UnknownSessionErrorLocked(session.principal, session.id);
  RETURN_IF_ERROR(ReserveLocked(session, MemoryPart::kState, bytes, /*evict=*/true, events));
  if (buffered_bytes > 0) {
    absl::Status buffered = ReserveLocked(session, MemoryPart::kBufferedInput, buffered_bytes,
                                          /*evict=*/true, events);
    if (!buffered.ok()) {
      // Neither: a refused chunk leaves the batch size unfixed.
      ReleaseLocked(session, MemoryPart::kState, events);
      return buffered;
    }
  }
  session.batch = task->seen.batch = batch;
  session.unbatched = task->seen.unbatched = unbatched;
  // Allocated under the lock: snapshots read state[current] as soon as `batch` is set.
  session.work.state[0].assign(model.StateSize(batch), 0.0f);
  session.work.state[1].assign(model.StateSize(batch), 0.0f);
  return absl::OkStatus();
}

absl::Status SessionTable::ReserveBufferedInput(ChunkTask* task, int64_t bytes,
                                                SessionEvents& events) {
  Session& session = *task->session;
  absl::MutexLock lock(&mu_);
  session.mu.AssertHeld();
  if (session.ended) return UnknownSessionErrorLocked(session.principal, session.id);
  return ReserveLocked(session, MemoryPart::kBufferedInput, bytes, /*evict=*/true, events);
}

bool SessionTable::Scope::Contains(const Session& session) const {
  return (principal == nullptr || session.principal == *principal) &&
         (model == nullptr || session.model->name == *model);
}

std::shared_ptr<Session> SessionTable::LeastRecentlyUsedLocked(
    const Session* requester, const Scope& scope,
    absl::FunctionRef<bool(const Session&)> eligible) const {
  std::shared_ptr<Session> oldest;
  for (const auto& [key, session] : sessions_) {
    session->mu.AssertReaderHeld();
    if (session.get() == requester || !scope.Contains(*session) || !session->pending.empty() ||
        !eligible(*session)) {
      continue;
    }
    if (oldest == nullptr) {
      oldest = session;
    } else {
      oldest->mu.AssertReaderHeld();
      if (session->last_used < oldest->last_used) oldest = session;
    }
  }
  return oldest;
}

std::shared_ptr<Session> SessionTable::EvictionVictimLocked(const Session* requester,
                                                            const Scope& scope,
                                                            absl::Time now) const {
  return LeastRecentlyUsedLocked(requester, scope, [&](const Session& session) {
    session.mu.AssertReaderHeld();
    return session.phase != Session::Phase::kScheduled &&
           session.memory[MemoryPart::kState] > 0 &&
           now - session.last_used >= options_.evict_idle_after;
  });
}

bool SessionTable::ShedReplayLocked(const Session* requester, const Scope& scope,
                                    SessionEvents& events) {
  std::shared_ptr<Session> oldest =
      LeastRecentlyUsedLocked(requester, scope, [](const Session& session) {
        session.mu.AssertReaderHeld();
        return session.phase == Session::Phase::kIdle && session.memory[MemoryPart::kReplay] > 0;
      });
  if (oldest == nullptr) return false;
  oldest->mu.AssertHeld();
  // Idle with nothing queued: no worker owns its work fields now (session.h), and the next
  // one to run it is ordered after this lock. Its duplicates then get no output.
  oldest->work.last_index.reset();
  oldest->work.last_output.reset();
  ReleaseLocked(*oldest, MemoryPart::kReplay, events);
  return true;
}

absl::Status SessionTable::ReserveLocked(Session& requester, MemoryPart part, int64_t bytes,
                                         bool evict, SessionEvents& events) {
  requester.mu.AssertHeld();
  if (bytes <= 0) return absl::OkStatus();
  const absl::Time now = options_.clock();
  const std::string& principal = requester.principal;
  const int64_t quota = options_.max_state_bytes_per_principal;
  const Scope own_principal{&principal, nullptr};
  // The principal's quota first, evicting only its own idle sessions: one principal's usage
  // never costs another principal a session.
  while (quota > 0 && UsageLocked(principal).bytes + bytes > quota) {
    // Replay copies are a cache: they go before any session does.
    if (evict && ShedReplayLocked(&requester, own_principal, events)) continue;
    std::shared_ptr<Session> victim =
        evict ? EvictionVictimLocked(&requester, own_principal, now) : nullptr;
    if (victim == nullptr) {
      const Usage usage = UsageLocked(principal);
      return absl::ResourceExhaustedError(absl::StrCat(
          "session memory quota of ", DescribePrincipal(principal), " is full: ", usage.bytes,
          " of ", quota, " bytes in use by its ", usage.sessions, " sessions and this session needs ",
          bytes, " more for ", PartDescription(part),
          " (--max_state_bytes_per_principal); nothing was applied: close finished sessions"));
    }
    EndSessionLocked(victim, SessionEndReason::kEvicted, events);
  }
  // Then the model's share, the same way within the model: a model at its share never costs
  // another model a session.
  const ServedModel& model = *requester.model;
  const int64_t share = ModelMemoryCap(model);
  const Scope own_model{nullptr, &model.name};
  while (share > 0 && ModelUsageLocked(model.name).bytes + bytes > share) {
    if (evict && ShedReplayLocked(&requester, own_model, events)) continue;
    std::shared_ptr<Session> victim =
        evict ? EvictionVictimLocked(&requester, own_model, now) : nullptr;
    if (victim == nullptr) {
      const Usage usage = ModelUsageLocked(model.name);
      return absl::ResourceExhaustedError(absl::StrCat(
          "session memory share of model ", Quoted(model.name), " is full: ", usage.bytes, " of ",
          share, " bytes (state_memory_share ", model.settings.state_memory_share,
          " of --max_state_bytes in its serving.json) in use by its ", usage.sessions,
          " sessions and this session needs ", bytes, " more for ", PartDescription(part),
          "; nothing was applied: close finished sessions of this model"));
    }
    EndSessionLocked(victim, SessionEndReason::kEvicted, events);
  }
  while (memory_.total() + bytes > options_.max_state_bytes) {
    if (evict && ShedReplayLocked(&requester, Scope{}, events)) continue;
    std::shared_ptr<Session> victim = evict ? EvictionVictimLocked(&requester, Scope{}, now)
                                            : nullptr;
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "session memory is full: ", memory_.total(), " of ", options_.max_state_bytes,
          " bytes in use by ", sessions_.size(), " sessions (state ", memory_[MemoryPart::kState],
          ", buffered input ", memory_[MemoryPart::kBufferedInput], ", replays ",
          memory_[MemoryPart::kReplay], ", ids ", memory_[MemoryPart::kIds],
          ") and this session needs ", bytes, " more for ", PartDescription(part),
          "; nothing was applied: close finished sessions or raise --max_state_bytes"));
    }
    EndSessionLocked(victim, SessionEndReason::kEvicted, events);
  }
  requester.memory[part] += bytes;
  memory_[part] += bytes;
  CountLocked(requester, 0, bytes);
  NoteMemoryLocked(events);
  return absl::OkStatus();
}

void SessionTable::ReleaseLocked(Session& session, MemoryPart part, SessionEvents& events) {
  session.mu.AssertHeld();
  const int64_t bytes = session.memory[part];
  session.memory[part] = 0;
  CountLocked(session, 0, -bytes);
  if (bytes == 0) return;
  memory_[part] -= bytes;
  NoteMemoryLocked(events);
}

void SessionTable::NoteMemoryLocked(SessionEvents& events) {
  events.memory.emplace(
      ++memory_changes_,
      MemoryUsage{memory_, static_cast<int64_t>(tombstones_.size()), tombstone_bytes_});
}

void SessionTable::AddTombstoneLocked(const std::string& key, SessionEndReason reason,
                                      absl::Duration idle_timeout, SessionEvents& events) {
  const uint64_t sequence = ++tombstone_sequence_;
  tombstones_[key] = Tombstone{reason, options_.clock(), sequence, idle_timeout};
  tombstone_order_.emplace_back(key, sequence);
  tombstone_bytes_ += static_cast<int64_t>(key.size()) + kTombstoneOverheadBytes;
  // Oldest first, by count and by bytes: a flood of long ids cannot pin memory.
  while (!tombstone_order_.empty() &&
         (static_cast<int64_t>(tombstone_order_.size()) > options_.max_tombstones ||
          tombstone_bytes_ > options_.max_tombstone_bytes)) {
    const auto& [oldest, oldest_sequence] = tombstone_order_.front();
    auto it = tombstones_.find(oldest);
    if (it != tombstones_.end() && it->second.sequence == oldest_sequence) tombstones_.erase(it);
    tombstone_bytes_ -= static_cast<int64_t>(oldest.size()) + kTombstoneOverheadBytes;
    tombstone_order_.pop_front();
  }
  NoteMemoryLocked(events);
}

int64_t SessionTable::state_bytes() const {
  absl::ReaderMutexLock lock(&mu_);
  return memory_[MemoryPart::kState];
}

MemoryUsage SessionTable::memory() const {
  absl::ReaderMutexLock lock(&mu_);
  return MemoryUsage{memory_, static_cast<int64_t>(tombstones_.size()), tombstone_bytes_};
}

int64_t SessionTable::ResponseBoundLocked(const Session& session,
                                          const ChunkRequest& req) const {
  session.mu.AssertReaderHeld();
  const RnnModel& model = *session.model->model;
  int64_t batch = session.batch;
  int64_t steps = 0;
  if (req.input.has_value()) {
    absl::StatusOr<InputDims> dims = model.CheckShapes(req.input->shape, nullptr);
    if (dims.ok()) {
      steps = dims->steps;
      batch = dims->batch;
    }
  } else if (req.h0.has_value() && req.h0->shape.size() == 3) {
    batch = req.h0->shape[1];
  }
  const int64_t limit = options_.max_response_bytes > 0 ? options_.max_response_bytes
                                                        : std::numeric_limits<int64_t>::max();
  // A bidirectional session answers its whole buffered sequence at `end`: as large as a
  // message may be.
  if (model.config().bidirectional && req.end) return limit;
  if (model.config().bidirectional) steps = 0;  // buffered, answered at `end`
  // Dimensions come from the client: compare in double so a forged shape cannot overflow.
  const double floats = static_cast<double>(model.OutputSize(1, 1)) * steps * batch +
                        (req.omit_state ? 0.0 : static_cast<double>(model.StateSize(1)) * batch);
  const double per_float = static_cast<double>(ResponseBytesBound(1) - ResponseBytesBound(0));
  const double bytes = static_cast<double>(ResponseBytesBound(0)) + per_float * floats;
  return bytes >= static_cast<double>(limit) ? limit : static_cast<int64_t>(bytes);
}

}  // namespace rnnserve
