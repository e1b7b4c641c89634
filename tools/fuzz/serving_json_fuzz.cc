// libFuzzer target for ParseServingJson: any input must yield an error or settings within the
// ranges serving.json allows; never a crash or an escaping exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/serving/model_settings.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<rnnserve::ServingFile> parsed =
      rnnserve::ParseServingJson(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) {
    if (parsed.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (parsed.status().message().size() > 1000) std::abort();
    return 0;
  }
  const rnnserve::ModelServingSettings& s = parsed->settings;
  if (s.max_batch < 0 || s.max_batch > rnnserve::kMaxServingMaxBatch) std::abort();
  if (s.max_sessions < 0) std::abort();
  if (s.max_queue_delay.has_value() && *s.max_queue_delay < absl::ZeroDuration()) std::abort();
  if (s.session_idle_timeout.has_value() && *s.session_idle_timeout <= absl::ZeroDuration()) {
    std::abort();
  }
  if (s.state_memory_share < 0 || s.state_memory_share > 1) std::abort();
  for (const int64_t version : parsed->version_policy.versions) {
    if (version < 1) std::abort();
  }
  return 0;
}
