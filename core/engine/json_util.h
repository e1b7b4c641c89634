// JSON helpers shared by the JSON-bearing formats (the safetensors header, config.json and
// the serving layer's serving.json). Internal: nlohmann's types appear here and in those
// parsers' .cc files, never in a public header. Stateless free functions; thread-safe.
//
// Hostile-input rules: the text may be anything. ParseJsonObject refuses NUL bytes (nlohmann
// would stop there and ignore the rest), non-objects and repeated keys at any level (nlohmann
// keeps the last silently); DescribeJson never recurses into nested values and caps its length,
// so an error message stays short however the input is built.
#ifndef RNNSERVE_CORE_ENGINE_JSON_UTIL_H_
#define RNNSERVE_CORE_ENGINE_JSON_UTIL_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rnnserve {
namespace json_internal {

using Json = nlohmann::json;

// Parses `text` as a JSON object with no repeated keys at any level. `what` names the text in
// messages ("safetensors header", "config"); `top_level_key` names its keys ("tensor name").
// INVALID_ARGUMENT otherwise.
absl::StatusOr<Json> ParseJsonObject(absl::string_view text, absl::string_view what,
                                     absl::string_view top_level_key);

// A JSON integer that fits int64 (nlohmann stores large non-negative ones as unsigned).
bool GetInt64(const Json& value, int64_t* out);

// A JSON value for an error message: scalars and flat arrays, cut at 80 characters; "{...}" or
// "[...]" for anything nested.
std::string DescribeJson(const Json& value);

}  // namespace json_internal
}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_JSON_UTIL_H_
