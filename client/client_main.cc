// rnnserve-client: command-line client for rnnserve. See docs/client.md, or run it with
// --help for the subcommands and flags.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "client/npy.h"
#include "client/rnnserve_client.h"
#include "client/stream_bench.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "Server address, host:port.");
ABSL_FLAG(bool, json, false, "Print JSON (one object; one per line for `stream`) for scripts.");
ABSL_FLAG(bool, raw, true,
          "Send tensors as raw little-endian float32 bytes (the fast path); --noraw sends "
          "repeated float values, as JSON clients do.");
ABSL_FLAG(double, timeout, 30, "Deadline in seconds for each unary call; 0 for none.");
ABSL_FLAG(std::string, input, "", "forward/stream: input .npy file (float32 or float64).");
ABSL_FLAG(std::string, shape, "",
          "forward: shape of a random input, e.g. 5,2,100 for (T, N, C) (or (N, T, C) for "
          "batch_first models, or T,C unbatched).");
ABSL_FLAG(uint64_t, seed, 0, "forward/stream: seed of the random input.");
ABSL_FLAG(std::string, h0, "", "forward/stream: initial state .npy file, (L*D, N, H).");
ABSL_FLAG(std::string, save_output, "",
          "forward/stream: write the output to this .npy file (stream: all chunks, joined).");
ABSL_FLAG(std::string, save_h_n, "", "forward/stream/session: write the final h_n to this .npy.");
ABSL_FLAG(int64_t, chunk_steps, 10, "stream/bench: timesteps per chunk.");
ABSL_FLAG(int64_t, steps, 20, "stream: timesteps of the random input.");
ABSL_FLAG(int64_t, batch, 1, "stream: batch size N of the random input; 0 for unbatched (T, C).");
ABSL_FLAG(std::string, session_id, "",
          "stream: continue this existing session instead of starting a new one.");
ABSL_FLAG(bool, end, false, "stream: close the session with the last chunk.");
ABSL_FLAG(bool, omit_state, false, "stream/bench: ask the server to leave h_n out of responses.");
ABSL_FLAG(int64_t, sessions, 64, "bench: concurrent sessions.");
ABSL_FLAG(int64_t, streams, 0, "bench: gRPC streams the sessions share; 0 for min(sessions, 64).");
ABSL_FLAG(int64_t, channels, 1, "bench: gRPC channels (TCP connections) the streams share.");
ABSL_FLAG(double, duration, 10, "bench: seconds of sending.");
ABSL_FLAG(int64_t, max_chunks, 0, "bench: chunks per session, after which it ends; 0 for none.");

namespace rnnserve {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kUsage[] = R"(command-line client for rnnserve.

Usage: rnnserve-client [--server HOST:PORT] [--json] [--noraw] SUBCOMMAND ...

  models                       list the served models
  info MODEL                   a model's config, input/state shapes and parameters
  forward MODEL                stateless run: --input x.npy or --shape T,N,C [--seed S]
                               [--h0 h.npy] [--save_output y.npy] [--save_h_n h.npy]
  stream MODEL                 a streamed session, chunk by chunk: --input x.npy or random
                               --steps T --batch N; --chunk_steps K; --session_id ID to go on
                               with an existing session; --end to close it at the end
  session get ID               a session's metadata and state (h_n)
  session close ID             close a session, printing its final state
  bench [MODEL]                load test: --sessions N concurrent sessions over --streams S,
                               chunks of --chunk_steps steps, for --duration seconds
                               [--max_chunks M]; exits 1 if any chunk failed

Examples:
  rnnserve-client models
  rnnserve-client forward demo --shape 5,2,100 --json
  rnnserve-client stream demo --steps 20 --chunk_steps 5 --end
  rnnserve-client bench --sessions 4096 --duration 10
)";

// ---- Tensors ---------------------------------------------------------------------------------

// The double that prints as the shortest decimal which reads back as `v` in float32, so JSON
// shows 0.1 rather than 0.10000000149011612.
double ShortestDouble(float v) {
  if (!std::isfinite(v)) return v;
  char buf[32];
  for (int precision = 6; precision < 9; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtof(buf, nullptr) == v) return std::strtod(buf, nullptr);
  }
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return std::strtod(buf, nullptr);
}

Json TensorJson(const Tensor& t) {
  Json values = Json::array();
  for (float v : t.values) values.push_back(ShortestDouble(v));
  return Json{{"shape", t.shape}, {"values", std::move(values)}};
}

