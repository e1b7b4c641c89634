// Bearer-token authentication against a tokens file that holds no secret: one principal per
// line as "PRINCIPAL SHA256HEX", the lowercase hex SHA-256 of that principal's token; blank
// lines and lines starting with '#' are ignored. A presented token is hashed and compared
// with every entry in constant time, so neither the file nor the timing reveals a token.
//
// TokenAuthenticator is thread-safe: Authenticate may run on any number of threads while
// Reload / ReloadIfChanged swap the table (a poller calls ReloadIfChanged every second, and a
// SIGHUP handler's thread may call Reload). It owns its table; the file is only read.
// No message it returns ever contains a presented token or a full hash.
#ifndef RNNSERVE_SERVER_AUTH_TOKEN_FILE_H_
#define RNNSERVE_SERVER_AUTH_TOKEN_FILE_H_

#include <sys/types.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace rnnserve {

using TokenHash = std::array<unsigned char, 32>;  // SHA-256

struct TokenEntry {
  std::string principal;
  TokenHash hash;
};

// Largest tokens file read (a file of 1 MiB holds ~10,000 principals).
inline constexpr int64_t kMaxTokensFileBytes = 1 << 20;

// Parses a tokens file's contents. INVALID_ARGUMENT naming `path` and the line number for: a
// line that is not exactly two fields; a principal that is not 1..128 bytes of
// [A-Za-z0-9._:@-]; a hash that is not 64 lowercase hex characters; a principal or a hash
// that an earlier line already has. An empty table is allowed (every call is refused).
absl::StatusOr<std::vector<TokenEntry>> ParseTokensFile(absl::string_view contents,
                                                       absl::string_view path);

// SHA-256 of `token` (OpenSSL); all zeros if OpenSSL fails. For writing tokens files and
// tests: Authenticate refuses a token it cannot hash instead of using this value.
TokenHash HashToken(absl::string_view token);

// Lowercase hex of `hash`: what a tokens-file line holds for a token.
std::string TokenHashHex(const TokenHash& hash);

class TokenAuthenticator {
 public:
  // Reads and parses `path`; the error names the path (and line) when it is unusable.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromFile(std::string path);

  // A fixed table with no file behind it (Reload then fails); for tests and embedding.
  explicit TokenAuthenticator(std::vector<TokenEntry> entries);

  TokenAuthenticator(const TokenAuthenticator&) = delete;
  TokenAuthenticator& operator=(const TokenAuthenticator&) = delete;

  // `authorization` is the value of the "authorization" metadata, "Bearer TOKEN" (scheme
  // case-insensitive, one or more spaces). Returns the principal whose hash matches, or
  // UNAUTHENTICATED for an empty, malformed (other scheme, no token, spaces inside) or
  // unknown value. The message says which, never what the token was.
  absl::StatusOr<std::string> Authenticate(absl::string_view authorization) const;

  // The same check for a bare token.
  absl::StatusOr<std::string> AuthenticateToken(absl::string_view token) const;

  // Re-reads the file. On any error the current table stays in force and the error is
  // returned, so a half-written or broken file never locks every client out.
  absl::Status Reload();

  // Reloads when the file's inode, device, size or modification time differs from the last
  // read (a rename-into-place or a Kubernetes secret update changes the inode). Returns true
  // if it reloaded. Each change is reported once: after a failed reload the same broken file
  // is not re-read until it changes again.
  absl::StatusOr<bool> ReloadIfChanged();

  // Number of principals in the current table.
  size_t size() const;

 private:
  struct FileStamp {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = -1;
    int64_t mtime_ns = -1;
    bool operator==(const FileStamp& other) const;
  };
  using Table = std::vector<TokenEntry>;

  explicit TokenAuthenticator(std::string path);
  static absl::StatusOr<FileStamp> Stamp(const std::string& path);
  // Reads and parses the file; on success swaps the table. Records `stamp` either way.
  absl::Status LoadLocked(const FileStamp& stamp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(reload_mu_);
  std::shared_ptr<const Table> Snapshot() const;

  const std::string path_;  // empty for a fixed table
  // Serialises reloads (file I/O happens under it, never under mu_).
  absl::Mutex reload_mu_;
  FileStamp last_stamp_ ABSL_GUARDED_BY(reload_mu_);

  // State below is protected by mu_.
  mutable absl::Mutex mu_;
  std::shared_ptr<const Table> table_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_AUTH_TOKEN_FILE_H_
