#include "core/serving/serving_options.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "base/tensor.h"

namespace rnnserve {

absl::Status CheckFinite(absl::Span<const float> values, const char* what,
                         const ServingOptions& options) {
  if (options.allow_non_finite) return absl::OkStatus();
  const std::optional<int64_t> bad = FirstNonFinite(values.data(), values.size());
  if (!bad.has_value()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, " holds a non-finite value (", values[*bad], ") at flat index ", *bad,
      "; send finite numbers, or start the server with --allow_non_finite"));
}

}  // namespace rnnserve
