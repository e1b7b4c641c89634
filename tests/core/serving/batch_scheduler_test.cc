#include "core/serving/batch_scheduler.h"

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <set>

#include "absl/synchronization/notification.h"
#include "core/engine/rnn_parameters.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

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

// A partial batch is held until its oldest task has waited max_queue_delay, gathering the
// tasks enqueued one at a time meanwhile; the clock comparison is the scheduler's own deadline
// check, so an ignored delay fails it whatever the timing.
TEST(BatchSchedulerTest, QueueDelayHoldsAPartialBatchUntilTheDelayRunsOut) {
  const absl::Duration delay = absl::Milliseconds(200);
  std::mutex mu;
  std::vector<std::pair<size_t, absl::Duration>> runs;  // batch size, oldest task's wait
  absl::Notification ran;
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 8;
  options.max_queue_delay = delay;
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch, Workspace&) {
    const absl::Duration waited = absl::Now() - batch.front()->enqueued;
    {
      std::lock_guard<std::mutex> lock(mu);
      runs.emplace_back(batch.size(), waited);
    }
    for (auto* t : batch) delete t;
    ran.Notify();
  });
  int key = 0;
  for (int i = 0; i < 3; ++i) {
    auto* t = new TestTask;
    t->key = &key;
    scheduler.Enqueue(t);
  }
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(scheduler.WaitIdle(absl::Now() + absl::Seconds(60)));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(runs.size(), 1u) << "the tasks were not held for one batch";
  EXPECT_EQ(runs[0].first, 3u);
  EXPECT_GE(runs[0].second, delay) << "a partial batch was dispatched before the delay ran out";
}

// With no delay a lone task is dispatched at once, without waiting for company.
TEST(BatchSchedulerTest, NoQueueDelayDispatchesALoneTask) {
  absl::Notification ran;
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 8;
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch, Workspace&) {
    for (auto* t : batch) delete t;
    ran.Notify();
  });
  int key = 0;
  auto* t = new TestTask;
  t->key = &key;
  scheduler.Enqueue(t);
  // Bounded only so that a scheduler that holds the task fails instead of hanging.
  EXPECT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(60)));
}

BatchScheduler::Options SplitOptions(int threads, int max_batch, int min_split_batch) {
  BatchScheduler::Options options;
  options.threads = threads;
  options.max_batch = max_batch;
  options.min_split_batch = min_split_batch;
  return options;
}

std::vector<BatchScheduler::Task*> MakeTasks(int count, const void* key) {
  std::vector<BatchScheduler::Task*> tasks;
  for (int i = 0; i < count; ++i) {
    auto* t = new TestTask;
    t->id = i;
    t->key = key;
    tasks.push_back(t);
  }
  return tasks;
}

// With both workers idle, a queue of 2 x min_split_batch or more is split between them and the
// halves run at the same time: each batch waits inside RunBatch until the other has started.
TEST(BatchSchedulerTest, SplitsALargeQueueAcrossIdleWorkers) {
  std::mutex mu;
  std::vector<size_t> sizes;
  std::multiset<int> seen;
  absl::Notification both_running;
  bool overlapped = true;
  BatchScheduler scheduler(SplitOptions(2, 256, 8), [&](absl::Span<BatchScheduler::Task* const> batch, Workspace&) {
    {
      std::lock_guard<std::mutex> lock(mu);
      sizes.push_back(batch.size());
      for (BatchScheduler::Task* t : batch) seen.insert(static_cast<TestTask*>(t)->id);
      if (sizes.size() == 2) both_running.Notify();
    }
    // Bounded only so that a broken split fails the test instead of hanging it.
    if (!both_running.WaitForNotificationWithTimeout(absl::Seconds(60))) {
      std::lock_guard<std::mutex> lock(mu);
      overlapped = false;
    }
    for (BatchScheduler::Task* t : batch) delete t;
  });
  int key = 0;
  scheduler.EnqueueAll(MakeTasks(33, &key));
  ASSERT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(overlapped) << "the two batches did not run concurrently";
  EXPECT_THAT(sizes, ::testing::UnorderedElementsAre(17u, 16u));
  EXPECT_EQ(seen.size(), 33u);
  for (int i = 0; i < 33; ++i) EXPECT_EQ(seen.count(i), 1u);
}

