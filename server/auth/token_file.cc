#include "server/auth/token_file.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/file_io.h"
#include "base/text.h"

namespace rnnserve {
namespace {

constexpr char kLineFormat[] = "expected 'PRINCIPAL SHA256HEX'";

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// The principal is not echoed: a line with its fields swapped would print a secret's hash.
absl::Status CheckPrincipal(absl::string_view principal) {
  if (principal.size() > kMaxClientIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "principal must be 1 to ", kMaxClientIdBytes, " bytes; got ", principal.size()));
  }
  for (size_t i = 0; i < principal.size(); ++i) {
    if (!IsClientIdChar(principal[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "principal must be bytes of %s; byte 0x%02x at offset %d is not allowed",
          kClientIdCharsetDescription, static_cast<unsigned char>(principal[i]), i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenHash> ParseHash(absl::string_view hex) {
  constexpr char kRule[] =
      "second field must be the token's SHA-256 as 64 lowercase hex characters "
      "(printf %s TOKEN | sha256sum)";
  if (hex.size() != 64) {
    return absl::InvalidArgumentError(absl::StrCat(kRule, "; got ", hex.size(), " characters"));
  }
  TokenHash hash;
  for (size_t i = 0; i < 64; ++i) {
    if (!IsLowerHex(hex[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(kRule, "; character at offset ", i, " is not in [0-9a-f]"));
    }
  }
  for (size_t i = 0; i < 32; ++i) {
    auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    hash[i] = static_cast<unsigned char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  }
  return hash;
}

absl::Status Unauthenticated(absl::string_view why) {
  return absl::UnauthenticatedError(why);
}

}  // namespace

// False only if OpenSSL fails (out of memory); callers then refuse rather than compare.
static bool Sha256(absl::string_view data, TokenHash* hash) {
  unsigned int length = 0;
  return EVP_Digest(data.data(), data.size(), hash->data(), &length, EVP_sha256(), nullptr) == 1 &&
         length == hash->size();
}

TokenHash HashToken(absl::string_view token) {
  TokenHash hash;
  if (!Sha256(token, &hash)) hash.fill(0);
  return hash;
}

std::string TokenHashHex(const TokenHash& hash) {
  std::string hex;
  for (unsigned char b : hash) absl::StrAppendFormat(&hex, "%02x", b);
  return hex;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokensFile(absl::string_view contents,
                                                       absl::string_view path) {
  std::vector<TokenEntry> entries;
  std::map<std::string, int> principal_line;
  std::map<TokenHash, int> hash_line;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++line_number;
    auto fail = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens file \"", Printable(path), "\" line ", line_number, ": ", why));
    };
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return fail(absl::StrCat(kLineFormat, "; got ", fields.size(), " fields"));
    }
    if (absl::Status status = CheckPrincipal(fields[0]); !status.ok()) {
      return fail(status.message());
    }
    absl::StatusOr<TokenHash> hash = ParseHash(fields[1]);
    if (!hash.ok()) return fail(hash.status().message());
    std::string principal(fields[0]);
    if (auto it = principal_line.find(principal); it != principal_line.end()) {
      return fail(absl::StrCat("principal \"", principal, "\" already appears on line ",
                               it->second));
    }
    if (auto it = hash_line.find(*hash); it != hash_line.end()) {
      return fail(absl::StrCat("the same token hash as line ", it->second,
                               " (each principal needs its own token)"));
    }
    principal_line.emplace(principal, line_number);
    hash_line.emplace(*hash, line_number);
    entries.push_back(TokenEntry{std::move(principal), *hash});
  }
  return entries;
}

bool TokenAuthenticator::FileStamp::operator==(const FileStamp& other) const {
  return device == other.device && inode == other.inode && size == other.size &&
         mtime_ns == other.mtime_ns;
}

TokenAuthenticator::TokenAuthenticator(std::string path)
    : path_(std::move(path)), table_(std::make_shared<const Table>()) {}

TokenAuthenticator::TokenAuthenticator(std::vector<TokenEntry> entries)
    : table_(std::make_shared<const Table>(std::move(entries))) {}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromFile(
    std::string path) {
  std::unique_ptr<TokenAuthenticator> authenticator(new TokenAuthenticator(std::move(path)));
  if (absl::Status status = authenticator->Reload(); !status.ok()) return status;
  return authenticator;
}

absl::StatusOr<TokenAuthenticator::FileStamp> TokenAuthenticator::Stamp(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    const int error = errno;
    const std::string message =
        absl::StrCat("tokens file \"", Printable(path), "\": ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::FailedPreconditionError(message);
  }
  FileStamp stamp;
  stamp.device = info.st_dev;
  stamp.inode = info.st_ino;
  stamp.size = info.st_size;
  stamp.mtime_ns = int64_t{info.st_mtim.tv_sec} * 1000000000 + info.st_mtim.tv_nsec;
  return stamp;
}

absl::Status TokenAuthenticator::LoadLocked(const FileStamp& stamp) {
  last_stamp_ = stamp;
  absl::StatusOr<std::string> contents = ReadFile(path_, kMaxTokensFileBytes);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokensFile(*contents, path_);
  if (!entries.ok()) return entries.status();
  auto table = std::make_shared<const Table>(std::move(*entries));
  absl::MutexLock lock(&mu_);
  table_ = std::move(table);
  return absl::OkStatus();
}

absl::Status TokenAuthenticator::Reload() {
  if (path_.empty()) return absl::FailedPreconditionError("no tokens file to reload");
  absl::MutexLock lock(&reload_mu_);
  absl::StatusOr<FileStamp> stamp = Stamp(path_);
  if (!stamp.ok()) return stamp.status();
  return LoadLocked(*stamp);
}

absl::StatusOr<bool> TokenAuthenticator::ReloadIfChanged() {
  if (path_.empty()) return false;
  absl::MutexLock lock(&reload_mu_);
  absl::StatusOr<FileStamp> stamp = Stamp(path_);
  if (!stamp.ok()) {
    // Report a vanished file once, as the stamp of "no file".
    const FileStamp missing;
    if (last_stamp_ == missing) return false;
    last_stamp_ = missing;
    return stamp.status();
  }
  if (*stamp == last_stamp_) return false;
  if (absl::Status status = LoadLocked(*stamp); !status.ok()) return status;
  return true;
}

std::shared_ptr<const TokenAuthenticator::Table> TokenAuthenticator::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return table_;
}

