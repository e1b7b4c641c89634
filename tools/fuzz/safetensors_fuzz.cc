// libFuzzer target for ParseSafetensors: any input must yield an error or a well-formed map
// (every tensor's value count matching its shape), never a crash, leak or out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "base/tensor.h"
#include "core/engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<rnnserve::ParameterMap> parsed =
      rnnserve::ParseSafetensors(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) return 0;
  for (const auto& [name, tensor] : *parsed) {
    if (static_cast<int64_t>(tensor.values.size()) != rnnserve::NumElements(tensor.shape)) {
      std::abort();
    }
  }
  // What we accept, we must be able to write back and read again identically.
  const absl::StatusOr<rnnserve::ParameterMap> again =
      rnnserve::ParseSafetensors(rnnserve::SerializeSafetensors(*parsed));
  if (!again.ok() || again->size() != parsed->size()) std::abort();
  for (const auto& [name, tensor] : *parsed) {
    const auto it = again->find(name);
    if (it == again->end() || it->second.shape != tensor.shape ||
        it->second.values.size() != tensor.values.size()) {
      std::abort();
    }
  }
  return 0;
}
