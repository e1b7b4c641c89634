#include "core/engine/json_util.h"

#include <limits>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace rnnserve {
namespace json_internal {
namespace {

// What the parse callback saw: nlohmann keeps the last of repeated keys silently, and a
// repeated tensor name or config key must be an error instead.
struct DuplicateKeyTracker {
  struct Level {
    std::string name;  // the key this object is stored under ("" for the root)
    std::set<std::string> keys;
  };
  std::vector<Level> open_objects;
  std::string last_key;
  std::string duplicate;  // first repeated key, if any
  bool duplicate_in_root = false;
  std::string duplicate_owner;  // the key of the object it was repeated in, if not the root

  bool OnEvent(Json::parse_event_t event, const Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.push_back({open_objects.empty() ? "" : last_key, {}});
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key:
        last_key = parsed.get<std::string>();
        if (!open_objects.empty() && !open_objects.back().keys.insert(last_key).second &&
            duplicate.empty()) {
          duplicate = last_key;
          duplicate_in_root = open_objects.size() == 1;
          duplicate_owner = open_objects.back().name;
        }
        break;
      default:
        break;
    }
    return true;  // keep everything; duplicates are reported after the parse
  }
};

}  // namespace

absl::StatusOr<Json> ParseJsonObject(absl::string_view text, absl::string_view what,
                                     absl::string_view top_level_key) {
  // nlohmann stops at a NUL byte as if the input ended there, which would let a header hide
  // arbitrary bytes after "{...}\0"; valid JSON text never contains one.
  if (const size_t nul = text.find('\0'); nul != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not valid JSON: NUL byte at offset ", nul));
  }
  DuplicateKeyTracker tracker;
  Json parsed;
  try {
    parsed = Json::parse(text.begin(), text.end(),
                         [&tracker](int /*depth*/, Json::parse_event_t event, Json& value) {
                           return tracker.OnEvent(event, value);
                         });
  } catch (const Json::exception& e) {
    // e.what() carries the position, e.g. "[json.exception.parse_error.101] parse error at line
    // 1, column 7: ... last read: '...'"; the token it quotes can be most of a hostile header.
    constexpr size_t kMaxMessageChars = 300;
    absl::string_view message = e.what();
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not valid JSON: ", message.substr(0, kMaxMessageChars),
                     message.size() > kMaxMessageChars ? "..." : ""));
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be a JSON object, got ", parsed.type_name()));
  }
  if (!tracker.duplicate.empty()) {
    if (tracker.duplicate_in_root) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has duplicate ", top_level_key, " '", tracker.duplicate, "'"));
    }
    return absl::InvalidArgumentError(absl::StrCat(what, " has duplicate key '", tracker.duplicate,
                                                   "' in '", tracker.duplicate_owner, "'"));
  }
  return parsed;
}

bool GetInt64(const Json& value, int64_t* out) {
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (value.is_number_integer()) {
    *out = value.get<int64_t>();
    return true;
  }
  return false;
}

// dump() recurses per nesting level and a hostile header may nest millions deep, so only
// scalars and flat arrays are printed, and only their start.
std::string DescribeJson(const Json& value) {
  constexpr size_t kMaxChars = 80;
  if (value.is_object()) return "{...}";
  if (value.is_array()) {
    for (const Json& element : value) {
      if (element.is_structured()) return "[...]";
    }
  }
  std::string text = value.dump();
  if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + "...";
  return text;
}

}  // namespace json_internal
}  // namespace rnnserve
