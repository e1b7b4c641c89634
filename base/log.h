// A minimal structured logger (Abseil 20220623 has no absl/log): one line per event to stderr,
// "2026-11-28T15:40:31.123Z LEVEL message". Thread-safe: each line is written with one call.
#ifndef RNNSERVE_BASE_LOG_H_
#define RNNSERVE_BASE_LOG_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace rnnserve {

enum class LogLevel { kInfo, kWarning, kError };

inline void LogLine(LogLevel level, const std::string& message) {
  const char* name = level == LogLevel::kInfo ? "INFO" : level == LogLevel::kWarning ? "WARN" : "ERROR";
  const std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                   " ", name, " ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
}

template <typename... Args>
void LogInfo(const Args&... args) { LogLine(LogLevel::kInfo, absl::StrCat(args...)); }
template <typename... Args>
void LogWarning(const Args&... args) { LogLine(LogLevel::kWarning, absl::StrCat(args...)); }
template <typename... Args>
void LogError(const Args&... args) { LogLine(LogLevel::kError, absl::StrCat(args...)); }

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_LOG_H_
