// StreamRegistry: drain and stop-reading reach every open stream, streams added after the drain
// are refused, the watchdog asks every stream to end if idle, and a stream may leave the
// registry (its OnDone) from inside a call without harm.
#include "server/stream_registry.h"

#include <atomic>
#include <functional>

#include "gtest/gtest.h"

namespace rnnserve {
namespace {

class FakeStream : public RegisteredStream {
 public:
  explicit FakeStream(StreamRegistry* /*registry*/) {}
  void Ref() override { ++refs; }
  void Unref() override { --refs; }
  void Drain() override {
    ++drains;
    if (on_drain) on_drain();
  }
  void StopReading() override { ++stops; }
  void EndIfIdle(absl::Time /*now*/, absl::Duration timeout) override {
    ++idle_checks;
    last_timeout = timeout;
  }

  std::atomic<int> refs{0};
  std::atomic<int> drains{0};
  std::atomic<int> stops{0};
  std::atomic<int> idle_checks{0};
  absl::Duration last_timeout;
  std::function<void()> on_drain;
};

TEST(StreamRegistryTest, DrainReachesEveryStreamAndRefusesNewOnes) {
  StreamRegistry registry(absl::ZeroDuration());
  FakeStream a(&registry), b(&registry), late(&registry);
  ASSERT_TRUE(registry.Add(&a));
  ASSERT_TRUE(registry.Add(&b));
  EXPECT_EQ(registry.open_streams(), 2);
  EXPECT_FALSE(registry.draining());
  registry.BeginDrain();
  EXPECT_TRUE(registry.draining());
  EXPECT_EQ(a.drains, 1);
  EXPECT_EQ(b.drains, 1);
  EXPECT_FALSE(registry.Add(&late));
  EXPECT_EQ(registry.open_streams(), 2);
  registry.StopReading();
  EXPECT_EQ(a.stops, 1);
  EXPECT_EQ(b.stops, 1);
  EXPECT_EQ(late.stops, 0);
  // Every reference taken for a call was given back.
  EXPECT_EQ(a.refs, 0);
  EXPECT_EQ(b.refs, 0);
  registry.Remove(&a);
  registry.Remove(&b);
  registry.Remove(&late);  // never added: no effect
  EXPECT_EQ(registry.open_streams(), 0);
}

TEST(StreamRegistryTest, AStreamMayLeaveFromInsideACall) {
  StreamRegistry registry(absl::ZeroDuration());
  FakeStream a(&registry);
  ASSERT_TRUE(registry.Add(&a));
  // As a reactor that finishes in Drain() and whose OnDone runs at once.
  a.on_drain = [&] { registry.Remove(&a); };
  registry.BeginDrain();
  EXPECT_EQ(a.drains, 1);
  EXPECT_EQ(registry.open_streams(), 0);
  EXPECT_EQ(a.refs, 0);
}

TEST(StreamRegistryTest, WatchdogAsksEveryStreamToEndIfIdle) {
  FakeStream a(nullptr);
  {
    StreamRegistry registry(absl::Milliseconds(100));
    ASSERT_TRUE(registry.Add(&a));
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (a.idle_checks < 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    registry.Remove(&a);
  }  // the watchdog is joined: `a` is no longer touched
  EXPECT_GE(a.idle_checks, 3);
  EXPECT_EQ(a.last_timeout, absl::Milliseconds(100));
  EXPECT_EQ(a.refs, 0);
}

}  // namespace
}  // namespace rnnserve
