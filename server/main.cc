// rnnserve: serves torch.nn.RNN models over gRPC. Flags are parsed here and nowhere else.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/log.h"
#include "core/engine/kernels/kernel_isa.h"
#include "server/server.h"

ABSL_FLAG(std::string, model_repository, "",
          "Folder with one subfolder per model (config.json + model.safetensors); the folder "
          "name is the model name. Unset or empty: serve the built-in 'demo' model.");
ABSL_FLAG(bool, strict_model_repository, false,
          "Refuse to start when any folder of --model_repository is not a loadable model "
          "(hidden folders and lost+found aside); by default such folders are skipped or "
          "reported and the others serve.");
ABSL_FLAG(absl::Duration, repository_poll_interval, absl::ZeroDuration(),
          "Rescan --model_repository this often (new versions load, versions dropped by the "
          "policy or deleted unload once their sessions end); 0: only on SIGHUP.");
ABSL_FLAG(bool, allow_model_control, false,
          "Serve the LoadModel, UnloadModel and RepositoryIndex RPCs (admin); off: they are "
          "refused with PERMISSION_DENIED.");
ABSL_FLAG(std::string, model_control_principals, "",
          "With authentication on: the principals (comma-separated) allowed model control; "
          "empty: any authenticated principal.");
ABSL_FLAG(std::string, host, "0.0.0.0",
          "Address to listen on for gRPC (and for metrics unless --metrics_host is set).");
ABSL_FLAG(int, port, 50051, "gRPC port (0..65535); 0 picks a free port.");
ABSL_FLAG(int, metrics_port, 9090, "Prometheus /metrics port; 0 picks a free port; -1 disables.");
ABSL_FLAG(std::string, metrics_host, "",
          "Address for /metrics (e.g. 127.0.0.1 to keep it private); empty: same as --host.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain for TLS on the gRPC port (with --tls_key_file).");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates; when set, clients must present a certificate they signed "
          "(mutual TLS), and its subject is the principal of calls that send no token.");
ABSL_FLAG(absl::Duration, tls_refresh_interval, absl::Seconds(10),
          "How often the TLS files are re-read (certificate rotation, no restart).");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Bearer-token table, one 'PRINCIPAL SHA256HEX' per line; when set, every rnnserve "
          "RPC needs 'authorization: Bearer TOKEN'. Re-read on change and on SIGHUP.");
ABSL_FLAG(absl::Duration, auth_reload_interval, absl::Seconds(10),
          "How often the tokens file is checked for changes.");
ABSL_FLAG(int, health_port, -1,
          "Plaintext port serving only grpc.health.v1 (probes), with TLS only; -1 is off.");
ABSL_FLAG(std::string, log_level, "info",
          "Least severe log lines written: debug (per-session lines too), info, warning, error.");
ABSL_FLAG(int64_t, max_sessions_per_principal, 0,
          "Live sessions one principal may hold at most; 0 is no limit.");
ABSL_FLAG(int64_t, max_state_bytes_per_principal, 0,
          "Session memory (all parts, as for --max_state_bytes) one principal may hold at most, "
          "in bytes; 0 is no limit.");
ABSL_FLAG(absl::Duration, session_idle_timeout, absl::Minutes(5),
          "Sessions with no chunk for this long expire.");
ABSL_FLAG(int64_t, max_sessions, 100000, "Live sessions at most.");
ABSL_FLAG(int64_t, max_state_bytes, int64_t{4} << 30,
          "Memory for all sessions at most, in bytes: state, buffered bidirectional input, "
          "the last output kept for duplicate replays, and ids.");
ABSL_FLAG(int64_t, max_buffered_steps, int64_t{1} << 20,
          "Timesteps a bidirectional session may buffer before `end` at most.");
ABSL_FLAG(int64_t, max_tombstone_bytes, int64_t{16} << 20,
          "Memory for remembered ended session ids at most, in bytes (oldest dropped first).");
ABSL_FLAG(absl::Duration, evict_idle_after, absl::Seconds(60),
          "When state memory is full, sessions idle this long may be evicted for new ones.");
ABSL_FLAG(int, max_batch, 256, "Sessions advanced together by one engine call at most.");
ABSL_FLAG(absl::Duration, max_queue_delay, absl::ZeroDuration(),
          "How long a worker may wait for a fuller batch; 0 dispatches at once.");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 means one per core.");
ABSL_FLAG(int, max_message_bytes, 64 << 20,
          "Largest gRPC message accepted or sent, at least 1024; a request whose response "
          "would be larger is refused before it is computed.");
ABSL_FLAG(bool, allow_non_finite, false, "Accept NaN and Inf in inputs.");
ABSL_FLAG(bool, allow_non_finite_weights, false,
          "Load models whose weights hold NaN or Inf (refused by default).");
ABSL_FLAG(std::string, kernel_isa, "auto",
          "Kernels the models run: auto (the best this CPU has), avx512, avx2, or baseline "
          "(the build's own -march); a set this CPU lacks is refused at startup.");
