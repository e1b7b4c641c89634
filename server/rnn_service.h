// RnnServiceImpl: the gRPC face of rnnserve (callback API). Stateless and thin: each handler
// parses the request (message_codec), converts it (proto_convert), calls the ServingCore facade,
// converts the answer back, maps the status (proto/status_codec) and counts the request. No
// math and no session state live here. The methods are registered raw (wire bytes), so a
// request that does not parse is answered INVALID_ARGUMENT with a message, not gRPC's bare
// UNIMPLEMENTED (unary) or OK end of stream.
//
// Thread-safe. Does not own the core or the metrics; both must outlive the service. Owns the
// registry of open streams (drain, idle timeout); each Stream call gets a StreamReactor that
// owns itself.
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
#include "server/stream_registry.h"

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

// Every method of rnnserve.v1.RnnService, taking and giving wire bytes.
using RawRnnService = v1::RnnService::WithRawCallbackMethod_Stream<
    v1::RnnService::WithRawCallbackMethod_Forward<
        v1::RnnService::WithRawCallbackMethod_ListModels<
            v1::RnnService::WithRawCallbackMethod_GetModel<
                v1::RnnService::WithRawCallbackMethod_GetSession<
                    v1::RnnService::WithRawCallbackMethod_CloseSession<
                        v1::RnnService::WithRawCallbackMethod_LoadModel<
                            v1::RnnService::WithRawCallbackMethod_UnloadModel<
                                v1::RnnService::WithRawCallbackMethod_RepositoryIndex<
                                    v1::RnnService::Service>>>>>>>>>;

class RnnServiceImpl final : public RawRnnService {
 public:
  RnnServiceImpl(ServingCore* core, Metrics* metrics, const ServiceOptions& options,
                 CallAuth auth = {});

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Stream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  // Model control (ServiceOptions::allow_model_control).
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response) override;

  // Streams open right now (graceful shutdown waits for them).
  int64_t open_streams() const { return streams_.open_streams(); }
  // Every open stream gets the drain notice and ends (UNAVAILABLE) once every request it read
  // is answered; streams opened later are refused.
  void BeginDrain() { streams_.BeginDrain(); }
  // The drain deadline: open streams read nothing more.
  void StopReading() { streams_.StopReading(); }

 private:
  // A synchronous unary call: checks the caller, parses the request (INVALID_ARGUMENT when it
  // does not parse), runs `handle(principal, request, &response, &model)` and answers.
  template <typename Request, typename Response, typename Handle>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const char* rpc,
                                  const grpc::ByteBuffer* wire_request,
                                  grpc::ByteBuffer* wire_response, Handle handle);
  // OK when `principal` may use the model control RPCs; PERMISSION_DENIED naming the flag
  // otherwise.
  absl::Status CheckModelControl(const std::string& principal) const;
  // Finishes a unary call and counts it.
  void FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc, const std::string& model,
                   const absl::Status& status);

  ServingCore* const core_;
  Metrics* const metrics_;
  const ServiceOptions options_;
  const CallAuth auth_;
  StreamRegistry streams_;
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_RNN_SERVICE_H_
