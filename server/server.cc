#include "server/server.h"

#include <limits>
#include <thread>
#include <utility>

#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "base/log.h"
#include "core/engine/kernels/kernel_isa.h"
#include "grpc/health/v1/health.pb.h"
#include "server/auth/auth_processor.h"
#include "server/auth/tls.h"

namespace rnnserve {
namespace {

// Removes every builder plugin (reflection registers itself for all builders), so the
// plaintext health port serves grpc.health.v1 and nothing else.
class NoPluginsOption : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->clear();
  }
};

absl::Status CheckPort(const char* flag, int port, int min) {
  if (port < min || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", port, " is not a port: use ",
                                                   min, "..65535", min < 0 ? " (-1 is off)" : "",
                                                   min <= 0 ? " (0 picks a free one)" : ""));
  }
  return absl::OkStatus();
}

// A duration as a channel argument (int milliseconds); validated to fit.
int Milliseconds(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

}  // namespace

// Below this not even an error status fits; gRPC's own limit is INT_MAX (the flag's type).
constexpr int kMinMessageBytes = 1024;

absl::Status ValidateServerOptions(const ServerOptions& options) {
  if (absl::Status s = CheckPort("port", options.port, 0); !s.ok()) return s;
  if (absl::Status s = CheckPort("metrics_port", options.metrics_port, -1); !s.ok()) return s;
  if (absl::Status s = CheckPort("health_port", options.health_port, -1); !s.ok()) return s;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together: set both for TLS, or neither");
  }
  const bool tls = !options.tls_cert_file.empty();
  if (!options.tls_client_ca_file.empty() && !tls) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file needs --tls_cert_file and --tls_key_file (mutual TLS is TLS)");
  }
  if (options.health_port >= 0 && !tls) {
    return absl::InvalidArgumentError(
        "--health_port is for TLS servers (a plaintext health port next to a TLS one); "
        "without TLS, health is served on --port");
  }
  if (options.tls_refresh_interval <= absl::ZeroDuration() ||
      options.auth_reload_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--tls_refresh_interval and --auth_reload_interval must be positive");
  }
  if (absl::StatusOr<LogLevel> level = ParseLogLevel(options.log_level); !level.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--log_level: ", level.status().message()));
  }
  if (options.max_message_bytes < kMinMessageBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes=", options.max_message_bytes, " is too small: use ",
        kMinMessageBytes, "..", std::numeric_limits<int>::max(), " bytes"));
  }
  const std::pair<const char*, int64_t> at_least_one[] = {
      {"max_in_flight_per_stream", options.service.max_in_flight_per_stream},
      {"max_batch", options.serving.max_batch},
      {"max_sessions", options.serving.max_sessions},
      {"max_state_bytes", options.serving.max_state_bytes},
      {"max_buffered_steps", options.serving.max_buffered_steps},
  };
  for (const auto& [flag, value] : at_least_one) {
    if (value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, "=", value, " must be at least 1"));
    }
  }
  if (options.service.max_stream_buffered_bytes != 0 &&
      options.service.max_stream_buffered_bytes < options.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_stream_buffered_bytes=", options.service.max_stream_buffered_bytes,
        " is below --max_message_bytes=", options.max_message_bytes,
        ": use 0 (twice --max_message_bytes) or at least --max_message_bytes"));
  }
  if (options.max_concurrent_streams_per_connection < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_concurrent_streams_per_connection=",
                     options.max_concurrent_streams_per_connection, " must be at least 1"));
  }
  if (options.serving.threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--threads=", options.serving.threads, " must be >= 0 (0 is one per core)"));
  }
  const std::pair<const char*, absl::Duration> positive[] = {
      {"session_idle_timeout", options.serving.session_idle_timeout},
      {"keepalive_time", options.keepalive_time},
      {"keepalive_timeout", options.keepalive_timeout},
      {"keepalive_min_client_ping_interval", options.keepalive_min_client_ping_interval},
  };
  for (const auto& [flag, value] : positive) {
    if (value <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, "=", absl::FormatDuration(value), " must be positive"));
    }
  }
  // Channel arguments are int milliseconds.
  const std::pair<const char*, absl::Duration> as_channel_args[] = {
      {"keepalive_time", options.keepalive_time},
      {"keepalive_timeout", options.keepalive_timeout},
      {"keepalive_min_client_ping_interval", options.keepalive_min_client_ping_interval},
  };
  for (const auto& [flag, value] : as_channel_args) {
    if (value > absl::Milliseconds(std::numeric_limits<int>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, "=", absl::FormatDuration(value), " is too long: at most ",
          absl::FormatDuration(absl::Milliseconds(std::numeric_limits<int>::max()))));
    }
  }
  const std::pair<const char*, absl::Duration> not_negative[] = {
      {"evict_idle_after", options.serving.evict_idle_after},  // 0: any idle session
      {"max_queue_delay", options.serving.max_queue_delay},
      {"drain_timeout", options.drain_timeout},
      {"shutdown_grace", options.shutdown_grace},
      {"stream_idle_timeout", options.service.stream_idle_timeout},  // 0: never
      {"repository_poll_interval", options.repository_poll_interval},  // 0: only on SIGHUP
  };
  for (const auto& [flag, value] : not_negative) {
    if (value < absl::ZeroDuration()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, "=", absl::FormatDuration(value), " must be >= 0"));
    }
  }
  if (options.serving.max_sessions_per_principal < 0 ||
      options.serving.max_state_bytes_per_principal < 0) {
    return absl::InvalidArgumentError(
        "--max_sessions_per_principal and --max_state_bytes_per_principal must be >= 0 "
        "(0 is no limit)");
  }
  if (options.serving.max_tombstone_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_tombstone_bytes=", options.serving.max_tombstone_bytes,
        " must be >= 0 (0 remembers no ended session ids)"));
  }
  const std::pair<const char*, int64_t> zero_is_off[] = {
      {"slice_steps", options.serving.slice_steps},                      // 0: never slice
      {"max_steps_per_request", options.serving.max_steps_per_request},  // 0: no cap
  };
  for (const auto& [flag, value] : zero_is_off) {
    if (value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, "=", value, " must be >= 0 (0 is off)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RnnServer>> RnnServer::Start(const ServerOptions& options) {
  if (absl::Status valid = ValidateServerOptions(options); !valid.ok()) return valid;
  SetMinLogLevel(*ParseLogLevel(options.log_level));
  std::unique_ptr<RnnServer> server(new RnnServer());
  server->options_ = options;

  // Credentials first: a wrong certificate or tokens file fails before models load.
  const bool tls = !options.tls_cert_file.empty();
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (tls) {
    TlsOptions tls_options;
    tls_options.cert_file = options.tls_cert_file;
    tls_options.key_file = options.tls_key_file;
    tls_options.client_ca_file = options.tls_client_ca_file;
    tls_options.refresh_interval = options.tls_refresh_interval;
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> made =
        MakeServerCredentials(tls_options);
    if (!made.ok()) return made.status();
    credentials = std::move(made).value();
  }
  CallAuth auth;
  auth.client_certificates = !options.tls_client_ca_file.empty();
  if (!options.auth_tokens_file.empty()) {
    absl::StatusOr<std::unique_ptr<TokenAuthenticator>> tokens =
        TokenAuthenticator::FromFile(options.auth_tokens_file);
    if (!tokens.ok()) return tokens.status();
    server->tokens_ = std::move(tokens).value();
    server->token_watcher_ =
        std::make_unique<TokenFileWatcher>(server->tokens_, options.auth_reload_interval);
    auth.tokens = server->tokens_;
    LogInfo("token authentication on: ", server->tokens_->size(), " principals");
  }
  if (tls && auth.enabled()) {
    // On the TLS port every method, health and reflection included, needs credentials.
    CallAuthOptions call_options;
    call_options.accept_client_certificate = auth.client_certificates;
    std::shared_ptr<const TokenAuthenticator> table = auth.tokens;
    if (table == nullptr) table = std::make_shared<TokenAuthenticator>(std::vector<TokenEntry>());
    credentials->SetAuthMetadataProcessor(
        std::make_shared<BearerTokenProcessor>(std::move(table), call_options));
  }

  absl::StatusOr<KernelIsa> kernel_isa = ChooseKernelIsa(options.model_loading.kernel_isa);
  if (!kernel_isa.ok()) {
    return absl::Status(kernel_isa.status().code(),
                        absl::StrCat("--kernel_isa: ", kernel_isa.status().message()));
  }
  LogInfo("kernels: ", KernelIsaName(*kernel_isa), " (this CPU runs: auto, ",
          SupportedKernelIsaList(), ")");
  std::unique_ptr<ModelRegistry> models;
  if (!options.model_repository.empty()) {
    absl::StatusOr<std::unique_ptr<ModelRegistry>> loaded =
        ModelRegistry::LoadRepository(options.model_repository, options.model_loading);
    if (!loaded.ok()) return loaded.status();
    models = std::move(loaded).value();
  }
  // The demo model only when there is no repository or it holds no model folder at all: a
  // repository whose models all failed serves nothing (and says why) rather than the demo.
  if (models == nullptr || models->Names().empty()) {
    LogInfo(options.model_repository.empty() ? "no --model_repository"
                                             : "model repository is empty",
            ": serving the built-in demo model '", kDemoModelName, "'");
    models = ModelRegistry::WithDemoModel(*kernel_isa);
  }
  std::vector<std::string> names = models->Names();
  for (const std::shared_ptr<const ServedModel>& model : models->All()) {
    LogInfo("model '", model->name, "': ", ConfigToString(model->model->config()), ", ",
            model->parameter_count, " parameters, version ", model->version);
  }

  server->metrics_ = std::make_unique<Metrics>(names);
  // Failures of the first load, then of every rescan. The label is a repository folder name.
  server->model_load_failures_ = &prometheus::BuildCounter()
                                      .Name("rnnserve_model_load_failures_total")
                                      .Help("Model versions (or models) that failed to load, "
                                            "by model")
                                      .Register(server->metrics_->registry());
  for (const ModelVersionStatus& row : models->Index()) {
    if (row.state == ModelState::kFailed) server->model_load_failures_->Add({{"model", row.name}}).Increment();
  }
  models->SetLoadFailureHook([failures = server->model_load_failures_](const std::string& model) {
    failures->Add({{"model", model}}).Increment();
  });
  if (options.metrics_port >= 0) {
    const std::string& metrics_host =
        options.metrics_host.empty() ? options.host : options.metrics_host;
    absl::Status metrics = server->metrics_->Serve(metrics_host, options.metrics_port);
    if (!metrics.ok()) return metrics;
  }
  // Responses are sized against the same limit gRPC enforces when sending.
  ServingOptions serving = options.serving;
  serving.max_response_bytes = options.max_message_bytes;
  server->core_ =
      std::make_unique<ServingCore>(std::move(models), serving, server->metrics_.get());
  ServiceOptions service_options = options.service;
  service_options.max_message_bytes = options.max_message_bytes;
  if (service_options.max_stream_buffered_bytes == 0) {
    service_options.max_stream_buffered_bytes = int64_t{2} * options.max_message_bytes;
  }
  service_options.on_models_changed = [raw = server.get()] { raw->UpdateModelHealth(); };
  server->service_ = std::make_unique<RnnServiceImpl>(
      server->core_.get(), server->metrics_.get(), service_options, std::move(auth));

  // Referencing the health descriptor links it in, so reflection can describe the health
  // service (buf curl --list-methods, grpcurl describe).
  grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.host, ":", options.port), credentials,
                           &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             options.max_concurrent_streams_per_connection);
  // The server pings idle connections (dead peers free their streams), and accepts client
  // keepalive pings as often as keepalive_min_client_ping_interval, also with no call open;
  // more frequent ones are answered with GOAWAY (too_many_pings).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Milliseconds(options.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             Milliseconds(options.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             Milliseconds(options.keepalive_min_client_ping_interval));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", options.host, ":", options.port,
                     " (in use, or not an address of this machine?)"));
  }
  if (options.health_port >= 0) {
    grpc::ServerBuilder health_builder;
    health_builder.SetOption(std::make_unique<NoPluginsOption>());
    server->health_fallback_ = std::make_unique<grpc::CallbackGenericService>();
    health_builder.RegisterCallbackGenericService(server->health_fallback_.get());
    health_builder.AddListeningPort(absl::StrCat(options.host, ":", options.health_port),
                                    grpc::InsecureServerCredentials(), &server->health_port_);
    server->health_server_ = health_builder.BuildAndStart();
    if (server->health_server_ == nullptr || server->health_port_ == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen for health on ", options.host, ":", options.health_port,
                       " (in use, or not an address of this machine?)"));
    }
  }
  server->SetServing(true);
  server->UpdateModelHealth();
  if (!options.model_repository.empty()) {
    server->reload_thread_ = std::thread([raw = server.get()] { raw->ModelReloadLoop(); });
  }
  return server;
}

