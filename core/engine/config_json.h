// config.json of a model folder: the module ("RNN", "GRU" or "LSTM"; absent means RNN) and its
// torch constructor arguments under their torch names. Stateless free functions; thread-safe.
//
// Hostile-input rules: ParseConfigJson accepts any text and answers anything but a valid config
// with INVALID_ARGUMENT naming the key and what was wrong (unknown keys, wrong JSON types,
// repeated keys and values torch rejects included), never a crash. tools/fuzz/config_json_fuzz
// checks this.
#ifndef RNNSERVE_CORE_ENGINE_CONFIG_JSON_H_
#define RNNSERVE_CORE_ENGINE_CONFIG_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_config.h"

namespace rnnserve {

// Parses config.json: {"module": "RNN", "input_size": 100, "hidden_size": 10, "num_layers": 2,
// "nonlinearity": "tanh", "bias": true, "batch_first": false, "dropout": 0.0,
// "bidirectional": false} (LSTM: "proj_size" too; GRU and LSTM: no "nonlinearity").
// input_size and hidden_size are required, the rest default as in torch; unknown keys, wrong
// JSON types and keys the module does not take are errors. The result is Validate()d.
absl::StatusOr<RnnConfig> ParseConfigJson(absl::string_view json);

// "module", then every key the module takes in torch's constructor order, indented;
// ParseConfigJson reads it back unchanged.
std::string ConfigToJson(const RnnConfig& config);

// Parses either form of config.json (docs/model-format.md): a bare core config as above gives
// a core-only pipeline (CorePipeline); an object with "rnn" (the core's keys plus "path") and
// optional "input_layer" and "head" arrays of layers gives the pipeline. Unknown keys, wrong
// types and piece arguments torch rejects are INVALID_ARGUMENT naming the key or the piece;
// the result is Validate()d.
absl::StatusOr<PipelineConfig> ParsePipelineJson(absl::string_view json);
// The form ParsePipelineJson reads back unchanged: ConfigToJson for a core-only pipeline.
std::string PipelineToJson(const PipelineConfig& config);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_CONFIG_JSON_H_
