#include "server/rnn_service.h"

#include <utility>

#include "base/log.h"
#include "base/text.h"
#include "proto/status_codec.h"
#include "server/proto_convert.h"

namespace rnnserve {

absl::StatusOr<std::string> CallAuth::Principal(const grpc::ServerContextBase& context) const {
  if (!enabled()) return std::string();
  CallAuthOptions options;
  options.accept_client_certificate = client_certificates;
  if (tokens != nullptr) return AuthenticateCall(*tokens, context, options);
  // mTLS without a tokens file: an empty table refuses every token, so only a certificate
  // gives a principal.
  static const TokenAuthenticator* const no_tokens =
      new TokenAuthenticator(std::vector<TokenEntry>());
  return AuthenticateCall(*no_tokens, context, options);
}

RnnServiceImpl::RnnServiceImpl(ServingCore* core, Metrics* metrics,
                               const ServiceOptions& options, CallAuth auth)
    : core_(core), metrics_(metrics), options_(options), auth_(std::move(auth)) {}

void RnnServiceImpl::FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc,
                                 const std::string& model, const absl::Status& status) {
  metrics_->CountRequest(rpc, ModelLabel(core_->models(), model), status.code());
  // Per request, so at DEBUG. Messages that echo ids or model names were made with Printable
  // by whoever wrote them; the whole message is escaped and bounded again here.
  if (!status.ok()) {
    LogDebug(rpc, " failed: ", absl::StatusCodeToString(status.code()), ": ",
            Printable(status.message(), 512));
  }
  reactor->Finish(ToGrpcStatus(status));
}

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* RnnServiceImpl::Stream(
    grpc::CallbackServerContext* context) {
  absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    metrics_->CountRequest("Stream", ModelLabel(core_->models(), ""), principal.status().code());
  }
  return new StreamReactor(core_, metrics_, options_, &open_streams_, std::move(principal));
}

grpc::ServerUnaryReactor* RnnServiceImpl::Forward(grpc::CallbackServerContext* context,
                                                  const v1::ForwardRequest* request,
                                                  v1::ForwardResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    FinishUnary(reactor, "Forward", "", principal.status());
    return reactor;
  }
  absl::StatusOr<ForwardArgs> args = ForwardRequestToArgs(*request);
  if (!args.ok()) {
    FinishUnary(reactor, "Forward", request->model(), args.status());
    return reactor;
  }
  const std::string model = args->model;
  const TensorEncoding encoding = args->encoding;
  core_->Forward(model, std::move(args->input), std::move(args->h0),
                 [this, reactor, response, model, encoding](absl::StatusOr<ForwardResult> result) {
                   if (result.ok()) ForwardResultToResponse(*result, encoding, response);
                   FinishUnary(reactor, "Forward", model, result.status());
                 });
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                     const v1::ListModelsRequest* request,
                                                     v1::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (principal.ok()) {
    for (const ServedModel* model : core_->models().All()) {
      ModelInfoToProto(*model, response->add_models());
    }
  }
  FinishUnary(reactor, "ListModels", "", principal.status());
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                   const v1::GetModelRequest* request,
                                                   v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    FinishUnary(reactor, "GetModel", "", principal.status());
    return reactor;
  }
  const ServedModel* model = core_->models().Find(request->model());
  absl::Status status;
  if (model == nullptr) {
    status = core_->models().UnknownModelError(request->model());
  } else {
    ModelInfoToProto(*model, response);
  }
  FinishUnary(reactor, "GetModel", model != nullptr ? model->name : "", status);
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::GetSession(grpc::CallbackServerContext* context,
                                                     const v1::GetSessionRequest* request,
                                                     v1::SessionInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    FinishUnary(reactor, "GetSession", "", principal.status());
    return reactor;
  }
  absl::StatusOr<SessionSnapshot> session =
      core_->GetSession(request->session_id(), !request->omit_state(), *principal);
  std::string model;
  if (session.ok()) {
    model = session->model;
    SessionInfoToProto(*session, request->raw() ? TensorEncoding::kRaw : TensorEncoding::kValues,
                       response);
  }
  FinishUnary(reactor, "GetSession", model, session.status());
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::CloseSession(grpc::CallbackServerContext* context,
                                                       const v1::CloseSessionRequest* request,
                                                       v1::CloseSessionResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    FinishUnary(reactor, "CloseSession", "", principal.status());
    return reactor;
  }
  absl::StatusOr<SessionSnapshot> session =
      core_->CloseSession(request->session_id(), *principal);
  std::string model;
  if (session.ok()) {
    model = session->model;
    SessionInfoToProto(*session, TensorEncoding::kValues, response->mutable_session());
  }
  FinishUnary(reactor, "CloseSession", model, session.status());
  return reactor;
}

}  // namespace rnnserve
