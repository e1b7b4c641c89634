// Fair compute: how far one turn on a worker advances a long request, and the per-request
// timestep cap. A unidirectional chunk or Forward is computed in slices of at most
// ServingOptions::slice_steps timestep-rows; between slices the task waits at the back of its
// model's queue, so one client's huge request cannot hold a worker while others wait.
// Bidirectional computations cannot be cut in time (their reverse direction needs the whole
// sequence): they run in pieces of as many timesteps of one layer and direction
// (RnnModel::ForwardPiece; docs/design.md).
//
// Pure functions; thread-safe.
#ifndef RNNSERVE_CORE_SERVING_SLICING_H_
#define RNNSERVE_CORE_SERVING_SLICING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "core/serving/serving_options.h"

namespace rnnserve {

// Timesteps the next slice of a request with `remaining` timesteps and `batch` rows computes:
// slice_steps / batch, at least 1, at most `remaining`; all of it when slicing is off.
int64_t SliceSteps(int64_t remaining, int64_t batch, const ServingOptions& options);

// OK when `steps` is within options.max_steps_per_request; else INVALID_ARGUMENT naming both
// (the limit is fixed, so the same request would never succeed on a retry). `what` names the
// request ("this chunk", "the input").
absl::Status CheckStepCap(int64_t steps, const char* what, const ServingOptions& options);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_SLICING_H_
