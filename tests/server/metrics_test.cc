// Metrics: the `model` label on the latency, queue and batch histograms (one series per served
// model, from zero), and the process_* metrics (ProcessCollector) read from /proc/self.
#include "server/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/serving/model_registry.h"
#include "server/process_metrics.h"

namespace rnnserve {
namespace {

const prometheus::MetricFamily* FindFamily(const std::vector<prometheus::MetricFamily>& families,
                                           const std::string& name) {
  for (const prometheus::MetricFamily& family : families) {
    if (family.name == name) return &family;
  }
  return nullptr;
}

// The histogram sample of `family` whose only label is model=`model`.
const prometheus::ClientMetric* ModelSample(const prometheus::MetricFamily& family,
                                            const std::string& model) {
  for (const prometheus::ClientMetric& metric : family.metric) {
    if (metric.label.size() == 1 && metric.label[0].name == "model" &&
        metric.label[0].value == model) {
      return &metric;
    }
  }
  return nullptr;
}

TEST(MetricsTest, HistogramsCarryTheModelLabel) {
  Metrics metrics({"small", "big"});
  metrics.ChunkDone("small", absl::Milliseconds(1), absl::Milliseconds(3), 4);
  metrics.BatchRun("small", 2);
  metrics.BatchRun("big", 40);
  metrics.BatchRun("big", 24);
  const std::vector<prometheus::MetricFamily> families = metrics.registry().Collect();
  for (const char* name : {"rnnserve_chunk_duration_seconds", "rnnserve_queue_duration_seconds",
                           "rnnserve_batch_size"}) {
    const prometheus::MetricFamily* family = FindFamily(families, name);
    ASSERT_NE(family, nullptr) << name;
    EXPECT_EQ(family->type, prometheus::MetricType::Histogram);
    // One series per served model, each from zero; no unlabelled series.
    ASSERT_EQ(family->metric.size(), 2u) << name;
    ASSERT_NE(ModelSample(*family, "small"), nullptr) << name;
    ASSERT_NE(ModelSample(*family, "big"), nullptr) << name;
  }
  const prometheus::MetricFamily& chunk = *FindFamily(families, "rnnserve_chunk_duration_seconds");
  EXPECT_EQ(ModelSample(chunk, "small")->histogram.sample_count, 1u);
  EXPECT_DOUBLE_EQ(ModelSample(chunk, "small")->histogram.sample_sum, 0.003);
  EXPECT_EQ(ModelSample(chunk, "big")->histogram.sample_count, 0u);
  const prometheus::MetricFamily& queue = *FindFamily(families, "rnnserve_queue_duration_seconds");
  EXPECT_DOUBLE_EQ(ModelSample(queue, "small")->histogram.sample_sum, 0.001);
  const prometheus::MetricFamily& batch = *FindFamily(families, "rnnserve_batch_size");
  EXPECT_EQ(ModelSample(batch, "small")->histogram.sample_count, 1u);
  EXPECT_EQ(ModelSample(batch, "small")->histogram.sample_sum, 2);
  EXPECT_EQ(ModelSample(batch, "big")->histogram.sample_count, 2u);
  EXPECT_EQ(ModelSample(batch, "big")->histogram.sample_sum, 64);
}

TEST(MetricsTest, AModelAddedLaterStartsFromZero) {
  Metrics metrics({"a"});
  metrics.AddModel("b");
  const std::vector<prometheus::MetricFamily> families = metrics.registry().Collect();
  const prometheus::MetricFamily* batch = FindFamily(families, "rnnserve_batch_size");
  ASSERT_NE(batch, nullptr);
  ASSERT_NE(ModelSample(*batch, "b"), nullptr);
  EXPECT_EQ(ModelSample(*batch, "b")->histogram.sample_count, 0u);
}

// Requests are labelled by the repository's names only, READY or not: a model whose every
// version is unloaded still has its refused requests counted under its name, and a name no
// folder holds (a client's invention) gets "".
TEST(MetricsTest, ModelLabelTakesRepositoryNamesInAnyState) {
  ModelRegistry models;
  RnnConfig config;
  config.input_size = 3;
  config.hidden_size = 2;
  ASSERT_TRUE(models.Add("small", config, RandomParameters(config, 1)).ok());
  EXPECT_EQ(ModelLabel(models, "small"), "small");
  EXPECT_EQ(ModelLabel(models, "made-up"), "");
  ASSERT_TRUE(models.UnloadModel("small", 0).ok());
  ASSERT_EQ(models.Find("small"), nullptr);
  EXPECT_EQ(ModelLabel(models, "small"), "small");
  EXPECT_EQ(ModelLabel(models, "made-up"), "");
}

TEST(ProcessMetricsTest, StatsAreSane) {
  const ProcessStats stats = ReadProcessStats();
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  ASSERT_TRUE(stats.start_time_seconds.has_value());
  // This test process started within the last few minutes (boot time is whole seconds).
  EXPECT_LE(*stats.start_time_seconds, now + 1);
  EXPECT_GE(*stats.start_time_seconds, now - 600);
  ASSERT_TRUE(stats.resident_bytes.has_value());
  EXPECT_GT(*stats.resident_bytes, 1 << 20);
  ASSERT_TRUE(stats.virtual_bytes.has_value());
  EXPECT_GE(*stats.virtual_bytes, *stats.resident_bytes);
  ASSERT_TRUE(stats.cpu_seconds.has_value());
  EXPECT_GE(*stats.cpu_seconds, 0);
  ASSERT_TRUE(stats.open_fds.has_value());
  EXPECT_GT(*stats.open_fds, 0);
  ASSERT_TRUE(stats.max_fds.has_value());
  EXPECT_GE(*stats.max_fds, *stats.open_fds);
  // Each open descriptor is counted, exactly.
  const int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(*ReadProcessStats().open_fds, *stats.open_fds + 1);
  ::close(fd);
  EXPECT_EQ(*ReadProcessStats().open_fds, *stats.open_fds);
}

TEST(ProcessMetricsTest, CpuSecondsGrowWithWork) {
  const double before = *ReadProcessStats().cpu_seconds;
  // Spin until the process has used 50 ms more CPU (the counter's tick is 10 ms).
  volatile double sink = 0;
  while (*ReadProcessStats().cpu_seconds < before + 0.05) {
    for (int i = 0; i < 1000000; ++i) sink = sink + i;
  }
  EXPECT_GE(*ReadProcessStats().cpu_seconds, before + 0.05);
}

TEST(ProcessMetricsTest, CollectorExportsTheStandardFamilies) {
  const std::vector<prometheus::MetricFamily> families = ProcessCollector().Collect();
  const std::vector<std::pair<std::string, prometheus::MetricType>> expected = {
      {"process_cpu_seconds_total", prometheus::MetricType::Counter},
      {"process_resident_memory_bytes", prometheus::MetricType::Gauge},
      {"process_virtual_memory_bytes", prometheus::MetricType::Gauge},
      {"process_open_fds", prometheus::MetricType::Gauge},
      {"process_max_fds", prometheus::MetricType::Gauge},
      {"process_start_time_seconds", prometheus::MetricType::Gauge}};
  ASSERT_EQ(families.size(), expected.size());
  for (const auto& [name, type] : expected) {
    const prometheus::MetricFamily* family = FindFamily(families, name);
    ASSERT_NE(family, nullptr) << name;
    EXPECT_EQ(family->type, type) << name;
    EXPECT_FALSE(family->help.empty()) << name;
    ASSERT_EQ(family->metric.size(), 1u) << name;
    EXPECT_TRUE(family->metric[0].label.empty()) << name;
    const double value = type == prometheus::MetricType::Counter
                             ? family->metric[0].counter.value
                             : family->metric[0].gauge.value;
    if (name != "process_cpu_seconds_total") {
      EXPECT_GT(value, 0) << name;
    }
  }
}

}  // namespace
}  // namespace rnnserve
