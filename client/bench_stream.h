// BenchStream: one gRPC Stream of a `rnnserve-client bench` run (client/stream_bench.h),
// carrying many sessions with one chunk in flight each, driven by gRPC's callback API; and
// Shared, the state all streams of a run share. Internal to RunStreamBench.
//
// Threading: gRPC runs the reactions on its own threads; see BenchStream. Paced runs hand
// chunks to a Pacer (client/stream_pacer.h), whose thread calls SendParked. Shared outlives
// every stream; a stream must outlive its call's OnDone.
#ifndef RNNSERVE_CLIENT_BENCH_STREAM_H_
#define RNNSERVE_CLIENT_BENCH_STREAM_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/stream_bench.h"
#include "client/stream_pacer.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"

namespace rnnserve {
namespace client {
namespace bench_internal {

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

}  // namespace bench_internal
}  // namespace client
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_BENCH_STREAM_H_
