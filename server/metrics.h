// Metrics: rnnserve's Prometheus metrics, served over HTTP at /metrics by prometheus-cpp's
// Exposer, with the standard process_* metrics (process_metrics.h). Implements ServingObserver
// for the core's events, and counts RPCs for the service.
//
// Thread-safe: prometheus-cpp metrics are atomic, and the label cache is locked. Owns its
// registry and exposer; metric references stay valid for its lifetime. Never labels by session:
// the `model` label takes only names of served models (the observer's events carry the
// registry's names; requests go through ModelLabel).
#ifndef RNNSERVE_SERVER_METRICS_H_
#define RNNSERVE_SERVER_METRICS_H_

#include <map>
#include <memory>
#include <string>
#include <tuple>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/serving/serving_core.h"
#include "server/process_metrics.h"

namespace rnnserve {

// The `model` label for a request naming `name`: the name when the repository holds that model
// (in any state), else "", so that clients cannot create new series with arbitrary names.
std::string ModelLabel(const ModelRegistry& models, const std::string& name);

class Metrics : public ServingObserver {
 public:
  // Registers every metric; `model_names` pre-creates the per-model series so they read 0
  // before the first request.
  explicit Metrics(const std::vector<std::string>& model_names);
  ~Metrics() override;

  // Pre-creates a model's series (a model loaded after start-up), so they read 0 at once.
  // `model` must be a served model's name, never a client's string.
  void AddModel(const std::string& model);

  // Starts the HTTP endpoint on host:port ("0.0.0.0", 9090); port 0 picks a free port.
  absl::Status Serve(const std::string& host, int port);
  // The bound port once serving.
  int port() const { return port_; }

  // One finished RPC (for Stream: one request on the stream).
  void CountRequest(const std::string& rpc, const std::string& model, absl::StatusCode code);

  // A stream reached max_in_flight_per_stream (or max_stream_buffered_bytes): the server stops
  // reading it until responses are written (the client pipelines deeper than the server buffers). Each pause ends with
  // StreamReadResumed, also when the stream ends while paused.
  void StreamReadPaused() {
    stream_read_pauses_.Increment();
    streams_read_paused_.Increment();
  }
  void StreamReadResumed() { streams_read_paused_.Decrement(); }
  int64_t stream_read_pauses() const {
    return static_cast<int64_t>(stream_read_pauses_.Value());
  }
  int64_t streams_read_paused() const {
    return static_cast<int64_t>(streams_read_paused_.Value());
  }
  // Stream calls open, the requests read on them, and their queued response bytes (all
  // streams together).
  void StreamOpened() { streams_open_.Increment(); }
  void StreamRequestRead() { stream_requests_read_.Increment(); }
  void StreamClosed() { streams_open_.Decrement(); }
  void StreamBufferedBytes(int64_t delta) {
    stream_buffered_bytes_.Increment(static_cast<double>(delta));
  }

  // ServingObserver
  void ChunkDone(const std::string& model, absl::Duration queued, absl::Duration total,
                 int64_t timesteps) override;
  void ForwardDone(const std::string& model, int64_t timesteps) override;
  void BatchRun(const std::string& model, int64_t chunks) override;
  void SessionStarted(const std::string& model) override;
  void SessionEnded(const std::string& model, SessionEndReason reason) override;
  void StateBytes(int64_t bytes) override;
  void MemoryChanged(const MemoryUsage& usage) override;

  prometheus::Registry& registry() { return *registry_; }

 private:
  // One model's series: every metric with a `model` label.
  struct ModelSeries {
    prometheus::Counter* timesteps;
    prometheus::Gauge* sessions_active;
    prometheus::Histogram* chunk_duration;
    prometheus::Histogram* queue_duration;
    prometheus::Histogram* batch_size;
  };
  ModelSeries& SeriesFor(const std::string& model);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ProcessCollector> process_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& chunk_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Counter>& timesteps_;
  prometheus::Family<prometheus::Gauge>& sessions_active_;
  prometheus::Counter& sessions_started_;
  prometheus::Family<prometheus::Counter>& sessions_ended_;
  prometheus::Gauge& state_bytes_;
  prometheus::Family<prometheus::Gauge>& memory_bytes_;
  prometheus::Gauge* memory_by_part_[kMemoryParts];
  prometheus::Gauge& tombstones_;
  prometheus::Gauge& tombstone_bytes_;
  prometheus::Counter& stream_read_pauses_;
  prometheus::Gauge& streams_read_paused_;
  prometheus::Gauge& streams_open_;
  prometheus::Counter& stream_requests_read_;
  prometheus::Gauge& stream_buffered_bytes_;

  absl::Mutex mu_;
  // State below is protected by mu_: label-set caches, so hot paths skip Family::Add's lookup.
  std::map<std::tuple<std::string, std::string, absl::StatusCode>, prometheus::Counter*>
      request_counters_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ModelSeries> model_series_ ABSL_GUARDED_BY(mu_);
  std::map<SessionEndReason, prometheus::Counter*> ended_by_reason_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_METRICS_H_
