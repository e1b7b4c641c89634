// ServingCore: the one facade the RPC layer talks to (as in TensorFlow Serving). It owns the
// models, the sessions with their hidden state, the batch scheduler and the idle reaper.
//
// Thread-safe. Work that computes (Forward, stream chunks) is asynchronous: the call returns at
// once and the callback runs later on a scheduler worker thread, so RPC reactions never block.
// Lookups (GetSession, CloseSession, models) answer inline under a short lock.
//
// Sessions: each has one chunk in flight at most; later chunks wait in the session's own queue,
// so a session's chunks are applied, and answered, in request order. A session outlives the
// stream that started it until it is ended, expires (idle timeout) or is evicted (state memory
// budget); ids of recently ended sessions are remembered so clients learn why one is gone.
#ifndef RNNSERVE_CORE_SERVING_SERVING_CORE_H_
#define RNNSERVE_CORE_SERVING_SERVING_CORE_H_

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "base/tensor.h"
#include "core/engine/rnn_model.h"
#include "core/serving/batch_scheduler.h"
#include "core/serving/model_registry.h"

namespace rnnserve {

struct ServingOptions {
  // Sessions with no chunk for this long are removed (reason idle_timeout).
  absl::Duration session_idle_timeout = absl::Minutes(5);
  // Live sessions at most; starting one more gives RESOURCE_EXHAUSTED.
  int64_t max_sessions = 100000;
  // Memory for all sessions' state at most, in bytes. When full, sessions idle for at least
  // evict_idle_after are evicted (least recently used first); else RESOURCE_EXHAUSTED.
  int64_t max_state_bytes = int64_t{4} << 30;
  absl::Duration evict_idle_after = absl::Seconds(60);
  // Sessions (chunks) one engine call advances at most.
  int max_batch = 256;
  // How long a worker may hold a partial batch for more chunks; 0 dispatches eagerly.
  absl::Duration max_queue_delay = absl::ZeroDuration();
  // Compute threads. 0 means one per core.
  int threads = 0;
  // Accept NaN and Inf in inputs (INVALID_ARGUMENT otherwise).
  bool allow_non_finite = false;
  // Ended session ids remembered to tell "expired" or "closed" from "unknown".
  int64_t max_tombstones = 100000;
};

enum class SessionEndReason { kClosed, kIdleTimeout, kEvicted, kShutdown };
const char* SessionEndReasonName(SessionEndReason reason);

// Hooks for metrics; the server implements them with Prometheus. Called from any thread,
// possibly under ServingCore's lock: implementations must be quick and must not call back
// into ServingCore. Default implementations do nothing.
class ServingObserver {
 public:
  virtual ~ServingObserver() = default;
  // A chunk finished computing: `queued` from submission to dispatch, `total` to completion.
  virtual void ChunkDone(const std::string& model, absl::Duration queued, absl::Duration total,
                         int64_t timesteps) {}
  // A stateless Forward computed `timesteps` (T * N).
  virtual void ForwardDone(const std::string& model, int64_t timesteps) {}
  // One engine call advanced `chunks` sessions together.
  virtual void BatchRun(const std::string& model, int64_t chunks) {}
  virtual void SessionStarted(const std::string& model) {}
  virtual void SessionEnded(const std::string& model, SessionEndReason reason) {}
  // Total session state memory changed.
  virtual void StateBytes(int64_t bytes) {}
};

// One request of a streamed session (the core's view of StreamRequest).
struct ChunkRequest {
  std::string session_id;
  std::string model;
  bool start = false;
  bool end = false;
  // Raw bytes, so the RPC layer can hand over the request's buffer without copying it.
  std::optional<TensorBytes> input;
  std::optional<Tensor> h0;
  std::optional<uint64_t> chunk_index;
  bool omit_state = false;  // leave h_n out of the result
  // A problem found while decoding the request (bad encoding). It is answered in the
  // session's order like any other result.
  absl::Status decode_error;
};

struct ChunkResult {
  absl::Status status;
  std::string session_id;
  std::string model;  // the session's model (the request's, when refused before lookup)
  // Raw bytes, so the RPC layer can move them into the response without copying.
  std::optional<TensorBytes> output;  // absent when nothing was computed
  std::optional<TensorBytes> h_n;     // absent when the state is not known yet
  int64_t steps_seen = 0;
  std::optional<uint64_t> chunk_index;
  bool duplicate = false;
  bool ended = false;
};

struct SessionSnapshot {
  std::string session_id;
  std::string model;
  int64_t steps_seen = 0;
  uint64_t next_chunk_index = 0;
  int64_t batch_size = 0;  // 0 while unknown
  bool unbatched = false;
  std::optional<Tensor> h_n;
  absl::Time created;
  absl::Time last_used;
  absl::Duration expires_in;
  int64_t state_bytes = 0;
  int64_t buffered_steps = 0;
};

class ServingCore {
 public:
  using ChunkCallback = std::function<void(ChunkResult)>;
  using ForwardCallback = std::function<void(absl::StatusOr<ForwardResult>)>;

