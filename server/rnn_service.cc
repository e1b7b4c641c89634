#include "server/rnn_service.h"

#include <utility>

#include "base/log.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "core/serving/client_text.h"
#include "proto/status_codec.h"
#include "server/message_codec.h"
#include "server/proto_convert.h"

namespace rnnserve {
namespace {

// The READY versions of model `name` (ModelInfo and LoadModelResponse's loaded_versions).
void AddLoadedVersions(const ModelRegistry& models, const std::string& name,
                       google::protobuf::RepeatedField<int64_t>* loaded_versions) {
  for (int64_t version : models.ReadyVersions(name)) loaded_versions->Add(version);
}

}  // namespace

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
    : core_(core),
      metrics_(metrics),
      options_(options),
      auth_(std::move(auth)),
      streams_(options.stream_idle_timeout) {}

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

template <typename Request, typename Response, typename Handle>
grpc::ServerUnaryReactor* RnnServiceImpl::Unary(grpc::CallbackServerContext* context,
                                                const char* rpc,
                                                const grpc::ByteBuffer* wire_request,
                                                grpc::ByteBuffer* wire_response, Handle handle) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    FinishUnary(reactor, rpc, "", principal.status());
    return reactor;
  }
  Request request;
  if (absl::Status parsed = ParseMessage(*wire_request, options_.max_message_bytes, &request);
      !parsed.ok()) {
    FinishUnary(reactor, rpc, "", parsed);
    return reactor;
  }
  Response response;
  std::string model;
  const absl::Status status = handle(*principal, request, &response, &model);
  if (status.ok()) SerializeMessage(response, wire_response);
  FinishUnary(reactor, rpc, model, status);
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* RnnServiceImpl::Stream(
    grpc::CallbackServerContext* context) {
  absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    metrics_->CountRequest("Stream", ModelLabel(core_->models(), ""), principal.status().code());
  }
  return new StreamReactor(core_, metrics_, options_, &streams_, std::move(principal));
}