// numpy-style nested brackets, one innermost row per line, values aligned.
std::string TensorText(const Tensor& t) {
  if (t.num_elements() == 0) return "[]";
  std::vector<std::string> cells;
  size_t width = 0;
  for (float v : t.values) {
    cells.push_back(absl::StrFormat("%.6g", v));
    width = std::max(width, cells.back().size());
  }
  if (t.dim() == 0) return cells[0];
  std::string out;
  std::vector<int64_t> strides(t.dim(), 1);
  for (int64_t d = t.dim() - 2; d >= 0; --d) strides[d] = strides[d + 1] * t.shape[d + 1];
  // Recursion over dimensions: `d` the dimension, `offset` the first element.
  auto rec = [&](auto& self, int64_t d, int64_t offset) -> void {
    out += '[';
    for (int64_t i = 0; i < t.shape[d]; ++i) {
      if (d == t.dim() - 1) {
        if (i > 0) out += ' ';
        const std::string& c = cells[offset + i];
        out += std::string(width - c.size(), ' ') + c;
      } else {
        if (i > 0) {
          out += '\n';
          if (d < t.dim() - 2) out += '\n';  // a blank line between blocks, as numpy
          out += std::string(d + 1, ' ');
        }
        self(self, d + 1, offset + i * strides[d]);
      }
    }
    out += ']';
  };
  rec(rec, 0, 0);
  return out;
}

void PrintTensor(const std::string& name, const Tensor& t) {
  std::cout << name << " " << ShapeToString(t.shape) << ":\n" << TensorText(t) << "\n";
}

absl::StatusOr<Shape> ParseShape(const std::string& text) {
  Shape shape;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(part, &d) || d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shape: '", text, "' is not a list of sizes like 5,2,100"));
    }
    shape.push_back(d);
  }
  if (shape.empty()) return absl::InvalidArgumentError("--shape is empty");
  const int64_t n = NumElements(shape);
  if (n < 0 || n > (int64_t{1} << 28)) {
    return absl::InvalidArgumentError(absl::StrCat("--shape ", text, " is too large"));
  }
  return shape;
}

// Standard normal values, like torch.randn.
Tensor RandomTensor(Shape shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  Tensor t = Tensor::Zeros(std::move(shape));
  for (float& v : t.values) v = normal(rng);
  return t;
}

absl::StatusOr<std::optional<Tensor>> OptionalNpy(const std::string& path) {
  if (path.empty()) return std::optional<Tensor>();
  ASSIGN_OR_RETURN(Tensor t, ReadNpy(path));
  return std::optional<Tensor>(std::move(t));
}

absl::Status SaveIfAsked(const std::string& path, const Tensor& t) {
  if (path.empty()) return absl::OkStatus();
  return WriteNpy(path, t);
}

// ---- Protos ----------------------------------------------------------------------------------

Json FieldValue(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f,
                int index);

// Any message as JSON under its proto field names, numbers as numbers (protobuf's own JSON
// writes int64 as strings), every non-optional field included, tensors decoded to
// {"shape", "values"} whatever their encoding.
Json ProtoJson(const google::protobuf::Message& m) {
  if (m.GetDescriptor() == v1::Tensor::descriptor()) {
    auto t = DecodeTensor(static_cast<const v1::Tensor&>(m), "tensor");
    if (!t.ok()) return Json{{"error", std::string(t.status().message())}};
    return TensorJson(*t);
  }
  Json out = Json::object();
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated()) {
      Json items = Json::array();
      for (int j = 0; j < r->FieldSize(m, f); ++j) items.push_back(FieldValue(m, f, j));
      out[f->name()] = std::move(items);
    } else if (!f->has_presence() || r->HasField(m, f)) {
      out[f->name()] = FieldValue(m, f, -1);
    }
  }
  return out;
}

