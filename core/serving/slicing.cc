#include "core/serving/slicing.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace rnnserve {

int64_t SliceSteps(int64_t remaining, int64_t batch, const ServingOptions& options) {
  if (options.slice_steps <= 0) return remaining;
  const int64_t steps = std::max<int64_t>(1, options.slice_steps / std::max<int64_t>(1, batch));
  return std::min(remaining, steps);
}

absl::Status CheckStepCap(int64_t steps, const char* what, const ServingOptions& options) {
  if (options.max_steps_per_request <= 0 || steps <= options.max_steps_per_request) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      what, " has T=", steps, " timesteps, over the limit of ", options.max_steps_per_request,
      " per request (--max_steps_per_request); nothing was computed or applied: send at most ",
      options.max_steps_per_request,
      " timesteps per request (a session takes a long sequence as several chunks)"));
}

}  // namespace rnnserve