  // `observer` may be null; it is not owned and must outlive the core.
  ServingCore(std::unique_ptr<ModelRegistry> models, const ServingOptions& options,
              ServingObserver* observer);
  // Stops the reaper and the workers (running what is queued). Sessions still alive are ended
  // with reason shutdown.
  ~ServingCore();

  const ModelRegistry& models() const { return *models_; }
  const ServingOptions& options() const { return options_; }

  // Stateless torch `rnn(input, h_0)`; `done` runs on a worker thread.
  void Forward(const std::string& model, Tensor input, std::optional<Tensor> h0,
               ForwardCallback done);

  // Applies one streamed request; `done` runs exactly once, on a worker thread or inline for
  // requests answered without computing (errors, start-only, end-only).
  void SubmitChunk(ChunkRequest request, ChunkCallback done);

  absl::StatusOr<SessionSnapshot> GetSession(const std::string& session_id, bool with_state);
  // Ends the session now (reason closed) and returns it as it was. A chunk in flight finishes
  // first; chunks still queued behind it are answered NOT_FOUND.
  absl::StatusOr<SessionSnapshot> CloseSession(const std::string& session_id);

  // Refuses new sessions and Forward calls with UNAVAILABLE; chunks of live sessions still run.
  void BeginDrain();
  bool draining() const;
  // Waits until no work is queued or running, or until `deadline`; true when idle.
  bool WaitIdle(absl::Time deadline);
  // Ends every session (reason shutdown).
  void EndAllSessions();

  // Removes sessions idle past the timeout; the reaper thread calls it. Returns how many.
  int64_t ReapIdleSessions(absl::Time now);

  int64_t session_count() const;
  int64_t state_bytes() const;

 private:
  struct Session;
  struct ChunkTask;
  struct ForwardTask;
  struct Tombstone {
    SessionEndReason reason;
    absl::Time when;
  };

  void RunBatch(absl::Span<BatchScheduler::Task* const> batch, Workspace& workspace);
  void RunForward(ForwardTask* task, Workspace& workspace);
  void RunChunks(std::vector<ChunkTask*>& tasks, Workspace& workspace);
  // Checks a chunk against its session and prepares buffers; false when the task is answered.
  bool PrepareChunk(ChunkTask* task);
  void CompleteChunks(std::vector<ChunkTask*>& tasks);
  void Respond(ChunkTask* task);

  absl::Status UnknownSessionError(const std::string& id) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::string NewSessionId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes room for `bytes` more state, evicting idle sessions if needed.
  absl::Status ReserveStateBytes(int64_t bytes, const Session* requester)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseStateBytes(int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a session from the table, remembers its id and tells the observer (after unlock,
  // via `ended`). Queued chunks are returned in `orphans` to be answered NOT_FOUND.
  void EndSessionLocked(const std::shared_ptr<Session>& session, SessionEndReason reason,
                        std::vector<ChunkTask*>* orphans) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionSnapshot SnapshotLocked(const Session& session, bool with_state) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status CheckFinite(absl::Span<const float> values, const char* what) const;
  void ReaperLoop();

  const std::unique_ptr<ModelRegistry> models_;
  const ServingOptions options_;
  ServingObserver* const observer_;
  ServingObserver null_observer_;

  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  std::unordered_map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, Tombstone> tombstones_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> tombstone_order_ ABSL_GUARDED_BY(mu_);
  int64_t state_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::mt19937_64 id_rng_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_reaper_;
  std::thread reaper_;
  // Declared last: destroyed first, so workers stop before the state they use goes away.
  std::unique_ptr<BatchScheduler> scheduler_;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SERVING_CORE_H_
