// StreamRegistry: the open Stream calls of one service, so that the server can reach them all:
// the drain notice (SIGTERM), the drain deadline (stop reading), and the idle timeout, checked
// by one watchdog thread. Knows nothing of what a stream carries.
//
// Thread-safe. Does not own the reactors: each registers itself when created and leaves in
// OnDone(); the registry pins one (Ref/Unref) only while it calls it, never under its lock, so
// a reactor may finish (and its OnDone run) from inside those calls. Owns the watchdog thread,
// joined by the destructor.
#ifndef RNNSERVE_SERVER_STREAM_REGISTRY_H_
#define RNNSERVE_SERVER_STREAM_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace rnnserve {

// What the registry asks of a stream. Ref/Unref keep it alive across a call.
class RegisteredStream {
 public:
  virtual ~RegisteredStream() = default;
  virtual void Ref() = 0;
  virtual void Unref() = 0;
  // The server drains: mark responses, end the stream once every read request is answered.
  virtual void Drain() = 0;
  // The drain deadline passed: read nothing more, answer what was read, end.
  virtual void StopReading() = 0;
  // Ends the stream when nothing was read or in flight since `now - timeout`.
  virtual void EndIfIdle(absl::Time now, absl::Duration timeout) = 0;
};

class StreamRegistry {
 public:
  // `idle_timeout` zero: streams never time out (no watchdog thread).
  explicit StreamRegistry(absl::Duration idle_timeout);
  ~StreamRegistry();

  // Adds a stream; false when the server is already draining (the caller ends it at once and
  // does not add it).
  bool Add(RegisteredStream* stream);
  void Remove(RegisteredStream* stream);

  int64_t open_streams() const { return open_.load(); }
  bool draining() const;

  // Drain() on every open stream, and on none created later (Add answers false).
  void BeginDrain();
  // StopReading() on every open stream.
  void StopReading();

 private:
  void ForEach(const std::function<void(RegisteredStream*)>& call);
  void Watchdog();

  const absl::Duration idle_timeout_;
  std::atomic<int64_t> open_{0};
  absl::Notification stop_;

  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  absl::flat_hash_set<RegisteredStream*> streams_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;

  std::thread watchdog_;  // last: started after the state it reads
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_STREAM_REGISTRY_H_
