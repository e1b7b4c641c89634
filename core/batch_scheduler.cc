#include "core/batch_scheduler.h"

#include <algorithm>

namespace rnnserve {

BatchScheduler::BatchScheduler(const Options& options, RunBatch run_batch)
    : options_(options), run_batch_(std::move(run_batch)) {
  const int threads = std::max(1, options_.threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

BatchScheduler::~BatchScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_cv_.SignalAll();
  }
  for (std::thread& t : workers_) t.join();
}

void BatchScheduler::Enqueue(Task* task) {
  absl::MutexLock lock(&mu_);
  task->enqueued = absl::Now();
  queues_[task->key].push_back(task);
  ++queued_;
  work_cv_.Signal();
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
    const size_t take = std::min<size_t>(queue->size(), std::max(1, options_.max_batch));
    batch.assign(queue->begin(), queue->begin() + take);
    queue->erase(queue->begin(), queue->begin() + take);
    queued_ -= take;
    ++running_;
    mu_.Unlock();
    run_batch_(batch, workspace);
    mu_.Lock();
    --running_;
    idle_cv_.SignalAll();
  }
}

}  // namespace rnnserve
