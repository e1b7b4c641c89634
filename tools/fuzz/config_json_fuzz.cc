// libFuzzer target for ParseConfigJson: any input must yield an error or a valid config that
// survives ConfigToJson -> ParseConfigJson unchanged; never a crash or an escaping exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/engine/config_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<rnnserve::RnnConfig> parsed =
      rnnserve::ParseConfigJson(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) return 0;
  if (!parsed->Validate().ok()) std::abort();
  const absl::StatusOr<rnnserve::RnnConfig> again =
      rnnserve::ParseConfigJson(rnnserve::ConfigToJson(*parsed));
  if (!again.ok() || *again != *parsed) std::abort();
  return 0;
}
