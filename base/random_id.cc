#include "base/random_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace rnnserve {

absl::Status FillRandomBytes(absl::Span<unsigned char> out) {
  size_t filled = 0;
  while (filled < out.size()) {
    const ssize_t got = getrandom(out.data() + filled, out.size() - filled, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("getrandom failed: ", std::strerror(errno)));
    }
    filled += static_cast<size_t>(got);  // a short read (signal) continues where it stopped
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> NewRandomId() {
  unsigned char bytes[kRandomIdBytes];
  if (absl::Status status = FillRandomBytes(absl::MakeSpan(bytes)); !status.ok()) return status;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(2 * kRandomIdBytes, '0');
  for (size_t i = 0; i < kRandomIdBytes; ++i) {
    id[2 * i] = kHex[bytes[i] >> 4];
    id[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return id;
}

}  // namespace rnnserve
