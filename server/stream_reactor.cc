#include "server/stream_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/status_codec.h"
#include "server/message_codec.h"
#include "server/proto_convert.h"

namespace rnnserve {
namespace {

grpc::Status DrainStatus() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "server is shutting down; resume elsewhere: every request read on this "
                      "stream was answered, start the sessions on another replica with the "
                      "last h_n as h_0 (and c_n as c_0) and the next chunk_index");
}

// A reference held by a reaction for as long as it runs. gRPC runs OnDone (which drops gRPC's
// own reference and may delete the reactor) only after every reaction has returned, but it
// orders the two inside its core, where ThreadSanitizer cannot see it; the reference count's
// atomics make that order visible, so the reactor's destruction never looks like a race with a
// reaction's last unlock.
class ReactionRef {
 public:
  explicit ReactionRef(StreamReactor* reactor) : reactor_(reactor) { reactor_->Ref(); }
  ~ReactionRef() { reactor_->Unref(); }
  ReactionRef(const ReactionRef&) = delete;
  ReactionRef& operator=(const ReactionRef&) = delete;

 private:
  StreamReactor* const reactor_;
};

}  // namespace

StreamReactor::StreamReactor(ServingCore* core, Metrics* metrics, const ServiceOptions& options,
                             StreamRegistry* registry, absl::StatusOr<std::string> principal)
    : core_(core), metrics_(metrics), options_(options), registry_(registry) {
  metrics_->StreamOpened();
  std::optional<grpc::Status> refuse;
  if (!principal.ok()) {
    refuse = ToGrpcStatus(principal.status());
  } else if (!registry_->Add(this)) {
    refuse = DrainStatus();
  }
  if (refuse.has_value()) {
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
    }
    Finish(*refuse);
    return;
  }
  principal_ = std::move(principal).value();
  absl::MutexLock lock(&mu_);
  last_activity_ = absl::Now();
  MaybeReadLocked();
}

void StreamReactor::OnReadDone(bool ok) {
  const ReactionRef held(this);
  if (!ok) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      read_busy_ = false;
      no_more_reads_ = true;
      if (!broken_ && !finished_) half_closed_ = true;
      finish = FinishNowLocked();
    }
    FinishIf(finish);
    return;
  }
  v1::StreamRequest request;
  const int64_t request_bytes = static_cast<int64_t>(read_buffer_.Length());
  const absl::Status parsed = ParseMessage(read_buffer_, options_.max_message_bytes, &request);
  read_buffer_.Clear();
  {
    std::optional<grpc::Status> finish;
    bool submit = false;
    {
      absl::MutexLock lock(&mu_);
      ++requests_read_;
      if (finished_ || broken_) {
        // Arrived as the stream ended: not applied, and the client learns nothing of it.
        read_busy_ = false;
        finish = FinishNowLocked();
      } else if (!parsed.ok()) {
        read_busy_ = false;
        no_more_reads_ = true;
        EndWhenAnsweredLocked(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("request ", requests_read_, " on this stream: ", parsed.message(),
                         "; the stream ends here (the requests before it were answered)")));
        finish = FinishNowLocked();
      } else {
        ++unanswered_;
        last_activity_ = absl::Now();
        submit = true;
      }
    }
    if (!submit) {
      FinishIf(finish);
      return;
    }
  }
  metrics_->StreamRequestRead();
  // The input's raw bytes move out of the request into the chunk.
  DecodedStreamRequest chunk = StreamRequestToChunk(&request);
  chunk.chunk.principal = principal_;
  const uint64_t request_id = chunk.request_id;
  const TensorEncoding encoding = chunk.encoding;
  // `done` may run inline (a request refused at admission).
  const int64_t response_bound = core_->SubmitChunk(
      std::move(chunk.chunk), [this, request_id, encoding, request_bytes](ChunkResult result) {
        OnResult(request_id, encoding, request_bytes, std::move(result));
      });
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    expected_bytes_ += request_bytes + response_bound;
    read_busy_ = false;
    MaybeReadLocked();
    finish = FinishNowLocked();
  }
  FinishIf(finish);
}

void StreamReactor::OnResult(uint64_t request_id, TensorEncoding encoding, int64_t request_bytes,
                             ChunkResult result) {
  const int64_t reserved = request_bytes + result.response_bound;
  metrics_->CountRequest("Stream", ModelLabel(core_->models(), result.model),
                         result.status.code());
  v1::StreamResponse response =
      ChunkResultToResponse(std::move(result), request_id, encoding, options_.max_message_bytes);
  const int64_t bytes = static_cast<int64_t>(response.ByteSizeLong());
  // A worker thread, not a gRPC reaction: once Finish() is called, OnDone() may run at once on
  // another thread; the reference keeps `this` alive until this function is done with it.
  Ref();
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    --unanswered_;
    expected_bytes_ -= reserved;
    if (!broken_) {
      queued_.push_back(Queued{std::move(response), bytes});
      buffered_bytes_ += bytes;
      metrics_->StreamBufferedBytes(bytes);
      MaybeWriteLocked();
      MaybeReadLocked();
    }
    finish = FinishNowLocked();
  }
  FinishIf(finish);
  Unref();
}

