#include "base/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace rnnserve {
namespace {

absl::Status ErrnoStatus(int error_number, absl::string_view action, const std::string& path) {
  return absl::ErrnoToStatus(error_number, absl::StrCat("cannot ", action, " ", path));
}

absl::Status WriteAll(int fd, absl::string_view contents, const std::string& path) {
  while (!contents.empty()) {
    const ssize_t n = ::write(fd, contents.data(), contents.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write", path);
    }
    contents.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, int64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore the flag.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("file not found: ", path));
    return ErrnoStatus(errno, "open", path);
  }
  std::string contents;
  absl::Status status;
  struct stat info;
  if (::fstat(fd, &info) != 0) {
    status = ErrnoStatus(errno, "stat", path);
  } else if (!S_ISREG(info.st_mode)) {
    // A directory opens fine but read() fails with a confusing EISDIR; say what is wrong.
    status = absl::FailedPreconditionError(absl::StrCat("not a regular file: ", path));
  } else if (info.st_size > max_bytes) {
    status = absl::ResourceExhaustedError(absl::StrCat(
        path, " is ", info.st_size, " bytes, more than the ", max_bytes, " allowed"));
  } else {
    contents.reserve(static_cast<size_t>(info.st_size));
    char buffer[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        status = ErrnoStatus(errno, "read", path);
        break;
      }
      contents.append(buffer, static_cast<size_t>(n));
      if (static_cast<int64_t>(contents.size()) > max_bytes) {
        // The file grew while it was read.
        status = absl::ResourceExhaustedError(
            absl::StrCat(path, " is more than the ", max_bytes, " bytes allowed"));
        break;
      }
    }
  }
  ::close(fd);
  if (!status.ok()) return status;
  return contents;
}

absl::Status WriteFile(const std::string& path, absl::string_view contents) {
  struct stat info;
  if (::stat(path.c_str(), &info) == 0 && !S_ISREG(info.st_mode)) {
    if (S_ISDIR(info.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("cannot write ", path, ": a directory"));
    }
    // A device or pipe (/dev/stdout, a FIFO) cannot be replaced by rename: write it in place.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return ErrnoStatus(errno, "open", path);
    absl::Status status = WriteAll(fd, contents, path);
    if (::close(fd) != 0 && status.ok()) status = ErrnoStatus(errno, "close", path);
    return status;
  }
  const std::string temp_path = path + ".tmp";
  const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create", temp_path);
  absl::Status status = WriteAll(fd, contents, temp_path);
  if (::close(fd) != 0 && status.ok()) status = ErrnoStatus(errno, "close", temp_path);
  if (status.ok() && ::rename(temp_path.c_str(), path.c_str()) != 0) {
    status = ErrnoStatus(errno, "rename", temp_path + " to " + path);
  }
  if (!status.ok()) ::unlink(temp_path.c_str());
  return status;
}

}  // namespace rnnserve
