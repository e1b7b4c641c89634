// Session: one streamed session's state, and ChunkTask: one of its requests on its way through
// the session's queue, the scheduler and a batch. AnswerChunk answers and frees a ChunkTask.
//
// Not thread-safe by itself. A Session's fields are split by owner:
//  - immutable after construction: id, principal, model, created; and the start's fields
//    (idempotency_key, start_checksum, first_chunk_index), set before the session enters the
//    table;
//  - guarded by the SessionTable's lock (`mu` refers to it): the bookkeeping every thread may
//    read (phase, counters, the queue of waiting chunks);
//  - `work`: owned by the worker running the session's in-flight chunk (phase != kIdle), and
//    before the first chunk by the thread that creates the session. Ownership passes from one
//    worker to the next when CompleteBatch/Handoff sets the phase under the table's lock and
//    the next chunk goes through the scheduler's lock, which orders the two workers' accesses.
// While a session is idle (phase kIdle, nothing queued) no worker owns `work`, and the table
// may drop its replay copy under its lock to make room (the next worker is ordered after it).
// The two state buffers are the one exception to that split: state[current] is stable and may
// be read by anyone holding the table's lock (snapshots); the worker writes only
// state[1 - current] and flips `current` under the lock when its chunk completes.
//
// Ownership: sessions are shared (the table, queued tasks and the running batch hold them). A
// ChunkTask is owned by whoever holds it: the session's `pending` queue, the scheduler, the
// batch, and finally AnswerChunk, which deletes it.
#ifndef RNNSERVE_CORE_SERVING_SESSION_H_
#define RNNSERVE_CORE_SERVING_SESSION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/tensor.h"
#include "core/serving/batch_scheduler.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_observer.h"
#include "core/serving/serving_types.h"

namespace rnnserve {

struct ChunkTask;

struct Session {
  // Where the session's in-flight chunk is; a session has one at most.
  enum class Phase {
    kIdle,       // no chunk queued or running: may be expired or evicted
    kScheduled,  // a chunk is queued in the scheduler or computing
    kAnswering,  // its chunk is computed and being answered: may be ended, not yet run again
  };

  Session(std::string id, std::string principal, std::shared_ptr<const ServedModel> model,
          absl::Time created, absl::Mutex& table_mu)
      : id(std::move(id)),
        principal(std::move(principal)),
        model(std::move(model)),
        created(created),
        mu(table_mu),
        last_used(created) {}
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string id;
  // Who started it ("" without authentication); only this principal can see or use it.
  const std::string principal;
  // The model version it is pinned to for its whole life: held, so a version unloaded from
  // the registry stays alive until its last session ends.
  const std::shared_ptr<const ServedModel> model;
  const absl::Time created;
  // Set by the start before the session enters the table, then immutable: the key of a start
  // with a server-assigned id ("" if none), the start request's checksum (model, h_0, input,
  // chunk_index) to acknowledge a retried start, and the index its numbering began at.
  std::string idempotency_key;
  uint64_t start_checksum = 0;
  uint64_t first_chunk_index = 0;
  // The SessionTable's lock. Code holding it names it for the analysis with mu.AssertHeld().
  absl::Mutex& mu;

  // State below is protected by mu.
  absl::Time last_used ABSL_GUARDED_BY(mu);
  int64_t steps_seen ABSL_GUARDED_BY(mu) = 0;
  uint64_t next_chunk_index ABSL_GUARDED_BY(mu) = 0;
  int64_t batch ABSL_GUARDED_BY(mu) = 0;  // N; 0 until the first chunk or h_0 fixes it
  bool unbatched ABSL_GUARDED_BY(mu) = false;
  // Bytes by part reserved against the budget (state_bytes is memory[kState]).
  MemoryBytes memory ABSL_GUARDED_BY(mu);
  Phase phase ABSL_GUARDED_BY(mu) = Phase::kIdle;
  bool ended ABSL_GUARDED_BY(mu) = false;  // removed from the table; queued chunks answered
  // Chunks waiting behind the in-flight one; short (usually empty), empty costs no allocation.
  absl::InlinedVector<ChunkTask*, 2> pending ABSL_GUARDED_BY(mu);
  int current ABSL_GUARDED_BY(mu) = 0;  // which of work.state holds h_n
  int64_t buffered_steps ABSL_GUARDED_BY(mu) = 0;  // work.buffered_steps, as last published
  // The largest response bound of any request admitted so far: a duplicate replays an output
  // of a chunk admitted before it, so its response is never larger than this.
  int64_t largest_response_bound ABSL_GUARDED_BY(mu) = 0;

