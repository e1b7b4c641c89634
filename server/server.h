// RnnServer: the assembled server: model registry, ServingCore, metrics endpoint, gRPC service
// with health checking and reflection (TLS/mTLS and bearer tokens when configured), the
// optional plaintext health-only port, and graceful draining.
//
// Start() once, then DrainAndShutdown() once from one thread (main); ReloadTokens() and
// ReloadModels() may be called from any thread. Owns everything it builds, including the
// model reload thread (with a repository), stopped before the core goes.
#ifndef RNNSERVE_SERVER_SERVER_H_
#define RNNSERVE_SERVER_SERVER_H_

#include <memory>
#include <thread>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/serving/serving_core.h"
#include "server/auth/token_file.h"
#include "server/auth/token_file_watcher.h"
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
  // The plaintext health-only port, or -1 when --health_port is off.
  int health_port() const { return health_port_; }
  // Re-reads the tokens file now (SIGHUP); returns at once. No-op without a tokens file.
  void ReloadTokens();
  // Asks for a rescan of the model repository (SIGHUP); returns at once, the reload thread
  // does the work. No-op without a repository.
  void ReloadModels();
  ServingCore& core() { return *core_; }
  Metrics& metrics() { return *metrics_; }

  // Health goes NOT_SERVING, GOAWAY goes out, new sessions and Forward get UNAVAILABLE. Open
  // streams go on with `draining` on every response and each ends with UNAVAILABLE once every
  // request it read is answered; at `drain_timeout` they stop reading, and what is still open
  // `shutdown_grace` later is cancelled. Then idle connections are cancelled (they do not hold
  // up the exit) and every session ends. docs/deployment.md "Draining".
  void DrainAndShutdown();

 private:
  RnnServer() = default;

  ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ServingCore> core_;
  std::unique_ptr<RnnServiceImpl> service_;
  std::shared_ptr<TokenAuthenticator> tokens_;     // null without --auth_tokens_file
  std::unique_ptr<TokenFileWatcher> token_watcher_;
  std::unique_ptr<grpc::Server> server_;
  // A gRPC server needs one service of its own besides health; this one answers every
  // other method UNIMPLEMENTED, as an unknown method would be anyway.
  std::unique_ptr<grpc::CallbackGenericService> health_fallback_;
  std::unique_ptr<grpc::Server> health_server_;  // null without --health_port
  int port_ = 0;
  int health_port_ = -1;

  // Health of "" and the service on every port that serves health.
  void SetServing(bool serving);
  // Health of rnnserve.v1.RnnService/MODEL for every model of the repository: SERVING when
  // it has a READY version (NOT_SERVING for all while draining).
  void UpdateModelHealth();
  // Rescans on request and every repository_poll_interval, until stopped.
  void ModelReloadLoop();
  void StopModelReloads();

  prometheus::Family<prometheus::Counter>* model_load_failures_ = nullptr;
  absl::Mutex reload_mu_;
  bool reload_requested_ ABSL_GUARDED_BY(reload_mu_) = false;
  bool reload_stop_ ABSL_GUARDED_BY(reload_mu_) = false;
  bool draining_ ABSL_GUARDED_BY(reload_mu_) = false;
  std::thread reload_thread_;  // only with a repository
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_SERVER_H_
