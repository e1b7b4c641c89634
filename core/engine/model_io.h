// Model folder format and its parsers: `config.json` (torch.nn.RNN constructor arguments under
// their torch names) and `model.safetensors` (torch state_dict() names). Stateless free
// functions; thread-safe. Every parser treats its input as hostile: a malformed file yields an
// error status, never a crash or an out-of-bounds read.
#ifndef RNNSERVE_CORE_ENGINE_MODEL_IO_H_
#define RNNSERVE_CORE_ENGINE_MODEL_IO_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_parameters.h"

namespace rnnserve {

// Parses a safetensors blob: 8-byte little-endian header length, JSON header, data. Accepts
// F32, F16 and BF16 tensors (the latter two converted to float32) and an optional
// "__metadata__" entry. Rejects unknown dtypes, offsets out of range, overlapping or
// non-contiguous data, sizes that overflow, bad JSON, duplicate names, trailing bytes.
absl::StatusOr<ParameterMap> ParseSafetensors(absl::string_view bytes);

// Writes tensors as F32 safetensors, names sorted, data packed in that order.
std::string SerializeSafetensors(const ParameterMap& tensors);

// Parses config.json: {"input_size": 100, "hidden_size": 10, "num_layers": 2,
// "nonlinearity": "tanh", "bias": true, "batch_first": false, "dropout": 0.0,
// "bidirectional": false}. input_size and hidden_size are required, the rest default as in
// torch; unknown keys and wrong JSON types are errors. The result is Validate()d.
absl::StatusOr<RnnConfig> ParseConfigJson(absl::string_view json);
std::string ConfigToJson(const RnnConfig& config);

struct ModelFiles {
  RnnConfig config;
  ParameterMap parameters;  // checked against config with CheckParameters()
};

// Reads <dir>/config.json and <dir>/model.safetensors. Errors name the file and the problem.
absl::StatusOr<ModelFiles> LoadModelDir(const std::string& dir);
// Writes both files, creating `dir` if needed.
absl::Status SaveModelDir(const std::string& dir, const RnnConfig& config,
                          const ParameterMap& parameters);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_MODEL_IO_H_
