// Minimal reader and writer for NumPy's .npy format (versions 1.0, 2.0 and 3.0), enough to move
// float arrays between numpy and the rnnserve client. Reads C-order float32 and float64 arrays
// (float64 converted to float32) and int32 and int64 arrays (token ids: Tensor::ids, each id
// as TokenIdAsFloat keeps it), either byte order; writes little-endian float32 in version
// 1.0. Stateless free functions; thread-safe. The reader treats the file as hostile: a bad file
// yields an INVALID_ARGUMENT status naming the problem, never a crash or a huge allocation.
#ifndef RNNSERVE_CLIENT_NPY_H_
#define RNNSERVE_CLIENT_NPY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/tensor.h"

namespace rnnserve {

// Parses the bytes of a .npy file. Rejects other dtypes ("<i2", "<f2", structured, ...),
// Fortran order, a malformed header, negative or overflowing shapes, and data whose length
// differs from the shape's (trailing bytes included).
absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes);

// Reads `path` with base/file_io's ReadFile (the model loader's reader, with its codes:
// NOT_FOUND for a missing file, FAILED_PRECONDITION for a directory or FIFO) and parses it;
// parse errors are prefixed with the path.
absl::StatusOr<Tensor> ReadNpy(const std::string& path);

// The .npy bytes of `tensor`: version 1.0, "<f4", C order, header padded to 64 bytes as numpy
// writes it.
std::string SerializeNpy(const Tensor& tensor);

// Writes SerializeNpy(tensor) to `path` (replacing it atomically, via base/file_io's
// WriteFile).
absl::Status WriteNpy(const std::string& path, const Tensor& tensor);

}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_NPY_H_
