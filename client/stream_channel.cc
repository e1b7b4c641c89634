// StreamChannel: one Stream call used synchronously, resuming its sessions by itself (see
// client/rnnserve_client.h and client/session_tracker.h).
#include <algorithm>
#include <memory>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "client/rnnserve_client.h"
#include "proto/status_codec.h"

namespace rnnserve {
namespace client {

namespace {

// Codes of a broken stream (the transport, a proxy, a dying server), after which a request
// that is safe to resend is resent. Anything else (a refused token, a message too large) is
// final.
bool Resumable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

constexpr int kUnavailableCode = static_cast<int>(grpc::StatusCode::UNAVAILABLE);

}  // namespace

StreamChannel::StreamChannel(RnnServeClient* client,
                             std::vector<std::pair<std::string, std::string>> metadata)
    : client_(client), metadata_(std::move(metadata)), resume_(client->options().resume) {
  OpenCall();
}

StreamChannel::~StreamChannel() { Finish().IgnoreError(); }

void StreamChannel::OpenCall() {
  if (stream_ != nullptr && !final_status_.has_value()) {
    context_->TryCancel();
    stream_->Finish().IgnoreError();  // CANCELLED: everything on it is resent or answered
  }
  context_ = std::make_unique<grpc::ClientContext>();
  for (const auto& [key, value] : metadata_) context_->AddMetadata(key, value);
  stream_ = client_->stub()->Stream(context_.get());
  final_status_.reset();
  writes_done_ = false;
  draining_ = false;
}

absl::Status StreamChannel::BrokenStatus() {
  absl::Status status = FinishCall();
  if (status.ok()) return absl::UnavailableError("the server closed the stream");
  return status;
}

absl::StatusOr<uint64_t> StreamChannel::Send(v1::StreamRequest request) {
  if (closed_) return absl::FailedPreconditionError("the stream is finished");
  if (given_up_.has_value()) return *given_up_;
  // Without resume, a broken stream keeps answering with the status that broke it.
  if (!resume_ && final_status_.has_value() && !final_status_->ok()) return *final_status_;
  if (request.request_id() == 0) request.set_request_id(next_request_id_++);
  const uint64_t id = request.request_id();
  Pending pending;
  pending.tracked = resume_ && tracker_.Tracks(request);
  if (pending.tracked) {
    bool bidirectional = false;
    if (request.start()) {
      absl::StatusOr<bool> buffers = client_->BuffersUntilEnd(request.model());
      // An unknown model is the server's to refuse, in-stream.
      if (!buffers.ok() && buffers.status().code() != absl::StatusCode::kNotFound &&
          buffers.status().code() != absl::StatusCode::kInvalidArgument) {
        return buffers.status();
      }
      bidirectional = buffers.value_or(false);
    }
    pending.caller_omit = tracker_.Prepare(&request, bidirectional);
  }
  if (resume_ && draining_ && pending_.empty()) {
    OpenCall();  // the server is draining and owes nothing on this call: go elsewhere now
  }
  const bool written = !final_status_.has_value() && stream_->Write(request);
  // Not BrokenStatus() here: Finish() would discard responses the caller has yet to Read().
  if (!written && !resume_) {
    return absl::UnavailableError("the stream is broken; Finish() gives the server's status");
  }
  pending.request = std::move(request);
  pending_.push_back(std::move(pending));  // unwritten with resume: Read() resends it
  return id;
}

absl::StatusOr<v1::StreamResponse> StreamChannel::Read() {
  while (true) {
    if (!ready_.empty()) {
      v1::StreamResponse response = std::move(ready_.front());
      ready_.pop_front();
      return response;
    }
    if (given_up_.has_value()) return *given_up_;
    v1::StreamResponse response;
    if (final_status_.has_value() || !stream_->Read(&response)) {
      absl::Status status = BrokenStatus();
      if (!resume_ || closed_ || pending_.empty() || !Resumable(status)) return status;
      RETURN_IF_ERROR(Recover(status));
      continue;
    }
    if (pending_.empty()) return response;
    Pending pending = std::move(pending_.front());
    pending_.pop_front();
    if (response.draining()) draining_ = true;
    if (pending.tracked) {
      if (response.error_code() == kUnavailableCode ||
          tracker_.ShouldRestart(pending.request, response)) {
        // Refused by a draining server, or the session is gone from this replica: resend
        // everything unanswered on a new call (restarting the session there).
        const absl::Status cause =
            FromStreamError(response.error_code(), response.error_message());
        pending_.push_front(std::move(pending));
        RETURN_IF_ERROR(Recover(cause));
        continue;
      }
      tracker_.Answered(pending.request, pending.caller_omit, &response);
    }
    return response;
  }
}

absl::Status StreamChannel::Recover(absl::Status cause) {
  const ResumePolicy& policy = client_->options().resume_policy;
  const absl::Time deadline = absl::Now() + policy.deadline;
  absl::Duration backoff = policy.initial_backoff;
  absl::BitGen random;
  for (int attempt = 0;; ++attempt) {
    if (attempt >= policy.max_attempts || absl::Now() >= deadline) {
      given_up_ = absl::UnavailableError(
          absl::StrCat("gave up resuming the stream after ", attempt, " attempt(s) within ",
                       absl::FormatDuration(policy.deadline), ": ", cause.message()));
      return *given_up_;
    }
    absl::SleepFor(std::min(backoff * absl::Uniform(random, 0.5, 1.0), deadline - absl::Now()));
    backoff = std::min(backoff * 2, policy.max_backoff);
    ++resumes_;
    OpenCall();
    absl::Status status = ReplayPending();
    if (status.ok()) return status;
    if (!Resumable(status)) {
      given_up_ = status;
      return status;
    }
    cause = std::move(status);
  }
}

absl::Status StreamChannel::ReplayPending() {
  while (!pending_.empty()) {
    Pending& pending = pending_.front();
    v1::StreamResponse response;
    if (!pending.tracked && !pending.request.has_chunk_index()) {
      response.set_request_id(pending.request.request_id());
      response.set_session_id(pending.request.session_id());
      response.set_error_code(kUnavailableCode);
      response.set_error_message(
          "the stream broke before this request was answered, and it was not resent: without "
          "a chunk_index a resend could apply it twice (it may or may not have been applied)");
    } else {
      std::vector<v1::StreamRequest> sends = {pending.request};
      bool restarted = false;
      while (true) {
        for (size_t i = 0; i < sends.size(); ++i) {
          if (!stream_->Write(sends[i]) || !stream_->Read(&response)) return BrokenStatus();
          if (i + 1 < sends.size() && response.error_code() != 0) {
            return absl::Status(
                static_cast<absl::StatusCode>(response.error_code()),
                absl::StrCat("replaying a bidirectional session failed: ",
                             response.error_message()));
          }
        }
        if (response.draining()) draining_ = true;
        if (pending.tracked && response.error_code() == kUnavailableCode) {
          return absl::UnavailableError(response.error_message());
        }
        if (restarted || !pending.tracked || !tracker_.ShouldRestart(pending.request, response)) {
          break;
        }
        sends = tracker_.RestartRequests(pending.request);
        restarted = true;
      }
      if (pending.tracked) {
        RETURN_IF_ERROR(RecomputeOutput(pending.request, &response));
        tracker_.Answered(pending.request, pending.caller_omit, &response);
      }
    }
    ready_.push_back(std::move(response));
    pending_.pop_front();
  }
  return absl::OkStatus();
}

absl::Status StreamChannel::RecomputeOutput(const v1::StreamRequest& request,
                                            v1::StreamResponse* response) {
  const std::string& id = request.session_id();
  if (!response->duplicate() || response->error_code() != 0 ||
      response->output().shape_size() > 0 || !request.has_input() ||
      request.input().shape_size() == 0 || tracker_.Bidirectional(id)) {
    return absl::OkStatus();
  }
  // An older chunk than the session's last: applied, its answer lost, its output gone from
  // the server. torch's rnn(input, state before it) is that output.
  grpc::ClientContext context;
  for (const auto& [key, value] : metadata_) context.AddMetadata(key, value);
  if (client_->options().timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + client_->options().timeout));
  }
  v1::ForwardRequest forward;
  forward.set_model(tracker_.Model(id));
  *forward.mutable_input() = request.input();
  if (const v1::Tensor* state = tracker_.ResumeState(id)) *forward.mutable_h_0() = *state;
  if (const v1::Tensor* cell = tracker_.ResumeCellState(id)) *forward.mutable_c_0() = *cell;
  v1::ForwardResponse result;
  RETURN_IF_ERROR(FromGrpcStatus(client_->stub()->Forward(&context, forward, &result)));
  *response->mutable_output() = std::move(*result.mutable_output());
  *response->mutable_h_n() = std::move(*result.mutable_h_n());
  if (result.has_c_n()) *response->mutable_c_n() = std::move(*result.mutable_c_n());
  return absl::OkStatus();
}

