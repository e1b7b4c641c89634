// ServingOptions: the limits and knobs of ServingCore (the server's flags map onto them), and
// the finiteness check they configure. Plain value type; thread-compatible.
#ifndef RNNSERVE_CORE_SERVING_SERVING_OPTIONS_H_
#define RNNSERVE_CORE_SERVING_SERVING_OPTIONS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace rnnserve {

struct ServingOptions {
  // Sessions with no chunk for this long are removed (reason idle_timeout).
  absl::Duration session_idle_timeout = absl::Minutes(5);
  // Live sessions at most; starting one more gives RESOURCE_EXHAUSTED.
  int64_t max_sessions = 100000;
  // Memory for all sessions' state at most, in bytes. When full, sessions idle for at least
  // evict_idle_after are evicted (least recently used first); else RESOURCE_EXHAUSTED.
  int64_t max_state_bytes = int64_t{4} << 30;
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
  // bytes (counted as for max_state_bytes) one principal may hold. Without authentication every
  // client is the anonymous principal "", so these then cap all clients together.
  int64_t max_sessions_per_principal = 0;
  int64_t max_state_bytes_per_principal = 0;
  // Ended session ids remembered to tell "expired" or "closed" from "unknown".
  int64_t max_tombstones = 100000;
};

// OK when `values` are all finite or options allow non-finite values; else INVALID_ARGUMENT
// naming `what` ("input", "h_0"), the first bad value and its flat index.
absl::Status CheckFinite(absl::Span<const float> values, const char* what,
                         const ServingOptions& options);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SERVING_OPTIONS_H_