// Below 2 x min_split_batch, or with every other worker busy, a worker takes the whole queue
// (up to max_batch).
TEST(BatchSchedulerTest, SmallQueuesAndBusyWorkersDoNotSplit) {
  std::mutex mu;
  std::vector<size_t> sizes;
  size_t after_blocker = 0;
  absl::Notification blocker_started, release_blocker, hundred_done;
  int key = 0, other = 0;
  BatchScheduler scheduler(SplitOptions(2, 256, 8), [&](absl::Span<BatchScheduler::Task* const> batch, Workspace&) {
    const bool blocker = batch[0]->key == &other;
    {
      std::lock_guard<std::mutex> lock(mu);
      sizes.push_back(batch.size());
      if (!blocker && blocker_started.HasBeenNotified()) {
        after_blocker += batch.size();
        if (after_blocker == 100) hundred_done.Notify();
      }
    }
    for (BatchScheduler::Task* t : batch) delete t;
    if (blocker) {
      blocker_started.Notify();
      release_blocker.WaitForNotification();
    }
  });
  scheduler.EnqueueAll(MakeTasks(15, &key));
  ASSERT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
  // Hold one worker; the other is then the only idle one and takes all 100 at once.
  scheduler.EnqueueAll(MakeTasks(1, &other));
  blocker_started.WaitForNotification();
  scheduler.EnqueueAll(MakeTasks(100, &key));
  hundred_done.WaitForNotification();
  release_blocker.Notify();
  ASSERT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(sizes, ::testing::ElementsAre(15u, 1u, 100u));
}

TEST(BatchSchedulerTest, SplitRespectsMaxBatch) {
  std::mutex mu;
  std::vector<size_t> sizes;
  BatchScheduler scheduler(SplitOptions(3, 10, 4), [&](absl::Span<BatchScheduler::Task* const> batch, Workspace&) {
    {
      std::lock_guard<std::mutex> lock(mu);
      sizes.push_back(batch.size());
    }
    for (BatchScheduler::Task* t : batch) delete t;
  });
  int key = 0;
  scheduler.EnqueueAll(MakeTasks(45, &key));
  ASSERT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
  std::lock_guard<std::mutex> lock(mu);
  size_t total = 0;
  for (size_t size : sizes) {
    EXPECT_LE(size, 10u);
    total += size;
  }
  EXPECT_EQ(total, 45u);
}

// A worker releases scratch memory grown past max_workspace_bytes by an outsized batch.
TEST(BatchSchedulerTest, WorkerShrinksAnOutsizedWorkspace) {
  RnnConfig config;
  config.input_size = 4;
  config.hidden_size = 16;
  config.num_layers = 2;  // the first layer's output is workspace scratch
  auto model = std::move(RnnModel::Create(config, RandomParameters(config, 7))).value();
  std::mutex mu;
  std::vector<int64_t> bytes_before;
  int64_t grown = 0;
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 1;
  options.max_workspace_bytes = 64 << 10;
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch,
                                        Workspace& workspace) {
    {
      std::lock_guard<std::mutex> lock(mu);
      bytes_before.push_back(workspace.bytes());
    }
    const int id = static_cast<TestTask*>(batch[0])->id;
    ASSERT_TRUE(model->Forward(Random({id == 0 ? 2000 : 1, 8, 4}, 8), nullptr, &workspace).ok());
    if (id == 0) grown = workspace.bytes();
    delete batch[0];
  });
  int key = 0;
  for (int i = 0; i < 3; ++i) {
    auto* t = new TestTask;
    t->id = i;
    t->key = &key;
    scheduler.Enqueue(t);
  }
  ASSERT_TRUE(scheduler.WaitIdle(absl::Now() + absl::Seconds(30)));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(bytes_before.size(), 3u);
  // The outsized first call grew the workspace far past the cap; the next one found it shrunk.
  EXPECT_GT(grown, options.max_workspace_bytes);
  EXPECT_LE(bytes_before[1], options.max_workspace_bytes);
  EXPECT_LE(bytes_before[2], options.max_workspace_bytes);
}

// A task that ran a slice of its work comes back through Requeue, behind everything queued
// meanwhile.
TEST(BatchSchedulerTest, RequeuedTasksGoToTheBackOfTheirQueue) {
  std::mutex mu;
  std::vector<int> runs;
  BatchScheduler* self = nullptr;
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 1;
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch,
                                        Workspace&) {
    auto* task = static_cast<TestTask*>(batch[0]);
    std::lock_guard<std::mutex> lock(mu);
    runs.push_back(task->id);
    // Task 0 takes three turns; the others one.
    if (task->id == 0 && std::count(runs.begin(), runs.end(), 0) < 3) {
      self->Requeue({batch[0]});
    } else {
      delete task;
    }
  });
  self = &scheduler;
  int key = 0;
  std::vector<BatchScheduler::Task*> tasks;
  for (int i = 0; i < 3; ++i) {
    auto* t = new TestTask;
    t->id = i;
    t->key = &key;
    tasks.push_back(t);
  }
  scheduler.EnqueueAll(tasks);
  ASSERT_TRUE(scheduler.WaitIdle(absl::Now() + absl::Seconds(30)));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(runs, ::testing::ElementsAre(0, 1, 2, 0, 0));
}

