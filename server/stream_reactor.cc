#include "server/stream_reactor.h"

#include <utility>

#include "proto/status_codec.h"
#include "server/proto_convert.h"

namespace rnnserve {

StreamReactor::StreamReactor(ServingCore* core, Metrics* metrics, const ServiceOptions& options,
                             std::atomic<int64_t>* open_streams,
                             absl::StatusOr<std::string> principal)
    : core_(core), metrics_(metrics), options_(options), open_streams_(open_streams) {
  ++*open_streams_;
  if (!principal.ok()) {
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
    }
    Finish(ToGrpcStatus(principal.status()));
    return;
  }
  principal_ = std::move(principal).value();
  StartRead(&request_);
}

void StreamReactor::OnReadDone(bool ok) {
  if (!ok) {
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      finish = ShouldFinishLocked();
    }
    if (finish) Finish(grpc::Status::OK);
    return;
  }
  // The input's raw bytes move out of request_ (read into again next) into the chunk.
  DecodedStreamRequest chunk = StreamRequestToChunk(&request_);
  chunk.chunk.principal = principal_;
  {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
  }
  const uint64_t request_id = chunk.request_id;
  const TensorEncoding encoding = chunk.encoding;
  core_->SubmitChunk(std::move(chunk.chunk), [this, request_id, encoding](ChunkResult result) {
    OnResult(request_id, encoding, std::move(result));
  });
  bool read_more;
  {
    absl::MutexLock lock(&mu_);
    read_more = in_flight_ < options_.max_in_flight_per_stream;
    read_paused_ = !read_more;
    // Counted under mu_, so that the resume (also under mu_) is counted after it.
    if (read_paused_) metrics_->StreamReadPaused();
  }
  if (read_more) StartRead(&request_);
}

void StreamReactor::OnWriteDone(bool ok) {
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    writes_.pop_front();
    --in_flight_;
    writing_ = false;
    if (!ok) {
      BreakLocked();
    } else if (!writes_.empty()) {
      writing_ = true;
      StartWrite(&writes_.front());
    }
    finish = AfterProgressLocked();
  }
  if (finish) Finish(grpc::Status::OK);
}

void StreamReactor::OnCancel() {
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    BreakLocked();
    finish = AfterProgressLocked();
  }
  if (finish) Finish(grpc::Status::CANCELLED);
}

void StreamReactor::OnDone() {
  --*open_streams_;
  delete this;
}

void StreamReactor::OnResult(uint64_t request_id, TensorEncoding encoding, ChunkResult result) {
  metrics_->CountRequest("Stream", ModelLabel(core_->models(), result.model),
                         result.status.code());
  v1::StreamResponse response =
      ChunkResultToResponse(std::move(result), request_id, encoding, options_.max_message_bytes);
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    if (broken_) {
      --in_flight_;
    } else {
      writes_.push_back(std::move(response));
      if (!writing_) {
        writing_ = true;
        StartWrite(&writes_.front());
      }
    }
    finish = AfterProgressLocked();
  }
  // Nothing touches `this` after Finish(): OnDone() may delete it at once.
  if (finish) Finish(grpc::Status::OK);
}

void StreamReactor::BreakLocked() {
  if (broken_) return;
  broken_ = true;
  // The write in progress (front) completes through OnWriteDone.
  const size_t keep = writing_ ? 1 : 0;
  while (writes_.size() > keep) {
    writes_.pop_back();
    --in_flight_;
  }
  // With no read outstanding, no OnReadDone will come to end the reading side.
  if (read_paused_) {
    reads_done_ = true;
    read_paused_ = false;
    metrics_->StreamReadResumed();
  }
}

bool StreamReactor::AfterProgressLocked() {
  if (read_paused_ && !broken_ && in_flight_ < options_.max_in_flight_per_stream) {
    read_paused_ = false;
    metrics_->StreamReadResumed();
    StartRead(&request_);
  }
  return ShouldFinishLocked();
}

bool StreamReactor::ShouldFinishLocked() {
  if (finished_ || !reads_done_ || in_flight_ > 0 || writing_) return false;
  finished_ = true;
  return true;
}

}  // namespace rnnserve