ABSL_FLAG(int, max_in_flight_per_stream, 4096,
          "Requests of one stream in progress before the server stops reading from it.");
ABSL_FLAG(int64_t, max_stream_buffered_bytes, 0,
          "Response bytes one stream may have queued for a client that does not read before "
          "the server stops reading from it; 0 is twice --max_message_bytes, else at least "
          "--max_message_bytes.");
ABSL_FLAG(absl::Duration, stream_idle_timeout, absl::Minutes(10),
          "A stream with nothing read and nothing in flight for this long ends with "
          "UNAVAILABLE (its sessions stay); 0 never.");
ABSL_FLAG(int, max_concurrent_streams_per_connection, 100,
          "Calls one client connection may have open at once (HTTP/2 "
          "SETTINGS_MAX_CONCURRENT_STREAMS); more wait in the client.");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Minutes(1),
          "The server pings a connection idle this long; with no answer within "
          "--keepalive_timeout the connection is closed and its calls cancelled.");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(20),
          "How long the server waits for the answer to its keepalive ping.");
ABSL_FLAG(absl::Duration, keepalive_min_client_ping_interval, absl::Seconds(10),
          "Clients may send keepalive pings this often (also with no call open); more often "
          "and the server ends the connection (GOAWAY too_many_pings).");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "On SIGTERM/SIGINT: how long open streams may go on (their responses say draining; "
          "each ends with UNAVAILABLE once everything it read is answered) before they stop "
          "reading.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(5),
          "After --drain_timeout: how long streams may take to answer what they read before "
          "they are cancelled.");
ABSL_FLAG(int64_t, slice_steps, 128,
          "Fair compute: a long unidirectional chunk or Forward runs in slices of at most this "
          "many timestep-rows (timesteps x batch N, at least one timestep), other work running "
          "in between; 0 never slices.");
ABSL_FLAG(int64_t, max_steps_per_request, int64_t{1} << 20,
          "A chunk or Forward with more timesteps is refused (INVALID_ARGUMENT) before any "
          "work; 0 is no cap.");

#ifndef RNNSERVE_VERSION
#define RNNSERVE_VERSION "dev"
#endif
#ifndef RNNSERVE_BUILD_TYPE
#define RNNSERVE_BUILD_TYPE ""
#endif