// A requeued task keeps its enqueue time, so a later slice never waits for a fuller batch
// again: with a queue delay of an hour, a task queued long ago runs three turns at once.
TEST(BatchSchedulerTest, RequeuedTasksDoNotWaitForTheQueueDelayAgain) {
  std::atomic<int> turns{0};
  BatchScheduler* self = nullptr;
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 8;
  options.max_queue_delay = absl::Hours(1);
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch,
                                        Workspace&) {
    if (++turns < 3) {
      self->Requeue(batch);
    } else {
      delete batch[0];
    }
  });
  self = &scheduler;
  auto* task = new TestTask;
  int key = 0;
  task->key = &key;
  task->enqueued = absl::Now() - absl::Hours(2);  // its wait is over
  scheduler.Requeue({task});
  ASSERT_TRUE(scheduler.WaitIdle(absl::Now() + absl::Seconds(30)));
  EXPECT_EQ(turns.load(), 3);
}

// Two long requests' next slices go to two workers, not one batch: a resumed task weighs a
// whole share of the split (min_split_batch) where a fresh one weighs one task.
TEST(BatchSchedulerTest, ResumedTasksAreSplitBetweenIdleWorkers) {
  std::mutex mu;
  std::vector<size_t> sizes;
  BatchScheduler::Options options;
  options.threads = 2;
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch,
                                        Workspace&) {
    std::lock_guard<std::mutex> lock(mu);
    sizes.push_back(batch.size());
    for (BatchScheduler::Task* t : batch) delete t;
  });
  int key = 0;
  std::vector<BatchScheduler::Task*> tasks;
  for (int i = 0; i < 2; ++i) {
    auto* t = new TestTask;
    t->key = &key;
    tasks.push_back(t);
  }
  scheduler.Requeue(tasks);
  ASSERT_TRUE(scheduler.WaitIdle(absl::Now() + absl::Seconds(30)));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(sizes, ::testing::ElementsAre(1u, 1u));
}

// Each key's own max_batch (Task::settings): one worker held while 10 tasks of each of two
// keys pile up; the key capped at 2 never runs more, the other (the server's 64) runs the rest
// at once.
TEST(BatchSchedulerTest, PerKeyMaxBatch) {
  std::mutex mu;
  std::map<const void*, std::vector<size_t>> sizes;
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 64;
  BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch,
                                        Workspace&) {
    opened.wait();
    std::lock_guard<std::mutex> lock(mu);
    sizes[batch.front()->key].push_back(batch.size());
    for (BatchScheduler::Task* t : batch) delete t;
  });
  ModelServingSettings small;
  small.max_batch = 2;
  int key_small = 0, key_big = 0;
  int blocker = 0;
  scheduler.Enqueue(MakeTasks(1, &blocker)[0]);  // holds the worker until the gate opens
  for (int i = 0; i < 10; ++i) {
    BatchScheduler::Task* t = MakeTasks(1, &key_small)[0];
    t->settings = &small;
    scheduler.Enqueue(t);
    scheduler.Enqueue(MakeTasks(1, &key_big)[0]);
  }
  gate.set_value();
  ASSERT_TRUE(scheduler.WaitIdle(absl::Now() + absl::Seconds(30)));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(sizes[&key_small], ::testing::Each(2u));
  EXPECT_EQ(sizes[&key_small].size(), 5u);
  // The blocker may have run alone or not yet have been taken when the rest arrived.
  size_t big_total = 0;
  for (size_t n : sizes[&key_big]) big_total += n;
  EXPECT_EQ(big_total, 10u);
  EXPECT_GE(*std::max_element(sizes[&key_big].begin(), sizes[&key_big].end()), 9u);
}

// Each key's own max_queue_delay: a key holding a partial batch for a minute does not keep the
// single worker from another key's task (no delay), and a key with its own delay 0 dispatches
// at once although the server's delay is a minute.
TEST(BatchSchedulerTest, PerKeyQueueDelayNeverHoldsAnotherKey) {
  std::mutex mu;
  std::vector<const void*> ran_keys;
  absl::Notification eager_ran;
  int key_held = 0, key_eager = 0;
  BatchScheduler::Options options;
  options.threads = 1;
  options.max_batch = 8;
  options.max_queue_delay = absl::Minutes(1);
  {
    BatchScheduler scheduler(options, [&](absl::Span<BatchScheduler::Task* const> batch,
                                          Workspace&) {
      const void* key = batch.front()->key;
      for (BatchScheduler::Task* t : batch) delete t;
      std::lock_guard<std::mutex> lock(mu);
      ran_keys.push_back(key);
      if (key == &key_eager) eager_ran.Notify();
    });
    ModelServingSettings eager;
    eager.max_queue_delay = absl::ZeroDuration();
    scheduler.Enqueue(MakeTasks(1, &key_held)[0]);  // the server's delay: held a minute
    BatchScheduler::Task* t = MakeTasks(1, &key_eager)[0];
    t->settings = &eager;
    scheduler.Enqueue(t);
    // Bounded only so that a scheduler that holds it fails instead of hanging.
    ASSERT_TRUE(eager_ran.WaitForNotificationWithTimeout(absl::Seconds(50)));
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_THAT(ran_keys, ::testing::ElementsAre(&key_eager));
  }  // stopping runs the held task
  EXPECT_THAT(ran_keys, ::testing::ElementsAre(&key_eager, &key_held));
}

}  // namespace
}  // namespace rnnserve
