// Checksum64: a fast 64-bit checksum of bytes, for telling whether a retried request carries
// the same content as the one applied (idempotent starts, duplicate chunk_index). Not
// cryptographic and not meant to be stable across versions: values are compared only within
// one process. Stateless free functions; thread-safe.
#ifndef RNNSERVE_BASE_CHECKSUM_H_
#define RNNSERVE_BASE_CHECKSUM_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace rnnserve {

// Checksum of `bytes`, mixed with `seed` (so fields hashed in turn give one checksum).
uint64_t Checksum64(absl::string_view bytes, uint64_t seed = 0);

// Checksum of a shape followed by `bytes` (a tensor's layout and its values together).
uint64_t TensorChecksum(absl::Span<const int64_t> shape, absl::string_view bytes,
                        uint64_t seed = 0);

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_CHECKSUM_H_
