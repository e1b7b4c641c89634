// SessionTable: the live sessions by (principal, id), the tombstones of recently ended ones,
// the memory budget (every part of a session: state, buffered input, replay copy, ids) with
// LRU eviction of idle sessions, the per-principal quotas, the per-model limits (max_sessions,
// session_idle_timeout and state_memory_share of the model's serving.json, keyed by the model
// name: all its versions together; one model at its cap never refuses another's sessions),
// idempotent starts,
// admission of new requests and the per-session order of chunks (one in flight, the rest
// queued on the session).
//
// Ownership of sessions: the id namespace is per principal. A session is found only under the
// principal that started it, so another principal's request for the same id finds nothing and
// gets exactly the NOT_FOUND an unknown id gets (tombstones are keyed the same way), and two
// principals may use the same client-chosen id independently: neither can learn that the
// other's session exists. Implementation (sessions_ keyed by Key(principal, id)) and the
// implementation of the quotas are in session_table.cc, session_table_lifecycle.cc and
// session_table_memory.cc.
//
// Thread-safe. One lock, mu_, guards the table and every Session's guarded fields (Session::mu
// refers to it). Methods never log or call the observer under it: what must be told is
// returned in a SessionEvents, which the caller hands to Publish() once the lock is released.
// A chunk's worker calls BeginBatch, AllocateState (first chunk), CompleteBatch and Handoff;
// see session.h for what the worker owns in between.
//
// Ownership: the table shares its sessions with the tasks that point at them. It owns a task
// while the task waits in a session's queue; ending a session hands those tasks to
// SessionEvents::orphans, and Publish answers them.
#ifndef RNNSERVE_CORE_SERVING_SESSION_TABLE_H_
#define RNNSERVE_CORE_SERVING_SESSION_TABLE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_observer.h"
#include "core/serving/serving_options.h"
#include "core/serving/serving_types.h"
#include "core/serving/session.h"
#include "core/serving/session_events.h"

namespace rnnserve {

class SessionTable {
 public:
  // `models`, `options` and `observer` are not owned and must outlive the table.
  SessionTable(const ModelRegistry& models, const ServingOptions& options,
               ServingObserver& observer);
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // Admission: finds task->request's session, or starts it, and sets task->session. True when
  // the task should go to the scheduler now; false when it was queued behind the session's
  // in-flight chunk (the table owns it then). An error refuses the request; the caller keeps
  // the task and answers it.
  // `response_bound`, when set, receives task->result.response_bound (the most bytes its
  // response may take; see ServingCore::SubmitChunk), written under the lock: once the task is
  // queued another worker may run and free it, so the caller must not read the task itself.
  absl::StatusOr<bool> Admit(ChunkTask* task, SessionEvents& events,
                             int64_t* response_bound = nullptr) ABSL_LOCKS_EXCLUDED(mu_);

  // The worker's side. BeginBatch copies what each task needs of its session (task->seen),
  // under one lock for the whole batch.
  void BeginBatch(absl::Span<ChunkTask* const> tasks) ABSL_LOCKS_EXCLUDED(mu_);
  // The first chunk fixes the session's batch size: reserves the state memory (evicting idle
  // sessions if needed) and allocates the state as zeros. `buffered_bytes` more are reserved
  // for buffered input in the same step (bidirectional): both or neither.
  absl::Status AllocateState(ChunkTask* task, int64_t batch, bool unbatched,
                             int64_t buffered_bytes, SessionEvents& events)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Reserves `bytes` more buffered input for the task's session before its buffer grows.
  absl::Status ReserveBufferedInput(ChunkTask* task, int64_t bytes, SessionEvents& events)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Applies the batch's chunks to their sessions (counters, the state buffer flip), ends the
  // sessions that are done and sets task->report_state. Returns the sessions whose next chunk
  // may run once the tasks are answered (phase kAnswering).
  std::vector<std::shared_ptr<Session>> CompleteBatch(absl::Span<ChunkTask* const> tasks,
                                                      SessionEvents& events)
      ABSL_LOCKS_EXCLUDED(mu_);
  // After answering: each session's next queued chunk, to be enqueued; idle sessions go idle.
  std::vector<BatchScheduler::Task*> Handoff(absl::Span<const std::shared_ptr<Session>> sessions)
      ABSL_LOCKS_EXCLUDED(mu_);

