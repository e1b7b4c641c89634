#include "client/rnnserve_client.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/status_codec.h"

namespace rnnserve {
namespace client {

namespace {

// Prefixes a decoding error so it reads as the server's fault, not the caller's.
absl::Status BadResponse(const absl::Status& status) {
  return absl::InternalError(absl::StrCat("malformed response from server: ", status.message()));
}

absl::StatusOr<SessionState> ToSessionState(v1::SessionInfo info) {
  SessionState state;
  auto h_n = DecodeOptional(info.h_n(), "h_n");
  if (!h_n.ok()) return BadResponse(h_n.status());
  state.h_n = *std::move(h_n);
  info.clear_h_n();
  state.info = std::move(info);
  return state;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RnnServeClient>> RnnServeClient::Connect(
    const std::string& target, ClientOptions options) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(target, options));
  return std::make_unique<RnnServeClient>(std::move(channel), std::move(options));
}

RnnServeClient::RnnServeClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      stub_(v1::RnnService::NewStub(channel_)),
      options_(options) {}

void RnnServeClient::SetDeadline(grpc::ClientContext* context) const {
  if (options_.timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  }
}

absl::StatusOr<std::vector<v1::ModelInfo>> RnnServeClient::ListModels() {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ListModelsResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->ListModels(&context, {}, &response)));
  return std::vector<v1::ModelInfo>(response.models().begin(), response.models().end());
}

absl::StatusOr<v1::ModelInfo> RnnServeClient::GetModel(const std::string& model) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetModelRequest request;
  request.set_model(model);
  v1::ModelInfo response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->GetModel(&context, request, &response)));
  return response;
}

absl::StatusOr<ForwardResult> RnnServeClient::Forward(const std::string& model,
                                                      const Tensor& input, const Tensor* h0) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ForwardRequest request;
  request.set_model(model);
  EncodeTensor(input, options_.encoding, request.mutable_input());
  if (h0 != nullptr) EncodeTensor(*h0, options_.encoding, request.mutable_h_0());
  v1::ForwardResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->Forward(&context, request, &response)));
  ForwardResult result;
  auto output = DecodeTensor(response.output(), "output");
  if (!output.ok()) return BadResponse(output.status());
  auto h_n = DecodeTensor(response.h_n(), "h_n");
  if (!h_n.ok()) return BadResponse(h_n.status());
  return ForwardResult{*std::move(output), *std::move(h_n)};
}

absl::StatusOr<SessionState> RnnServeClient::GetSession(const std::string& session_id,
                                                        bool omit_state) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  request.set_omit_state(omit_state);
  request.set_raw(options_.encoding == TensorEncoding::kRaw);
  v1::SessionInfo response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->GetSession(&context, request, &response)));
  return ToSessionState(std::move(response));
}

absl::StatusOr<SessionState> RnnServeClient::CloseSession(const std::string& session_id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::CloseSessionRequest request;
  request.set_session_id(session_id);
  v1::CloseSessionResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->CloseSession(&context, request, &response)));
  return ToSessionState(std::move(*response.mutable_session()));
}

absl::StatusOr<std::unique_ptr<StreamChannel>> RnnServeClient::OpenStream() {
  // Wait for the connection here so an unreachable server is reported as such, rather than as
  // a broken stream on the first Send. Fails fast, as unary calls do, once a connection
  // attempt has failed.
  const auto deadline = options_.timeout == absl::InfiniteDuration()
                            ? std::chrono::system_clock::time_point::max()
                            : absl::ToChronoTime(absl::Now() + options_.timeout);
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError("cannot connect to the server");
    }
    if (!channel_->WaitForStateChange(state, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no connection to the server within ", absl::FormatDuration(options_.timeout)));
    }
    state = channel_->GetState(/*try_to_connect=*/true);
  }
  return std::unique_ptr<StreamChannel>(new StreamChannel(stub_.get(), options_.encoding));
}

StreamChannel::StreamChannel(v1::RnnService::Stub* stub, TensorEncoding encoding)
    : encoding_(encoding), stream_(stub->Stream(&context_)) {}

StreamChannel::~StreamChannel() { Finish().IgnoreError(); }

absl::Status StreamChannel::BrokenStatus() {
  absl::Status status = Finish();
  if (status.ok()) return absl::UnavailableError("the server closed the stream");
  return status;
}

absl::StatusOr<uint64_t> StreamChannel::Send(v1::StreamRequest request) {
  // A broken stream keeps answering with the status that broke it.
  if (final_status_.has_value() && !final_status_->ok()) return *final_status_;
  if (writes_done_) return absl::FailedPreconditionError("the stream is finished");
  if (request.request_id() == 0) request.set_request_id(next_request_id_++);
  const uint64_t id = request.request_id();
  // Not BrokenStatus() here: Finish() would discard responses the caller has yet to Read().
  if (!stream_->Write(request)) {
    return absl::UnavailableError("the stream is broken; Finish() gives the server's status");
  }
  return id;
}

absl::StatusOr<v1::StreamResponse> StreamChannel::Read() {
  if (final_status_.has_value()) return BrokenStatus();
  v1::StreamResponse response;
  if (!stream_->Read(&response)) return BrokenStatus();
  return response;
}

absl::StatusOr<ChunkResult> StreamChannel::Decode(const v1::StreamResponse& response) {
  RETURN_IF_ERROR(FromStreamError(response.error_code(), response.error_message()));
  ChunkResult result;
  result.session_id = response.session_id();
  auto output = DecodeOptional(response.output(), "output");
  if (!output.ok()) return BadResponse(output.status());
  if (output->has_value()) result.output = std::move(**output);
  auto h_n = DecodeOptional(response.h_n(), "h_n");
  if (!h_n.ok()) return BadResponse(h_n.status());
  result.h_n = *std::move(h_n);
  result.steps_seen = response.steps_seen();
  if (response.has_chunk_index()) result.chunk_index = response.chunk_index();
  result.duplicate = response.duplicate();
  result.ended = response.ended();
  return result;
}

absl::StatusOr<ChunkResult> StreamChannel::Call(v1::StreamRequest request) {
  absl::StatusOr<uint64_t> id = Send(std::move(request));
  if (!id.ok()) return writes_done_ ? id.status() : BrokenStatus();
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
                                                 bool end) {
  v1::StreamRequest request;
  request.set_model(model);
  request.set_session_id(session_id);
  request.set_start(true);
  request.set_end(end);
  request.set_omit_state(omit_state_);
  if (h0 != nullptr) EncodeTensor(*h0, encoding_, request.mutable_h_0());
  if (input != nullptr) EncodeTensor(*input, encoding_, request.mutable_input());
  return Call(std::move(request));
}

absl::StatusOr<ChunkResult> StreamChannel::SendChunk(const std::string& session_id,
                                                     const Tensor& input, bool end) {
  v1::StreamRequest request;
  request.set_session_id(session_id);
  request.set_end(end);
  request.set_omit_state(omit_state_);
  EncodeTensor(input, encoding_, request.mutable_input());
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
