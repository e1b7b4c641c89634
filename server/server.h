// RnnServer: the assembled server: model registry, ServingCore, metrics endpoint, gRPC service
// with health checking and reflection, and graceful draining.
//
// Start() once, then Drain()/Shutdown() once from one thread (main). Owns everything it
// builds.
#ifndef RNNSERVE_SERVER_SERVER_H_
#define RNNSERVE_SERVER_SERVER_H_

#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/serving/serving_core.h"
#include "server/metrics.h"
#include "server/rnn_service.h"
#include "server/server_options.h"

namespace rnnserve {

inline constexpr char kServiceName[] = "rnnserve.v1.RnnService";

class RnnServer {
 public:
  // Loads the models (the demo model when the repository is unset or empty) and starts
  // serving. Errors name the model file and the problem, or the port that could not be bound.
  static absl::StatusOr<std::unique_ptr<RnnServer>> Start(const ServerOptions& options);
  ~RnnServer();

  int port() const { return port_; }
  int metrics_port() const { return metrics_ ? metrics_->port() : -1; }
  ServingCore& core() { return *core_; }
  Metrics& metrics() { return *metrics_; }

  // Health goes NOT_SERVING and new sessions get UNAVAILABLE; open streams keep working. Then
  // waits until every stream has closed or `drain_timeout` passes, and shuts down (what is
  // still open after `shutdown_grace` is cancelled).
  void DrainAndShutdown();

 private:
  RnnServer() = default;

  ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ServingCore> core_;
  std::unique_ptr<RnnServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_SERVER_H_
