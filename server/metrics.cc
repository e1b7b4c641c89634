#include "server/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "proto/status_codec.h"

#ifndef RNNSERVE_VERSION
#define RNNSERVE_VERSION "dev"
#endif

namespace rnnserve {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// Chunk latencies on a loaded server run from tens of microseconds to a second.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01,
          0.025,   0.05,   0.1,     0.25,   0.5,     1.0,   2.5};
}

prometheus::Histogram::BucketBoundaries BatchBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
}

}  // namespace

std::string ModelLabel(const ModelRegistry& models, const std::string& name) {
  // Only the repository's names (bounded by it, never by clients), whether READY or not: a
  // model whose every version is unloaded or failed still has its requests counted under it.
  return models.Holds(name) ? name : "";
}

Metrics::Metrics(const std::vector<std::string>& model_names)
    : registry_(std::make_shared<prometheus::Registry>()),
      process_(std::make_shared<ProcessCollector>()),
      requests_(BuildCounter()
                    .Name("rnnserve_requests_total")
                    .Help("RPCs handled (for Stream: requests on streams), by rpc, model and "
                          "gRPC status code")
                    .Register(*registry_)),
      chunk_duration_(BuildHistogram()
                          .Name("rnnserve_chunk_duration_seconds")
                          .Help("Time from a chunk's arrival to its result, in seconds, by "
                                "model")
                          .Register(*registry_)),
      queue_duration_(BuildHistogram()
                          .Name("rnnserve_queue_duration_seconds")
                          .Help("Time a chunk waited for a compute worker, in seconds, by "
                                "model")
                          .Register(*registry_)),
      batch_size_(BuildHistogram()
                      .Name("rnnserve_batch_size")
                      .Help("Sessions advanced together by one engine call, by model")
                      .Register(*registry_)),
      timesteps_(BuildCounter()
                     .Name("rnnserve_timesteps_total")
                     .Help("Timesteps computed (per batch row), by model")
                     .Register(*registry_)),
      sessions_active_(BuildGauge()
                           .Name("rnnserve_sessions_active")
                           .Help("Live streaming sessions, by model")
                           .Register(*registry_)),
      sessions_started_(BuildCounter()
                            .Name("rnnserve_sessions_started_total")
                            .Help("Streaming sessions started")
                            .Register(*registry_)
                            .Add({})),
      sessions_ended_(BuildCounter()
                          .Name("rnnserve_sessions_ended_total")
                          .Help("Streaming sessions ended, by reason "
                                "(closed, idle_timeout, evicted, shutdown)")
                          .Register(*registry_)),
      state_bytes_(BuildGauge()
                       .Name("rnnserve_session_state_bytes")
                       .Help("Memory held by all sessions' hidden state, in bytes")
                       .Register(*registry_)
                       .Add({})),
      memory_bytes_(BuildGauge()
                        .Name("rnnserve_session_memory_bytes")
                        .Help("Memory held by all sessions, by part (state, buffered_input, "
                              "replay, ids); the parts together count against "
                              "--max_state_bytes")
                        .Register(*registry_)),
      tombstones_(BuildGauge()
                      .Name("rnnserve_session_tombstones")
                      .Help("Ended session ids remembered to tell closed or expired from "
                            "unknown (--max_tombstones)")
                      .Register(*registry_)
                      .Add({})),
      tombstone_bytes_(BuildGauge()
                           .Name("rnnserve_session_tombstone_bytes")
                           .Help("Memory held by the remembered ended session ids, in bytes "
                                 "(--max_tombstone_bytes)")
                           .Register(*registry_)
                           .Add({})),
      stream_read_pauses_(BuildCounter()
                              .Name("rnnserve_stream_read_pauses_total")
                              .Help("Times a stream had --max_in_flight_per_stream requests in "
                                    "progress (or --max_stream_buffered_bytes queued) and the "
                                    "server stopped reading it until responses were written")
                              .Register(*registry_)
                              .Add({})),
      streams_read_paused_(BuildGauge()
                               .Name("rnnserve_streams_read_paused")
                               .Help("Streams the server is not reading right now because "
                                     "--max_in_flight_per_stream of their requests are in "
                                     "progress or --max_stream_buffered_bytes are queued")
                               .Register(*registry_)
                               .Add({})),
      streams_open_(BuildGauge()
                        .Name("rnnserve_streams_open")
                        .Help("Stream calls open right now")
                        .Register(*registry_)
                        .Add({})),
      stream_requests_read_(BuildCounter()
                                .Name("rnnserve_stream_requests_read_total")
                                .Help("Requests read on streams (each is answered before its "
                                      "stream ends, unless the client goes away)")
                                .Register(*registry_)
                                .Add({})),
      stream_buffered_bytes_(BuildGauge()
                                 .Name("rnnserve_stream_buffered_bytes")
                                 .Help("Response bytes queued on all streams and not yet "
                                       "written, in bytes")
                                 .Register(*registry_)
                                 .Add({})) {
  BuildGauge()
      .Name("rnnserve_build_info")
      .Help("Build information; the value is always 1")
      .Register(*registry_)
      .Add({{"version", RNNSERVE_VERSION}, {"compiler", __VERSION__}})
      .Set(1);
  for (int part = 0; part < kMemoryParts; ++part) {
    memory_by_part_[part] =
        &memory_bytes_.Add({{"part", MemoryPartName(static_cast<MemoryPart>(part))}});
  }
  for (const std::string& model : model_names) AddModel(model);
  for (SessionEndReason reason : {SessionEndReason::kClosed, SessionEndReason::kIdleTimeout,
                                  SessionEndReason::kEvicted, SessionEndReason::kShutdown}) {
    ended_by_reason_[reason] = &sessions_ended_.Add({{"reason", SessionEndReasonName(reason)}});
  }
}

