#include "client/stream_pacer.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/time/time.h"

namespace rnnserve {
namespace client {

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Pacer::Park(int64_t due_ns, PacedSender* sender, v1::StreamRequest request) {
  absl::MutexLock lock(&mu_);
  parked_.push(Parked{due_ns, sender, std::make_shared<v1::StreamRequest>(std::move(request))});
  parked_or_finished_.Signal();
}

void Pacer::Finish() {
  absl::MutexLock lock(&mu_);
  finished_ = true;
  parked_or_finished_.Signal();
}

void Pacer::Run() {
  while (true) {
    Parked next;
    {
      absl::MutexLock lock(&mu_);
      if (parked_.empty() && finished_) return;
      const int64_t wait_ns = parked_.empty() ? kIdleNanos : parked_.top().due_ns - NowNanos();
      if (wait_ns > 0) {
        // Until the earliest slot, or until Park() signals a chunk that may be due sooner.
        parked_or_finished_.WaitWithTimeout(&mu_,
                                            absl::Nanoseconds(std::min(wait_ns, kIdleNanos)));
        continue;
      }
      next = parked_.top();
      parked_.pop();
    }
    // Outside the lock: the send may run a gRPC reaction inline, which may park again.
    lags_.push_back(NowNanos() - next.due_ns);
    next.sender->SendParked(std::move(*next.request));
  }
}

}  // namespace client
}  // namespace rnnserve
