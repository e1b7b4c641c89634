#include "core/batch_scheduler.h"

#include <atomic>
#include <future>
#include <set>

#include "gtest/gtest.h"

namespace rnnserve {
namespace {

struct TestTask : BatchScheduler::Task {
  int id = 0;
};

TEST(BatchSchedulerTest, RunsEveryTaskOnceAndBatchesByKey) {
  std::mutex mu;
  std::multiset<int> seen;
  std::vector<std::set<const void*>> batch_keys;
  size_t largest = 0;
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 8;
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch, Workspace&) {
    opened.wait();  // hold the only worker so that tasks pile up behind the first one
    std::lock_guard<std::mutex> lock(mu);
    std::set<const void*> keys;
    for (BatchScheduler::Task* t : batch) {
      seen.insert(static_cast<TestTask*>(t)->id);
      keys.insert(t->key);
      delete t;
    }
    batch_keys.push_back(keys);
    largest = std::max(largest, batch.size());
  });
  int key_a = 0, key_b = 0;
  for (int i = 0; i < 30; ++i) {
    auto* t = new TestTask;
    t->id = i;
    t->key = i % 3 == 0 ? &key_b : &key_a;
    scheduler.Enqueue(t);
  }
  gate.set_value();
  ASSERT_TRUE(scheduler.WaitIdle(absl::Now() + absl::Seconds(30)));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(seen.size(), 30u);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(seen.count(i), 1u);
  for (const auto& keys : batch_keys) EXPECT_EQ(keys.size(), 1u) << "a batch mixed models";
  EXPECT_EQ(largest, 8u);
  EXPECT_EQ(scheduler.queued(), 0);
}

TEST(BatchSchedulerTest, QueueDelayWaitsForFullerBatch) {
  std::atomic<size_t> first_batch{0};
  std::promise<void> done;
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 4;
  options.max_queue_delay = absl::Seconds(30);
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch, Workspace&) {
    if (first_batch.exchange(batch.size()) == 0) done.set_value();
    for (auto* t : batch) delete t;
  });
  int key = 0;
  for (int i = 0; i < 4; ++i) {
    auto* t = new TestTask;
    t->key = &key;
    scheduler.Enqueue(t);
  }
  // The batch fills before the delay runs out, so it goes at once and whole.
  done.get_future().wait();
  EXPECT_EQ(first_batch.load(), 4u);
}

}  // namespace
}  // namespace rnnserve
