// Small local versions of RETURN_IF_ERROR and ASSIGN_OR_RETURN (Abseil 20220623 ships neither),
// and PrefixStatus for adding context to an error. Header-only; the macros evaluate their
// argument exactly once.
#ifndef RNNSERVE_BASE_STATUS_MACROS_H_
#define RNNSERVE_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#define RNNSERVE_CONCAT_INNER_(a, b) a##b
#define RNNSERVE_CONCAT_(a, b) RNNSERVE_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    const ::absl::Status rnnserve_status_ = (expr);    \
    if (!rnnserve_status_.ok()) return rnnserve_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  RNNSERVE_ASSIGN_OR_RETURN_IMPL_(RNNSERVE_CONCAT_(rnnserve_statusor_, __LINE__), lhs, rexpr)

#define RNNSERVE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = std::move(statusor).value()

namespace rnnserve {

// The same code, with "<prefix>: " in front of the message (e.g. the file it came from).
inline absl::Status PrefixStatus(absl::string_view prefix, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
}

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_STATUS_MACROS_H_