  // `principal`'s session `session_id`; another principal's looks unknown.
  absl::StatusOr<SessionSnapshot> GetSession(const std::string& session_id, bool with_state,
                                             const std::string& principal = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the session (reason closed) and returns it as it was.
  absl::StatusOr<SessionSnapshot> CloseSession(const std::string& session_id,
                                               SessionEvents& events,
                                               const std::string& principal = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  // Ends every session (reason shutdown).
  void EndAll(SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends sessions idle past the timeout (reason idle_timeout); returns how many.
  int64_t ReapIdle(absl::Time now, SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);
  // NOT_FOUND saying why `principal`'s `id` is not live: closed, expired, evicted, shut down or
  // unknown. Another principal's ended session is "unknown". The id appears only Quoted().
  absl::Status UnknownSessionError(const std::string& principal, const std::string& id) const
      ABSL_LOCKS_EXCLUDED(mu_);

  void BeginDrain() ABSL_LOCKS_EXCLUDED(mu_);
  bool draining() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t session_count() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t state_bytes() const ABSL_LOCKS_EXCLUDED(mu_);
  MemoryUsage memory() const ABSL_LOCKS_EXCLUDED(mu_);

  // Logs and tells the observer what `events` hold, then answers its orphaned chunks.
  void Publish(SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_) { publisher_.Publish(events); }

 private:
  struct Tombstone {
    SessionEndReason reason;
    absl::Time when;
    uint64_t sequence;  // matches its tombstone_order_ entry
    absl::Duration idle_timeout;  // its model's, for the "expired" message
  };

  // What one principal (or one model) holds, for the per-principal quotas and the per-model
  // limits.
  struct Usage {
    int64_t sessions = 0;
    int64_t bytes = 0;  // every part
  };

  // Which sessions an eviction or a replay shed may pick: all, or only one principal's, or
  // only one model's.
  struct Scope {
    const std::string* principal = nullptr;
    const std::string* model = nullptr;
    bool Contains(const Session& session) const;
  };

  // The table's key: unambiguous for any principal and id (the principal is length-prefixed).
  static std::string Key(const std::string& principal, const std::string& id);

  absl::Status UnknownSessionErrorLocked(const std::string& principal,
                                         const std::string& id) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The live session, or the NOT_FOUND of UnknownSessionErrorLocked.
  absl::StatusOr<std::shared_ptr<Session>> LookupLocked(const std::string& principal,
                                                        const std::string& id) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  Usage UsageLocked(const std::string& principal) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  Usage ModelUsageLocked(const std::string& model) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Adds `sessions` and `bytes` (either may be negative) to the session's principal and model;
  // an entry holding nothing goes.
  void CountLocked(const Session& session, int64_t sessions, int64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The model's own limits, else the server's: its idle timeout, and its share of
  // --max_state_bytes in bytes (0: no per-model cap).
  absl::Duration IdleTimeout(const ServedModel& model) const;
  int64_t ModelMemoryCap(const ServedModel& model) const;
  // The most bytes `req`'s response may take if it computes (its output and state; a
  // bidirectional `end`: the message limit), without looking at replays.
  int64_t ResponseBoundLocked(const Session& session, const ChunkRequest& req) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The id for a start: the client's (validated) or a new random one.
  absl::StatusOr<std::string> NewSessionIdLocked(const ChunkRequest& request) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The least recently used session in `scope` with nothing queued for which `eligible`
  // holds, not `requester`. Null if none.
  std::shared_ptr<Session> LeastRecentlyUsedLocked(
      const Session* requester, const Scope& scope,
      absl::FunctionRef<bool(const Session&)> eligible) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The least recently used session in `scope` that may be evicted now (idle, holding state,
  // idle for at least evict_idle_after, not `requester`). Null if none.
  std::shared_ptr<Session> EvictionVictimLocked(const Session* requester, const Scope& scope,
                                                absl::Time now) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A new session for a start request (or, for a retried start, the live one it created and
  // task->retried_start set), or the refusal.
  absl::StatusOr<std::shared_ptr<Session>> StartLocked(ChunkTask* task, SessionEvents& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The live session a start repeats (same id, or same idempotency key), if any: itself when
  // its start checksum matches, ALREADY_EXISTS when the content differs, null if none.
  absl::StatusOr<std::shared_ptr<Session>> RetriedStartLocked(const ChunkTask& task) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<Session>> FindLocked(const ChunkRequest& request) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Reserves `bytes` more of `part` for `requester` (whose principal and model it counts
  // toward): first under the principal's quota, then under its model's share, then under the
  // global budget; with `evict`, idle sessions' replay copies are dropped and then idle
  // sessions evicted to make room (the principal's own for its quota, the model's own for its
  // share, anyone's for the budget).
  // RESOURCE_EXHAUSTED naming the part when it cannot.
  absl::Status ReserveLocked(Session& requester, MemoryPart part, int64_t bytes, bool evict,
                             SessionEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the replay copy of the least recently used idle session in `scope` holding one (not
  // `requester`): true if one was dropped.
  bool ShedReplayLocked(const Session* requester, const Scope& scope, SessionEvents& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases everything `session` holds of `part`.
  void ReleaseLocked(Session& session, MemoryPart part, SessionEvents& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the totals in events (after any change).
  void NoteMemoryLocked(SessionEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Remembers an ended session's key, dropping the oldest past the count and byte limits.
  void AddTombstoneLocked(const std::string& key, SessionEndReason reason,
                          absl::Duration idle_timeout, SessionEvents& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the session, remembers its key and hands its queued chunks to events.orphans.
  void EndSessionLocked(const std::shared_ptr<Session>& session, SessionEndReason reason,
                        SessionEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionSnapshot SnapshotLocked(const Session& session, bool with_state) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const ModelRegistry& models_;
  const ServingOptions& options_;
  SessionEventPublisher publisher_;

  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  std::unordered_map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  // Principals holding at least one session; entries go when they hold none.
  std::unordered_map<std::string, Usage> usage_ ABSL_GUARDED_BY(mu_);
  // The same by model name (all versions together), for the per-model limits.
  std::unordered_map<std::string, Usage> model_usage_ ABSL_GUARDED_BY(mu_);
  // Keyed by Key(principal, id), like sessions_.
  std::unordered_map<std::string, Tombstone> tombstones_ ABSL_GUARDED_BY(mu_);
  // Oldest first, with the sequence of the tombstone each entry made (a key re-tombstoned
  // later has a newer entry; the older one then removes nothing when it goes).
  std::deque<std::pair<std::string, uint64_t>> tombstone_order_ ABSL_GUARDED_BY(mu_);
  uint64_t tombstone_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t tombstone_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // over tombstone_order_'s entries
  // Key(principal, idempotency_key) -> the session id its start created, while it lives.
  std::unordered_map<std::string, std::string> idempotent_starts_ ABSL_GUARDED_BY(mu_);
  MemoryBytes memory_ ABSL_GUARDED_BY(mu_);  // all sessions, by part
  uint64_t memory_changes_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SESSION_TABLE_H_
