// ChunkBatch: one scheduler batch of session chunks, from preparation to the answers. It checks
// each chunk against its session, advances every unidirectional chunk in one engine call
// (StepBatch) and each bidirectional one on its own, completes the sessions in the table,
// answers the chunks in order, and only then hands each session's next chunk to the scheduler.
// A long unidirectional chunk advances one slice per batch (slicing.h) and goes back to the
// scheduler until it is done; it is answered once, after its last slice.
//
// Not thread-safe: one ChunkBatch runs on one worker thread. It owns its tasks (and, through
// them, the work fields of their sessions; see session.h) from Run() until it answers them.
// It holds no lock itself: the session table's lock is taken inside the table's calls.
#ifndef RNNSERVE_CORE_SERVING_CHUNK_BATCH_H_
#define RNNSERVE_CORE_SERVING_CHUNK_BATCH_H_

#include <vector>

#include "core/engine/rnn_model.h"
#include "core/serving/batch_scheduler.h"
#include "core/serving/serving_observer.h"
#include "core/serving/serving_options.h"
#include "core/serving/session.h"
#include "core/serving/session_table.h"

namespace rnnserve {

class ChunkBatch {
 public:
  // Nothing is owned; all must outlive the batch.
  ChunkBatch(SessionTable& table, BatchScheduler& scheduler, const ServingOptions& options,
             ServingObserver& observer)
      : table_(table), scheduler_(scheduler), options_(options), observer_(observer) {}

  // Runs one slice of `tasks` (all of one model, at most one per session), answers the chunks
  // that are done and requeues the others.
  void Run(std::vector<ChunkTask*>& tasks, Workspace& workspace);

 private:
  // Checks a chunk against its session and prepares its buffers. False when the chunk computes
  // nothing (an error, a duplicate, start- or end-only, or bidirectional input buffered).
  bool Prepare(ChunkTask* task);
  // One slice of engine calls, and finished batch_first outputs converted into the client's
  // layout. Prepares chunks on their first turn; stops chunks whose session closed meanwhile.
  void Compute(std::vector<ChunkTask*>& tasks, Workspace& workspace);
  // Completes the sessions, fills results from the state, answers, and hands off.
  void Finish(std::vector<ChunkTask*>& tasks);

  SessionTable& table_;
  BatchScheduler& scheduler_;
  const ServingOptions& options_;
  ServingObserver& observer_;
  SessionEvents events_;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_CHUNK_BATCH_H_
