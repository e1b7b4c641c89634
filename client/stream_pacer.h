// Pacer: the clock of a paced `rnnserve-client bench` run (client/stream_bench.h). Streams park
// each chunk that is not yet due; the pacer's own thread sends it at its slot and records how
// late that was. Thread-safe: Park and Finish from any thread, Run on one thread of its own.
// Borrows the senders: each must outlive Run.
#ifndef RNNSERVE_CLIENT_STREAM_PACER_H_
#define RNNSERVE_CLIENT_STREAM_PACER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "rnnserve/v1/rnn_service.pb.h"

namespace rnnserve {
namespace client {

// Nanoseconds on the steady clock: the time base of slots and lags.
int64_t NowNanos();

// What a parked chunk is handed back to at its slot.
class PacedSender {
 public:
  virtual ~PacedSender() = default;
  virtual void SendParked(v1::StreamRequest request) = 0;
};

// A BenchStream parks a chunk from its OnReadDone reaction (or before StartCall) with a hold
// added on its call, so the call cannot finish while the pacer owns one of its chunks; its
// SendParked starts the write, then removes the hold.
class Pacer {
 public:
  void Park(int64_t due_ns, PacedSender* sender, v1::StreamRequest request);
  // Sends chunks as they fall due, until Finish() has been called and nothing is parked.
  void Run();
  // Call once every sender is done (nothing more will be parked).
  void Finish();
  // How late each chunk the pacer sent went out after its slot, in nanoseconds; read after Run
  // has returned.
  const std::vector<int64_t>& lags() const { return lags_; }

 private:
  struct Parked {
    int64_t due_ns = 0;
    PacedSender* sender = nullptr;
    std::shared_ptr<v1::StreamRequest> request;
    bool operator>(const Parked& o) const { return due_ns > o.due_ns; }
  };
  static constexpr int64_t kIdleNanos = 20'000'000;  // longest wait between checks

  std::vector<int64_t> lags_;  // Run's thread alone

  // State below is protected by mu_.
  absl::Mutex mu_;
  absl::CondVar parked_or_finished_;
  std::priority_queue<Parked, std::vector<Parked>, std::greater<Parked>> parked_
      ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace client
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_STREAM_PACER_H_
