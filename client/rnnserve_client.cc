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
  auto c_n = DecodeOptional(info.c_n(), "c_n");
  if (!c_n.ok()) return BadResponse(c_n.status());
  state.c_n = *std::move(c_n);
  info.clear_h_n();
  info.clear_c_n();
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

absl::StatusOr<std::vector<v1::ModelVersionState>> RnnServeClient::RepositoryIndex() {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::RepositoryIndexResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->RepositoryIndex(&context, {}, &response)));
  return std::vector<v1::ModelVersionState>(response.models().begin(), response.models().end());
}

absl::StatusOr<v1::ModelInfo> RnnServeClient::GetModel(const std::string& model,
                                                       int64_t version) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetModelRequest request;
  request.set_model(model);
  request.set_model_version(version);
  v1::ModelInfo response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->GetModel(&context, request, &response)));
  return response;
}

absl::StatusOr<ForwardResult> RnnServeClient::Forward(const std::string& model,
                                                      const Tensor& input, const Tensor* h0,
                                                      const Tensor* c0, int64_t model_version) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ForwardRequest request;
  request.set_model(model);
  request.set_model_version(model_version);
  EncodeTensor(input, options_.encoding, request.mutable_input());
  if (h0 != nullptr) EncodeTensor(*h0, options_.encoding, request.mutable_h_0());
  if (c0 != nullptr) EncodeTensor(*c0, options_.encoding, request.mutable_c_0());
  v1::ForwardResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->Forward(&context, request, &response)));
  ForwardResult result;
  auto output = DecodeTensor(response.output(), "output");
  if (!output.ok()) return BadResponse(output.status());
  auto h_n = DecodeTensor(response.h_n(), "h_n");
  if (!h_n.ok()) return BadResponse(h_n.status());
  auto c_n = DecodeOptional(response.c_n(), "c_n");
  if (!c_n.ok()) return BadResponse(c_n.status());
  return ForwardResult{*std::move(output), *std::move(h_n), *std::move(c_n)};
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

absl::StatusOr<bool> RnnServeClient::BuffersUntilEnd(const std::string& model) {
  {
    absl::MutexLock lock(&mu_);
    auto it = buffers_until_end_.find(model);
    if (it != buffers_until_end_.end()) return it->second;
  }
  ASSIGN_OR_RETURN(v1::ModelInfo info, GetModel(model));
  absl::MutexLock lock(&mu_);
  buffers_until_end_[model] = info.streaming_buffers_until_end();
  return info.streaming_buffers_until_end();
}

absl::Status RnnServeClient::WaitConnected() {
  // Fails fast, as unary calls do, once a connection attempt has failed.
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
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StreamChannel>> RnnServeClient::OpenStream(
    std::vector<std::pair<std::string, std::string>> metadata) {
  // Wait for the connection here so an unreachable server is reported as such, rather than as
  // a broken stream on the first Send.
  RETURN_IF_ERROR(WaitConnected());
  return std::unique_ptr<StreamChannel>(new StreamChannel(this, std::move(metadata)));
}

// Here rather than in stream_channel.cc: it shares BadResponse with the unary calls.
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
  auto c_n = DecodeOptional(response.c_n(), "c_n");
  if (!c_n.ok()) return BadResponse(c_n.status());
  result.c_n = *std::move(c_n);
  result.steps_seen = response.steps_seen();
  result.model_version = response.model_version();
  if (response.has_chunk_index()) result.chunk_index = response.chunk_index();
  result.duplicate = response.duplicate();
  result.ended = response.ended();
  result.output_truncated = response.output_truncated();
  return result;
}

}  // namespace client
}  // namespace rnnserve
