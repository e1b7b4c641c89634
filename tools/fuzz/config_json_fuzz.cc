// libFuzzer target for config.json's two parsers: any input must yield an error or a valid
// config that survives the writer and re-parses unchanged (ParseConfigJson / ConfigToJson for a
// bare core config, ParsePipelineJson / PipelineToJson for either form); never a crash or an
// escaping exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/engine/config_json.h"
#include "core/engine/pipeline_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<rnnserve::RnnConfig> parsed = rnnserve::ParseConfigJson(text);
  if (parsed.ok()) {
    if (!parsed->Validate().ok()) std::abort();
    const absl::StatusOr<rnnserve::RnnConfig> again =
        rnnserve::ParseConfigJson(rnnserve::ConfigToJson(*parsed));
    if (!again.ok() || *again != *parsed) std::abort();
  }

  const absl::StatusOr<rnnserve::PipelineConfig> pipeline = rnnserve::ParsePipelineJson(text);
  // A bare core config parses as both, to the same core.
  if (parsed.ok() && (!pipeline.ok() || !pipeline->core_only() || pipeline->rnn != *parsed)) {
    std::abort();
  }
  if (!pipeline.ok()) return 0;
  if (!pipeline->Validate().ok()) std::abort();
  const absl::StatusOr<rnnserve::PipelineConfig> again =
      rnnserve::ParsePipelineJson(rnnserve::PipelineToJson(*pipeline));
  if (!again.ok() || !(*again == *pipeline)) std::abort();
  // What a loaded model computes from the config must not overflow (UBSan watches).
  (void)rnnserve::PipelineParameterCount(*pipeline);
  (void)rnnserve::PipelineParameterSpecs(*pipeline);
  (void)rnnserve::PipelineToString(*pipeline);
  return 0;
}
