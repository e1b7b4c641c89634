#include "client/cli/commands.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "client/cli/proto_json.h"
#include "client/cli/tensor_text.h"
#include "client/npy.h"

namespace rnnserve {
namespace cli {
namespace {

absl::StatusOr<std::optional<Tensor>> OptionalNpy(const std::string& path) {
  if (path.empty()) return std::optional<Tensor>();
  ASSIGN_OR_RETURN(Tensor t, ReadNpy(path));
  return std::optional<Tensor>(std::move(t));
}

absl::Status SaveIfAsked(const std::string& path, const Tensor& t) {
  if (path.empty()) return absl::OkStatus();
  return WriteNpy(path, t);
}

// --save_c_n with a result: c_n exists only for LSTM models, so asking for it elsewhere is an
// error rather than a silently missing file.
absl::Status SaveCellStateIfAsked(const std::string& path, const std::optional<Tensor>& c_n,
                                  const std::string& model) {
  if (path.empty()) return absl::OkStatus();
  if (!c_n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--save_c_n: model ", model, " returned no c_n (only an LSTM has a cell state)"));
  }
  return WriteNpy(path, *c_n);
}

Json OptionalTensorJson(const std::optional<Tensor>& t) {
  return t ? TensorJson(*t) : Json(nullptr);
}

std::string DimsText(const google::protobuf::RepeatedField<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

// The model as torch prints it: the whole pipeline (older servers send only `module`).
const std::string& PipelineText(const v1::ModelInfo& m) {
  return m.pipeline().empty() ? m.module() : m.pipeline();
}

bool TakesIds(const v1::ModelInfo& m) { return m.input_kind() == "ids"; }

// "ids (T, N) [-1, -1]" / "features (T, N, C) [-1, -1, 100]".
std::string InputText(const v1::ModelInfo& m) {
  return absl::StrCat(TakesIds(m) ? "ids " : "features ", m.input_layout(), " ",
                      DimsText(m.input_shape()));
}

// The vocabulary size of an ids model: rows of its Embedding's weight (the first layer's).
int64_t VocabularySize(const v1::ModelInfo& m) {
  if (m.layers().empty()) return 0;
  const std::string weight = absl::StrCat(m.layers(0).path(), ".weight");
  for (const auto& p : m.parameters()) {
    if (p.name() == weight && !p.shape().empty()) return p.shape(0);
  }
  return 0;
}

}  // namespace

Commands::Commands(const CliOptions& options, client::RnnServeClient* client, std::ostream* out,
                   std::ostream* err)
    : options_(options), client_(client), out_(out), err_(err) {}

absl::Status Commands::Models() {
  ASSIGN_OR_RETURN(std::vector<v1::ModelInfo> models, client_->ListModels());
  if (options_.json) {
    Json list = Json::array();
    for (const auto& m : models) list.push_back(ProtoJson(m));
    *out_ << Json{{"models", std::move(list)}}.dump() << "\n";
    return absl::OkStatus();
  }
  if (models.empty()) *out_ << "(no models)\n";
  for (const auto& m : models) {
    *out_ << absl::StrFormat("%-20s v%-4d %-40s input %s  (loaded: %s)\n", m.name(), m.version(),
                             PipelineText(m), InputText(m),
                             absl::StrJoin(m.loaded_versions(), ", "));
  }
  // Versions that are not READY, with why: only a server with model control says.
  absl::StatusOr<std::vector<v1::ModelVersionState>> index = client_->RepositoryIndex();
  if (!index.ok()) return absl::OkStatus();
  for (const v1::ModelVersionState& row : *index) {
    if (row.state() == "READY") continue;
    *out_ << absl::StrFormat("%-20s v%-4d %-11s %d live session(s)  %s\n", row.model(),
                             row.version(), row.state(), row.live_sessions(), row.reason());
  }
  return absl::OkStatus();
}

absl::Status Commands::Info(const std::string& model_arg) {
  // MODEL or MODEL:VERSION (model names never end in ":<digits>" in a repository's layout).
  std::string model = model_arg;
  int64_t version = 0;
  if (const size_t colon = model_arg.rfind(':'); colon != std::string::npos) {
    if (!absl::SimpleAtoi(model_arg.substr(colon + 1), &version) || version <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "info ", model_arg, ": the version after ':' must be a positive integer"));
    }
    model = model_arg.substr(0, colon);
  }
  ASSIGN_OR_RETURN(v1::ModelInfo m, client_->GetModel(model, version));
  if (options_.json) {
    *out_ << ProtoJson(m).dump() << "\n";
    return absl::OkStatus();
  }
  *out_ << "model       " << m.name() << "\n"
        << "version     " << m.version() << " (loaded: " << absl::StrJoin(m.loaded_versions(), ", ")
        << ")\n"
        << "pipeline    " << PipelineText(m) << "\n"
        << "module      " << m.module() << "\n"
        << "input       " << InputText(m) << "\n"
        << "output      " << DimsText(m.output_shape()) << "\n"
        << "cell        " << m.config().module()
        << (m.config().proj_size() > 0 ? absl::StrCat(" (proj_size ", m.config().proj_size(), ")")
                                       : "")
        << "\n"
        << "state       " << (m.config().proj_size() > 0 ? "(L*D, N, H_out) " : "(L*D, N, H) ")
        << DimsText(m.state_shape()) << "\n"
        << "cell state  "
        << (m.cell_state_shape().empty() ? "none (only an LSTM has c)"
                                         : absl::StrCat("(L*D, N, H) ",
                                                        DimsText(m.cell_state_shape())))
        << "\n"
        << "streaming   "
        << (m.streaming_buffers_until_end() ? "buffers chunks, answers at `end` (bidirectional)"
                                            : "output per chunk")
        << "\n"
        << "parameters  " << m.parameter_count() << "\n";
  if (m.layers_size() > 1) {
    *out_ << "layers      " << m.layers_size() << "\n";
    for (const auto& l : m.layers()) {
      *out_ << absl::StrFormat("  %-11s %-16s %s  (%d -> %d features)\n", l.stage(),
                               l.path().empty() ? "-" : l.path(), l.repr(), l.in_features(),
                               l.out_features());
    }
  }
  for (const auto& p : m.parameters()) {
    *out_ << absl::StrFormat("  %-24s %s\n", p.name(),
                             ShapeToString(Shape(p.shape().begin(), p.shape().end())));
  }
  return absl::OkStatus();
}

absl::Status Commands::Forward(const std::string& model) {
  ASSIGN_OR_RETURN(Tensor input, options_.input.empty() ? RandomInputFromShape(options_)
                                                        : ReadNpy(options_.input));
  ASSIGN_OR_RETURN(std::optional<Tensor> h0, OptionalNpy(options_.h0));
  ASSIGN_OR_RETURN(std::optional<Tensor> c0, OptionalNpy(options_.c0));
  ASSIGN_OR_RETURN(client::ForwardResult r,
                   client_->Forward(model, input, h0 ? &*h0 : nullptr, c0 ? &*c0 : nullptr,
                                    options_.model_version));
  RETURN_IF_ERROR(SaveIfAsked(options_.save_output, r.output));
  RETURN_IF_ERROR(SaveIfAsked(options_.save_h_n, r.h_n));
  RETURN_IF_ERROR(SaveCellStateIfAsked(options_.save_c_n, r.c_n, model));
  if (options_.json) {
    Json j{{"output", TensorJson(r.output)}, {"h_n", TensorJson(r.h_n)}};
    if (r.c_n) j["c_n"] = TensorJson(*r.c_n);
    *out_ << j.dump() << "\n";
  } else {
    *out_ << NamedTensorText("output", r.output) << NamedTensorText("h_n", r.h_n);
    if (r.c_n) *out_ << NamedTensorText("c_n", *r.c_n);
  }
  return absl::OkStatus();
}

absl::Status Commands::Stream(const std::string& model) {
  ASSIGN_OR_RETURN(v1::ModelInfo info, client_->GetModel(model));
  const bool batch_first = info.config().batch_first();
  // A model taking token ids has no feature dimension: (T, N) / (N, T) / (T,).
  const bool ids = TakesIds(info);
  const int64_t batched_dims = ids ? 2 : 3;
  Tensor input;
  if (!options_.input.empty()) {
    ASSIGN_OR_RETURN(input, ReadNpy(options_.input));
    if (input.dim() != batched_dims && input.dim() != batched_dims - 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--input has shape ", ShapeToString(input.shape), "; model ", model, " takes ",
          info.input_layout(), ids ? " or (T,) token ids" : " or (T, C)"));
    }
  } else if (ids) {
    ASSIGN_OR_RETURN(Shape shape, RandomStreamShape(options_, 1, batch_first));
    shape.pop_back();
    input = RandomIds(std::move(shape), VocabularySize(info), options_.seed);
  } else {
    const int64_t features = info.input_shape_size() == 3 ? info.input_shape(2)
                                                          : info.config().input_size();
    ASSIGN_OR_RETURN(Shape shape, RandomStreamShape(options_, features, batch_first));
    input = RandomTensor(std::move(shape), options_.seed);
  }
  RETURN_IF_ERROR(ValidateStreamOptions(options_));
  const int64_t chunk_steps = options_.chunk_steps;
  ASSIGN_OR_RETURN(std::optional<Tensor> h0, OptionalNpy(options_.h0));
  ASSIGN_OR_RETURN(std::optional<Tensor> c0, OptionalNpy(options_.c0));
  const bool has_cell_state = !info.cell_state_shape().empty();
  if (!options_.save_c_n.empty() && !has_cell_state) {
    // Checked before any chunk is sent: nothing is applied for a flag that cannot be honoured.
    return absl::InvalidArgumentError(absl::StrCat(
        "--save_c_n: model ", model, " has no cell state (only an LSTM returns c_n)"));
  }
  std::string session_id = options_.session_id;

  // Time is dimension 1 only for batched input of a batch_first model.
  const int64_t time_axis = batch_first && input.dim() == batched_dims ? 1 : 0;
  const int64_t total_steps = input.shape[time_axis];
  if (total_steps < 1) return absl::InvalidArgumentError("the input has no timesteps");
  ASSIGN_OR_RETURN(std::unique_ptr<client::StreamChannel> stream, client_->OpenStream());
  stream->set_omit_state(options_.omit_state);
  stream->set_model_version(options_.model_version);

  std::vector<Tensor> outputs;
  std::optional<Tensor> last_h_n;
  std::optional<Tensor> last_c_n;
  client::ChunkResult last;
  int64_t index = 0;
  for (int64_t at = 0; at < total_steps; at += chunk_steps, ++index) {
    const int64_t len = std::min(chunk_steps, total_steps - at);
    ASSIGN_OR_RETURN(Tensor chunk, Slice(input, time_axis, at, len));
    chunk.ids = input.ids;  // an int .npy goes out as Tensor.ids
    const bool end = options_.end && at + chunk_steps >= total_steps;
    absl::StatusOr<client::ChunkResult> r =
        session_id.empty() ? stream->Start(model, "", h0 ? &*h0 : nullptr, &chunk, end,
                                                       c0 ? &*c0 : nullptr)
                           : stream->SendChunk(session_id, chunk, end);
    if (!r.ok()) return PrefixStatus(absl::StrCat("chunk ", index), r.status());
    session_id = r->session_id;
    if (r->output.num_elements() > 0) outputs.push_back(r->output);
    if (r->h_n) last_h_n = r->h_n;
    if (r->c_n) last_c_n = r->c_n;
    if (options_.json) {
      Json j{{"chunk", index}, {"session_id", r->session_id}, {"first_step", at},
             {"steps", len},   {"steps_seen", r->steps_seen}, {"ended", r->ended}};
      j["output"] = r->output.shape.empty() ? Json(nullptr) : TensorJson(r->output);
      j["h_n"] = OptionalTensorJson(r->h_n);
      if (has_cell_state) j["c_n"] = OptionalTensorJson(r->c_n);
      *out_ << j.dump() << "\n";
    } else {
      *out_ << absl::StrFormat("chunk %d  session %s  steps %d..%d  steps_seen %d%s\n", index,
                               r->session_id, at, at + len - 1, r->steps_seen,
                               r->ended ? "  (ended)" : "");
      if (r->output.shape.empty()) {
        *out_ << "output: none yet (bidirectional models answer at --end)\n";
      } else {
        *out_ << NamedTensorText("output", r->output);
      }
      if (r->h_n) *out_ << NamedTensorText("h_n", *r->h_n);
      if (r->c_n) *out_ << NamedTensorText("c_n", *r->c_n);
      *out_ << "\n";
    }
    last = *std::move(r);
  }
  RETURN_IF_ERROR(stream->Finish());
  if (!outputs.empty()) {
    ASSIGN_OR_RETURN(const Tensor output, Concat(outputs, time_axis));
    RETURN_IF_ERROR(SaveIfAsked(options_.save_output, output));
  }
  if (last_h_n) RETURN_IF_ERROR(SaveIfAsked(options_.save_h_n, *last_h_n));
  if (last_c_n) RETURN_IF_ERROR(SaveIfAsked(options_.save_c_n, *last_c_n));
  if (!options_.json) {
    *out_ << "session " << session_id << ": " << last.steps_seen << " steps seen, "
          << (last.ended ? "closed"
                         : "still open (continue with --session_id, close with --end or "
                           "`session close`)")
          << "\n";
  }
  return absl::OkStatus();
}

