#include "core/serving/session_events.h"

#include "base/log.h"
#include "core/serving/client_text.h"

namespace rnnserve {

void SessionEventPublisher::Publish(SessionEvents& events) {
  // Per-session lines are DEBUG: at INFO a busy server would log every start and end, and ids
  // are credentials when authentication is off.
  const bool debug = LogEnabled(LogLevel::kDebug);
  for (const SessionEvents::Started& s : events.started) {
    observer_.SessionStarted(s.model);
    if (debug) {
      LogDebug("session ", Quoted(s.id), " started by ", DescribePrincipal(s.principal),
               " model=", Quoted(s.model), s.imported ? " (state imported)" : "");
    }
  }
  int64_t evicted = 0;
  for (const SessionEvents::Ended& e : events.ended) {
    if (e.reason == SessionEndReason::kEvicted) {
      ++evicted;
      if (debug) {
        LogDebug("session ", Quoted(e.id), " evicted (idle since ",
                 absl::FormatTime("%H:%M:%S", e.last_used, absl::UTCTimeZone()),
                 ") to make room for state");
      }
    }
    observer_.SessionEnded(e.model, e.reason);
    if (debug) {
      LogDebug("session ", Quoted(e.id), " of ", DescribePrincipal(e.principal), " ended (",
               SessionEndReasonName(e.reason), ") model=", Quoted(e.model),
               " steps_seen=", e.steps_seen);
    }
  }
  if (evicted > 0) LogInfo("evicted ", evicted, " idle session(s) to make room for state");
  if (events.memory.has_value()) {
    absl::MutexLock lock(&mu_);
    if (events.memory->first > published_memory_change_) {
      published_memory_change_ = events.memory->first;
      observer_.StateBytes(events.memory->second.sessions[MemoryPart::kState]);
      observer_.MemoryChanged(events.memory->second);
    }
  }
  for (ChunkTask* task : events.orphans) AnswerChunk(task, observer_);
  events = SessionEvents();
}

}  // namespace rnnserve
