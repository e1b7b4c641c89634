// StreamReactor: one Stream call, as pure flow control. It reads requests one after another and
// hands each to ServingCore without waiting for its result, so many sessions can be interleaved
// on one stream; results come back on worker threads and are written in completion order (each
// session's in request order). Every request read is answered before the stream ends.
//
// Reading pauses (gRPC flow control then holds the client back) while the stream has
// max_in_flight_per_stream requests unanswered, or while its queued responses plus what its
// unanswered requests may still take reach max_stream_buffered_bytes: each unanswered request
// counts its own bytes and the bound ServingCore::SubmitChunk gives for its response (its output
// and state from its shape, or the largest output its session may replay to it). So a client
// that pipelines, or replays large outputs (its own sessions' or another stream's), without
// reading cannot grow the server's memory. One request is always read when none is in flight.
//
// How a stream ends: OK after the client half-closes and everything is answered;
// INVALID_ARGUMENT at a request that does not parse (the requests before it are answered);
// UNAVAILABLE when the server drains (once every request read is answered; responses after the
// drain began say `draining`) or after stream_idle_timeout with nothing read or in flight;
// CANCELLED when the client goes away. The method is registered raw (ByteBuffer) so that the
// parse failure is ours to answer.
//
// Thread-safe: gRPC callbacks, core results and the registry arrive on any thread; the shared
// state is guarded by mu_. Owns itself: created by RnnServiceImpl::Stream; deleted when gRPC is
// done with it (OnDone) and the registry holds no reference. Does not own the core, the metrics
// or the registry; they must outlive it.
#ifndef RNNSERVE_SERVER_STREAM_REACTOR_H_
#define RNNSERVE_SERVER_STREAM_REACTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/serving/serving_core.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.pb.h"
#include "server/metrics.h"
#include "server/stream_registry.h"

namespace rnnserve {

struct ServiceOptions {
  // Requests of one stream being processed before the server stops reading more from it
  // (flow control for clients that pipeline).
  int max_in_flight_per_stream = 4096;
  // Response bytes one stream may hold queued (and expect from requests read but unanswered)
  // before the server stops reading from it; at least max_message_bytes (RnnServer makes 0
  // twice max_message_bytes).
  int64_t max_stream_buffered_bytes = int64_t{128} << 20;
  // A stream with nothing read and nothing in flight for this long ends with UNAVAILABLE (its
  // sessions stay); zero: never.
  absl::Duration stream_idle_timeout = absl::Minutes(10);
  // Largest request or response message; a chunk whose response would be larger is answered
  // with output_truncated or an error instead of breaking the stream.
  int64_t max_message_bytes = 64 << 20;
  // LoadModel, UnloadModel and RepositoryIndex (admin): refused with PERMISSION_DENIED unless
  // set (--allow_model_control); with authentication on, the caller must also be one of
  // model_control_principals (empty: any authenticated principal).
  bool allow_model_control = false;
  std::vector<std::string> model_control_principals;
  // Called after LoadModel/UnloadModel changed what is served (per-model health).
  std::function<void()> on_models_changed;
};

class StreamReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                      public RegisteredStream {
 public:
  // Registers itself in `registry` and starts reading; every chunk it submits carries
  // `principal`. When `principal` is an error (no valid credentials) it finishes the call with
  // that status at once, reading nothing; when the server drains, with UNAVAILABLE.
  StreamReactor(ServingCore* core, Metrics* metrics, const ServiceOptions& options,
                StreamRegistry* registry, absl::StatusOr<std::string> principal);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // RegisteredStream
  void Ref() override;
  void Unref() override;
  void Drain() override;
  void StopReading() override;
  void EndIfIdle(absl::Time now, absl::Duration timeout) override;

 private:
  struct Queued {
    v1::StreamResponse response;
    int64_t bytes = 0;
  };

  // `request_bytes`: the request's wire size, reserved (with its response bound) until now.
  void OnResult(uint64_t request_id, TensorEncoding encoding, int64_t request_bytes,
                ChunkResult result);

  int64_t InFlightLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return unanswered_ + static_cast<int64_t>(queued_.size()) + (writing_ ? 1 : 0);
  }
  // Starts the next read unless reading is over or over a limit (then pauses).
  void MaybeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The client is gone or a write failed: drop queued responses; results still arriving are
  // discarded.
  void BreakLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the stream with `status` once every request read is answered (the first reason wins).
  void EndWhenAnsweredLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The status to Finish() with when the call should be finished now. The caller calls
  // Finish() after releasing mu_; nothing touches `this` after it (it may be deleted).
  std::optional<grpc::Status> FinishNowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishIf(std::optional<grpc::Status> status) ABSL_LOCKS_EXCLUDED(mu_);

  ServingCore* const core_;
  Metrics* const metrics_;
  const ServiceOptions options_;
  StreamRegistry* const registry_;
  std::string principal_;  // "" when auth is off
  std::atomic<int> refs_{1};  // gRPC's until OnDone, plus the registry's while it calls
  // Written by gRPC between StartRead and OnReadDone; only one read is outstanding.
  grpc::ByteBuffer read_buffer_;

  absl::Mutex mu_;
  // State below is protected by mu_.
  // Reads are sequential, but the next one may complete on another thread, handed over inside
  // gRPC core where ThreadSanitizer cannot see it: the lock orders them for it.
  int64_t requests_read_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Queued> queued_ ABSL_GUARDED_BY(mu_);  // answered, waiting for the writer
  grpc::ByteBuffer write_buffer_ ABSL_GUARDED_BY(mu_);  // the response being written
  int64_t write_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int64_t buffered_bytes_ ABSL_GUARDED_BY(mu_) = 0;   // queued_ and write_buffer_
  int64_t unanswered_ ABSL_GUARDED_BY(mu_) = 0;  // submitted, no result yet
  // The unanswered requests' bytes plus their response bounds. May dip below zero for a moment
  // (a result can arrive before SubmitChunk returns its bound).
  int64_t expected_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // A read is outstanding, or the request it read is still being submitted (the next read
  // waits, so that a session's requests reach the core in order).
  bool read_busy_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;  // over a limit; counted in the metrics
  bool no_more_reads_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;  // the client finished sending
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Set: finish with this once everything read is answered, even with a read outstanding.
  std::optional<grpc::Status> end_status_ ABSL_GUARDED_BY(mu_);
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_);
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_STREAM_REACTOR_H_
