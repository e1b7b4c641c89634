// ServerOptions: everything the rnnserve binary can be told, as a plain struct with the
// defaults documented next to each field. Filled from flags in main.cc only.
#ifndef RNNSERVE_SERVER_SERVER_OPTIONS_H_
#define RNNSERVE_SERVER_SERVER_OPTIONS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_core.h"
#include "server/rnn_service.h"

namespace rnnserve {

struct ServerOptions {
  std::string host = "0.0.0.0";      // address to bind for gRPC (and metrics by default)
  int port = 50051;                  // gRPC port; 0 picks a free one (printed at start)
  int metrics_port = 9090;           // Prometheus /metrics port; 0 picks a free one; -1 disables
  std::string metrics_host;          // address for /metrics; empty means the same as `host`
  // TLS on the gRPC port when both are set (PEM files, re-read every tls_refresh_interval);
  // plaintext when both are empty. A client CA makes it mutual TLS (client certificates
  // required and verified).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  absl::Duration tls_refresh_interval = absl::Seconds(10);
  // "PRINCIPAL SHA256HEX" lines; empty disables token authentication. Re-read when it
  // changes (checked every auth_reload_interval) and on SIGHUP (RnnServer::ReloadTokens).
  std::string auth_tokens_file;
  absl::Duration auth_reload_interval = absl::Seconds(10);
  // Plaintext port serving only grpc.health.v1 (for probes), only with TLS; -1 is off, 0
  // picks a free one.
  int health_port = -1;
  std::string log_level = "info";  // debug | info | warning | error
  std::string model_repository;      // one subfolder per model; empty serves the demo model
  ModelLoadOptions model_loading;    // default: NaN or Inf weights refuse the model
  // Rescans of the repository (new versions load, dropped ones unload; SIGHUP rescans too);
  // zero: only on SIGHUP and LoadModel.
  absl::Duration repository_poll_interval = absl::ZeroDuration();
  int max_message_bytes = 64 << 20;  // largest request or response message
  // On SIGTERM: streams go on (answers say `draining`) and end once answered, for this long;
  // then they read nothing more and end once answered, within shutdown_grace; then whatever
  // is still open is cancelled.
  absl::Duration drain_timeout = absl::Seconds(30);
  absl::Duration shutdown_grace = absl::Seconds(5);
  // HTTP/2 streams (calls) one connection may have open; more wait in the client.
  int max_concurrent_streams_per_connection = 100;
  // Keepalive: the server pings a connection idle this long and drops it when the ping is
  // not answered within keepalive_timeout; clients may ping as often as
  // keepalive_min_client_ping_interval, also with no call open.
  absl::Duration keepalive_time = absl::Minutes(1);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  absl::Duration keepalive_min_client_ping_interval = absl::Seconds(10);
  ServingOptions serving;  // per-principal quotas (0 = no limit); max_response_bytes is
                           // taken from max_message_bytes
  ServiceOptions service;  // its max_message_bytes is taken from the field above; its
                           // max_stream_buffered_bytes 0 means twice that
};

// Checks the combination before anything starts: ports in range, a certificate with its key,
// a client CA only with a certificate, a health port only with TLS, a known log level,
// positive limits and durations, a message limit of at least 1 KiB, a stream buffer of at
// least one message, durations that fit gRPC's channel arguments.
// INVALID_ARGUMENT naming the flag otherwise.
absl::Status ValidateServerOptions(const ServerOptions& options);

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_SERVER_OPTIONS_H_
