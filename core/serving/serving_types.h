// The vocabulary of the ServingCore facade: a streamed session's request and result, a
// session's snapshot, and why a session ended. Plain value types; thread-compatible.
#ifndef RNNSERVE_CORE_SERVING_SERVING_TYPES_H_
#define RNNSERVE_CORE_SERVING_SERVING_TYPES_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/tensor.h"
#include "core/engine/rnn_model.h"

namespace rnnserve {

enum class SessionEndReason { kClosed, kIdleTimeout, kEvicted, kShutdown };

// "closed", "idle_timeout", "evicted" or "shutdown" (the metrics' label values).
inline const char* SessionEndReasonName(SessionEndReason reason) {
  switch (reason) {
    case SessionEndReason::kClosed:
      return "closed";
    case SessionEndReason::kIdleTimeout:
      return "idle_timeout";
    case SessionEndReason::kEvicted:
      return "evicted";
    case SessionEndReason::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

// One request of a streamed session (the core's view of StreamRequest).
struct ChunkRequest {
  std::string session_id;
  // The authenticated caller, "" when authentication is off (anonymous). Sessions are keyed by
  // (principal, session_id): a principal never sees another's sessions.
  std::string principal;
  std::string model;
  bool start = false;
  bool end = false;
  // Raw bytes, so the RPC layer can hand over the request's buffer without copying it.
  std::optional<TensorBytes> input;
  std::optional<Tensor> h0;
  std::optional<uint64_t> chunk_index;
  // With start and no session_id: the client's key that makes a retried start idempotent.
  std::string idempotency_key;
  bool omit_state = false;  // leave h_n out of the result
  // A problem found while decoding the request (bad encoding). It is answered in the
  // session's order like any other result.
  absl::Status decode_error;
};

struct ChunkResult {
  absl::Status status;
  std::string session_id;
  std::string model;  // the session's model (the request's, when refused before lookup)
  // Raw bytes, so the RPC layer can move them into the response without copying.
  std::optional<TensorBytes> output;  // absent when nothing was computed
  std::optional<TensorBytes> h_n;     // absent when the state is not known yet
  int64_t steps_seen = 0;
  std::optional<uint64_t> chunk_index;
  bool duplicate = false;
  bool ended = false;
};

struct SessionSnapshot {
  std::string session_id;
  std::string model;
  int64_t steps_seen = 0;
  uint64_t next_chunk_index = 0;
  int64_t batch_size = 0;  // 0 while unknown
  bool unbatched = false;
  std::optional<Tensor> h_n;
  absl::Time created;
  absl::Time last_used;
  absl::Duration expires_in;
  int64_t state_bytes = 0;
  int64_t buffered_steps = 0;
};

using ChunkCallback = std::function<void(ChunkResult)>;
using ForwardCallback = std::function<void(absl::StatusOr<ForwardResult>)>;

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SERVING_TYPES_H_
