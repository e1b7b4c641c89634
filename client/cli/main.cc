// rnnserve-client: command-line client for rnnserve. See docs/client.md, or run it with
// --help for the subcommands and flags. The only file that reads flags: it fills CliOptions
// and hands the subcommand to cli::RunCli (client/cli/commands.h).
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "client/cli/cli_options.h"
#include "client/cli/commands.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "Server address, host:port.");
ABSL_FLAG(bool, json, false, "Print JSON (one object; one per line for `stream`) for scripts.");
ABSL_FLAG(bool, raw, true,
          "Send tensors as raw little-endian float32 bytes (the fast path); --noraw sends "
          "repeated float values, as JSON clients do.");
ABSL_FLAG(double, timeout, 30, "Deadline in seconds for each unary call; 0 for none.");
ABSL_FLAG(std::string, tls_ca, "",
          "Use TLS, verifying the server's certificate against this PEM CA file; without it "
          "the connection is plaintext.");
ABSL_FLAG(std::string, tls_cert, "",
          "Mutual TLS: present this PEM client certificate (with --tls_key; needs --tls_ca).");
ABSL_FLAG(std::string, tls_key, "", "Mutual TLS: the PEM private key of --tls_cert.");
ABSL_FLAG(std::string, token, "",
          "Bearer token sent as 'authorization: Bearer TOKEN' on every call (visible in the "
          "process list: prefer --token_file).");
ABSL_FLAG(std::string, token_file, "",
          "File whose first line is the bearer token (surrounding whitespace dropped).");
ABSL_FLAG(std::string, input, "", "forward/stream: input .npy file (float32 or float64).");
ABSL_FLAG(std::string, shape, "",
          "forward: shape of a random input, e.g. 5,2,100 for (T, N, C) (or (N, T, C) for "
          "batch_first models, or T,C unbatched).");
ABSL_FLAG(uint64_t, seed, 0, "forward/stream: seed of the random input.");
ABSL_FLAG(std::string, h0, "",
          "forward/stream: initial state .npy file, (L*D, N, H) (H_out = proj_size for an LSTM "
          "with projections).");
ABSL_FLAG(std::string, c0, "",
          "forward/stream: initial cell state .npy file of an LSTM, (L*D, N, H); zeros when "
          "absent. Models without cell state (RNN, GRU) refuse it.");
ABSL_FLAG(std::string, save_output, "",
          "forward/stream: write the output to this .npy file (stream: all chunks, joined).");
ABSL_FLAG(std::string, save_h_n, "", "forward/stream/session: write the final h_n to this .npy.");
ABSL_FLAG(std::string, save_c_n, "",
          "forward/stream/session: write an LSTM's final cell state c_n to this .npy (an error "
          "for models without cell state).");
ABSL_FLAG(int64_t, chunk_steps, 10, "stream/bench: timesteps per chunk.");
ABSL_FLAG(int64_t, steps, 20, "stream: timesteps of the random input.");
ABSL_FLAG(int64_t, batch, 1, "stream: batch size N of the random input; 0 for unbatched (T, C).");
ABSL_FLAG(std::string, session_id, "",
          "stream: continue this existing session instead of starting a new one.");
ABSL_FLAG(bool, end, false, "stream: close the session with the last chunk.");
ABSL_FLAG(int64_t, model_version, 0,
          "forward: run this version of the model; stream: start the session on it (it stays on "
          "it). 0: the latest READY version.");
ABSL_FLAG(bool, omit_state, false,
          "stream/bench: ask the server to leave h_n (and c_n) out of responses.");
ABSL_FLAG(int64_t, sessions, 64, "bench: concurrent sessions.");
ABSL_FLAG(int64_t, streams, 0, "bench: gRPC streams the sessions share; 0 for min(sessions, 64).");
ABSL_FLAG(int64_t, channels, 1, "bench: gRPC channels (TCP connections) the streams share.");
ABSL_FLAG(double, duration, 10, "bench: seconds of sending.");
ABSL_FLAG(int64_t, max_chunks, 0, "bench: chunks per session, after which it ends; 0 for none.");
ABSL_FLAG(double, chunks_per_second, 0,
          "bench: chunks per second per session, paced on a fixed schedule (open loop; latency "
          "counts from each chunk's slot); 0 for as fast as answers come.");

