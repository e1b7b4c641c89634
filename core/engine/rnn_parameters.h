// Named parameter sets of an RNN, GRU or LSTM, keyed by torch's state_dict() names, with the
// checks that a set matches a config and the torch-style default initialisation. Value types;
// thread-compatible.
#ifndef RNNSERVE_CORE_ENGINE_RNN_PARAMETERS_H_
#define RNNSERVE_CORE_ENGINE_RNN_PARAMETERS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/tensor.h"
#include "core/engine/rnn_config.h"

namespace rnnserve {

// state_dict name -> tensor. Ordered by name; use ParameterSpecs() for torch's order.
using ParameterMap = std::map<std::string, Tensor>;

// OK when `params` has exactly the parameters ParameterSpecs(config) lists, each with its
// shape and a value count matching the shape. Otherwise INVALID_ARGUMENT naming the missing,
// unexpected or misshaped parameters (expected and actual shapes), first naming the module
// the tensors look like when that is not the config's (an LSTM's state_dict for a GRU config).
// At most kMaxListedProblems problems are listed, then "and N more".
absl::Status CheckParameters(const RnnConfig& config, const ParameterMap& params);
inline constexpr size_t kMaxListedProblems = 20;
// The same check against any list of specs; `model` names what they describe in messages and
// `prefix` starts the message.
absl::Status CheckParameterSpecs(const std::vector<ParameterSpec>& specs,
                                 const ParameterMap& params, absl::string_view model,
                                 absl::string_view prefix = "");

// The number of values ParameterSpecs(config) holds, computed without listing them; `config`
// must have passed Validate() (its caps keep the count far from overflow).
int64_t ParameterCount(const RnnConfig& config);

// OK when every value is finite; otherwise INVALID_ARGUMENT naming the first NaN or Inf: its
// tensor and flat index.
absl::Status CheckFiniteParameters(const ParameterMap& params);

// torch's default init: every parameter drawn from U(-1/sqrt(H), 1/sqrt(H)), deterministic for
// a given seed (the same seed gives the same numbers; they are not torch's RNG stream).
ParameterMap RandomParameters(const RnnConfig& config, uint64_t seed);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_RNN_PARAMETERS_H_
