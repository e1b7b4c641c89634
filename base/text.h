// Making untrusted text safe to put in a log line or an error message. Client-chosen ids,
// model names and paths can hold newlines (forged log lines), terminal escapes, or megabytes;
// every such value goes through Printable() before it reaches a log or a Status message, and
// client-chosen ids are checked with ValidateClientId() before they are stored.
// Stateless free functions; thread-safe.
#ifndef RNNSERVE_BASE_TEXT_H_
#define RNNSERVE_BASE_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rnnserve {

inline constexpr size_t kMaxPrintableChars = 128;
inline constexpr size_t kMaxClientIdBytes = 128;
// Bytes a client-chosen id may hold: letters, digits and ". _ : @ -". No space, quote, slash,
// backslash, '=' or ',' so an id is one token in a log line, a path segment and a Prometheus
// label value without escaping, and cannot be mistaken for a certificate subject ("CN=...").
inline constexpr char kClientIdCharsetDescription[] = "[A-Za-z0-9._:@-]";

// Escapes `s` so the result is printable ASCII on one line: printable ASCII passes through
// except '"' and '\' (escaped as \" and \\); \n \r \t are escaped by name; every other byte
// (control, DEL, non-ASCII) becomes \xHH. At most `max_chars` characters of escaped text are
// kept (an escape is never cut in half); if input was left out, "...(+N bytes)" follows, N
// counting the input bytes not shown. So the result never exceeds max_chars + 29 characters.
// Callers wrap it in double quotes: since quotes are escaped, the quoted value is unambiguous.
std::string Printable(absl::string_view s, size_t max_chars = kMaxPrintableChars);

// OK when `id` is 1..kMaxClientIdBytes bytes of kClientIdCharsetDescription. Otherwise
// INVALID_ARGUMENT naming `what` (e.g. "session_id"), the rule, and the id via Printable().
absl::Status ValidateClientId(absl::string_view id, absl::string_view what);

// True for the bytes ValidateClientId accepts.
bool IsClientIdChar(char c);

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_TEXT_H_
