// A model folder: <dir>/config.json (config_json.h) and <dir>/model.safetensors
// (safetensors.h), read and written whole through base/file_io. Stateless free functions;
// thread-safe, though two concurrent SaveModelDir() calls on one folder may leave one call's
// config next to the other's weights.
//
// Hostile-input rules: both files are parsed as hostile (see their headers), read only if they
// are regular files, and the parameters must match the config exactly (CheckParameters) before
// a ModelFiles is returned. Every error names the file it is about.
#ifndef RNNSERVE_CORE_ENGINE_MODEL_DIR_H_
#define RNNSERVE_CORE_ENGINE_MODEL_DIR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_parameters.h"

namespace rnnserve {

struct ModelFiles {
  PipelineConfig config;    // core_only() for a bare RNN/GRU/LSTM config.json
  ParameterMap parameters;  // checked against config with CheckPipelineParameters()
};

struct ModelDirOptions {
  bool allow_non_finite_weights = false;  // false: a NaN or Inf weight refuses the model
};

// Reads <dir>/config.json and <dir>/model.safetensors. Errors name the file and the problem.
// The config is validated (its caps) and its parameter count compared with the values the
// weights file actually holds before per-parameter checks, so a hostile config cannot make
// the loader allocate or report in proportion to its claimed sizes.
absl::StatusOr<ModelFiles> LoadModelDir(const std::string& dir,
                                        const ModelDirOptions& options = {});
// LoadModelDir's checks on files already read into memory (`dir` only names them in errors):
// a caller that reads the files itself, e.g. to check they did not change while being read.
absl::StatusOr<ModelFiles> ParseModelDir(const std::string& dir, absl::string_view config_text,
                                         absl::string_view weights_bytes,
                                         const ModelDirOptions& options = {});
// Writes both files, creating `dir` if needed. Refuses (INVALID_ARGUMENT) a config or
// parameters that LoadModelDir would reject, before writing anything.
absl::Status SaveModelDir(const std::string& dir, const RnnConfig& config,
                          const ParameterMap& parameters);
absl::Status SaveModelDir(const std::string& dir, const PipelineConfig& config,
                          const ParameterMap& parameters);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_MODEL_DIR_H_
