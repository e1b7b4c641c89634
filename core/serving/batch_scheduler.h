// BatchScheduler: a fixed pool of worker threads that drains per-model queues of tasks in
// batches. Tasks of one model queued while the workers are busy are handed over together, so
// one engine call advances many sessions (Deep Speech 2's batch dispatch). Dispatch is eager:
// an idle worker takes whatever is queued at once, unless max_queue_delay asks it to wait for
// a fuller batch. Each key (model) may have its own max_batch and max_queue_delay (its
// serving.json); a key holding a partial batch never keeps a worker from another key's ready
// queue. A large queue is split between the workers that are idle, so one big batch
// does not run on one core while another waits. Long requests run in slices (slicing.h): each
// slice's task comes back through Requeue, behind what other sessions and models queued.
//
// Thread-safe. Does not own tasks: the RunBatch callback receives them and is responsible for
// them from then on. The callback runs on a worker thread with that worker's Workspace.
#ifndef RNNSERVE_CORE_SERVING_BATCH_SCHEDULER_H_
#define RNNSERVE_CORE_SERVING_BATCH_SCHEDULER_H_

#include <deque>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/engine/rnn_model.h"
#include "core/serving/model_settings.h"

namespace rnnserve {

class BatchScheduler {
 public:
  // Base of everything the scheduler queues. `key` groups tasks that may share a batch (the
  // model); `enqueued` is set by Enqueue(). `settings`, when set, are the key's own limits
  // (max_batch, max_queue_delay; 0/unset: Options'): every task of a key carries the same ones
  // (its model's), and must outlive the task.
  struct Task {
    virtual ~Task() = default;
    const void* key = nullptr;
    const ModelServingSettings* settings = nullptr;
    absl::Time enqueued;
    bool resumed = false;  // set by Requeue: the task has a slice of work left at least
  };

  struct Options {
    int threads = 2;                             // worker threads
    // Most tasks handed over at once, and how long to wait for a fuller batch (0: eager), for
    // keys whose tasks do not set their own.
    int max_batch = 256;
    absl::Duration max_queue_delay = absl::ZeroDuration();
    // A worker taking a batch while others are idle leaves them equal shares of the queue,
    // when every share has at least this many tasks. A resumed task (a long request's next
    // slice) counts as this many, so two long requests run on two workers. 0 never splits.
    int min_split_batch = 8;
    // After a batch, a worker whose workspace holds more than this releases it; <= 0 never.
    int64_t max_workspace_bytes = 64 << 20;
  };

  using RunBatch = std::function<void(absl::Span<Task* const> batch, Workspace& workspace)>;

  BatchScheduler(const Options& options, RunBatch run_batch);
  // Runs what is queued, then joins the workers.
  ~BatchScheduler();

  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  void Enqueue(Task* task);
  // Enqueues all of `tasks` at once (one lock), so workers never see part of them.
  void EnqueueAll(absl::Span<Task* const> tasks);
  // Puts tasks that ran one slice of their work back at the back of their queues (behind
  // everything queued meanwhile), keeping their enqueue time: their wait for a fuller batch
  // (max_queue_delay) is over, so they never wait for it again.
  void Requeue(absl::Span<Task* const> tasks);

  // Blocks until nothing is queued or running, or `deadline` passes; true when idle.
  bool WaitIdle(absl::Time deadline);

  int64_t queued() const;

 private:
  void WorkerLoop();
  // Picks the next key whose queue is ready to run at `now` (a full batch, or its oldest task
  // waited max_queue_delay, or stopping), round-robin so no model starves. Null if none;
  // `wake` then gets the earliest time one becomes ready (InfiniteFuture when nothing waits).
  std::deque<Task*>* NextQueue(absl::Time now, absl::Time* wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The key's limits: its tasks' own settings, else options_.
  int MaxBatch(const Task& task) const;
  absl::Duration MaxQueueDelay(const Task& task) const;
  // How many of the tasks in `queue` one worker takes now.
  size_t BatchSize(const std::deque<Task*>& queue) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnqueueLocked(Task* task, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WakeFor(size_t tasks) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const int num_workers_;
  const RunBatch run_batch_;
  std::vector<std::thread> workers_;

  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  absl::CondVar work_cv_;  // signalled when tasks arrive or a batch finishes
  absl::CondVar idle_cv_;  // signalled when a batch finishes
  std::map<const void*, std::deque<Task*>> queues_ ABSL_GUARDED_BY(mu_);
  const void* last_key_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;  // batches being run (one per busy worker)
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_BATCH_SCHEDULER_H_