void StreamReactor::OnWriteDone(bool ok) {
  const ReactionRef held(this);
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    write_buffer_.Clear();
    buffered_bytes_ -= write_bytes_;
    metrics_->StreamBufferedBytes(-write_bytes_);
    write_bytes_ = 0;
    if (!ok) BreakLocked();
    if (InFlightLocked() == 0) last_activity_ = absl::Now();
    MaybeWriteLocked();
    MaybeReadLocked();
    finish = FinishNowLocked();
  }
  FinishIf(finish);
}

void StreamReactor::OnCancel() {
  const ReactionRef held(this);
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    BreakLocked();
    finish = FinishNowLocked();
  }
  FinishIf(finish);
}

void StreamReactor::OnDone() {
  registry_->Remove(this);
  metrics_->StreamClosed();
  Unref();
}

void StreamReactor::Ref() { refs_.fetch_add(1); }

void StreamReactor::Unref() {
  if (refs_.fetch_sub(1) == 1) delete this;
}

void StreamReactor::Drain() {
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    // A client that already half-closed gets its answers and OK, as without the drain.
    if (!half_closed_) EndWhenAnsweredLocked(DrainStatus());
    finish = FinishNowLocked();
  }
  FinishIf(finish);
}

void StreamReactor::StopReading() {
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    no_more_reads_ = true;
    if (!half_closed_) EndWhenAnsweredLocked(DrainStatus());
    finish = FinishNowLocked();
  }
  FinishIf(finish);
}

void StreamReactor::EndIfIdle(absl::Time now, absl::Duration timeout) {
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || InFlightLocked() > 0 || now - last_activity_ < timeout) return;
    EndWhenAnsweredLocked(grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("stream idle for ", absl::FormatDuration(timeout),
                     " (--stream_idle_timeout): ended; its sessions are kept, continue them on a "
                     "new stream")));
    finish = FinishNowLocked();
  }
  FinishIf(finish);
}

void StreamReactor::MaybeReadLocked() {
  if (read_busy_ || no_more_reads_ || broken_ || finished_) return;
  const bool over_count = InFlightLocked() >= options_.max_in_flight_per_stream;
  // What is queued plus what the unanswered requests may still add (see the header); with
  // nothing in flight one request is always read (its bound is at most a message).
  const bool over_bytes = InFlightLocked() > 0 && buffered_bytes_ + expected_bytes_ >=
                                                      options_.max_stream_buffered_bytes;
  if (over_count || over_bytes) {
    if (!read_paused_) {
      read_paused_ = true;
      metrics_->StreamReadPaused();
    }
    return;
  }
  if (read_paused_) {
    read_paused_ = false;
    metrics_->StreamReadResumed();
  }
  read_busy_ = true;
  StartRead(&read_buffer_);
}

void StreamReactor::MaybeWriteLocked() {
  if (writing_ || queued_.empty() || broken_) return;
  Queued next = std::move(queued_.front());
  queued_.pop_front();
  // The notice goes on every response written after the drain began, queued before or not.
  if (draining_) next.response.set_draining(true);
  SerializeMessage(next.response, &write_buffer_);
  write_bytes_ = next.bytes;
  writing_ = true;
  StartWrite(&write_buffer_);
}

void StreamReactor::BreakLocked() {
  if (broken_) return;
  broken_ = true;
  no_more_reads_ = true;
  for (const Queued& queued : queued_) {
    buffered_bytes_ -= queued.bytes;
    metrics_->StreamBufferedBytes(-queued.bytes);
  }
  queued_.clear();
  // The write in progress completes through OnWriteDone; a read outstanding completes with
  // ok=false once the call is finished.
}

void StreamReactor::EndWhenAnsweredLocked(grpc::Status status) {
  if (!end_status_.has_value()) end_status_ = std::move(status);
}

std::optional<grpc::Status> StreamReactor::FinishNowLocked() {
  if (finished_ || writing_ || InFlightLocked() > 0) return std::nullopt;
  // With an end status (or a broken call) a read may still be outstanding: it completes with
  // ok=false after Finish(), or with a request that is then dropped unread.
  const bool reads_over = no_more_reads_ && !read_busy_;
  if (!broken_ && !end_status_.has_value() && !reads_over) return std::nullopt;
  finished_ = true;
  if (read_paused_) {
    read_paused_ = false;
    metrics_->StreamReadResumed();
  }
  if (broken_) return grpc::Status::CANCELLED;
  return end_status_.value_or(grpc::Status::OK);
}

void StreamReactor::FinishIf(std::optional<grpc::Status> status) {
  // Called without mu_: OnDone() may run on another thread as soon as Finish() is called.
  // The caller is a gRPC reaction (OnDone waits for it to return) or holds a reference.
  if (status.has_value()) Finish(*status);
}

}  // namespace rnnserve
