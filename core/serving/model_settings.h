// ModelServingSettings: one model's own serving limits, read from the optional serving.json
// beside its versions (repository/NAME/serving.json; docs/model-format.md), and VersionPolicy:
// which of its versions are served. Unset fields fall back to the server's flags
// (ServingOptions). ParseServingJson/ReadServingFile read that file. Plain value types and
// stateless functions; thread-compatible / thread-safe.
//
// Hostile-input rules: the file may hold anything. Anything but a valid serving.json is
// INVALID_ARGUMENT naming the key (unknown keys, wrong types, out-of-range values, repeated
// keys, durations that are not absl duration strings such as "2ms" or "10m"), with messages of
// bounded length; never a crash. tools/fuzz/serving_json_fuzz checks this.
#ifndef RNNSERVE_CORE_SERVING_MODEL_SETTINGS_H_
#define RNNSERVE_CORE_SERVING_MODEL_SETTINGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// The whole of one model's serving.json.
struct ServingFile {
  ModelServingSettings settings;
  VersionPolicy version_policy;

  bool operator==(const ServingFile& o) const {
    return settings == o.settings && version_policy == o.version_policy;
  }
};

// Largest values serving.json accepts (larger ones are typos, not settings).
inline constexpr int kMaxServingMaxBatch = 1 << 20;
inline constexpr int64_t kMaxServingVersion = int64_t{1} << 53;
inline constexpr int64_t kMaxServingFileBytes = 64 << 10;

// Parses serving.json (docs/model-format.md):
//   {"max_batch": 64, "max_queue_delay": "2ms", "max_sessions": 1000,
//    "session_idle_timeout": "10m", "state_memory_share": 0.25,
//    "version_policy": {"latest": 2} | {"all": true} | {"specific": [1, 3]}}
// Every key is optional; an absent key leaves the default (the server's flag, no cap, the
// latest version).
absl::StatusOr<ServingFile> ParseServingJson(absl::string_view text);

// Reads model_dir/serving.json; an absent file gives the defaults. A file that cannot be read
// or is larger than kMaxServingFileBytes is an error naming the path, as is a bad file (the
// parser's message, prefixed with the path).
absl::StatusOr<ServingFile> ReadServingFile(const std::string& model_dir);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_MODEL_SETTINGS_H_
