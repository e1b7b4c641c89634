// CliOptions: everything rnnserve-client can be told, as a plain struct with each flag's default
// next to its field. Filled from the Abseil flags in main.cc only (the one file that reads
// flags), so the commands and their tests take options as a value. Also the checks and
// conversions on those options that more than one command needs. Plain data; thread-compatible.
#ifndef RNNSERVE_CLIENT_CLI_CLI_OPTIONS_H_
#define RNNSERVE_CLIENT_CLI_CLI_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/tensor.h"
#include "client/rnnserve_client.h"
#include "client/stream_bench.h"

namespace rnnserve {
namespace cli {

struct CliOptions {
  std::string server = "127.0.0.1:50051";  // host:port
  bool json = false;                       // JSON output (one object; one per line for stream)
  bool raw = true;                         // tensors as raw bytes; false: repeated float values
  double timeout_s = 30;                   // deadline of each unary call; 0 for none
  // TLS and authentication (every subcommand)
  std::string tls_ca;      // PEM CA of the server's certificate; set: TLS, else plaintext
  std::string tls_cert;    // PEM client certificate for mutual TLS (with tls_key)
  std::string tls_key;     // PEM private key of tls_cert
  std::string token;       // bearer token (never printed)
  std::string token_file;  // file whose first line is the token; not with `token`
  // forward/stream
  std::string input;        // input .npy file
  std::string shape;        // forward: shape of a random input, e.g. "5,2,100"
  uint64_t seed = 0;        // seed of the random input
  std::string h0;           // initial state .npy file
  std::string c0;           // initial cell state .npy file (LSTM models only)
  std::string save_output;  // write the output (stream: all chunks joined) here
  std::string save_h_n;     // write the final h_n here (session too)
  std::string save_c_n;     // write the final c_n here (session too; LSTM models only)
  // stream
  int64_t chunk_steps = 10;  // timesteps per chunk (bench too)
  int64_t steps = 20;        // timesteps of the random input
  int64_t batch = 1;         // batch of the random input; 0 for unbatched
  std::string session_id;    // continue this session instead of starting one
  bool end = false;          // close the session with the last chunk
  bool omit_state = false;   // leave h_n and c_n out of responses (bench too)
  int64_t model_version = 0;  // forward: this version; stream: pin the session to it; 0: latest
  // bench
  int64_t sessions = 64;   // concurrent sessions
  int64_t streams = 0;     // gRPC streams they share; 0: min(sessions, 64)
  int64_t channels = 1;    // gRPC channels (TCP connections)
  double duration_s = 10;  // seconds of sending
  int64_t max_chunks = 0;  // chunks per session before it ends; 0: no limit
  double chunks_per_second = 0;  // per session, paced (open loop); 0: as fast as answered
};

// The C++ client's options: tensor encoding from `raw`, deadline from `timeout_s`, TLS files
// and the token (read from --token_file: its first line, trimmed). INVALID_ARGUMENT for
// inconsistent TLS flags (client::ValidateChannelOptions, in flag names) or both --token and
// --token_file; a token file that is missing or has an empty first line is named.
absl::StatusOr<client::ClientOptions> ToClientOptions(const CliOptions& options);

// What to check when a connection failed (gRPC says little more than "Socket closed" when a
// server refuses a client certificate): TLS flags, or the lack of them. Empty otherwise.
std::string ConnectionHint(const CliOptions& options, const absl::Status& status);

// The token of --token_file: the first line of `path`, without surrounding whitespace.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Parses --shape, e.g. "5,2,100": non-negative sizes, at least one, at most 2^28 elements.
absl::StatusOr<Shape> ParseShape(const std::string& text);

// The random input of `forward` when no --input is given: --shape, seeded by --seed.
absl::StatusOr<Tensor> RandomInputFromShape(const CliOptions& options);

// Standard normal values, like torch.randn (from std::mt19937_64, so not torch's numbers).
Tensor RandomTensor(Shape shape, uint64_t seed);

// Uniform token ids in [0, vocabulary) (Tensor::ids), seeded; all 0 for an unknown (0)
// vocabulary.
Tensor RandomIds(Shape shape, int64_t vocabulary, uint64_t seed);

// The shape of `stream`'s random input: (T, N, C), (N, T, C) for batch_first, or (T, C) for
// --batch 0. INVALID_ARGUMENT unless --steps >= 1 and --batch >= 0.
absl::StatusOr<Shape> RandomStreamShape(const CliOptions& options, int64_t input_size,
                                        bool batch_first);

// Checks the options `stream` needs whatever its input: --chunk_steps >= 1, and --h0 or --c0
// (a new session's state) not combined with --session_id.
absl::Status ValidateStreamOptions(const CliOptions& options);

// The load generator's options for `bench MODEL`; INVALID_ARGUMENT for --channels < 1 or a
// --chunks_per_second that is negative, not a number or above 1e6.
absl::StatusOr<client::StreamBenchOptions> ToStreamBenchOptions(const CliOptions& options,
                                                                const std::string& model);

}  // namespace cli
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_CLI_CLI_OPTIONS_H_
