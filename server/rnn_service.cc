#include "server/rnn_service.h"

#include <utility>

#include "base/log.h"
#include "proto/status_codec.h"
#include "server/proto_convert.h"

namespace rnnserve {

RnnServiceImpl::RnnServiceImpl(ServingCore* core, Metrics* metrics,
                               const ServiceOptions& options)
    : core_(core), metrics_(metrics), options_(options) {}

void RnnServiceImpl::FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc,
                                 const std::string& model, const absl::Status& status) {
  metrics_->CountRequest(rpc, ModelLabel(core_->models(), model), status.code());
  if (!status.ok()) LogInfo(rpc, " failed: ", status.ToString());
  reactor->Finish(ToGrpcStatus(status));
}

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* RnnServiceImpl::Stream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(core_, metrics_, options_, &open_streams_);
}

grpc::ServerUnaryReactor* RnnServiceImpl::Forward(grpc::CallbackServerContext* context,
                                                  const v1::ForwardRequest* request,
                                                  v1::ForwardResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
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
  for (const ServedModel* model : core_->models().All()) {
    ModelInfoToProto(*model, response->add_models());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  FinishUnary(reactor, "ListModels", "", absl::OkStatus());
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                   const v1::GetModelRequest* request,
                                                   v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
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
  absl::StatusOr<SessionSnapshot> session =
      core_->GetSession(request->session_id(), !request->omit_state());
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
  absl::StatusOr<SessionSnapshot> session = core_->CloseSession(request->session_id());
  std::string model;
  if (session.ok()) {
    model = session->model;
    SessionInfoToProto(*session, TensorEncoding::kValues, response->mutable_session());
  }
  FinishUnary(reactor, "CloseSession", model, session.status());
  return reactor;
}

}  // namespace rnnserve
