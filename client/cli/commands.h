// The subcommands of rnnserve-client (models, info, forward, stream, session, bench) and their
// dispatch. Each command takes its options as a CliOptions value, talks to the server through
// a client::RnnServeClient and writes its result to `out` (text, or JSON with --json); bench
// writes progress to `err`. No flag is read here: main.cc fills CliOptions.
//
// Thread-compatible: one command at a time per Commands. Commands owns nothing; the client and
// the streams must outlive it.
#ifndef RNNSERVE_CLIENT_CLI_COMMANDS_H_
#define RNNSERVE_CLIENT_CLI_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/cli/cli_options.h"
#include "client/rnnserve_client.h"

namespace rnnserve {
namespace cli {

class Commands {
 public:
  Commands(const CliOptions& options, client::RnnServeClient* client, std::ostream* out,
           std::ostream* err);

  // The served models, one per line (or {"models": [ModelInfo...]}).
  absl::Status Models();
  // A model's config, cell (RNN/GRU/LSTM and proj_size), state and cell-state shapes and
  // parameters (or its ModelInfo).
  absl::Status Info(const std::string& model);
  // A stateless run of --input (or a random --shape) with optional --h0 and (LSTM) --c0; prints
  // output, h_n and c_n and saves them to --save_output / --save_h_n / --save_c_n when given.
  absl::Status Forward(const std::string& model);
  // A streamed session: --input (or random --steps/--batch) in chunks of --chunk_steps, one
  // line of JSON (or a text block) per chunk; --save_output gets all chunks' output joined.
  absl::Status Stream(const std::string& model);
  // `session get ID` or `session close ID`: the session's metadata and state (h_n, and c_n for
  // an LSTM), saved to --save_h_n / --save_c_n when given.
  absl::Status Session(const std::string& verb, const std::string& id);
  // The load generator (client::RunStreamBench); *failed is set when any chunk failed.
  absl::Status Bench(const std::string& model, bool* failed);

 private:
  const CliOptions& options_;
  client::RnnServeClient* const client_;
  std::ostream* const out_;
  std::ostream* const err_;
};

// Exit statuses of RunCli.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;      // the command failed, or bench saw failed chunks
inline constexpr int kExitUsageError = 2;  // unknown subcommand or wrong arguments

// Runs `args` (the subcommand and its positional arguments) against options.server. On
// failure writes "rnnserve-client: CODE: message" to `err`. Returns one of the exit statuses.
int RunCli(const std::vector<std::string>& args, const CliOptions& options, std::ostream& out,
           std::ostream& err);

}  // namespace cli
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_CLI_COMMANDS_H_
