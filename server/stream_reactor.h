// StreamReactor: one Stream call, as pure flow control. It reads requests one after another and
// hands each to ServingCore without waiting for its result, so many sessions can be interleaved
// on one stream; results come back on worker threads and are written in completion order (each
// session's in request order). With max_in_flight_per_stream requests submitted and not yet
// answered it stops reading, so a client that pipelines without reading is held back by gRPC
// flow control instead of growing the server's queues. Conversions live in proto_convert.
//
// Thread-safe: gRPC callbacks and core results arrive on any thread; the shared state is
// guarded by mu_. Owns itself: created by RnnServiceImpl::Stream, deletes itself in OnDone().
// Does not own the core, the metrics or the open-stream counter; they must outlive it.
#ifndef RNNSERVE_SERVER_STREAM_REACTOR_H_
#define RNNSERVE_SERVER_STREAM_REACTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/serving/serving_core.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"
#include "server/metrics.h"

namespace rnnserve {

struct ServiceOptions {
  // Requests of one stream being processed before the server stops reading more from it
  // (flow control for clients that pipeline).
  int max_in_flight_per_stream = 4096;
  // Largest response message; a chunk whose response would be larger is answered with an
  // error instead of breaking the stream.
  int64_t max_message_bytes = 64 << 20;
};

class StreamReactor : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse> {
 public:
  // Counts itself in `open_streams` until OnDone, and starts reading; every chunk it submits
  // carries `principal`. When `principal` is an error (no valid credentials) it finishes the
  // call with that status at once, reading nothing.
  StreamReactor(ServingCore* core, Metrics* metrics, const ServiceOptions& options,
                std::atomic<int64_t>* open_streams, absl::StatusOr<std::string> principal);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  void OnResult(uint64_t request_id, TensorEncoding encoding, ChunkResult result);

  // The client is gone or a write failed: drop queued responses; results still arriving are
  // discarded.
  void BreakLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Resumes reading below the in-flight limit; true when the call should be finished now.
  bool AfterProgressLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ServingCore* const core_;
  Metrics* const metrics_;
  const ServiceOptions options_;
  std::atomic<int64_t>* const open_streams_;
  std::string principal_;  // "" when auth is off
  // Written by gRPC between StartRead and OnReadDone; only one read is outstanding.
  v1::StreamRequest request_;

  absl::Mutex mu_;
  // State below is protected by mu_.
  std::deque<v1::StreamResponse> writes_ ABSL_GUARDED_BY(mu_);  // front is being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // submitted, response not yet written
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_STREAM_REACTOR_H_
