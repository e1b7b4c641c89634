// ProcessCollector: the standard process_* metrics every Prometheus client library exports
// (process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds), which prometheus-cpp does
// not. Read from /proc/self on each scrape (Linux only; elsewhere the families are empty).
//
// Thread-safe: Collect() reads the files afresh and holds no state but the clock-tick and
// page sizes, fixed at construction.
#ifndef RNNSERVE_SERVER_PROCESS_METRICS_H_
#define RNNSERVE_SERVER_PROCESS_METRICS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace rnnserve {

// One reading of this process's counters; a field that could not be read is unset.
struct ProcessStats {
  std::optional<double> cpu_seconds;         // user + system
  std::optional<double> resident_bytes;
  std::optional<double> virtual_bytes;
  std::optional<double> open_fds;
  std::optional<double> max_fds;             // the soft RLIMIT_NOFILE
  std::optional<double> start_time_seconds;  // since the Unix epoch
};

ProcessStats ReadProcessStats();

class ProcessCollector : public prometheus::Collectable {
 public:
  // One family per metric, each with one sample (none for a value that could not be read).
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_PROCESS_METRICS_H_
