#include "core/serving/batch_scheduler.h"

#include <algorithm>

namespace rnnserve {

BatchScheduler::BatchScheduler(const Options& options, RunBatch run_batch)
    : options_(options), num_workers_(std::max(1, options.threads)),
      run_batch_(std::move(run_batch)) {
  for (int i = 0; i < num_workers_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

BatchScheduler::~BatchScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_cv_.SignalAll();
  }
  for (std::thread& t : workers_) t.join();
}

void BatchScheduler::EnqueueLocked(Task* task, absl::Time now) {
  task->enqueued = now;
  queues_[task->key].push_back(task);
  ++queued_;
}

void BatchScheduler::Enqueue(Task* task) {
  absl::MutexLock lock(&mu_);
  EnqueueLocked(task, absl::Now());
  work_cv_.Signal();
}

void BatchScheduler::EnqueueAll(absl::Span<Task* const> tasks) {
  if (tasks.empty()) return;
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  for (Task* task : tasks) EnqueueLocked(task, now);
  WakeFor(tasks.size());
}

void BatchScheduler::Requeue(absl::Span<Task* const> tasks) {
  if (tasks.empty()) return;
  absl::MutexLock lock(&mu_);
  for (Task* task : tasks) {
    task->resumed = true;
    EnqueueLocked(task, task->enqueued);
  }
  WakeFor(tasks.size());
}

void BatchScheduler::WakeFor(size_t tasks) {
  // Wake as many workers as there are tasks; the split decides how they share them.
  if (tasks == 1) {
    work_cv_.Signal();
  } else {
    work_cv_.SignalAll();
  }
}

int64_t BatchScheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_;
}

bool BatchScheduler::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queued_ == 0 && running_ == 0; };
  while (!idle()) {
    if (idle_cv_.WaitWithDeadline(&mu_, deadline)) return idle();
  }
  return true;
}

int BatchScheduler::MaxBatch(const Task& task) const {
  const int own = task.settings != nullptr ? task.settings->max_batch : 0;
  return std::max(1, own > 0 ? own : options_.max_batch);
}

absl::Duration BatchScheduler::MaxQueueDelay(const Task& task) const {
  if (task.settings != nullptr && task.settings->max_queue_delay.has_value()) {
    return *task.settings->max_queue_delay;
  }
  return options_.max_queue_delay;
}

std::deque<BatchScheduler::Task*>* BatchScheduler::NextQueue(absl::Time now, absl::Time* wake) {
  *wake = absl::InfiniteFuture();
  if (queued_ == 0) return nullptr;
  // First ready queue after the last one served, wrapping around. A queue holding a partial
  // batch for its delay is passed over, so it never delays another model's work.
  auto it = queues_.upper_bound(last_key_);
  for (size_t i = 0; i <= queues_.size(); ++i, ++it) {
    if (it == queues_.end()) it = queues_.begin();
    std::deque<Task*>& queue = it->second;
    if (queue.empty()) continue;
    const Task& oldest = *queue.front();
    const absl::Duration delay = MaxQueueDelay(oldest);
    const absl::Time deadline = oldest.enqueued + delay;
    if (stopping_ || delay <= absl::ZeroDuration() ||
        static_cast<int64_t>(queue.size()) >= MaxBatch(oldest) || now >= deadline) {
      last_key_ = it->first;
      return &queue;
    }
    *wake = std::min(*wake, deadline);
  }
  return nullptr;
}

size_t BatchScheduler::BatchSize(const std::deque<Task*>& queue) const {
  const size_t ready = queue.size();
  size_t take = ready;
  // Workers not running a batch, besides this one: each gets an equal share, if that share
  // weighs no less than min_split_batch.
  const int64_t idle = num_workers_ - running_ - 1;
  if (idle > 0 && options_.min_split_batch > 0) {
    const size_t unit = static_cast<size_t>(options_.min_split_batch);
    const size_t enough = static_cast<size_t>(idle + 1) * unit;
    // A resumed task weighs a whole share; counted up to `enough` only, so the loop stays
    // short on a long queue.
    size_t weight = 0;
    for (auto it = queue.begin(); it != queue.end() && weight < enough; ++it) {
      weight += (*it)->resumed ? unit : 1;
    }
    const size_t shares = std::min<size_t>(idle + 1, weight / unit);
    if (shares >= 2) take = (ready + shares - 1) / shares;
  }
  return std::min<size_t>(take, MaxBatch(*queue.front()));
}

void BatchScheduler::WorkerLoop() {
  Workspace workspace;
  std::vector<Task*> batch;
  absl::MutexLock lock(&mu_);
  while (true) {
    // Partial batches are held until their oldest task has waited its key's max_queue_delay.
    absl::Time wake;
    std::deque<Task*>* queue = NextQueue(absl::Now(), &wake);
    if (queue == nullptr) {
      if (stopping_ && queued_ == 0) return;
      if (wake == absl::InfiniteFuture()) {
        work_cv_.Wait(&mu_);
      } else {
        work_cv_.WaitWithDeadline(&mu_, wake);
      }
      continue;
    }
    const size_t take = BatchSize(*queue);
    batch.assign(queue->begin(), queue->begin() + take);
    queue->erase(queue->begin(), queue->begin() + take);
    queued_ -= take;
    ++running_;
    // Idle workers take what is left (the split left them their share).
    if (queued_ > 0 && running_ < num_workers_) work_cv_.SignalAll();
    mu_.Unlock();
    run_batch_(batch, workspace);
    if (options_.max_workspace_bytes > 0) workspace.ShrinkTo(options_.max_workspace_bytes);
    mu_.Lock();
    --running_;
    idle_cv_.SignalAll();
  }
}

}  // namespace rnnserve
