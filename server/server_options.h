// ServerOptions: everything the rnnserve binary can be told, as a plain struct with the
// defaults documented next to each field. Filled from flags in main.cc only.
#ifndef RNNSERVE_SERVER_SERVER_OPTIONS_H_
#define RNNSERVE_SERVER_SERVER_OPTIONS_H_

#include <string>

#include "absl/time/time.h"
#include "core/serving/serving_core.h"
#include "server/rnn_service.h"

namespace rnnserve {

struct ServerOptions {
  std::string host = "0.0.0.0";      // address to bind, for gRPC and metrics
  int port = 50051;                  // gRPC port; 0 picks a free one (printed at start)
  int metrics_port = 9090;           // Prometheus /metrics port; 0 picks a free one; -1 disables
  std::string model_repository;      // one subfolder per model; empty serves the demo model
  int max_message_bytes = 64 << 20;  // largest request or response message
  absl::Duration drain_timeout = absl::Seconds(30);  // on SIGTERM: wait this long for streams
  absl::Duration shutdown_grace = absl::Seconds(5);  // then cancel what is still open
  ServingOptions serving;
  ServiceOptions service;  // its max_message_bytes is taken from the field above
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_SERVER_OPTIONS_H_
