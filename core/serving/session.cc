#include "core/serving/session.h"

#include "base/log.h"
#include "core/serving/client_text.h"

namespace rnnserve {

void AnswerChunk(ChunkTask* task, ServingObserver& observer) {
  std::unique_ptr<ChunkTask> owned(task);
  if (task->result.status.ok()) {
    observer.ChunkDone(task->session->model->name, task->dispatched - task->submitted,
                       absl::Now() - task->submitted,
                       task->compute ? task->steps * task->batch : 0);
  } else if (LogEnabled(LogLevel::kDebug)) {
    // Per-request line: DEBUG, the id quoted (the status text is bounded by its makers).
    LogDebug("session ", Quoted(task->session->id), " request failed: ",
             task->result.status.ToString());
  }
  task->done(std::move(task->result));
}

}  // namespace rnnserve