size_t TokenAuthenticator::size() const { return Snapshot()->size(); }

absl::StatusOr<std::string> TokenAuthenticator::Authenticate(
    absl::string_view authorization) const {
  authorization = absl::StripAsciiWhitespace(authorization);
  if (authorization.empty()) {
    return Unauthenticated("missing credentials: send metadata 'authorization: Bearer TOKEN'");
  }
  const size_t space = authorization.find_first_of(" \t");
  if (space == absl::string_view::npos ||
      !absl::EqualsIgnoreCase(authorization.substr(0, space), "bearer")) {
    return Unauthenticated("malformed authorization metadata: expected 'Bearer TOKEN'");
  }
  return AuthenticateToken(absl::StripLeadingAsciiWhitespace(authorization.substr(space)));
}

absl::StatusOr<std::string> TokenAuthenticator::AuthenticateToken(absl::string_view token) const {
  if (token.empty()) {
    return Unauthenticated("malformed authorization metadata: expected 'Bearer TOKEN'");
  }
  for (char c : token) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return Unauthenticated(
          "malformed bearer token: it must be printable ASCII without spaces");
    }
  }
  TokenHash presented;
  if (!Sha256(token, &presented)) return Unauthenticated("could not hash the bearer token");
  const std::shared_ptr<const Table> table = Snapshot();
  const TokenEntry* match = nullptr;
  for (const TokenEntry& entry : *table) {
    // Every entry is compared, each in constant time: the time taken does not depend on
    // which entry matched or how much of a hash agreed.
    const bool equal = CRYPTO_memcmp(entry.hash.data(), presented.data(), presented.size()) == 0;
    if (equal) match = &entry;
  }
  if (match == nullptr) return Unauthenticated("unknown bearer token");
  return match->principal;
}

}  // namespace rnnserve