Json FieldValue(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f,
                int index) {
  using FD = google::protobuf::FieldDescriptor;
  const auto* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FD::CPPTYPE_INT32: return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FD::CPPTYPE_INT64: return rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case FD::CPPTYPE_UINT32: return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FD::CPPTYPE_UINT64: return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case FD::CPPTYPE_DOUBLE: return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case FD::CPPTYPE_FLOAT:
      return ShortestDouble(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FD::CPPTYPE_BOOL: return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FD::CPPTYPE_STRING: return rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
    case FD::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case FD::CPPTYPE_MESSAGE:
      return ProtoJson(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

void PrintJson(const Json& j) { std::cout << j.dump() << "\n"; }

std::string DimsText(const google::protobuf::RepeatedField<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

// ---- Subcommands -----------------------------------------------------------------------------

absl::Status Models(RnnServeClient& client) {
  ASSIGN_OR_RETURN(std::vector<v1::ModelInfo> models, client.ListModels());
  if (absl::GetFlag(FLAGS_json)) {
    Json list = Json::array();
    for (const auto& m : models) list.push_back(ProtoJson(m));
    PrintJson(Json{{"models", std::move(list)}});
    return absl::OkStatus();
  }
  if (models.empty()) std::cout << "(no models)\n";
  for (const auto& m : models) {
    std::cout << absl::StrFormat("%-20s %-40s input %s %s\n", m.name(), m.module(),
                                 m.input_layout(), DimsText(m.input_shape()));
  }
  return absl::OkStatus();
}

absl::Status Info(RnnServeClient& client, const std::string& model) {
  ASSIGN_OR_RETURN(v1::ModelInfo m, client.GetModel(model));
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(ProtoJson(m));
    return absl::OkStatus();
  }
  std::cout << "model       " << m.name() << "\n"
            << "module      " << m.module() << "\n"
            << "input       " << m.input_layout() << " " << DimsText(m.input_shape()) << "\n"
            << "state       (L*D, N, H) " << DimsText(m.state_shape()) << "\n"
            << "streaming   "
            << (m.streaming_buffers_until_end()
                    ? "buffers chunks, answers at `end` (bidirectional)"
                    : "output per chunk")
            << "\n"
            << "parameters  " << m.parameter_count() << "\n";
  for (const auto& p : m.parameters()) {
    std::cout << absl::StrFormat("  %-24s %s\n", p.name(),
                                 ShapeToString(Shape(p.shape().begin(), p.shape().end())));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> InputFromFlags() {
  if (!absl::GetFlag(FLAGS_input).empty()) return ReadNpy(absl::GetFlag(FLAGS_input));
  if (absl::GetFlag(FLAGS_shape).empty()) {
    return absl::InvalidArgumentError("forward needs --input FILE.npy or --shape T,N,C");
  }
  ASSIGN_OR_RETURN(Shape shape, ParseShape(absl::GetFlag(FLAGS_shape)));
  return RandomTensor(std::move(shape), absl::GetFlag(FLAGS_seed));
}

absl::Status Forward(RnnServeClient& client, const std::string& model) {
  ASSIGN_OR_RETURN(Tensor input, InputFromFlags());
  ASSIGN_OR_RETURN(std::optional<Tensor> h0, OptionalNpy(absl::GetFlag(FLAGS_h0)));
  ASSIGN_OR_RETURN(ForwardResult r, client.Forward(model, input, h0 ? &*h0 : nullptr));
  RETURN_IF_ERROR(SaveIfAsked(absl::GetFlag(FLAGS_save_output), r.output));
  RETURN_IF_ERROR(SaveIfAsked(absl::GetFlag(FLAGS_save_h_n), r.h_n));
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(Json{{"output", TensorJson(r.output)}, {"h_n", TensorJson(r.h_n)}});
  } else {
    PrintTensor("output", r.output);
    PrintTensor("h_n", r.h_n);
  }
  return absl::OkStatus();
}

absl::Status Stream(RnnServeClient& client, const std::string& model) {
  ASSIGN_OR_RETURN(v1::ModelInfo info, client.GetModel(model));
  const bool batch_first = info.config().batch_first();
  Tensor input;
  if (!absl::GetFlag(FLAGS_input).empty()) {
    ASSIGN_OR_RETURN(input, ReadNpy(absl::GetFlag(FLAGS_input)));
    if (input.dim() != 2 && input.dim() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input has shape ", ShapeToString(input.shape), "; model ", model,
                       " takes ", info.input_layout(), " or (T, C)"));
    }
  } else {
    const int64_t steps = absl::GetFlag(FLAGS_steps);
    const int64_t batch = absl::GetFlag(FLAGS_batch);
    const int64_t c = info.config().input_size();
    if (steps < 1 || batch < 0) {
      return absl::InvalidArgumentError("--steps must be >= 1 and --batch >= 0");
    }
    Shape shape = batch == 0 ? Shape{steps, c}
                             : (batch_first ? Shape{batch, steps, c} : Shape{steps, batch, c});
    input = RandomTensor(std::move(shape), absl::GetFlag(FLAGS_seed));
  }
  const int64_t chunk_steps = absl::GetFlag(FLAGS_chunk_steps);
  if (chunk_steps < 1) return absl::InvalidArgumentError("--chunk_steps must be >= 1");
  ASSIGN_OR_RETURN(std::optional<Tensor> h0, OptionalNpy(absl::GetFlag(FLAGS_h0)));
  std::string session_id = absl::GetFlag(FLAGS_session_id);
  if (h0 && !session_id.empty()) {
    return absl::InvalidArgumentError(
        "--h0 starts a new session with that state; it cannot be combined with --session_id");
  }
  const bool json = absl::GetFlag(FLAGS_json);
  const bool end = absl::GetFlag(FLAGS_end);

  // Time is dimension 1 only for batched input of a batch_first model.
  const int64_t time_axis = batch_first && input.dim() == 3 ? 1 : 0;
  const int64_t total_steps = input.shape[time_axis];
  if (total_steps < 1) return absl::InvalidArgumentError("the input has no timesteps");
  ASSIGN_OR_RETURN(std::unique_ptr<StreamChannel> stream, client.OpenStream());
  stream->set_omit_state(absl::GetFlag(FLAGS_omit_state));

  std::vector<Tensor> outputs;
  std::optional<Tensor> last_h_n;
  ChunkResult last;
  int64_t index = 0;
  for (int64_t at = 0; at < total_steps; at += chunk_steps, ++index) {
    const int64_t len = std::min(chunk_steps, total_steps - at);
    ASSIGN_OR_RETURN(const Tensor chunk, Slice(input, time_axis, at, len));
    const bool last_chunk = at + chunk_steps >= total_steps;
    absl::StatusOr<ChunkResult> r =
        session_id.empty()
            ? stream->Start(model, "", h0 ? &*h0 : nullptr, &chunk, end && last_chunk)
            : stream->SendChunk(session_id, chunk, end && last_chunk);
    if (!r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat("chunk ", index, ": ", r.status().message()));
    }
    session_id = r->session_id;
    if (r->output.num_elements() > 0) outputs.push_back(r->output);
    if (r->h_n) last_h_n = r->h_n;
    if (json) {
      Json j{{"chunk", index},           {"session_id", r->session_id},
             {"first_step", at},         {"steps", len},
             {"steps_seen", r->steps_seen}, {"ended", r->ended}};
      j["output"] = r->output.shape.empty() ? Json(nullptr) : TensorJson(r->output);
      j["h_n"] = r->h_n ? TensorJson(*r->h_n) : Json(nullptr);
      PrintJson(j);
    } else {
      std::cout << absl::StrFormat("chunk %d  session %s  steps %d..%d  steps_seen %d%s\n", index,
                                   r->session_id, at, at + len - 1, r->steps_seen,
                                   r->ended ? "  (ended)" : "");
      if (r->output.shape.empty()) {
        std::cout << "output: none yet (bidirectional models answer at --end)\n";
      } else {
        PrintTensor("output", r->output);
      }
      if (r->h_n) PrintTensor("h_n", *r->h_n);
      std::cout << "\n";
    }
    last = *std::move(r);
  }
  RETURN_IF_ERROR(stream->Finish());
  if (!outputs.empty()) {
    ASSIGN_OR_RETURN(const Tensor output, Concat(outputs, time_axis));
    RETURN_IF_ERROR(SaveIfAsked(absl::GetFlag(FLAGS_save_output), output));
  }
  if (last_h_n) RETURN_IF_ERROR(SaveIfAsked(absl::GetFlag(FLAGS_save_h_n), *last_h_n));
  if (!json) {
    std::cout << "session " << session_id << ": " << last.steps_seen << " steps seen, "
              << (last.ended ? "closed"
                             : "still open (continue with --session_id, close with --end or "
                               "`session close`)")
              << "\n";
  }
  return absl::OkStatus();
}

absl::Status Session(RnnServeClient& client, const std::string& verb, const std::string& id) {
  absl::StatusOr<SessionState> s;
  if (verb == "get") {
    s = client.GetSession(id);
  } else if (verb == "close") {
    s = client.CloseSession(id);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown `session ", verb, "`; use `session get ID` or `session close ID`"));
  }
  RETURN_IF_ERROR(s.status());
  if (s->h_n) RETURN_IF_ERROR(SaveIfAsked(absl::GetFlag(FLAGS_save_h_n), *s->h_n));
  if (absl::GetFlag(FLAGS_json)) {
    Json j = ProtoJson(s->info);
    j["h_n"] = s->h_n ? TensorJson(*s->h_n) : Json(nullptr);
    PrintJson(j);
    return absl::OkStatus();
  }
  const v1::SessionInfo& i = s->info;
  std::cout << "session      " << i.session_id() << (verb == "close" ? " (closed)" : "") << "\n"
            << "model        " << i.model() << "\n"
            << "steps_seen   " << i.steps_seen() << "\n"
            << "next_chunk   " << i.next_chunk_index() << "\n"
            << "batch_size   " << i.batch_size() << (i.unbatched() ? " (unbatched)" : "") << "\n"
            << "created      " << absl::FormatTime(absl::FromUnixMillis(i.created_unix_ms()))
            << "\n"
            << "last_used    " << absl::FormatTime(absl::FromUnixMillis(i.last_used_unix_ms()))
            << "\n"
            << "expires_in   " << absl::FormatDuration(absl::Milliseconds(i.expires_in_ms()))
            << "\n"
            << "state_bytes  " << i.state_bytes() << "\n";
  if (i.buffered_steps() > 0) std::cout << "buffered     " << i.buffered_steps() << " steps\n";
  if (s->h_n) PrintTensor("h_n", *s->h_n);
  return absl::OkStatus();
}

absl::Status Bench(RnnServeClient& client, const std::string& model, bool* failed) {
  ASSIGN_OR_RETURN(v1::ModelInfo info, client.GetModel(model));
  StreamBenchOptions options;
  options.model = model;
  options.sessions = absl::GetFlag(FLAGS_sessions);
  options.streams = absl::GetFlag(FLAGS_streams);
  options.chunk_steps = absl::GetFlag(FLAGS_chunk_steps);
  options.duration_s = absl::GetFlag(FLAGS_duration);
  options.max_chunks = absl::GetFlag(FLAGS_max_chunks);
  options.omit_state = absl::GetFlag(FLAGS_omit_state);
  options.encoding = client.options().encoding;
  const int64_t c = info.config().input_size();
  const Shape chunk_shape = info.config().batch_first() ? Shape{1, options.chunk_steps, c}
                                                        : Shape{options.chunk_steps, 1, c};
  const int64_t num_channels = absl::GetFlag(FLAGS_channels);
  if (num_channels < 1) return absl::InvalidArgumentError("--channels must be >= 1");
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int64_t i = 0; i < num_channels; ++i) {
    // A distinct argument per channel, or gRPC would share one connection among them.
    grpc::ChannelArguments args;
    args.SetInt("rnnserve.bench_channel", static_cast<int>(i));
    channels.push_back(grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server),
                                                 grpc::InsecureChannelCredentials(), args));
  }

  const int64_t streams =
      options.streams > 0 ? std::min(options.streams, options.sessions)
                          : std::min<int64_t>(64, options.sessions);
  std::cerr << absl::StrFormat(
      "bench: model %s, %d sessions over %d streams and %d channel(s), chunks of %d steps "
      "(shape %s), %s encoding, %.1f s%s\n",
      model, options.sessions, streams, num_channels, options.chunk_steps,
      ShapeToString(chunk_shape), options.encoding == TensorEncoding::kRaw ? "raw" : "values",
      options.duration_s,
      options.max_chunks > 0 ? absl::StrCat(", at most ", options.max_chunks, " chunks each")
                             : "");
  int64_t last_chunks = 0;
  double last_elapsed = 0;
  auto progress = [&](const StreamBenchProgress& p) {
    const double dt = p.elapsed_s - last_elapsed;
    const double rate = dt > 0 ? static_cast<double>(p.chunks - last_chunks) / dt : 0;
    std::cerr << absl::StrFormat(
        "[%5.1fs] chunks %d  %.0f chunks/s  %.0f timesteps/s  live sessions %d  errors %d\n",
        p.elapsed_s, p.chunks, rate, rate * static_cast<double>(options.chunk_steps),
        p.live_sessions, p.errors);
    last_chunks = p.chunks;
    last_elapsed = p.elapsed_s;
  };
  ASSIGN_OR_RETURN(StreamBenchReport r, RunStreamBench(channels, chunk_shape, options, progress));
  *failed = r.errors > 0;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(Json{{"model", model},
                   {"sessions", r.sessions},
                   {"streams", r.streams},
                   {"channels", num_channels},
                   {"chunk_steps", r.chunk_steps},
                   {"encoding", options.encoding == TensorEncoding::kRaw ? "raw" : "values"},
                   {"elapsed_s", r.elapsed_s},
                   {"chunks_per_s", r.chunks_per_s},
                   {"timesteps_per_s", r.timesteps_per_s},
                   {"chunks", r.chunks},
                   {"timesteps", r.timesteps},
                   {"latency_ms",
                    {{"p50", r.p50_ms},
                     {"p99", r.p99_ms},
                     {"p99.9", r.p999_ms},
                     {"mean", r.mean_ms},
                     {"max", r.max_ms}}},
                   {"errors", r.errors},
                   {"error_samples", r.error_samples}});
    return absl::OkStatus();
  }
  std::cout << absl::StrFormat(
      "sessions    %d over %d streams, chunks of %d steps\n"
      "throughput  %.1f timesteps/s  %.1f chunks/s  (%d chunks in %.2f s)\n"
      "latency ms  p50 %.3f  p99 %.3f  p99.9 %.3f  mean %.3f  max %.3f\n"
      "chunks      %d answered in all (%d timesteps)\n"
      "errors      %d\n",
      r.sessions, r.streams, r.chunk_steps, r.timesteps_per_s, r.chunks_per_s, r.window_chunks,
      r.elapsed_s, r.p50_ms, r.p99_ms, r.p999_ms, r.mean_ms, r.max_ms, r.chunks, r.timesteps,
      r.errors);
  for (const std::string& e : r.error_samples) std::cout << "  error: " << e << "\n";
  return absl::OkStatus();
}

