#include "core/serving/session_events.h"

#include "base/log.h"

namespace rnnserve {

void SessionEventPublisher::Publish(SessionEvents& events) {
  for (const SessionEvents::Started& s : events.started) {
    observer_.SessionStarted(s.model);
    LogInfo("session ", s.id, " started model=", s.model, s.imported ? " (state imported)" : "");
  }
  for (const SessionEvents::Ended& e : events.ended) {
    if (e.reason == SessionEndReason::kEvicted) {
      LogInfo("session ", e.id, " evicted (idle since ",
              absl::FormatTime("%H:%M:%S", e.last_used, absl::UTCTimeZone()),
              ") to make room for state");
    }
    observer_.SessionEnded(e.model, e.reason);
    LogInfo("session ", e.id, " ended (", SessionEndReasonName(e.reason), ") model=", e.model,
            " steps_seen=", e.steps_seen);
  }
  if (events.state_bytes.has_value()) {
    absl::MutexLock lock(&mu_);
    if (events.state_bytes->first > published_state_bytes_change_) {
      published_state_bytes_change_ = events.state_bytes->first;
      observer_.StateBytes(events.state_bytes->second);
    }
  }
  for (ChunkTask* task : events.orphans) AnswerChunk(task, observer_);
  events = SessionEvents();
}

}  // namespace rnnserve