namespace {

constexpr char kUsage[] = R"(command-line client for rnnserve.

Usage: rnnserve-client [--server HOST:PORT] [--json] [--noraw]
                       [--tls_ca CA.crt [--tls_cert C.crt --tls_key C.key]]
                       [--token_file FILE | --token TOKEN] SUBCOMMAND ...

  models                       list the served models, their versions and (with model control
                               on the server) every version's state
  info MODEL[:VERSION]         a model's config, cell (RNN/GRU/LSTM, proj_size), input, state
                               and cell-state shapes and parameters
  forward MODEL                stateless run: --input x.npy or --shape T,N,C [--seed S]
                               [--h0 h.npy] [--c0 c.npy] [--save_output y.npy]
                               [--save_h_n h.npy] [--save_c_n c.npy]  (c: LSTM only)
                               [--model_version V]
  stream MODEL                 a streamed session, chunk by chunk: --input x.npy or random
                               --steps T --batch N; --chunk_steps K; [--h0 h.npy] [--c0 c.npy]
                               for a new session's state; --session_id ID to go on with an
                               existing session; --end to close it at the end;
                               --model_version V pins a new session to version V
  session get ID               a session's metadata and state (h_n; c_n for an LSTM)
                               [--save_h_n h.npy] [--save_c_n c.npy]
  session close ID             close a session, printing (and saving) its final state
  bench [MODEL]                load test: --sessions N concurrent sessions over --streams S,
                               chunks of --chunk_steps steps, for --duration seconds
                               [--max_chunks M] [--chunks_per_second R: paced, R chunks
                               per second per session]; exits 1 if any chunk failed

Examples:
  rnnserve-client models
  rnnserve-client forward demo --shape 5,2,100 --json
  rnnserve-client stream demo --steps 20 --chunk_steps 5 --end
  rnnserve-client forward lstm --input x.npy --h0 h0.npy --c0 c0.npy --save_c_n c_n.npy
  rnnserve-client bench --sessions 4096 --duration 10
  rnnserve-client --server rnn.example:50051 --tls_ca ca.crt --token_file token models
)";

// Every flag, read once.
rnnserve::cli::CliOptions OptionsFromFlags() {
  rnnserve::cli::CliOptions o;
  o.server = absl::GetFlag(FLAGS_server);
  o.json = absl::GetFlag(FLAGS_json);
  o.raw = absl::GetFlag(FLAGS_raw);
  o.timeout_s = absl::GetFlag(FLAGS_timeout);
  o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.token = absl::GetFlag(FLAGS_token);
  o.token_file = absl::GetFlag(FLAGS_token_file);
  o.input = absl::GetFlag(FLAGS_input);
  o.shape = absl::GetFlag(FLAGS_shape);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.h0 = absl::GetFlag(FLAGS_h0);
  o.c0 = absl::GetFlag(FLAGS_c0);
  o.save_output = absl::GetFlag(FLAGS_save_output);
  o.save_h_n = absl::GetFlag(FLAGS_save_h_n);
  o.save_c_n = absl::GetFlag(FLAGS_save_c_n);
  o.chunk_steps = absl::GetFlag(FLAGS_chunk_steps);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.batch = absl::GetFlag(FLAGS_batch);
  o.session_id = absl::GetFlag(FLAGS_session_id);
  o.end = absl::GetFlag(FLAGS_end);
  o.omit_state = absl::GetFlag(FLAGS_omit_state);
  o.model_version = absl::GetFlag(FLAGS_model_version);
  o.sessions = absl::GetFlag(FLAGS_sessions);
  o.streams = absl::GetFlag(FLAGS_streams);
  o.channels = absl::GetFlag(FLAGS_channels);
  o.duration_s = absl::GetFlag(FLAGS_duration);
  o.max_chunks = absl::GetFlag(FLAGS_max_chunks);
  o.chunks_per_second = absl::GetFlag(FLAGS_chunks_per_second);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  // --help lists the flags of this file (absl's default matches the file to the binary name).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "cli/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> args(positional.begin() + 1, positional.end());
  return rnnserve::cli::RunCli(args, OptionsFromFlags(), std::cout, std::cerr);
}