// Set by UsageError, for exit status 2.
bool usage_error = false;

absl::Status UsageError(const std::string& message) {
  usage_error = true;
  return absl::InvalidArgumentError(absl::StrCat(message, " (see --help)"));
}

// Runs the subcommand in args[1..]; sets *failed for a bench with failed chunks.
absl::Status Run(const std::vector<std::string>& args, bool* failed) {
  if (args.empty()) return UsageError("no subcommand");
  ClientOptions options;
  options.encoding = absl::GetFlag(FLAGS_raw) ? TensorEncoding::kRaw : TensorEncoding::kValues;
  const double timeout = absl::GetFlag(FLAGS_timeout);
  options.timeout = timeout > 0 ? absl::Seconds(timeout) : absl::InfiniteDuration();
  RnnServeClient client(absl::GetFlag(FLAGS_server), options);

  const std::string& cmd = args[0];
  auto want = [&](size_t n, const char* form) -> absl::Status {
    if (args.size() != n) return UsageError(absl::StrCat("usage: rnnserve-client ", form));
    return absl::OkStatus();
  };
  if (cmd == "models") {
    RETURN_IF_ERROR(want(1, "models"));
    return Models(client);
  }
  if (cmd == "info") {
    RETURN_IF_ERROR(want(2, "info MODEL"));
    return Info(client, args[1]);
  }
  if (cmd == "forward") {
    RETURN_IF_ERROR(want(2, "forward MODEL (--input FILE.npy | --shape T,N,C)"));
    return Forward(client, args[1]);
  }
  if (cmd == "stream") {
    RETURN_IF_ERROR(want(2, "stream MODEL [--input FILE.npy | --steps T --batch N]"));
    return Stream(client, args[1]);
  }
  if (cmd == "session") {
    RETURN_IF_ERROR(want(3, "session (get|close) SESSION_ID"));
    return Session(client, args[1], args[2]);
  }
  if (cmd == "bench") {
    if (args.size() > 2) return UsageError("usage: rnnserve-client bench [MODEL]");
    return Bench(client, args.size() == 2 ? args[1] : "demo", failed);
  }
  return UsageError(absl::StrCat("unknown subcommand '", cmd, "'"));
}

}  // namespace
}  // namespace rnnserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(rnnserve::kUsage);
  // --help lists the flags of this file (absl's default matches the file to the binary name).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "client_main");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  bool failed = false;
  const absl::Status status = rnnserve::Run(args, &failed);
  if (!status.ok()) {
    std::cerr << "rnnserve-client: " << absl::StatusCodeToString(status.code()) << ": "
              << status.message() << "\n";
    return rnnserve::usage_error ? 2 : 1;
  }
  return failed ? 1 : 0;
}
