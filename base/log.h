// A minimal structured logger (Abseil 20220623 has no absl/log): one line per event to stderr,
// "2026-11-28T15:40:31.123Z LEVEL message". Thread-safe: each line is written with one call,
// and the process-wide minimum level is an atomic, so SetMinLogLevel may run at any time.
// Lines below the minimum level are dropped before their arguments are formatted, so
// per-session DEBUG lines cost one relaxed load when DEBUG is off. Values that come from
// clients (ids, model names) go through Printable() (base/text.h) before they are logged.
#ifndef RNNSERVE_BASE_LOG_H_
#define RNNSERVE_BASE_LOG_H_

#include <atomic>
#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/text.h"

namespace rnnserve {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

namespace log_internal {
inline std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};
}  // namespace log_internal

// Lines below `level` are dropped from now on. The default is kInfo.
inline void SetMinLogLevel(LogLevel level) {
  log_internal::min_level.store(static_cast<int>(level), std::memory_order_relaxed);
}
inline LogLevel MinLogLevel() {
  return static_cast<LogLevel>(log_internal::min_level.load(std::memory_order_relaxed));
}
inline bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= log_internal::min_level.load(std::memory_order_relaxed);
}

// "debug", "info", "warning" (or "warn"), "error", any case; INVALID_ARGUMENT otherwise.
inline absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "debug") return LogLevel::kDebug;
  if (lower == "info") return LogLevel::kInfo;
  if (lower == "warning" || lower == "warn") return LogLevel::kWarning;
  if (lower == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(absl::StrCat(
      "log level must be one of debug, info, warning, error; got \"", Printable(name, 32), "\""));
}

inline const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}

// Writes one line regardless of the minimum level; the Log* functions below check it first.
inline void LogLine(LogLevel level, const std::string& message) {
  const std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                   " ", LogLevelName(level), " ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
}

template <typename... Args>
void LogAt(LogLevel level, const Args&... args) {
  if (!LogEnabled(level)) return;  // before StrCat: dropped lines are never formatted
  LogLine(level, absl::StrCat(args...));
}

template <typename... Args>
void LogDebug(const Args&... args) { LogAt(LogLevel::kDebug, args...); }
template <typename... Args>
void LogInfo(const Args&... args) { LogAt(LogLevel::kInfo, args...); }
template <typename... Args>
void LogWarning(const Args&... args) { LogAt(LogLevel::kWarning, args...); }
template <typename... Args>
void LogError(const Args&... args) { LogAt(LogLevel::kError, args...); }

}  // namespace rnnserve

#endif  // RNNSERVE_BASE_LOG_H_
