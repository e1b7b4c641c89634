#include "server/stream_registry.h"

#include <algorithm>

namespace rnnserve {

StreamRegistry::StreamRegistry(absl::Duration idle_timeout) : idle_timeout_(idle_timeout) {
  if (idle_timeout_ > absl::ZeroDuration()) watchdog_ = std::thread([this] { Watchdog(); });
}

StreamRegistry::~StreamRegistry() {
  stop_.Notify();
  if (watchdog_.joinable()) watchdog_.join();
}

bool StreamRegistry::Add(RegisteredStream* stream) {
  absl::MutexLock lock(&mu_);
  if (draining_) return false;
  streams_.insert(stream);
  ++open_;
  return true;
}

void StreamRegistry::Remove(RegisteredStream* stream) {
  absl::MutexLock lock(&mu_);
  if (streams_.erase(stream) > 0) --open_;
}

bool StreamRegistry::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

void StreamRegistry::BeginDrain() {
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }
  ForEach([](RegisteredStream* stream) { stream->Drain(); });
}

void StreamRegistry::StopReading() {
  ForEach([](RegisteredStream* stream) { stream->StopReading(); });
}

void StreamRegistry::ForEach(const std::function<void(RegisteredStream*)>& call) {
  std::vector<RegisteredStream*> pinned;
  {
    absl::MutexLock lock(&mu_);
    pinned.reserve(streams_.size());
    for (RegisteredStream* stream : streams_) {
      stream->Ref();
      pinned.push_back(stream);
    }
  }
  // Outside the lock: a call may end the stream, and its OnDone() removes it.
  for (RegisteredStream* stream : pinned) {
    call(stream);
    stream->Unref();
  }
}

void StreamRegistry::Watchdog() {
  // A tenth of the timeout between checks: a stream ends within 110% of it.
  const absl::Duration interval =
      std::clamp(idle_timeout_ / 10, absl::Milliseconds(10), absl::Seconds(1));
  while (!stop_.WaitForNotificationWithTimeout(interval)) {
    const absl::Time now = absl::Now();
    ForEach([&](RegisteredStream* stream) { stream->EndIfIdle(now, idle_timeout_); });
  }
}

}  // namespace rnnserve