absl::StatusOr<ChunkResult> StreamChannel::Call(v1::StreamRequest request) {
  absl::StatusOr<uint64_t> id = Send(std::move(request));
  if (!id.ok()) return (closed_ || resume_) ? id.status() : BrokenStatus();
  ASSIGN_OR_RETURN(v1::StreamResponse response, Read());
  if (response.request_id() != *id) {
    return absl::InternalError(absl::StrCat("response answers request ", response.request_id(),
                                            ", expected ", *id,
                                            " (responses read out of order?)"));
  }
  return Decode(response);
}

absl::StatusOr<ChunkResult> StreamChannel::Start(const std::string& model,
                                                 const std::string& session_id,
                                                 const Tensor* h0, const Tensor* input,
                                                 bool end, const Tensor* c0) {
  v1::StreamRequest request;
  request.set_model(model);
  request.set_model_version(model_version_);
  request.set_session_id(session_id);
  request.set_start(true);
  request.set_end(end);
  request.set_omit_state(omit_state_);
  if (h0 != nullptr) EncodeTensor(*h0, client_->options().encoding, request.mutable_h_0());
  if (c0 != nullptr) EncodeTensor(*c0, client_->options().encoding, request.mutable_c_0());
  if (input != nullptr) EncodeTensor(*input, client_->options().encoding, request.mutable_input());
  return Call(std::move(request));
}

