#include "core/engine/model_dir.h"

#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "core/engine/config_json.h"
#include "core/engine/safetensors.h"

namespace rnnserve {
namespace {

constexpr char kConfigFileName[] = "config.json";
constexpr char kWeightsFileName[] = "model.safetensors";
constexpr int64_t kSmallestValueBytes = 2;  // F16 and BF16; F32 takes 4

}  // namespace

absl::StatusOr<ModelFiles> LoadModelDir(const std::string& dir, const ModelDirOptions& options) {
  const std::string config_path = (std::filesystem::path(dir) / kConfigFileName).string();
  const std::string weights_path = (std::filesystem::path(dir) / kWeightsFileName).string();
  absl::StatusOr<std::string> config_text = ReadFile(config_path);
  if (!config_text.ok()) return config_text.status();  // already names the path
  // A bad config is reported before the weights are read.
  if (absl::StatusOr<PipelineConfig> config = ParsePipelineJson(*config_text); !config.ok()) {
    return PrefixStatus(config_path, config.status());
  }
  absl::StatusOr<std::string> weights = ReadFile(weights_path);
  if (!weights.ok()) return weights.status();
  return ParseModelDir(dir, *config_text, *weights, options);
}

absl::StatusOr<ModelFiles> ParseModelDir(const std::string& dir, absl::string_view config_text,
                                         absl::string_view weights_bytes,
                                         const ModelDirOptions& options) {
  const std::string config_path = (std::filesystem::path(dir) / kConfigFileName).string();
  const std::string weights_path = (std::filesystem::path(dir) / kWeightsFileName).string();
  const absl::string_view* weights = &weights_bytes;
  ModelFiles files;
  absl::StatusOr<PipelineConfig> config = ParsePipelineJson(config_text);
  if (!config.ok()) return PrefixStatus(config_path, config.status());
  files.config = *config;
  // ParseConfigJson validated the config: its caps keep ParameterCount exact and cheap. A file
  // too small for the config's claims is refused before it is parsed or anything sized.
  const int64_t values_needed = PipelineParameterCount(files.config);
  if (values_needed > static_cast<int64_t>(weights->size()) / kSmallestValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        weights_path, " is ", weights->size(), " bytes, too small for ",
        PipelineToString(files.config), " from ", config_path, ": it needs ", values_needed,
        " parameter values, at least ", kSmallestValueBytes, " bytes each"));
  }
  absl::StatusOr<ParameterMap> parameters = ParseSafetensors(*weights);
  if (!parameters.ok()) return PrefixStatus(weights_path, parameters.status());
  files.parameters = *std::move(parameters);

  // The config's caps bound ParameterSpecs to a few thousand entries; nothing is allocated
  // from the config's sizes until the file's own tensors are shown to match them.
  const absl::Status matches = CheckPipelineParameters(files.config, files.parameters);
  if (!matches.ok()) {
    int64_t values_in_file = 0;
    for (const auto& [name, tensor] : files.parameters) values_in_file += tensor.num_elements();
    return absl::InvalidArgumentError(absl::StrCat(
        weights_path, ": ", matches.message(), " (", config_path, " needs ",
        values_needed, " parameter values, the file holds ", values_in_file, ")"));
  }
  if (!options.allow_non_finite_weights) {
    const absl::Status finite = CheckFiniteParameters(files.parameters);
    if (!finite.ok()) return PrefixStatus(weights_path, finite);
  }
  return files;
}

absl::Status SaveModelDir(const std::string& dir, const RnnConfig& config,
                          const ParameterMap& parameters) {
  return SaveModelDir(dir, CorePipeline(config), parameters);
}

absl::Status SaveModelDir(const std::string& dir, const PipelineConfig& config,
                          const ParameterMap& parameters) {
  // Refuse to write a folder that LoadModelDir would reject.
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(CheckPipelineParameters(config, parameters));
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(), absl::StrCat("cannot create directory ", dir));
  }
  RETURN_IF_ERROR(
      WriteFile((std::filesystem::path(dir) / kConfigFileName).string(), PipelineToJson(config)));
  return WriteFile((std::filesystem::path(dir) / kWeightsFileName).string(),
                   SerializeSafetensors(parameters));
}

}  // namespace rnnserve
