// ModelServingSettings: one model's own serving limits, read from the optional serving.json
// beside its versions (repository/NAME/serving.json; docs/model-format.md), and VersionPolicy:
// which of its versions are served. Unset fields fall back to the server's flags
// (ServingOptions). Plain value types; thread-compatible.
#ifndef RNNSERVE_CORE_SERVING_MODEL_SETTINGS_H_
#define RNNSERVE_CORE_SERVING_MODEL_SETTINGS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/time/time.h"

namespace rnnserve {

struct ModelServingSettings {
  // Sessions (chunks) one engine call of this model advances at most; 0: --max_batch.
  int max_batch = 0;
  // How long a worker may hold a partial batch of this model; unset: --max_queue_delay.
  std::optional<absl::Duration> max_queue_delay;
  // Live sessions of this model (all its versions) at most; 0: no per-model cap (the server's
  // --max_sessions still caps all models together).
  int64_t max_sessions = 0;
  // Idle timeout of this model's sessions; unset: --session_idle_timeout.
  std::optional<absl::Duration> session_idle_timeout;
  // Share of --max_state_bytes this model's sessions may hold, in (0, 1]; 0: no per-model cap.
  double state_memory_share = 0;

  bool operator==(const ModelServingSettings& o) const {
    return max_batch == o.max_batch && max_queue_delay == o.max_queue_delay &&
           max_sessions == o.max_sessions && session_idle_timeout == o.session_idle_timeout &&
           state_memory_share == o.state_memory_share;
  }
};

// Which versions of a model are served, as in Triton and TF Serving: the latest N (default:
// the latest one), all of them, or the listed ones.
struct VersionPolicy {
  enum class Kind { kLatest, kAll, kSpecific };
  Kind kind = Kind::kLatest;
  int64_t latest = 1;             // kLatest: how many of the highest versions
  std::vector<int64_t> versions;  // kSpecific: the versions, each > 0

  bool operator==(const VersionPolicy& o) const {
    return kind == o.kind && latest == o.latest && versions == o.versions;
  }
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_MODEL_SETTINGS_H_
