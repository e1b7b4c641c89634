#include "client/stream_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <random>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/bench_stream.h"
#include "client/stream_pacer.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"

namespace rnnserve {
namespace client {
namespace {

using bench_internal::BenchStream;
using bench_internal::Shared;

double Percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1e6;
}

}  // namespace

absl::StatusOr<StreamBenchReport> RunStreamBench(
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    const std::vector<int64_t>& input_shape, const StreamBenchOptions& options,
    const std::function<void(const StreamBenchProgress&)>& progress) {
  if (channels.empty()) return absl::InvalidArgumentError("no channels");
  if (options.sessions < 1) return absl::InvalidArgumentError("--sessions must be >= 1");
  if (options.sessions >= (int64_t{1} << 32)) {
    return absl::InvalidArgumentError("--sessions must be < 2^32");
  }
  if (options.chunk_steps < 1) return absl::InvalidArgumentError("--chunk_steps must be >= 1");
  if (!(options.duration_s > 0)) return absl::InvalidArgumentError("--duration must be > 0");
  if (options.max_chunks < 0) return absl::InvalidArgumentError("--max_chunks must be >= 0");
  if (!(options.chunks_per_second >= 0) || options.chunks_per_second > 1e6) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--chunks_per_second must be in [0, 1e6] (0: unpaced), got ", options.chunks_per_second));
  }
  const int64_t num_streams = std::min(
      options.streams > 0 ? options.streams : std::min<int64_t>(64, options.sessions),
      options.sessions);

  Shared shared;
  shared.options = &options;
  Pacer pacer;
  if (options.chunks_per_second > 0) {
    shared.period_ns = static_cast<int64_t>(std::llround(1e9 / options.chunks_per_second));
    shared.pacer = &pacer;
  }
  {
    // The values do not matter to the server's cost; make them plausible anyway.
    const int64_t count = NumElements(input_shape);
    if (count <= 0) return absl::InvalidArgumentError("empty chunk shape");
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    if (options.ids) {
      EncodeIds(input_shape, std::vector<int64_t>(count, 0), shared.chunk_template.mutable_input());
    } else {
      std::vector<float> values(count);
      for (float& v : values) v = normal(rng);
      EncodeTensor(input_shape, values.data(), options.encoding,
                   shared.chunk_template.mutable_input());
    }
    shared.chunk_template.set_omit_state(options.omit_state);
  }

  std::vector<std::unique_ptr<v1::RnnService::Stub>> stubs;
  for (const auto& channel : channels) stubs.push_back(v1::RnnService::NewStub(channel));
  std::vector<std::unique_ptr<BenchStream>> streams;
  shared.start_ns = NowNanos();
  for (int64_t j = 0, first = 0; j < num_streams; ++j) {
    const int64_t n = options.sessions / num_streams + (j < options.sessions % num_streams);
    streams.push_back(std::make_unique<BenchStream>(&shared, n, first, options.sessions));
    first += n;
  }

  const absl::Time start = absl::Now();
  for (size_t j = 0; j < streams.size(); ++j) streams[j]->Begin(stubs[j % stubs.size()].get());
  // Started once every stream has begun: a parked start chunk is written only after StartCall.
  std::thread pacer_thread;
  if (shared.pacer != nullptr) pacer_thread = std::thread([&pacer] { pacer.Run(); });

  auto report_progress = [&] {
    if (!progress) return;
    StreamBenchProgress p;
    p.elapsed_s = absl::ToDoubleSeconds(absl::Now() - start);
    p.chunks = shared.chunks.load();
    p.errors = shared.errors.load();
    p.live_sessions = shared.live_sessions.load();
    progress(p);
  };

  // The sending window: until the duration is up or every session has finished by itself.
  const absl::Time window_end = start + absl::Seconds(options.duration_s);
  absl::Time next_progress = start + absl::Seconds(1);
  while (shared.live_sessions.load() > 0 && absl::Now() < window_end) {
    absl::SleepFor(std::min(absl::Milliseconds(20), window_end - absl::Now()));
    if (absl::Now() >= next_progress) {
      report_progress();
      next_progress += absl::Seconds(1);
    }
  }
  shared.stop = true;
  StreamBenchReport report;
  report.elapsed_s = absl::ToDoubleSeconds(absl::Now() - start);
  report.window_chunks = shared.chunks.load();

  // Drain: in-flight chunks are answered, then every session is ended.
  const absl::Time drain_end = absl::Now() + absl::Seconds(options.drain_timeout_s);
  for (auto& stream : streams) {
    while (!stream->WaitDone(std::min(absl::Seconds(1), drain_end - absl::Now()))) {
      if (absl::Now() >= drain_end) break;
      report_progress();
    }
  }
  bool cancelled = false;
  for (auto& stream : streams) {
    if (!stream->WaitDone(absl::ZeroDuration())) {
      stream->Cancel();
      cancelled = true;
    }
  }
  // After a cancel gRPC still calls OnDone; the reactors must outlive it. A call with a chunk
  // parked holds its OnDone until the pacer sends it (within one period).
  for (auto& stream : streams) stream->WaitDone(absl::InfiniteDuration());
  if (pacer_thread.joinable()) {
    pacer.Finish();
    pacer_thread.join();
  }
  if (cancelled) {
    absl::MutexLock lock(&shared.mu);
    shared.error_samples.push_back(
        absl::StrCat("streams cancelled after a drain of ", options.drain_timeout_s, " s"));
  }

  std::vector<int64_t> latencies;
  for (const auto& stream : streams) {
    latencies.insert(latencies.end(), stream->latencies().begin(), stream->latencies().end());
  }
  std::sort(latencies.begin(), latencies.end());

  report.sessions = options.sessions;
  report.streams = num_streams;
  report.chunk_steps = options.chunk_steps;
  report.chunks = shared.chunks.load();
  report.timesteps = report.chunks * options.chunk_steps;
  if (report.elapsed_s > 0) {
    report.chunks_per_s = static_cast<double>(report.window_chunks) / report.elapsed_s;
    report.timesteps_per_s = report.chunks_per_s * static_cast<double>(options.chunk_steps);
  }
  report.p50_ms = Percentile(latencies, 0.50);
  report.p99_ms = Percentile(latencies, 0.99);
  report.p999_ms = Percentile(latencies, 0.999);
  if (!latencies.empty()) {
    double sum = 0;
    for (int64_t l : latencies) sum += static_cast<double>(l);
    report.mean_ms = sum / static_cast<double>(latencies.size()) / 1e6;
    report.max_ms = static_cast<double>(latencies.back()) / 1e6;
  }
  std::vector<int64_t> lags = pacer.lags();
  for (const auto& stream : streams) {
    lags.insert(lags.end(), stream->send_lags().begin(), stream->send_lags().end());
  }
  std::sort(lags.begin(), lags.end());
  report.send_lag_p99_ms = Percentile(lags, 0.99);
  report.send_lag_max_ms = lags.empty() ? 0 : static_cast<double>(lags.back()) / 1e6;
  report.sends_late_by_a_period = static_cast<int64_t>(
      lags.end() - std::lower_bound(lags.begin(), lags.end(), shared.period_ns));
  if (shared.period_ns <= 0) report.sends_late_by_a_period = 0;
  report.errors = shared.errors.load();
  absl::MutexLock lock(&shared.mu);
  report.error_samples = shared.error_samples;
  return report;
}

}  // namespace client
}  // namespace rnnserve
