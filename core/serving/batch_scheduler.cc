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

std::deque<BatchScheduler::Task*>* BatchScheduler::NextQueue() {
  if (queued_ == 0) return nullptr;
  // First non-empty queue after the last one served, wrapping around.
  auto it = queues_.upper_bound(last_key_);
  for (size_t i = 0; i <= queues_.size(); ++i, ++it) {
    if (it == queues_.end()) it = queues_.begin();
    if (!it->second.empty()) {
      last_key_ = it->first;
      return &it->second;
    }
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
  return std::min<size_t>(take, std::max(1, options_.max_batch));
}

void BatchScheduler::WorkerLoop() {
  Workspace workspace;
  std::vector<Task*> batch;
  absl::MutexLock lock(&mu_);
  while (true) {
    std::deque<Task*>* queue = NextQueue();
    if (queue == nullptr) {
      if (stopping_) return;
      work_cv_.Wait(&mu_);
      continue;
    }
    // Optionally hold a partial batch until the oldest task has waited max_queue_delay.
    if (options_.max_queue_delay > absl::ZeroDuration() && !stopping_ &&
        static_cast<int>(queue->size()) < options_.max_batch) {
      const absl::Time deadline = queue->front()->enqueued + options_.max_queue_delay;
      if (absl::Now() < deadline) {
        work_cv_.WaitWithDeadline(&mu_, deadline);
        continue;
      }
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
