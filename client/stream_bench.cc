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
#include "client/stream_pacer.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"

namespace rnnserve {
namespace client {
namespace {

// State shared by all streams of one run.
struct Shared {
  const StreamBenchOptions* options = nullptr;
  // Paced runs: the schedule's origin and period (0: closed loop), and the pacer.
  int64_t start_ns = 0;
  int64_t period_ns = 0;
  Pacer* pacer = nullptr;
  // Every chunk request is a copy of this (input already encoded), with its ids filled in.
  v1::StreamRequest chunk_template;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> chunks{0};
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> live_sessions{0};

  absl::Mutex mu;
  std::vector<std::string> error_samples ABSL_GUARDED_BY(mu);

  void RecordError(int64_t count, const std::string& message) {
    errors += count;
    absl::MutexLock lock(&mu);
    if (error_samples.size() < 8 &&
        std::find(error_samples.begin(), error_samples.end(), message) == error_samples.end()) {
      error_samples.push_back(message);
    }
  }
};

// One gRPC Stream carrying `num_sessions` sessions, each with one request in flight.
//
// Threading: gRPC runs the reactions on its own threads. OnReadDone calls are serialized (one
// read is outstanding at a time), so sessions_ and latencies_ are touched only there (and in
// Begin before the call starts, and in OnDone after every reaction). The write queue is shared
// between OnReadDone and OnWriteDone and guarded by mu_. StartWrite/StartWritesDone are called
// outside mu_, because gRPC may run a reaction inline on the calling thread.
class BenchStream final
    : public grpc::ClientBidiReactor<v1::StreamRequest, v1::StreamResponse>,
      public PacedSender {
 public:
  // Sessions first_session .. first_session + num_sessions - 1 of the run's `total_sessions`
  // (their place in the schedule of a paced run).
  BenchStream(Shared* shared, int64_t num_sessions, int64_t first_session,
              int64_t total_sessions)
      : shared_(shared), options_(*shared->options), sessions_(num_sessions) {
    for (int64_t i = 0; i < num_sessions; ++i) {
      sessions_[i].next_due_ns =
          shared->start_ns + shared->period_ns * (first_session + i) / total_sessions;
    }
  }

  void Begin(v1::RnnService::Stub* stub) {
    stub->async()->Stream(&context_, this);
    shared_->live_sessions += static_cast<int64_t>(sessions_.size());
    if (shared_->period_ns > 0) AddMultipleHolds(static_cast<int>(sessions_.size()));
    for (size_t i = 0; i < sessions_.size(); ++i) {
      if (shared_->period_ns > 0) {
        v1::StreamRequest chunk = MakeChunk(i, /*start=*/true);
        shared_->pacer->Park(sessions_[i].sent_ns, this, std::move(chunk));
      } else {
        Enqueue(MakeChunk(i, /*start=*/true));
      }
    }
    StartRead(&response_);
    StartCall();
  }

  // The pacer's send of a chunk parked with a hold (see Pacer).
  void SendParked(v1::StreamRequest request) override {
    Enqueue(std::move(request));
    RemoveHold();
  }

  void Cancel() { context_.TryCancel(); }
  bool WaitDone(absl::Duration timeout) { return done_.WaitForNotificationWithTimeout(timeout); }
  const std::vector<int64_t>& latencies() const { return latencies_; }
  const std::vector<int64_t>& send_lags() const { return send_lags_; }

  void OnWriteDone(bool ok) override {
    const v1::StreamRequest* next = nullptr;
    bool writes_done = false;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) {
        // The stream is broken; the read side ends too, and OnDone accounts for the sessions.
        broken_ = true;
        queue_.clear();
      }
      if (!broken_ && !queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        writes_done = TakeWritesDoneLocked();
      }
    }
    if (next != nullptr) StartWrite(next);
    if (writes_done) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the server ended the stream; OnDone follows
    HandleResponse(response_);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    int64_t unfinished = 0;
    for (const Session& s : sessions_) unfinished += s.phase != Phase::kDone;
    if (unfinished > 0) {
      shared_->live_sessions -= unfinished;
      shared_->RecordError(
          unfinished,
          status.ok() ? std::string("the server ended a stream with sessions unfinished")
                      : absl::StrCat("stream failed: ", GrpcCodeName(status.error_code()), ": ",
                                     status.error_message()));
    }
    done_.Notify();
  }

  static std::string GrpcCodeName(int code) {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  }

 private:
  enum class Phase { kActive, kEnding, kDone };
  struct Session {
    std::string id;
    int64_t chunks = 0;
    uint32_t seq = 0;  // sequence number of the request in flight
    int64_t sent_ns = 0;      // when it was sent; paced: its slot
    int64_t next_due_ns = 0;  // paced: the slot of the session's next chunk
    Phase phase = Phase::kActive;
  };

  // request_id = session index << 32 | the session's request sequence number, so a response
  // finds its session without a map.
  uint64_t NextRequestId(size_t index) {
    Session& s = sessions_[index];
    ++s.seq;
    s.sent_ns = NowNanos();
    return (static_cast<uint64_t>(index) << 32) | s.seq;
  }

