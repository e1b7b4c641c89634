// Unpredictable identifiers for anything the server hands out (session ids, request ids):
// 128 bits from the operating system's CSPRNG (getrandom(2)), as 32 lowercase hex characters.
// A seeded std::mt19937_64 is not enough: its output reveals its state, so one observed id
// predicts every later one. Stateless free function; thread-safe.
#ifndef RNNSERVE_BASE_RANDOM_ID_H_
#define RNNSERVE_BASE_RANDOM_ID_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace rnnserve {

inline constexpr size_t kRandomIdBytes = 16;  // 128 bits

// Fills `out` from getrandom(2), retrying on EINTR and short reads. Blocks only before the
// kernel's entropy pool is first initialised (early boot). INTERNAL if the kernel refuses.
absl::Status FillRandomBytes(absl::Span<unsigned char> out);

// 32 lowercase hex characters encoding 128 random bits.
absl::StatusOr<std::string> NewRandomId();

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_RANDOM_ID_H_