Metrics::~Metrics() = default;

absl::Status Metrics::Serve(const std::string& host, int port) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(process_);
  auto ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? port : ports.front();
  return absl::OkStatus();
}

void Metrics::CountRequest(const std::string& rpc, const std::string& model,
                           absl::StatusCode code) {
  prometheus::Counter* counter;
  {
    absl::MutexLock lock(&mu_);
    auto key = std::make_tuple(rpc, model, code);
    auto it = request_counters_.find(key);
    if (it == request_counters_.end()) {
      it = request_counters_
               .emplace(key, &requests_.Add({{"rpc", rpc}, {"model", model}, {"code", CodeName(code)}}))
               .first;
    }
    counter = it->second;
  }
  counter->Increment();
}

void Metrics::AddModel(const std::string& model) { SeriesFor(model); }

Metrics::ModelSeries& Metrics::SeriesFor(const std::string& model) {
  absl::MutexLock lock(&mu_);
  auto it = model_series_.find(model);
  if (it == model_series_.end()) {
    const prometheus::Labels labels = {{"model", model}};
    it = model_series_
             .emplace(model, ModelSeries{&timesteps_.Add(labels), &sessions_active_.Add(labels),
                                         &chunk_duration_.Add(labels, LatencyBuckets()),
                                         &queue_duration_.Add(labels, LatencyBuckets()),
                                         &batch_size_.Add(labels, BatchBuckets())})
             .first;
  }
  return it->second;  // std::map: stays valid as others are added
}

void Metrics::ChunkDone(const std::string& model, absl::Duration queued, absl::Duration total,
                        int64_t timesteps) {
  ModelSeries& series = SeriesFor(model);
  series.chunk_duration->Observe(absl::ToDoubleSeconds(total));
  series.queue_duration->Observe(absl::ToDoubleSeconds(queued));
  if (timesteps > 0) series.timesteps->Increment(static_cast<double>(timesteps));
}

void Metrics::ForwardDone(const std::string& model, int64_t timesteps) {
  if (timesteps > 0) SeriesFor(model).timesteps->Increment(static_cast<double>(timesteps));
}

void Metrics::BatchRun(const std::string& model, int64_t chunks) {
  SeriesFor(model).batch_size->Observe(static_cast<double>(chunks));
}

void Metrics::SessionStarted(const std::string& model) {
  sessions_started_.Increment();
  SeriesFor(model).sessions_active->Increment();
}

void Metrics::SessionEnded(const std::string& model, SessionEndReason reason) {
  SeriesFor(model).sessions_active->Decrement();
  prometheus::Counter* counter;
  {
    absl::MutexLock lock(&mu_);
    counter = ended_by_reason_.at(reason);
  }
  counter->Increment();
}

void Metrics::StateBytes(int64_t bytes) { state_bytes_.Set(static_cast<double>(bytes)); }

void Metrics::MemoryChanged(const MemoryUsage& usage) {
  for (int part = 0; part < kMemoryParts; ++part) {
    memory_by_part_[part]->Set(static_cast<double>(usage.sessions.parts[part]));
  }
  tombstones_.Set(static_cast<double>(usage.tombstones));
  tombstone_bytes_.Set(static_cast<double>(usage.tombstone_bytes));
}

}  // namespace rnnserve
