// SessionTable: the live sessions by id, the tombstones of recently ended ones, the state
// memory budget with LRU eviction of idle sessions, admission of new requests and the
// per-session order of chunks (one in flight, the rest queued on the session).
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
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
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
  absl::StatusOr<bool> Admit(ChunkTask* task, SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);

  // The worker's side. BeginBatch copies what each task needs of its session (task->seen),
  // under one lock for the whole batch.
  void BeginBatch(absl::Span<ChunkTask* const> tasks) ABSL_LOCKS_EXCLUDED(mu_);
  // The first chunk fixes the session's batch size: reserves the state memory (evicting idle
  // sessions if needed) and allocates the state as zeros.
  absl::Status AllocateState(ChunkTask* task, int64_t batch, bool unbatched,
                             SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);
  // Applies the batch's chunks to their sessions (counters, the state buffer flip), ends the
  // sessions that are done and sets task->report_state. Returns the sessions whose next chunk
  // may run once the tasks are answered (phase kAnswering).
  std::vector<std::shared_ptr<Session>> CompleteBatch(absl::Span<ChunkTask* const> tasks,
                                                      SessionEvents& events)
      ABSL_LOCKS_EXCLUDED(mu_);
  // After answering: each session's next queued chunk, to be enqueued; idle sessions go idle.
  std::vector<BatchScheduler::Task*> Handoff(absl::Span<const std::shared_ptr<Session>> sessions)
      ABSL_LOCKS_EXCLUDED(mu_);

  absl::StatusOr<SessionSnapshot> GetSession(const std::string& session_id, bool with_state)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the session (reason closed) and returns it as it was.
  absl::StatusOr<SessionSnapshot> CloseSession(const std::string& session_id,
                                               SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends every session (reason shutdown).
  void EndAll(SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends sessions idle past the timeout (reason idle_timeout); returns how many.
  int64_t ReapIdle(absl::Time now, SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);
  // NOT_FOUND saying why `id` is not live: closed, expired, evicted, shut down or unknown.
  absl::Status UnknownSessionError(const std::string& id) const ABSL_LOCKS_EXCLUDED(mu_);

  void BeginDrain() ABSL_LOCKS_EXCLUDED(mu_);
  bool draining() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t session_count() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t state_bytes() const ABSL_LOCKS_EXCLUDED(mu_);

  // Logs and tells the observer what `events` hold, then answers its orphaned chunks.
  void Publish(SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_) { publisher_.Publish(events); }

 private:
  struct Tombstone {
    SessionEndReason reason;
    absl::Time when;
  };

  absl::Status UnknownSessionErrorLocked(const std::string& id) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A new session for a start request, or the refusal.
  absl::StatusOr<std::shared_ptr<Session>> StartLocked(const ChunkRequest& request,
                                                       absl::Time now, SessionEvents& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<Session>> FindLocked(const ChunkRequest& request) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Makes room for `bytes` more state, evicting idle sessions other than `requester`.
  absl::Status ReserveStateBytes(int64_t bytes, const Session* requester, SessionEvents& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddStateBytes(int64_t bytes, SessionEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the session, remembers its id and hands its queued chunks to events.orphans.
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
  std::unordered_map<std::string, Tombstone> tombstones_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> tombstone_order_ ABSL_GUARDED_BY(mu_);
  int64_t state_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t state_bytes_changes_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::mt19937_64 id_rng_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SESSION_TABLE_H_
