// ServingObserver: hooks for metrics; the server implements them with Prometheus.
//
// Called from any thread, never under ServingCore's locks (events are published after the
// session table's lock is released), but possibly on a worker between computing a batch and
// answering it: implementations must be quick and must not call back into ServingCore.
// Default implementations do nothing.
#ifndef RNNSERVE_CORE_SERVING_SERVING_OBSERVER_H_
#define RNNSERVE_CORE_SERVING_SERVING_OBSERVER_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "core/serving/serving_types.h"

namespace rnnserve {

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
  // Session memory (any part) or the tombstones changed; reported with StateBytes.
  virtual void MemoryChanged(const MemoryUsage& usage) {}
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SERVING_OBSERVER_H_