absl::StatusOr<ChunkResult> StreamChannel::SendChunk(const std::string& session_id,
                                                     const Tensor& input, bool end) {
  v1::StreamRequest request;
  request.set_session_id(session_id);
  request.set_end(end);
  request.set_omit_state(omit_state_);
  EncodeTensor(input, client_->options().encoding, request.mutable_input());
  return Call(std::move(request));
}

absl::StatusOr<ChunkResult> StreamChannel::End(const std::string& session_id) {
  v1::StreamRequest request;
  request.set_session_id(session_id);
  request.set_end(true);
  request.set_omit_state(omit_state_);
  return Call(std::move(request));
}

absl::Status StreamChannel::Finish() {
  closed_ = true;
  absl::Status status = FinishCall();
  if (resume_ && pending_.empty() && Resumable(status)) return absl::OkStatus();
  return status;
}

absl::Status StreamChannel::FinishCall() {
  if (final_status_.has_value()) return *final_status_;
  if (!writes_done_) {
    writes_done_ = true;
    stream_->WritesDone();
  }
  // Drain responses the caller never read, so Finish() sees the trailing status.
  v1::StreamResponse ignored;
  while (stream_->Read(&ignored)) {
  }
  final_status_ = FromGrpcStatus(stream_->Finish());
  return *final_status_;
}

}  // namespace client
}  // namespace rnnserve
