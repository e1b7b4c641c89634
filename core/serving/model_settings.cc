#include "core/serving/model_settings.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "core/engine/json_util.h"

namespace rnnserve {
namespace {

using json_internal::DescribeJson;
using json_internal::GetInt64;
using json_internal::Json;
using json_internal::ParseJsonObject;

constexpr const char* kServingKeys[] = {"max_batch",          "max_queue_delay",
                                        "max_sessions",       "session_idle_timeout",
                                        "state_memory_share", "version_policy"};
constexpr const char* kPolicyKeys[] = {"latest", "all", "specific"};

// Durations beyond these are typos (a queue delay is a few milliseconds; an idle timeout days).
constexpr absl::Duration kMaxQueueDelay = absl::Minutes(1);
constexpr absl::Duration kMaxIdleTimeout = absl::Hours(24 * 365);

absl::Status BadValue(absl::string_view key, absl::string_view expected, const Json& value) {
  return absl::InvalidArgumentError(absl::StrCat("serving.json key '", key, "' must be ",
                                                 expected, ", got ", value.type_name(), " ",
                                                 DescribeJson(value)));
}

// An integer in [lo, hi].
absl::StatusOr<int64_t> IntIn(absl::string_view key, const Json& value, int64_t lo, int64_t hi) {
  int64_t v = 0;
  if (!GetInt64(value, &v) || v < lo || v > hi) {
    return BadValue(key, absl::StrCat("an integer in [", lo, ", ", hi, "]"), value);
  }
  return v;
}

// An absl duration string ("2ms", "10m", "1h30m") in [lo, hi], lo itself only if lo_ok.
absl::StatusOr<absl::Duration> DurationIn(absl::string_view key, const Json& value,
                                          absl::Duration lo, bool lo_ok, absl::Duration hi) {
  const std::string expected =
      absl::StrCat("a duration string such as \"2ms\" or \"10m\", ", lo_ok ? ">= " : "> ",
                   absl::FormatDuration(lo), " and <= ", absl::FormatDuration(hi));
  absl::Duration d;
  if (!value.is_string() || !absl::ParseDuration(value.get_ref<const std::string&>(), &d) ||
      d < lo || (d == lo && !lo_ok) || d > hi) {
    return BadValue(key, expected, value);
  }
  return d;
}

absl::StatusOr<VersionPolicy> ParseVersionPolicy(const Json& value) {
  constexpr absl::string_view kExpected =
      "an object with one of {\"latest\": N}, {\"all\": true}, {\"specific\": [versions]}";
  if (!value.is_object() || value.size() != 1) return BadValue("version_policy", kExpected, value);
  // items().begin() is a temporary proxy, so copy out what it names.
  const auto only = value.begin();
  const std::string key = only.key();
  const Json& policy_value = only.value();
  VersionPolicy policy;
  if (key == "latest") {
    ASSIGN_OR_RETURN(policy.latest,
                     IntIn("version_policy.latest", policy_value, 1, kMaxServingVersion));
    return policy;
  }
  if (key == "all") {
    if (!policy_value.is_boolean() || !policy_value.get<bool>()) {
      return BadValue("version_policy.all", "true", policy_value);
    }
    policy.kind = VersionPolicy::Kind::kAll;
    return policy;
  }
  if (key == "specific") {
    constexpr absl::string_view kSpecific = "version_policy.specific";
    constexpr size_t kMaxVersions = 1024;
    if (!policy_value.is_array() || policy_value.empty() || policy_value.size() > kMaxVersions) {
      return BadValue(kSpecific,
                      absl::StrCat("a non-empty array of at most ", kMaxVersions, " versions"),
                      policy_value);
    }
    policy.kind = VersionPolicy::Kind::kSpecific;
    for (const Json& element : policy_value) {
      ASSIGN_OR_RETURN(const int64_t version,
                       IntIn(kSpecific, element, 1, kMaxServingVersion));
      policy.versions.push_back(version);
    }
    std::sort(policy.versions.begin(), policy.versions.end());
    if (const auto dup = std::adjacent_find(policy.versions.begin(), policy.versions.end());
        dup != policy.versions.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("serving.json key 'version_policy.specific' lists version ", *dup,
                       " twice"));
    }
    return policy;
  }
  // The key comes from the file: quote at most its start.
  constexpr size_t kMaxKeyChars = 64;
  return absl::InvalidArgumentError(absl::StrCat(
      "serving.json key 'version_policy' has unknown key '", key.substr(0, kMaxKeyChars),
      key.size() > kMaxKeyChars ? "..." : "", "'; known keys: ", absl::StrJoin(kPolicyKeys, ", ")));
}

absl::Status SetServingKey(const std::string& key, const Json& value, ServingFile* file) {
  ModelServingSettings& s = file->settings;
  if (key == "max_batch") {
    ASSIGN_OR_RETURN(const int64_t v, IntIn(key, value, 1, kMaxServingMaxBatch));
    s.max_batch = static_cast<int>(v);
  } else if (key == "max_queue_delay") {
    ASSIGN_OR_RETURN(s.max_queue_delay,
                     DurationIn(key, value, absl::ZeroDuration(), true, kMaxQueueDelay));
  } else if (key == "max_sessions") {
    ASSIGN_OR_RETURN(s.max_sessions, IntIn(key, value, 1, int64_t{1} << 40));
  } else if (key == "session_idle_timeout") {
    ASSIGN_OR_RETURN(s.session_idle_timeout,
                     DurationIn(key, value, absl::ZeroDuration(), false, kMaxIdleTimeout));
  } else if (key == "state_memory_share") {
    if (!value.is_number() || !(value.get<double>() > 0) || !(value.get<double>() <= 1)) {
      return BadValue(key, "a number in (0, 1]", value);
    }
    s.state_memory_share = value.get<double>();
  } else if (key == "version_policy") {
    ASSIGN_OR_RETURN(file->version_policy, ParseVersionPolicy(value));
  } else {
    constexpr size_t kMaxKeyChars = 64;
    return absl::InvalidArgumentError(absl::StrCat(
        "serving.json has unknown key '", key.substr(0, kMaxKeyChars),
        key.size() > kMaxKeyChars ? "..." : "", "'; known keys: ",
        absl::StrJoin(kServingKeys, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServingFile> ParseServingJson(absl::string_view text) {
  ASSIGN_OR_RETURN(const Json json, ParseJsonObject(text, "serving.json", "key"));
  ServingFile file;
  for (const auto& [key, value] : json.items()) {
    RETURN_IF_ERROR(SetServingKey(key, value, &file));
  }
  return file;
}

absl::StatusOr<ServingFile> ReadServingFile(const std::string& model_dir) {
  const std::string path = model_dir + "/serving.json";
  absl::StatusOr<std::string> text = ReadFile(path, kMaxServingFileBytes);
  if (absl::IsNotFound(text.status())) return ServingFile{};
  if (!text.ok()) return text.status();
  absl::StatusOr<ServingFile> file = ParseServingJson(*text);
  if (!file.ok()) {
    return absl::Status(file.status().code(), absl::StrCat(path, ": ", file.status().message()));
  }
  return file;
}

}  // namespace rnnserve