void RnnServer::SetServing(bool serving) {
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (s == nullptr) continue;
    grpc::HealthCheckServiceInterface* health = s->GetHealthCheckService();
    health->SetServingStatus("", serving);
    health->SetServingStatus(kServiceName, serving);
  }
}

void RnnServer::ReloadTokens() {
  if (token_watcher_ == nullptr) return;
  LogInfo("reloading the tokens file");
  token_watcher_->RequestReload();
}

void RnnServer::DrainAndShutdown() {
  LogInfo("draining: health NOT_SERVING, new sessions refused, ", service_->open_streams(),
          " open streams, ", core_->session_count(), " sessions");
  SetServing(false);
  {
    absl::MutexLock lock(&reload_mu_);
    draining_ = true;
  }
  StopModelReloads();
  UpdateModelHealth();
  core_->BeginDrain();
  const absl::Time drain_deadline = absl::Now() + options_.drain_timeout;
  // Shutdown() sends GOAWAY at once (clients open no new calls here; open ones go on) and
  // returns when every call is done and every connection closed. Clients need not hang up:
  // once the streams are over, what is left is cancelled below, so an idle connection does
  // not hold up the exit.
  absl::Notification shut_down;
  std::thread shutdown([this, drain_deadline, &shut_down] {
    server_->Shutdown(absl::ToChronoTime(drain_deadline + options_.shutdown_grace));
    shut_down.Notify();
  });
  service_->BeginDrain();
  // Polls a counter on the main thread; nothing else waits on this.
  auto wait_for_streams = [this](absl::Time deadline) {
    while (service_->open_streams() > 0 && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  wait_for_streams(drain_deadline);
  const absl::Time grace_deadline = absl::Now() + options_.shutdown_grace;
  if (service_->open_streams() > 0) {
    LogWarning("--drain_timeout: ", service_->open_streams(),
               " streams still busy; they read nothing more, and end once answered or after "
               "--shutdown_grace");
    service_->StopReading();
    wait_for_streams(grace_deadline);
  }
  core_->WaitIdle(grace_deadline);
  // Repeated until Shutdown() returns: its GOAWAY may not have been sent yet on the first.
  do {
    grpc_server_cancel_all_calls(server_->c_server());
  } while (!shut_down.WaitForNotificationWithTimeout(absl::Milliseconds(20)));
  shutdown.join();
  if (health_server_) health_server_->Shutdown(std::chrono::system_clock::now());
  core_->EndAllSessions();
  LogInfo("shut down");
}

RnnServer::~RnnServer() {
  // Members then go in reverse order: servers, service, core, metrics (the core reports to
  // the metrics until it is gone). The reload thread uses the core: stopped first.
  StopModelReloads();
  if (health_server_) health_server_->Shutdown(std::chrono::system_clock::now());
  if (server_) server_->Shutdown(std::chrono::system_clock::now());
}

}  // namespace rnnserve