  // Owned by the worker running the in-flight chunk (see above).
  struct Work {
    std::vector<float> state[2];  // (L*D, N, H) each
    // bidirectional: time-major (T, N, C) input awaiting `end`; its capacity is what is
    // reserved (memory[kBufferedInput]), grown only after the reservation.
    std::vector<float> buffered;
    int64_t buffered_steps = 0;
    std::optional<uint64_t> last_index;  // chunk_index of the last applied chunk, for replays
    // Its output, shared with every duplicate's result: replays queue references, not copies.
    std::shared_ptr<const TensorBytes> last_output;
    // Input checksums of the last kRecentChecksums applied chunk indices (a ring), so a
    // duplicate chunk_index carrying different data is refused.
    static constexpr int kRecentChecksums = 16;
    struct Applied {
      uint64_t index = 0;
      uint64_t checksum = 0;
      bool set = false;
    };
    Applied recent[kRecentChecksums];
  } work;
};

struct ChunkTask : BatchScheduler::Task {
  ChunkRequest request;
  ChunkCallback done;
  std::shared_ptr<Session> session;
  absl::Time submitted;
  absl::Time dispatched;
  ChunkResult result;

  // The session's guarded fields this chunk's worker needs, copied under the table's lock when
  // the batch begins (SessionTable::BeginBatch); the worker owns them from then on.
  struct Seen {
    bool ended = false;  // closed after this chunk left the session's queue
    int64_t batch = 0;
    bool unbatched = false;
    uint64_t next_chunk_index = 0;
    int current = 0;
  } seen;

  // Computed at admission, outside the table's lock: the input's checksum (when the request
  // has a chunk_index or start), and the start request's checksum.
  uint64_t input_checksum = 0;
  uint64_t start_checksum = 0;
  // A start that repeats the live session's start: acknowledged, never applied.
  bool retried_start = false;
  // Set by CompleteBatch: the output's replay copy fits the budget and is kept.
  bool keep_replay = false;

  // Set while the batch prepares the chunk, for chunks that compute.
  bool compute = false;
  int64_t steps = 0;
  int64_t batch = 0;
  bool batched = true;
  const float* input_time_major = nullptr;
  std::vector<float> transposed_input;  // batch_first input packed time-major
  // batch_first output as the engine writes it, (T, N, D*H); other layouts are written straight
  // into result.output.
  std::vector<float> output_time_major;
  // Slicing (slicing.h): turns this chunk has had on a worker, and its timesteps computed so
  // far. A chunk with steps left goes back to the scheduler after its turn, keeping its buffers
  // and its session in phase kScheduled, and is answered once all `steps` are done.
  int turns = 0;
  int64_t steps_done = 0;
  ForwardCursor cursor;  // bidirectional: ForwardPiece's progress (done when steps_done == steps)
  // Set when the batch completes: h_n goes into the result, from this buffer (work.state).
  const float* report_state = nullptr;
};

// What keeping `output` for replays costs: its bytes, its shape and the shared buffer's
// bookkeeping.
inline int64_t ReplayBytes(const TensorBytes& output) {
  return static_cast<int64_t>(output.bytes.size() + output.shape.size() * sizeof(int64_t) +
                              sizeof(TensorBytes)) +
         64;
}

// Reports the task to the observer (or logs its failure), calls `done` with its result and
// deletes it. Call with no lock held.
void AnswerChunk(ChunkTask* task, ServingObserver& observer);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SESSION_H_
