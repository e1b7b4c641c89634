// Commands::Bench: `rnnserve-client bench`, the load generator's command-line face (see
// client/stream_bench.h for what it measures).
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cli/commands.h"
#include "client/channel.h"
#include "client/cli/proto_json.h"
#include "client/stream_bench.h"

namespace rnnserve {
namespace cli {

absl::Status Commands::Bench(const std::string& model, bool* failed) {
  ASSIGN_OR_RETURN(v1::ModelInfo info, client_->GetModel(model));
  ASSIGN_OR_RETURN(client::StreamBenchOptions bench, ToStreamBenchOptions(options_, model));
  bench.ids = info.input_kind() == "ids";
  // Features per step: the pipeline's input (older servers send no input_shape[2]).
  const int64_t c = info.input_shape_size() == 3 ? info.input_shape(2) : info.config().input_size();
  Shape chunk_shape =
      info.config().batch_first() ? Shape{1, bench.chunk_steps, c} : Shape{bench.chunk_steps, 1, c};
  if (bench.ids) chunk_shape.pop_back();  // (T, N) / (N, T) token ids
  const int64_t num_channels = options_.channels;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int64_t i = 0; i < num_channels; ++i) {
    // A distinct argument per channel, or gRPC would share one connection among them.
    grpc::ChannelArguments args;
    args.SetInt("rnnserve.bench_channel", static_cast<int>(i));
    // The client's TLS, token and message limit on every channel.
    ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                     client::MakeChannel(options_.server, client_->options(), args));
    channels.push_back(std::move(channel));
  }

  const int64_t streams = bench.streams > 0 ? std::min(bench.streams, bench.sessions)
                                            : std::min<int64_t>(64, bench.sessions);
  const char* encoding = bench.encoding == TensorEncoding::kRaw ? "raw" : "values";
  *err_ << absl::StrFormat(
      "bench: model %s, %d sessions over %d streams and %d channel(s), chunks of %d steps "
      "(shape %s), %s encoding, %.1f s%s%s\n",
      model, bench.sessions, streams, num_channels, bench.chunk_steps, ShapeToString(chunk_shape),
      encoding, bench.duration_s,
      bench.max_chunks > 0 ? absl::StrCat(", at most ", bench.max_chunks, " chunks each") : "",
      bench.chunks_per_second > 0
          ? absl::StrCat(", paced at ", bench.chunks_per_second, " chunks/s per session")
          : "");
  int64_t last_chunks = 0;
  double last_elapsed = 0;
  auto progress = [&](const client::StreamBenchProgress& p) {
    const double dt = p.elapsed_s - last_elapsed;
    const double rate = dt > 0 ? static_cast<double>(p.chunks - last_chunks) / dt : 0;
    *err_ << absl::StrFormat(
        "[%5.1fs] chunks %d  %.0f chunks/s  %.0f timesteps/s  live sessions %d  errors %d\n",
        p.elapsed_s, p.chunks, rate, rate * static_cast<double>(bench.chunk_steps), p.live_sessions,
        p.errors);
    last_chunks = p.chunks;
    last_elapsed = p.elapsed_s;
  };
  ASSIGN_OR_RETURN(client::StreamBenchReport r,
                   client::RunStreamBench(channels, chunk_shape, bench, progress));
  *failed = r.errors > 0;
  if (options_.json) {
    *out_ << Json{{"model", model},
                  {"sessions", r.sessions},
                  {"streams", r.streams},
                  {"channels", num_channels},
                  {"chunk_steps", r.chunk_steps},
                  {"encoding", encoding},
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
                  {"chunks_per_second", bench.chunks_per_second},
                  {"send_lag_ms", {{"p99", r.send_lag_p99_ms}, {"max", r.send_lag_max_ms}}},
                  {"sends_late_by_a_period", r.sends_late_by_a_period},
                  {"errors", r.errors},
                  {"error_samples", r.error_samples}}
                 .dump()
          << "\n";
    return absl::OkStatus();
  }
  *out_ << absl::StrFormat(
      "sessions    %d over %d streams, chunks of %d steps\n"
      "throughput  %.1f timesteps/s  %.1f chunks/s  (%d chunks in %.2f s)\n"
      "latency ms  p50 %.3f  p99 %.3f  p99.9 %.3f  mean %.3f  max %.3f\n"
      "chunks      %d answered in all (%d timesteps)\n"
      "errors      %d\n",
      r.sessions, r.streams, r.chunk_steps, r.timesteps_per_s, r.chunks_per_s, r.window_chunks,
      r.elapsed_s, r.p50_ms, r.p99_ms, r.p999_ms, r.mean_ms, r.max_ms, r.chunks, r.timesteps,
      r.errors);
  if (bench.chunks_per_second > 0) {
    *out_ << absl::StrFormat(
        "paced       %g chunks/s per session; latency from each chunk's slot; sends late by "
        "p99 %.3f ms, max %.3f ms; %d a whole period late\n",
        bench.chunks_per_second, r.send_lag_p99_ms, r.send_lag_max_ms, r.sends_late_by_a_period);
  }
  for (const std::string& e : r.error_samples) *out_ << "  error: " << e << "\n";
  return absl::OkStatus();
}

}  // namespace cli
}  // namespace rnnserve
