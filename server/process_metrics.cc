#include "server/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace rnnserve {
namespace {

// The first line of a small /proc file, or "" when it cannot be read.
std::string ReadLine(const char* path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

// The boot time in seconds since the epoch: /proc/stat's "btime" line.
std::optional<double> BootTime() {
  std::ifstream file("/proc/stat");
  std::string key;
  while (file >> key) {
    if (key == "btime") {
      double btime = 0;
      if (file >> btime) return btime;
      return std::nullopt;
    }
    file.ignore(1 << 20, '\n');
  }
  return std::nullopt;
}

std::optional<double> CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return std::nullopt;
  double count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  // not the descriptor opendir itself holds
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                std::optional<double> value) {
  prometheus::MetricFamily family{name, help, type, {}};
  if (value.has_value()) {
    prometheus::ClientMetric metric;
    if (type == prometheus::MetricType::Counter) {
      metric.counter.value = *value;
    } else {
      metric.gauge.value = *value;
    }
    family.metric.push_back(metric);
  }
  return family;
}

}  // namespace

ProcessStats ReadProcessStats() {
  ProcessStats stats;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // /proc/self/stat: "pid (comm) state ..."; comm may hold spaces and parentheses, so the
  // fields are counted from the last ')'. After it: field 3 (state) onward.
  const std::string stat = ReadLine("/proc/self/stat");
  const size_t close = stat.rfind(')');
  if (close != std::string::npos && ticks > 0 && page > 0) {
    std::istringstream fields(stat.substr(close + 1));
    std::string field;
    double utime = 0, stime = 0, starttime = 0, vsize = 0, rss = 0;
    bool ok = true;
    // Fields 3..24 (1-based, as in proc(5)): keep utime (14), stime (15), starttime (22),
    // vsize (23) and rss (24).
    for (int i = 3; i <= 24 && ok; ++i) {
      if (!(fields >> field)) {
        ok = false;
        break;
      }
      double* out = i == 14 ? &utime : i == 15 ? &stime : i == 22 ? &starttime
                  : i == 23 ? &vsize : i == 24 ? &rss : nullptr;
      if (out != nullptr) {
        char* end = nullptr;
        *out = std::strtod(field.c_str(), &end);
        ok = end != field.c_str();
      }
    }
    if (ok) {
      stats.cpu_seconds = (utime + stime) / ticks;
      stats.virtual_bytes = vsize;
      stats.resident_bytes = rss * page;
      if (const std::optional<double> boot = BootTime(); boot.has_value()) {
        stats.start_time_seconds = *boot + starttime / ticks;
      }
    }
  }
  stats.open_fds = CountOpenFds();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    if (limit.rlim_cur != RLIM_INFINITY) stats.max_fds = static_cast<double>(limit.rlim_cur);
  }
  return stats;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  const ProcessStats stats = ReadProcessStats();
  return {
      Family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             MetricType::Counter, stats.cpu_seconds),
      Family("process_resident_memory_bytes", "Resident memory size in bytes.",
             MetricType::Gauge, stats.resident_bytes),
      Family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
             stats.virtual_bytes),
      Family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
             stats.open_fds),
      Family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
             stats.max_fds),
      Family("process_start_time_seconds",
             "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
             stats.start_time_seconds),
  };
}

}  // namespace rnnserve
