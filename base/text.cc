#include "base/text.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rnnserve {
namespace {

// Appends the escaped form of `c` to `out`.
void AppendEscaped(char c, std::string* out) {
  const unsigned char u = static_cast<unsigned char>(c);
  switch (c) {
    case '\n': out->append("\\n"); return;
    case '\r': out->append("\\r"); return;
    case '\t': out->append("\\t"); return;
    case '"': out->append("\\\""); return;
    case '\\': out->append("\\\\"); return;
    default: break;
  }
  if (u >= 0x20 && u < 0x7f) {
    out->push_back(c);
  } else {
    absl::StrAppendFormat(out, "\\x%02x", u);
  }
}

}  // namespace

std::string Printable(absl::string_view s, size_t max_chars) {
  std::string out;
  out.reserve(std::min(s.size(), max_chars) + 8);
  std::string escaped;
  size_t shown = 0;
  for (; shown < s.size(); ++shown) {
    escaped.clear();
    AppendEscaped(s[shown], &escaped);
    if (out.size() + escaped.size() > max_chars) break;
    out += escaped;
  }
  if (shown < s.size()) absl::StrAppend(&out, "...(+", s.size() - shown, " bytes)");
  return out;
}

bool IsClientIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
}

absl::Status ValidateClientId(absl::string_view id, absl::string_view what) {
  const std::string rule = absl::StrCat(what, " must be 1 to ", kMaxClientIdBytes, " bytes of ",
                                        kClientIdCharsetDescription);
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(rule, "; got an empty string"));
  if (id.size() > kMaxClientIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(rule, "; got ", id.size(), " bytes \"", Printable(id), "\""));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    if (!IsClientIdChar(id[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s; got \"%s\" (byte 0x%02x at offset %d is not allowed)", rule, Printable(id),
          static_cast<unsigned char>(id[i]), i));
    }
  }
  return absl::OkStatus();
}

}  // namespace rnnserve
