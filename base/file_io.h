// Whole-file reading and atomic writing, with errors that name the path. Stateless free
// functions; thread-safe. Every model file and .npy file goes through here, so the rules for
// what may be opened live in one place.
#ifndef RNNSERVE_BASE_FILE_IO_H_
#define RNNSERVE_BASE_FILE_IO_H_

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rnnserve {

// Reads a whole regular file. NOT_FOUND names a missing path; anything that is not a regular
// file (a directory, a FIFO, a device) is FAILED_PRECONDITION before a byte is read, so a FIFO
// cannot hang the caller; a file larger than `max_bytes` is RESOURCE_EXHAUSTED.
absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     int64_t max_bytes = std::numeric_limits<int64_t>::max());

// Writes via a temporary file and rename(), so a concurrent reader never sees half a file. A
// path that is a device or a pipe (/dev/stdout, a FIFO) is written in place; a directory is
// FAILED_PRECONDITION.
absl::Status WriteFile(const std::string& path, absl::string_view contents);

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_FILE_IO_H_