  // A chunk request; paced, its latency counts from its slot, and the next slot is set.
  v1::StreamRequest MakeChunk(size_t index, bool start) {
    v1::StreamRequest request = shared_->chunk_template;
    Session& s = sessions_[index];
    request.set_request_id(NextRequestId(index));
    if (shared_->period_ns > 0) {
      s.sent_ns = s.next_due_ns;
      s.next_due_ns += shared_->period_ns;
    }
    if (start) {
      request.set_start(true);
      request.set_model(options_.model);
    } else {
      request.set_session_id(s.id);
    }
    // The last chunk closes the session itself, saving a round trip.
    if (options_.max_chunks > 0 && s.chunks + 1 >= options_.max_chunks) request.set_end(true);
    return request;
  }

  // Sends the session's next chunk now (closed loop, or paced and its slot has passed) or parks
  // it with the pacer until its slot. Runs in OnReadDone.
  void SendNextChunk(size_t index) {
    v1::StreamRequest chunk = MakeChunk(index, /*start=*/false);
    if (shared_->period_ns <= 0) {
      Enqueue(std::move(chunk));
      return;
    }
    const int64_t due = sessions_[index].sent_ns, now = NowNanos();
    if (due <= now) {
      send_lags_.push_back(now - due);
      Enqueue(std::move(chunk));
      return;
    }
    AddHold();  // within a reaction: allowed, and the pacer removes it
    shared_->pacer->Park(due, this, std::move(chunk));
  }

  v1::StreamRequest MakeEnd(size_t index) {
    v1::StreamRequest request;
    request.set_session_id(sessions_[index].id);
    request.set_end(true);
    request.set_omit_state(true);
    request.set_request_id(NextRequestId(index));
    return request;
  }

  void Enqueue(v1::StreamRequest request) {
    const v1::StreamRequest* to_write = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      queue_.push_back(std::move(request));
      if (!writing_) {
        writing_ = true;
        to_write = &queue_.front();  // deque: stable until OnWriteDone pops it
      }
    }
    if (to_write != nullptr) StartWrite(to_write);
  }

  void HandleResponse(const v1::StreamResponse& response) {
    const uint64_t index = response.request_id() >> 32;
    if (index >= sessions_.size() ||
        sessions_[index].seq != static_cast<uint32_t>(response.request_id()) ||
        sessions_[index].phase == Phase::kDone) {
      shared_->RecordError(1, absl::StrCat("response with unexpected request_id ",
                                           response.request_id()));
      return;
    }
    Session& s = sessions_[index];
    // A failed start may still have created the session (the response then names it).
    if (s.id.empty()) s.id = response.session_id();
    if (response.error_code() != 0) {
      shared_->RecordError(1, absl::StrCat(GrpcCodeName(response.error_code()), ": ",
                                           response.error_message()));
      // End a live session on the server; a failed start or end leaves nothing to end.
      if (s.phase == Phase::kActive && !s.id.empty() && !response.ended()) {
        s.phase = Phase::kEnding;
        Enqueue(MakeEnd(index));
      } else {
        FinishSession(index);
      }
      return;
    }
    if (s.phase == Phase::kEnding) {
      FinishSession(index);
      return;
    }
    latencies_.push_back(NowNanos() - s.sent_ns);
    ++s.chunks;
    ++shared_->chunks;
    if (response.ended()) {
      FinishSession(index);
    } else if (shared_->stop.load(std::memory_order_relaxed) ||
               (options_.max_chunks > 0 && s.chunks >= options_.max_chunks)) {
      s.phase = Phase::kEnding;
      Enqueue(MakeEnd(index));
    } else {
      SendNextChunk(index);
    }
  }

  void FinishSession(size_t index) {
    sessions_[index].phase = Phase::kDone;
    --shared_->live_sessions;
    bool writes_done = false;
    {
      absl::MutexLock lock(&mu_);
      if (++finished_sessions_ == sessions_.size()) {
        finishing_ = true;
        if (!writing_) writes_done = TakeWritesDoneLocked();
      }
    }
    // Half-close: the server then ends the stream, and OnDone runs.
    if (writes_done) StartWritesDone();
  }

  // Whether the caller should StartWritesDone() now (once, when all sessions are finished).
  bool TakeWritesDoneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finishing_ || writes_done_sent_ || broken_) return false;
    writes_done_sent_ = true;
    return true;
  }

  Shared* const shared_;
  const StreamBenchOptions& options_;
  grpc::ClientContext context_;
  v1::StreamResponse response_;
  std::vector<Session> sessions_;
  std::vector<int64_t> latencies_;
  std::vector<int64_t> send_lags_;  // paced chunks sent late from OnReadDone
  absl::Notification done_;

  absl::Mutex mu_;
  std::deque<v1::StreamRequest> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_sent_ ABSL_GUARDED_BY(mu_) = false;
  size_t finished_sessions_ ABSL_GUARDED_BY(mu_) = 0;
};

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
    std::vector<float> values(count);
    for (float& v : values) v = normal(rng);
    EncodeTensor(input_shape, values.data(), options.encoding,
                 shared.chunk_template.mutable_input());
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
