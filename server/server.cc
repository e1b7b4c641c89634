#include "server/server.h"

#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb.h"

namespace rnnserve {

absl::StatusOr<std::unique_ptr<RnnServer>> RnnServer::Start(const ServerOptions& options) {
  std::unique_ptr<RnnServer> server(new RnnServer());
  server->options_ = options;

  std::unique_ptr<ModelRegistry> models;
  if (!options.model_repository.empty()) {
    absl::StatusOr<std::unique_ptr<ModelRegistry>> loaded =
        ModelRegistry::LoadRepository(options.model_repository);
    if (!loaded.ok()) return loaded.status();
    models = std::move(loaded).value();
  }
  if (models == nullptr || models->empty()) {
    LogInfo(options.model_repository.empty() ? "no --model_repository"
                                             : "model repository is empty",
            ": serving the built-in demo model '", kDemoModelName, "'");
    models = ModelRegistry::WithDemoModel();
  }
  std::vector<std::string> names;
  for (const ServedModel* model : models->All()) {
    names.push_back(model->name);
    LogInfo("model '", model->name, "': ", ConfigToString(model->model->config()), ", ",
            model->parameter_count, " parameters");
  }

  server->metrics_ = std::make_unique<Metrics>(names);
  if (options.metrics_port >= 0) {
    absl::Status metrics = server->metrics_->Serve(options.host, options.metrics_port);
    if (!metrics.ok()) return metrics;
  }
  server->core_ =
      std::make_unique<ServingCore>(std::move(models), options.serving, server->metrics_.get());
  ServiceOptions service_options = options.service;
  service_options.max_message_bytes = options.max_message_bytes;
  server->service_ = std::make_unique<RnnServiceImpl>(server->core_.get(),
                                                      server->metrics_.get(), service_options);

  // Referencing the health descriptor links it in, so reflection can describe the health
  // service (buf curl --list-methods, grpcurl describe).
  grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.host, ":", options.port),
                           grpc::InsecureServerCredentials(), &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // Accept client keepalive pings every 10 s at most, even on idle streams.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", options.host, ":", options.port,
                     " (in use, or not an address of this machine?)"));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kServiceName, true);
  return server;
}

void RnnServer::DrainAndShutdown() {
  LogInfo("draining: health NOT_SERVING, new sessions refused, ", service_->open_streams(),
          " open streams, ", core_->session_count(), " sessions");
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", false);
  health->SetServingStatus(kServiceName, false);
  core_->BeginDrain();
  const absl::Time deadline = absl::Now() + options_.drain_timeout;
  // Polls a counter on the main thread; nothing else waits on this.
  while (service_->open_streams() > 0 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  core_->WaitIdle(absl::Now() + options_.shutdown_grace);
  server_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(options_.shutdown_grace));
  core_->EndAllSessions();
  LogInfo("shut down");
}

RnnServer::~RnnServer() {
  // Members then go in reverse order: server, service, core, metrics (the core reports to
  // the metrics until it is gone).
  if (server_) server_->Shutdown(std::chrono::system_clock::now());
}

}  // namespace rnnserve
