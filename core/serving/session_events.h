// SessionEvents: what a SessionTable call did that must be told outside the table's lock
// (sessions started and ended, the new memory totals, chunks orphaned by an ended
// session). SessionEventPublisher tells it: log lines, observer calls, and the orphans' answers.
//
// SessionEvents is a plain value filled under the table's lock and published after it; it owns
// its orphaned tasks until Publish answers them. SessionEventPublisher is thread-safe; its own
// small lock only orders memory reports, so a late publisher never overwrites a newer
// total with an older one.
#ifndef RNNSERVE_CORE_SERVING_SESSION_EVENTS_H_
#define RNNSERVE_CORE_SERVING_SESSION_EVENTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/serving/serving_observer.h"
#include "core/serving/serving_types.h"
#include "core/serving/session.h"

namespace rnnserve {

// What a SessionTable call did that is told outside its lock.
struct SessionEvents {
  struct Started {
    std::string id;
    std::string principal;
    std::string model;
    bool imported = false;  // state imported with h_0
  };
  struct Ended {
    std::string id;
    std::string principal;
    std::string model;
    SessionEndReason reason;
    int64_t steps_seen = 0;
    absl::Time last_used;
  };
  std::vector<Started> started;
  std::vector<Ended> ended;
  // Chunks of ended sessions, their result.status set; Publish answers them.
  std::vector<ChunkTask*> orphans;
  // The memory totals after the call's last change, with that change's sequence number.
  std::optional<std::pair<uint64_t, MemoryUsage>> memory;
};

class SessionEventPublisher {
 public:
  // `observer` is not owned and must outlive the publisher.
  explicit SessionEventPublisher(ServingObserver& observer) : observer_(observer) {}

  // Logs and tells the observer what `events` hold, answers its orphaned chunks and clears it.
  // Call with no other lock held.
  void Publish(SessionEvents& events) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  ServingObserver& observer_;
  absl::Mutex mu_;
  // State below is protected by mu_.
  uint64_t published_memory_change_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SESSION_EVENTS_H_
