// The vocabulary of the ServingCore facade: a streamed session's request and result, a
// session's snapshot, and why a session ended. Plain value types; thread-compatible.
#ifndef RNNSERVE_CORE_SERVING_SERVING_TYPES_H_
#define RNNSERVE_CORE_SERVING_SERVING_TYPES_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
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

// The parts of a session's memory, all counted against --max_state_bytes.
enum class MemoryPart {
  kState,          // h_n (and an LSTM's c_n), two buffers
  kBufferedInput,  // bidirectional input awaiting `end`
  kReplay,         // the last output, kept for duplicate replays
  kIds,            // id, principal, idempotency key, plus kSessionOverheadBytes
};
inline constexpr int kMemoryParts = 4;

// "state", "buffered_input", "replay" or "ids" (the metrics' label values).
inline const char* MemoryPartName(MemoryPart part) {
  switch (part) {
    case MemoryPart::kState:
      return "state";
    case MemoryPart::kBufferedInput:
      return "buffered_input";
    case MemoryPart::kReplay:
      return "replay";
    case MemoryPart::kIds:
      return "ids";
  }
  return "unknown";
}

// Bytes by part, for one session or for all.
struct MemoryBytes {
  std::array<int64_t, kMemoryParts> parts{};
  int64_t& operator[](MemoryPart p) { return parts[static_cast<int>(p)]; }
  int64_t operator[](MemoryPart p) const { return parts[static_cast<int>(p)]; }
  int64_t total() const { return parts[0] + parts[1] + parts[2] + parts[3]; }
};

// What the sessions and tombstones hold, as the observer is told it.
struct MemoryUsage {
  MemoryBytes sessions;
  int64_t tombstones = 0;
  int64_t tombstone_bytes = 0;
};

// One request of a streamed session (the core's view of StreamRequest).
struct ChunkRequest {
  std::string session_id;
  // The authenticated caller, "" when authentication is off (anonymous). Sessions are keyed by
  // (principal, session_id): a principal never sees another's sessions.
  std::string principal;
  std::string model;
  // With start: the version to pin the session to; 0 = the latest READY one. Later requests
  // may repeat it (or leave it 0); another version is refused.
  int64_t model_version = 0;
  bool start = false;
  bool end = false;
  // Raw bytes, so the RPC layer can hand over the request's buffer without copying it.
  std::optional<TensorBytes> input;
  std::optional<Tensor> h0;
  std::optional<Tensor> c0;  // LSTM only (state import); zeros when absent
  std::optional<uint64_t> chunk_index;
  // With start and no session_id: the client's key that makes a retried start idempotent.
  std::string idempotency_key;
  bool omit_state = false;  // leave h_n and c_n out of the result
  // A problem found while decoding the request (bad encoding). It is answered in the
  // session's order like any other result.
  absl::Status decode_error;
};

struct ChunkResult {
  absl::Status status;
  std::string session_id;
  std::string model;  // the session's model (the request's, when refused before lookup)
  int64_t model_version = 0;  // the session's version; 0 when refused before lookup
  // Raw bytes, so the RPC layer can move them into the response without copying.
  std::optional<TensorBytes> output;  // absent when nothing was computed
  // A duplicate's replayed output: the session's kept copy, shared, never copied per duplicate
  // (the RPC layer encodes from it). Set instead of `output`.
  std::shared_ptr<const TensorBytes> replayed_output;
  std::optional<TensorBytes> h_n;     // absent when the state is not known yet
  std::optional<TensorBytes> c_n;     // LSTM only; present exactly when h_n is
  int64_t steps_seen = 0;
  std::optional<uint64_t> chunk_index;
  bool duplicate = false;
  bool ended = false;
  // The most bytes this request's response may take (what SubmitChunk returned), so the RPC
  // layer can release what it reserved for it.
  int64_t response_bound = 0;
};

struct SessionSnapshot {
  std::string session_id;
  std::string model;
  int64_t model_version = 0;  // the version the session is pinned to
  int64_t steps_seen = 0;
  uint64_t next_chunk_index = 0;
  int64_t batch_size = 0;  // 0 while unknown
  bool unbatched = false;
  std::optional<Tensor> h_n;
  std::optional<Tensor> c_n;  // LSTM only; present exactly when h_n is
  absl::Time created;
  absl::Time last_used;
  absl::Duration expires_in;
  int64_t state_bytes = 0;
  int64_t buffered_steps = 0;
  MemoryBytes memory;  // every part, state included
};

using ChunkCallback = std::function<void(ChunkResult)>;
using ForwardCallback = std::function<void(absl::StatusOr<ForwardResult>)>;

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SERVING_TYPES_H_
