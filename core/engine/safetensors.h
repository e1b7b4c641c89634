// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header naming each tensor's dtype, shape and byte range, then the data.
// model.safetensors in a model folder holds torch's state_dict() under its names. Stateless free
// functions; thread-safe.
//
// Hostile-input rules: ParseSafetensors accepts any bytes and answers a malformed blob with
// INVALID_ARGUMENT, never a crash, an out-of-bounds read or an allocation sized by an unchecked
// header value. Every byte must belong to exactly one tensor. tools/fuzz/safetensors_fuzz
// checks this.
#ifndef RNNSERVE_CORE_ENGINE_SAFETENSORS_H_
#define RNNSERVE_CORE_ENGINE_SAFETENSORS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/engine/rnn_parameters.h"

namespace rnnserve {

// Parses a safetensors blob: 8-byte little-endian header length, JSON header, data. Accepts
// F32, F16 and BF16 tensors (the latter two converted to float32) and an optional
// "__metadata__" entry. Rejects unknown dtypes, offsets out of range, overlapping or
// non-contiguous data, sizes that overflow, bad JSON, duplicate names, trailing bytes.
absl::StatusOr<ParameterMap> ParseSafetensors(absl::string_view bytes);

// Writes tensors as F32 safetensors, names sorted, data packed in that order.
std::string SerializeSafetensors(const ParameterMap& tensors);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_SAFETENSORS_H_
