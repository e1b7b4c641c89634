// Quoting client-provided text (session ids, model names, principals) for Status messages and
// log lines. Stateless inline functions; thread-safe.
#ifndef RNNSERVE_CORE_SERVING_CLIENT_TEXT_H_
#define RNNSERVE_CORE_SERVING_CLIENT_TEXT_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "base/text.h"

namespace rnnserve {

// `s` through Printable() (one line, at most kMaxPrintableChars kept), between single quotes,
// with any single quote inside escaped as \' so the quoted value is unambiguous. Single quotes
// because clients and tests match messages such as "unknown session 'ghost'". At most
// 2 * kMaxPrintableChars + 31 characters, whatever the size of `s`.
inline std::string Quoted(absl::string_view s) {
  return absl::StrCat("'", absl::StrReplaceAll(Printable(s), {{"'", "\\'"}}), "'");
}

// "principal 'alice'", or "the anonymous principal" for "" (no authentication).
inline std::string DescribePrincipal(absl::string_view principal) {
  return principal.empty() ? std::string("the anonymous principal")
                           : absl::StrCat("principal ", Quoted(principal));
}

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_CLIENT_TEXT_H_
