// ServingOptions: the limits and knobs of ServingCore (the server's flags map onto them), and
// the checks they configure (finiteness, response sizes). Plain value type; thread-compatible.
#ifndef RNNSERVE_CORE_SERVING_SERVING_OPTIONS_H_
#define RNNSERVE_CORE_SERVING_SERVING_OPTIONS_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace rnnserve {

struct ServingOptions {
  // Sessions with no chunk for this long are removed (reason idle_timeout).
  absl::Duration session_idle_timeout = absl::Minutes(5);
  // Live sessions at most; starting one more gives RESOURCE_EXHAUSTED.
  int64_t max_sessions = 100000;
  // Memory for all sessions at most, in bytes: their state, bidirectional input buffered until
  // `end`, the last output kept for duplicate replays, and their ids with a fixed overhead
  // (kSessionOverheadBytes). When full, sessions idle for at least evict_idle_after are
  // evicted (least recently used first); else RESOURCE_EXHAUSTED. A replay copy that does not
  // fit is not kept (its duplicates are acknowledged without output).
  int64_t max_state_bytes = int64_t{4} << 30;
  // Timesteps a bidirectional session may buffer before `end`; a chunk that would pass this
  // is refused (RESOURCE_EXHAUSTED), nothing buffered.
  int64_t max_buffered_steps = int64_t{1} << 20;
  absl::Duration evict_idle_after = absl::Seconds(60);
  // Sessions (chunks) one engine call advances at most.
  int max_batch = 256;
  // How long a worker may hold a partial batch for more chunks; 0 dispatches eagerly.
  absl::Duration max_queue_delay = absl::ZeroDuration();
  // Compute threads. 0 means one per core.
  int threads = 0;
  // Accept NaN and Inf in inputs (INVALID_ARGUMENT otherwise).
  bool allow_non_finite = false;
  // Per-principal quotas (0 = no limit): live sessions (start-only ones included) and state
  // bytes (all parts, counted as for max_state_bytes) one principal may hold. Without authentication every
  // client is the anonymous principal "", so these then cap all clients together.
  int64_t max_sessions_per_principal = 0;
  int64_t max_state_bytes_per_principal = 0;
  // Ended session ids remembered to tell "expired" or "closed" from "unknown", at most this many
  // and this many bytes (ids and principals plus kTombstoneOverheadBytes each); the oldest go.
  int64_t max_tombstones = 100000;
  int64_t max_tombstone_bytes = int64_t{16} << 20;
  // Largest response message (the server sets it from --max_message_bytes). Outputs and states
  // that could not be sent are refused before anything is computed; <= 0 is no limit.
  int64_t max_response_bytes = 64 << 20;
  // A worker whose scratch buffers grew past this after a call (an outsized request) releases
  // them, so one large request does not pin its memory for the life of the process.
  int64_t max_workspace_bytes = 64 << 20;
  // Fair compute (see slicing.h): a unidirectional chunk or Forward advances at most this many
  // timestep-rows (timesteps x batch rows N, but at least one timestep) per turn on a worker,
  // then goes to the back of its model's queue so other work runs in between. <= 0 never
  // slices. 128 rows are about 1 ms of RNN(256, 256, 2) on one unloaded core at N=1 (7.8 us a
  // step, BENCHMARKS.md); for much cheaper models the per-slice overhead (a requeue and one
  // engine call's setup) is a larger share.
  int64_t slice_steps = 128;
  // A chunk or Forward with more timesteps than this is refused (INVALID_ARGUMENT) before any
  // work; 0 is no cap.
  int64_t max_steps_per_request = int64_t{1} << 20;
  // The time sessions are measured by (start, last use, idle timeout, eviction, tombstones,
  // the reaper). Tests and the session fuzzer inject a fake clock; latency metrics and the
  // batch scheduler keep the wall clock.
  std::function<absl::Time()> clock = absl::Now;
};

// Memory counted per session on top of its ids (the session object, its table entries and
// bookkeeping), and per tombstone on top of its key.
inline constexpr int64_t kSessionOverheadBytes = 512;
inline constexpr int64_t kTombstoneOverheadBytes = 64;

// Upper bound on the bytes of a response carrying `floats` values: 5 bytes per float (the
// larger of the raw and packed-values encodings) plus room for ids, shapes and framing.
int64_t ResponseBytesBound(int64_t floats);

// OK when a response with `output_floats` of output and `state_floats` of h_n fits
// options.max_response_bytes; else RESOURCE_EXHAUSTED naming the size, the limit and `advice`.
absl::Status CheckResponseFits(int64_t output_floats, int64_t state_floats,
                               const ServingOptions& options, const char* advice);

// OK when a session state of `floats_per_row` * batch floats fits a message; else
// RESOURCE_EXHAUSTED naming the largest batch size N that fits.
absl::Status CheckStateFits(int64_t floats_per_row, int64_t batch, const ServingOptions& options);

// OK when `values` are all finite or options allow non-finite values; else INVALID_ARGUMENT
// naming `what` ("input", "h_0"), the first bad value and its flat index.
absl::Status CheckFinite(absl::Span<const float> values, const char* what,
                         const ServingOptions& options);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SERVING_OPTIONS_H_