absl::Status Commands::Session(const std::string& verb, const std::string& id) {
  absl::StatusOr<client::SessionState> s;
  if (verb == "get") {
    s = client_->GetSession(id);
  } else if (verb == "close") {
    s = client_->CloseSession(id);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown `session ", verb, "`; use `session get ID` or `session close ID`"));
  }
  RETURN_IF_ERROR(s.status());
  if (s->h_n) RETURN_IF_ERROR(SaveIfAsked(options_.save_h_n, *s->h_n));
  if (s->h_n) RETURN_IF_ERROR(SaveCellStateIfAsked(options_.save_c_n, s->c_n, s->info.model()));
  if (options_.json) {
    Json j = ProtoJson(s->info);
    j["h_n"] = OptionalTensorJson(s->h_n);
    if (s->c_n) j["c_n"] = TensorJson(*s->c_n);
    *out_ << j.dump() << "\n";
    return absl::OkStatus();
  }
  const v1::SessionInfo& i = s->info;
  *out_ << "session      " << i.session_id() << (verb == "close" ? " (closed)" : "") << "\n"
        << "model        " << i.model() << " (version " << i.model_version() << ")\n"
        << "steps_seen   " << i.steps_seen() << "\n"
        << "next_chunk   " << i.next_chunk_index() << "\n"
        << "batch_size   " << i.batch_size() << (i.unbatched() ? " (unbatched)" : "") << "\n"
        << "created      " << absl::FormatTime(absl::FromUnixMillis(i.created_unix_ms())) << "\n"
        << "last_used    " << absl::FormatTime(absl::FromUnixMillis(i.last_used_unix_ms())) << "\n"
        << "expires_in   " << absl::FormatDuration(absl::Milliseconds(i.expires_in_ms())) << "\n"
        << "state_bytes  " << i.state_bytes() << "\n";
  if (i.buffered_steps() > 0) *out_ << "buffered     " << i.buffered_steps() << " steps\n";
  if (s->h_n) *out_ << NamedTensorText("h_n", *s->h_n);
  if (s->c_n) *out_ << NamedTensorText("c_n", *s->c_n);
  return absl::OkStatus();
}

