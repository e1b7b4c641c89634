// RnnServiceImpl: the gRPC face of rnnserve (callback API). Stateless and thin: each handler
// converts the request (proto_convert), calls the ServingCore facade, converts the answer back,
// maps the status (proto/status_codec) and counts the request. No math and no session state
// live here.
//
// Thread-safe. Does not own the core or the metrics; both must outlive the service. Each
// Stream call gets a StreamReactor that owns itself and deletes itself in OnDone().
#ifndef RNNSERVE_SERVER_RNN_SERVICE_H_
#define RNNSERVE_SERVER_RNN_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "core/serving/serving_core.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"
#include "server/auth/auth_processor.h"
#include "server/auth/token_file.h"
#include "server/metrics.h"
#include "server/stream_reactor.h"

namespace rnnserve {

// Who may call: with `tokens` unset and client certificates off, every call is the anonymous
// principal "". Otherwise each rnnserve.v1 handler asks for the call's principal (a bearer
// token's, or the verified client certificate's subject) and answers UNAUTHENTICATED without
// one. Never logs the metadata.
struct CallAuth {
  std::shared_ptr<const TokenAuthenticator> tokens;  // null: no tokens file
  bool client_certificates = false;                  // mTLS: a certificate subject suffices

  bool enabled() const { return tokens != nullptr || client_certificates; }
  // "" when disabled; else the principal or UNAUTHENTICATED.
  absl::StatusOr<std::string> Principal(const grpc::ServerContextBase& context) const;
};

class RnnServiceImpl final : public v1::RnnService::CallbackService {
 public:
  RnnServiceImpl(ServingCore* core, Metrics* metrics, const ServiceOptions& options,
                 CallAuth auth = {});

  grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* Stream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context,
                                    const v1::ForwardRequest* request,
                                    v1::ForwardResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::SessionInfo* response) override;
  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* context,
                                         const v1::CloseSessionRequest* request,
                                         v1::CloseSessionResponse* response) override;

  // Streams open right now (graceful shutdown waits for them).
  int64_t open_streams() const { return open_streams_.load(); }

 private:
  // Finishes a unary call and counts it.
  void FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc, const std::string& model,
                   const absl::Status& status);

  ServingCore* const core_;
  Metrics* const metrics_;
  const ServiceOptions options_;
  const CallAuth auth_;
  std::atomic<int64_t> open_streams_{0};
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_RNN_SERVICE_H_
