// ServingCore: the one facade the RPC layer talks to (as in TensorFlow Serving). It owns the
// models, the session table, the batch scheduler and the idle reaper, and runs each scheduler
// batch (stateless Forward calls here, session chunks as a ChunkBatch).
//
// Thread-safe. Work that computes (Forward, stream chunks) is asynchronous: the call returns at
// once and the callback runs later on a scheduler worker thread, so RPC reactions never block.
// Lookups (GetSession, CloseSession, models) answer inline under the table's short lock.
//
// Sessions: each has one chunk in flight at most; later chunks wait in the session's own queue,
// so a session's chunks are applied, and answered, in request order. A session outlives the
// stream that started it until it is ended, expires (idle timeout) or is evicted (state memory
// budget); ids of recently ended sessions are remembered so clients learn why one is gone.
// Server-assigned ids are 128 random bits from the OS; client-chosen ones are validated
// (ValidateClientId). Per-principal quotas: ServingOptions::max_*_per_principal.
//
// The pieces: serving_types.h (requests, results, snapshots), serving_options.h,
// serving_observer.h, session.h, session_table.h and chunk_batch.h. They never include this
// file.
#ifndef RNNSERVE_CORE_SERVING_SERVING_CORE_H_
#define RNNSERVE_CORE_SERVING_SERVING_CORE_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "base/tensor.h"
#include "core/engine/rnn_model.h"
#include "core/serving/batch_scheduler.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_observer.h"
#include "core/serving/serving_options.h"
#include "core/serving/serving_types.h"
#include "core/serving/session_table.h"

namespace rnnserve {

class ServingCore {
 public:
  using ChunkCallback = ::rnnserve::ChunkCallback;
  using ForwardCallback = ::rnnserve::ForwardCallback;

  // `observer` may be null; it is not owned and must outlive the core.
  ServingCore(std::unique_ptr<ModelRegistry> models, const ServingOptions& options,
              ServingObserver* observer);
  // Stops the reaper and the workers (running what is queued). Sessions still alive are ended
  // with reason shutdown.
  ~ServingCore();

  const ModelRegistry& models() const { return *models_; }
  // For reloads and LoadModel/UnloadModel (the registry is thread-safe).
  ModelRegistry& mutable_models() { return *models_; }
  const ServingOptions& options() const { return options_; }

  // Stateless torch `rnn(input, h_0)`, or `lstm(input, (h_0, c_0))` (either may be absent:
  // zeros); `done` runs on a worker thread. c_0 on a model without cell state is refused.
  void Forward(const std::string& model, Tensor input, std::optional<Tensor> h0,
               std::optional<Tensor> c0, ForwardCallback done);
  // On `version` of the model (0: the latest READY one).
  void Forward(const std::string& model, int64_t version, Tensor input, std::optional<Tensor> h0,
               std::optional<Tensor> c0, ForwardCallback done);
  void Forward(const std::string& model, Tensor input, std::optional<Tensor> h0,
               ForwardCallback done);

  // Applies one streamed request; `done` runs exactly once, on a worker thread or inline for
  // requests refused before they are queued (errors found at admission). Returns the most bytes
  // the request's response may take (ResponseBytesBound of its output and state, or of a replay
  // it may get; at most max_response_bytes), also given to `done` as result.response_bound, so
  // the RPC layer can stop reading a stream whose answers could outgrow its buffer before any
  // of them is computed.
  int64_t SubmitChunk(ChunkRequest request, ChunkCallback done);

  // Sessions belong to the principal that started them (ChunkRequest::principal; "" without
  // authentication): for any other principal they do not exist, and GetSession, CloseSession
  // and chunks naming them get exactly the NOT_FOUND of an unknown id.
  absl::StatusOr<SessionSnapshot> GetSession(const std::string& session_id, bool with_state,
                                             const std::string& principal = "");
  // Ends the session now (reason closed) and returns it as it was. A chunk in flight finishes
  // first; chunks still queued behind it are answered NOT_FOUND.
  absl::StatusOr<SessionSnapshot> CloseSession(const std::string& session_id,
                                               const std::string& principal = "");

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
  // Session memory by part, and the tombstones.
  MemoryUsage memory() const;

 private:
  struct ForwardTask;

  void RunBatch(absl::Span<BatchScheduler::Task* const> batch, Workspace& workspace);
  void RunForward(ForwardTask* task, Workspace& workspace);
  void ReaperLoop();

  const std::unique_ptr<ModelRegistry> models_;
  const ServingOptions options_;
  ServingObserver null_observer_;
  ServingObserver* const observer_;
  SessionTable table_;

  absl::Notification stop_reaper_;
  std::thread reaper_;
  // Declared last: destroyed first, so workers stop before the state they use goes away.
  std::unique_ptr<BatchScheduler> scheduler_;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SERVING_CORE_H_