grpc::ServerUnaryReactor* RnnServiceImpl::Forward(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* wire_request,
                                                  grpc::ByteBuffer* wire_response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<std::string> principal = auth_.Principal(*context);
  if (!principal.ok()) {
    FinishUnary(reactor, "Forward", "", principal.status());
    return reactor;
  }
  v1::ForwardRequest request;
  if (absl::Status parsed = ParseMessage(*wire_request, options_.max_message_bytes, &request);
      !parsed.ok()) {
    FinishUnary(reactor, "Forward", "", parsed);
    return reactor;
  }
  absl::StatusOr<ForwardArgs> args = ForwardRequestToArgs(request);
  if (!args.ok()) {
    FinishUnary(reactor, "Forward", request.model(), args.status());
    return reactor;
  }
  const std::string model = args->model;
  const TensorEncoding encoding = args->encoding;
  core_->Forward(
      model, args->model_version, std::move(args->input), std::move(args->h0), std::move(args->c0),
      [this, reactor, wire_response, model, encoding](absl::StatusOr<ForwardResult> result) {
        if (result.ok()) {
          v1::ForwardResponse response;
          ForwardResultToResponse(*result, encoding, &response);
          SerializeMessage(response, wire_response);
        }
        FinishUnary(reactor, "Forward", model, result.status());
      });
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* wire_request,
                                                     grpc::ByteBuffer* wire_response) {
  return Unary<v1::ListModelsRequest, v1::ListModelsResponse>(
      context, "ListModels", wire_request, wire_response,
      [this](const std::string& /*principal*/, const v1::ListModelsRequest& /*request*/,
             v1::ListModelsResponse* response, std::string* /*model*/) {
        for (const std::shared_ptr<const ServedModel>& model : core_->models().All()) {
          v1::ModelInfo* info = response->add_models();
          ModelInfoToProto(*model, info);
          AddLoadedVersions(core_->models(), model->name, info->mutable_loaded_versions());
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RnnServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* wire_request,
                                                   grpc::ByteBuffer* wire_response) {
  return Unary<v1::GetModelRequest, v1::ModelInfo>(
      context, "GetModel", wire_request, wire_response,
      [this](const std::string& /*principal*/, const v1::GetModelRequest& request,
             v1::ModelInfo* response, std::string* model_label) {
        absl::StatusOr<std::shared_ptr<const ServedModel>> model =
            core_->models().Lookup(request.model(), request.model_version());
        if (!model.ok()) return model.status();
        *model_label = (*model)->name;
        ModelInfoToProto(**model, response);
        AddLoadedVersions(core_->models(), (*model)->name, response->mutable_loaded_versions());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RnnServiceImpl::GetSession(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* wire_request,
                                                     grpc::ByteBuffer* wire_response) {
  return Unary<v1::GetSessionRequest, v1::SessionInfo>(
      context, "GetSession", wire_request, wire_response,
      [this](const std::string& principal, const v1::GetSessionRequest& request,
             v1::SessionInfo* response, std::string* model) {
        absl::StatusOr<SessionSnapshot> session =
            core_->GetSession(request.session_id(), !request.omit_state(), principal);
        if (!session.ok()) return session.status();
        *model = session->model;
        SessionInfoToProto(*session,
                           request.raw() ? TensorEncoding::kRaw : TensorEncoding::kValues,
                           response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RnnServiceImpl::CloseSession(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* wire_request,
                                                       grpc::ByteBuffer* wire_response) {
  return Unary<v1::CloseSessionRequest, v1::CloseSessionResponse>(
      context, "CloseSession", wire_request, wire_response,
      [this](const std::string& principal, const v1::CloseSessionRequest& request,
             v1::CloseSessionResponse* response, std::string* model) {
        absl::StatusOr<SessionSnapshot> session =
            core_->CloseSession(request.session_id(), principal);
        if (!session.ok()) return session.status();
        *model = session->model;
        SessionInfoToProto(*session, TensorEncoding::kValues, response->mutable_session());
        return absl::OkStatus();
      });
}

absl::Status RnnServiceImpl::CheckModelControl(const std::string& principal) const {
  if (!options_.allow_model_control) {
    return absl::PermissionDeniedError(
        "model control (LoadModel, UnloadModel, RepositoryIndex) is off on this server; start "
        "it with --allow_model_control");
  }
  if (!auth_.enabled() || options_.model_control_principals.empty()) return absl::OkStatus();
  for (const std::string& allowed : options_.model_control_principals) {
    if (allowed == principal) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      DescribePrincipal(principal), " may not use model control; --model_control_principals "
      "lists who may"));
}

grpc::ServerUnaryReactor* RnnServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* wire_request,
                                                    grpc::ByteBuffer* wire_response) {
  return Unary<v1::LoadModelRequest, v1::LoadModelResponse>(
      context, "LoadModel", wire_request, wire_response,
      [this](const std::string& principal, const v1::LoadModelRequest& request,
             v1::LoadModelResponse* response, std::string* model) {
        RETURN_IF_ERROR(CheckModelControl(principal));
        absl::Status loaded = core_->mutable_models().LoadModel(request.model());
        if (options_.on_models_changed) options_.on_models_changed();
        RETURN_IF_ERROR(loaded);
        *model = request.model();
        AddLoadedVersions(core_->models(), request.model(), response->mutable_loaded_versions());
        LogInfo("LoadModel ", Quoted(request.model()), " by ", DescribePrincipal(principal));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RnnServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* wire_request,
                                                      grpc::ByteBuffer* wire_response) {
  return Unary<v1::UnloadModelRequest, v1::UnloadModelResponse>(
      context, "UnloadModel", wire_request, wire_response,
      [this](const std::string& principal, const v1::UnloadModelRequest& request,
             v1::UnloadModelResponse* /*response*/, std::string* model) {
        RETURN_IF_ERROR(CheckModelControl(principal));
        RETURN_IF_ERROR(
            core_->mutable_models().UnloadModel(request.model(), request.model_version()));
        if (options_.on_models_changed) options_.on_models_changed();
        *model = request.model();
        LogInfo("UnloadModel ", Quoted(request.model()), " version ", request.model_version(),
                " by ", DescribePrincipal(principal));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RnnServiceImpl::RepositoryIndex(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* wire_request,
                                                          grpc::ByteBuffer* wire_response) {
  return Unary<v1::RepositoryIndexRequest, v1::RepositoryIndexResponse>(
      context, "RepositoryIndex", wire_request, wire_response,
      [this](const std::string& principal, const v1::RepositoryIndexRequest& /*request*/,
             v1::RepositoryIndexResponse* response, std::string* /*model*/) {
        RETURN_IF_ERROR(CheckModelControl(principal));
        for (const ModelVersionStatus& row : core_->models().Index()) {
          v1::ModelVersionState* out = response->add_models();
          out->set_model(row.name);
          out->set_version(row.version);
          out->set_state(ModelStateName(row.state));
          out->set_reason(row.reason);
          out->set_live_sessions(row.live_sessions);
        }
        return absl::OkStatus();
      });
}

}  // namespace rnnserve
