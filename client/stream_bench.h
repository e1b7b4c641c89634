// Load generator for the Stream call: many concurrent sessions, multiplexed over a few gRPC
// streams driven by gRPC's callback API, so thousands of sessions need no thread each. Used by
// `rnnserve-client bench`.
//
// Each session starts on the server (its first chunk rides on the `start` request), then keeps
// exactly one chunk in flight: the next chunk is sent when the previous one is answered (closed
// loop), or, with chunks_per_second > 0, at its slot in a fixed schedule (open loop: chunk k of
// session i is due at start + (i / sessions + k) / chunks_per_second, like a live audio stream;
// a chunk whose predecessor is answered after its slot goes out at once, late, and its latency
// still counts from the slot, so a stalled server cannot hide the queueing it causes). When
// the duration is up (or a session reached max_chunks) each session is ended on the server, so a
// run leaves no sessions behind.
#ifndef RNNSERVE_CLIENT_STREAM_BENCH_H_
#define RNNSERVE_CLIENT_STREAM_BENCH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "proto/tensor_codec.h"

namespace rnnserve {
namespace client {

struct StreamBenchOptions {
  std::string model = "demo";
  int64_t sessions = 64;
  // gRPC streams the sessions are spread over (round robin); <= 0 means min(sessions, 64).
  int64_t streams = 0;
  int64_t chunk_steps = 10;
  // Wall-clock budget for sending new chunks; in-flight chunks are then answered and sessions
  // ended.
  double duration_s = 10;
  // Chunks per session before it ends on its own; 0 for no limit.
  int64_t max_chunks = 0;
  // Chunks per second per session, paced (see above); 0: as fast as answers come.
  double chunks_per_second = 0;
  // Ask the server to leave h_n out of responses.
  bool omit_state = false;
  TensorEncoding encoding = TensorEncoding::kRaw;
  // The model takes token ids (ModelInfo.input_kind "ids"): chunks carry Tensor.ids (all id 0)
  // of shape (chunk_steps, 1) / (1, chunk_steps), whatever `encoding`.
  bool ids = false;
  // Seconds to wait, after the duration, for in-flight chunks and session ends before the
  // streams are cancelled.
  double drain_timeout_s = 30;
};

struct StreamBenchProgress {
  double elapsed_s = 0;
  int64_t chunks = 0;
  int64_t errors = 0;
  int64_t live_sessions = 0;
};

struct StreamBenchReport {
  int64_t sessions = 0;
  int64_t streams = 0;
  int64_t chunk_steps = 0;
  // Seconds from the first request to the end of the sending window (the duration, or sooner
  // when every session reached max_chunks).
  double elapsed_s = 0;
  // Chunks answered within the sending window, the basis of the rates.
  int64_t window_chunks = 0;
  double chunks_per_s = 0;
  double timesteps_per_s = 0;
  // All chunks answered, the drain included.
  int64_t chunks = 0;
  int64_t timesteps = 0;
  // Chunk latency from send (paced: from the chunk's slot) to response, over all answered
  // chunks, in milliseconds.
  double p50_ms = 0, p99_ms = 0, p999_ms = 0, mean_ms = 0, max_ms = 0;
  // Paced runs: how late chunks went out after their slots (the previous chunk of the session
  // was still unanswered, or the client was slow), in milliseconds, and how many went out a
  // whole period or more late (the session fell behind its stream by a chunk).
  double send_lag_p99_ms = 0, send_lag_max_ms = 0;
  int64_t sends_late_by_a_period = 0;
  // Failed requests (in-stream errors) plus sessions lost to a failed stream.
  int64_t errors = 0;
  // A few distinct error messages, for the report.
  std::vector<std::string> error_samples;
};

// Runs the benchmark over `channels` (sessions' streams are spread over them round robin;
// several channels give several HTTP/2 connections). `input_shape` is one chunk's shape, e.g.
// (chunk_steps, 1, C), or (1, chunk_steps, C) for batch_first models. `progress`, if set, is
// called about once a second from the calling thread. Fails only on bad options; request
// failures are counted in the report.
absl::StatusOr<StreamBenchReport> RunStreamBench(
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    const std::vector<int64_t>& input_shape, const StreamBenchOptions& options,
    const std::function<void(const StreamBenchProgress&)>& progress = nullptr);

}  // namespace client
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_STREAM_BENCH_H_