namespace {

// A failed command's status, and whether it was the caller's use of the command line.
struct CommandError {
  absl::Status status;
  bool usage = false;
};

CommandError Usage(const std::string& message) {
  return {absl::InvalidArgumentError(absl::StrCat(message, " (see --help)")), true};
}

// Runs the subcommand in args; sets *failed for a bench with failed chunks.
CommandError Dispatch(const std::vector<std::string>& args, Commands& commands, bool* failed) {
  if (args.empty()) return Usage("no subcommand");
  const std::string& cmd = args[0];
  auto arity = [&](size_t n) { return args.size() == n; };
  auto usage = [](const char* form) {
    return Usage(absl::StrCat("usage: rnnserve-client ", form));
  };
  if (cmd == "models") {
    if (!arity(1)) return usage("models");
    return {commands.Models()};
  }
  if (cmd == "info") {
    if (!arity(2)) return usage("info MODEL[:VERSION]");
    return {commands.Info(args[1])};
  }
  if (cmd == "forward") {
    if (!arity(2)) return usage("forward MODEL (--input FILE.npy | --shape T,N,C)");
    return {commands.Forward(args[1])};
  }
  if (cmd == "stream") {
    if (!arity(2)) return usage("stream MODEL [--input FILE.npy | --steps T --batch N]");
    return {commands.Stream(args[1])};
  }
  if (cmd == "session") {
    if (!arity(3)) return usage("session (get|close) SESSION_ID");
    return {commands.Session(args[1], args[2])};
  }
  if (cmd == "bench") {
    if (args.size() > 2) return usage("bench [MODEL]");
    return {commands.Bench(args.size() == 2 ? args[1] : "demo", failed)};
  }
  return Usage(absl::StrCat("unknown subcommand '", cmd, "'"));
}

}  // namespace

int RunCli(const std::vector<std::string>& args, const CliOptions& options, std::ostream& out,
           std::ostream& err) {
  absl::StatusOr<client::ClientOptions> client_options = ToClientOptions(options);
  absl::StatusOr<std::unique_ptr<client::RnnServeClient>> client =
      client_options.ok() ? client::RnnServeClient::Connect(options.server, *client_options)
                          : client_options.status();
  if (!client.ok()) {
    // Flags or files that cannot make a connection: nothing was sent.
    err << "rnnserve-client: " << absl::StatusCodeToString(client.status().code()) << ": "
        << client.status().message() << "\n";
    return kExitUsageError;
  }
  Commands commands(options, client->get(), &out, &err);
  bool failed = false;
  const CommandError error = Dispatch(args, commands, &failed);
  if (!error.status.ok()) {
    err << "rnnserve-client: " << absl::StatusCodeToString(error.status.code()) << ": "
        << error.status.message() << ConnectionHint(options, error.status) << "\n";
    return error.usage ? kExitUsageError : kExitFailed;
  }
  return failed ? kExitFailed : kExitOk;
}

}  // namespace cli
}  // namespace rnnserve