namespace {

#if defined(__clang__)
constexpr char kCompiler[] = "clang " __clang_version__;
#elif defined(__GNUC__)
constexpr char kCompiler[] = "gcc " __VERSION__;
#else
constexpr char kCompiler[] = "unknown compiler";
#endif

// "rnnserve 0.1.0 (Release build, gcc 12.2.0)" for --version.
std::string VersionString() {
  const absl::string_view build_type = RNNSERVE_BUILD_TYPE;
  return absl::StrCat("rnnserve ", RNNSERVE_VERSION, " (",
                      build_type.empty() ? "no CMAKE_BUILD_TYPE" : build_type, " build, ",
                      kCompiler, ")\n");
}

// Abseil's --help and --helpshort list the flags of files named like the program (rnnserve.cc);
// ours are defined in this file. --helpfull still lists every flag, Abseil's and gRPC's too.
bool DefinesServerFlags(absl::string_view file) { return absl::EndsWith(file, "server/main.cc"); }

// Flag locations relative to the repository ("server/main.cc"), however the build named them.
std::string RepositoryPath(absl::string_view file) {
  const size_t server = file.rfind("server/main.cc");
  if (server != absl::string_view::npos) return std::string(file.substr(server));
  while (absl::ConsumePrefix(&file, "../") || absl::ConsumePrefix(&file, "./")) {
  }
  return std::string(file);
}

// Between the signal thread and main. Before the server is up (models loading) a stop signal
// ends the process at once; afterwards it is handed to main, which drains.
struct SignalState {
  absl::Mutex mu;
  // State below is protected by mu.
  rnnserve::RnnServer* server ABSL_GUARDED_BY(mu) = nullptr;  // set once Start returned
  bool stop_signal_seen ABSL_GUARDED_BY(mu) = false;
  int stop_signal ABSL_GUARDED_BY(mu) = 0;
};

void TakeSignals(sigset_t signals, SignalState* state) {
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) == 0) {
    absl::MutexLock lock(&state->mu);
    if (signal_number == SIGHUP) {
      if (state->server != nullptr) {
        state->server->ReloadTokens();
        state->server->ReloadModels();
      }
      continue;
    }
    if (state->server == nullptr) {
      rnnserve::LogError("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT",
                         " while starting (loading models): exiting without serving");
      std::fflush(stderr);
      std::_Exit(128 + signal_number);
    }
    state->stop_signal = signal_number;
    state->stop_signal_seen = true;
    return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = DefinesServerFlags;
  usage.contains_helpshort_flags = DefinesServerFlags;
  usage.version_string = VersionString;
  usage.normalize_filename = RepositoryPath;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "Serves torch.nn.RNN models over gRPC.\n"
      "  rnnserve --model_repository=/models --port=50051 --metrics_port=9090");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status cpu = rnnserve::CheckCpuRunsThisBuild(); !cpu.ok()) {
    std::fprintf(stderr, "rnnserve: %s\n", std::string(cpu.message()).c_str());
    return 1;
  }
  // Debian's Abseil checks lock order on every Mutex acquisition: measurable on hot paths.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Block the shutdown signals in every thread (threads inherit the mask), and take them
  // synchronously below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // Taken from the start, so that SIGTERM/SIGINT while models load (Start) ends the process.
  // Never destroyed: the detached signal thread may outlive main. Held by a static pointer, so
  // it stays reachable (LeakSanitizer reports an object only a local pointed to).
  static SignalState* const signal_state = new SignalState;
  std::thread(TakeSignals, signals, signal_state).detach();

  rnnserve::ServerOptions options;
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  options.tls_refresh_interval = absl::GetFlag(FLAGS_tls_refresh_interval);
  options.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  options.auth_reload_interval = absl::GetFlag(FLAGS_auth_reload_interval);
  options.health_port = absl::GetFlag(FLAGS_health_port);
  options.log_level = absl::GetFlag(FLAGS_log_level);
  options.model_repository = absl::GetFlag(FLAGS_model_repository);
  options.model_loading.model_dir.allow_non_finite_weights =
      absl::GetFlag(FLAGS_allow_non_finite_weights);
  options.model_loading.kernel_isa = absl::GetFlag(FLAGS_kernel_isa);
  options.model_loading.strict = absl::GetFlag(FLAGS_strict_model_repository);
  options.repository_poll_interval = absl::GetFlag(FLAGS_repository_poll_interval);
  options.service.allow_model_control = absl::GetFlag(FLAGS_allow_model_control);
  options.service.model_control_principals =
      absl::StrSplit(absl::GetFlag(FLAGS_model_control_principals), ',', absl::SkipEmpty());
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.serving.session_idle_timeout = absl::GetFlag(FLAGS_session_idle_timeout);
  options.serving.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  options.serving.max_state_bytes = absl::GetFlag(FLAGS_max_state_bytes);
  options.serving.max_buffered_steps = absl::GetFlag(FLAGS_max_buffered_steps);
  options.serving.max_tombstone_bytes = absl::GetFlag(FLAGS_max_tombstone_bytes);
  options.serving.evict_idle_after = absl::GetFlag(FLAGS_evict_idle_after);
  options.serving.max_batch = absl::GetFlag(FLAGS_max_batch);
  options.serving.max_queue_delay = absl::GetFlag(FLAGS_max_queue_delay);
  options.serving.threads = absl::GetFlag(FLAGS_threads);
  options.serving.allow_non_finite = absl::GetFlag(FLAGS_allow_non_finite);
  options.serving.max_sessions_per_principal = absl::GetFlag(FLAGS_max_sessions_per_principal);
  options.serving.max_state_bytes_per_principal =
      absl::GetFlag(FLAGS_max_state_bytes_per_principal);
  options.service.max_in_flight_per_stream = absl::GetFlag(FLAGS_max_in_flight_per_stream);
  options.service.max_stream_buffered_bytes = absl::GetFlag(FLAGS_max_stream_buffered_bytes);
  options.service.stream_idle_timeout = absl::GetFlag(FLAGS_stream_idle_timeout);
  options.max_concurrent_streams_per_connection =
      absl::GetFlag(FLAGS_max_concurrent_streams_per_connection);
  options.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  options.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  options.keepalive_min_client_ping_interval =
      absl::GetFlag(FLAGS_keepalive_min_client_ping_interval);
  options.serving.slice_steps = absl::GetFlag(FLAGS_slice_steps);
  options.serving.max_steps_per_request = absl::GetFlag(FLAGS_max_steps_per_request);

  absl::StatusOr<std::unique_ptr<rnnserve::RnnServer>> server =
      rnnserve::RnnServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "rnnserve: %s\n", server.status().ToString().c_str());
    return 1;
  }
  {
    absl::MutexLock lock(&signal_state->mu);
    signal_state->server = server->get();  // stop signals now drain instead of exiting
  }
  // Tests and scripts read the bound ports from this line.
  const std::string& metrics_host =
      options.metrics_host.empty() ? options.host : options.metrics_host;
  std::printf("rnnserve listening on %s:%d (gRPC), metrics on %s:%d", options.host.c_str(),
              (*server)->port(), metrics_host.c_str(), (*server)->metrics_port());
  if ((*server)->health_port() >= 0) {
    std::printf(", health on %s:%d", options.host.c_str(), (*server)->health_port());
  }
  std::printf("\n");
  std::fflush(stdout);

  int signal_number = 0;
  {
    absl::MutexLock lock(&signal_state->mu);
    signal_state->mu.Await(absl::Condition(&signal_state->stop_signal_seen));
    signal_number = signal_state->stop_signal;  // the signal thread has returned
  }
  rnnserve::LogInfo("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  // SIGHUP stays blocked while draining: a reload then is pointless and must not kill us.
  (*server)->DrainAndShutdown();
  return 0;
}
