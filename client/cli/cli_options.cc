#include "client/cli/cli_options.h"

#include <random>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/status_macros.h"

namespace rnnserve {
namespace cli {

client::ClientOptions ToClientOptions(const CliOptions& options) {
  client::ClientOptions out;
  out.encoding = options.raw ? TensorEncoding::kRaw : TensorEncoding::kValues;
  out.timeout = options.timeout_s > 0 ? absl::Seconds(options.timeout_s) : absl::InfiniteDuration();
  return out;
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

absl::StatusOr<Tensor> RandomInputFromShape(const CliOptions& options) {
  if (options.shape.empty()) {
    return absl::InvalidArgumentError("forward needs --input FILE.npy or --shape T,N,C");
  }
  ASSIGN_OR_RETURN(Shape shape, ParseShape(options.shape));
  return RandomTensor(std::move(shape), options.seed);
}

Tensor RandomTensor(Shape shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  Tensor t = Tensor::Zeros(std::move(shape));
  for (float& v : t.values) v = normal(rng);
  return t;
}

absl::StatusOr<Shape> RandomStreamShape(const CliOptions& options, int64_t input_size,
                                        bool batch_first) {
  const int64_t steps = options.steps;
  const int64_t batch = options.batch;
  if (steps < 1 || batch < 0) {
    return absl::InvalidArgumentError("--steps must be >= 1 and --batch >= 0");
  }
  if (batch == 0) return Shape{steps, input_size};
  return batch_first ? Shape{batch, steps, input_size} : Shape{steps, batch, input_size};
}

absl::Status ValidateStreamOptions(const CliOptions& options) {
  if (options.chunk_steps < 1) return absl::InvalidArgumentError("--chunk_steps must be >= 1");
  if (!options.h0.empty() && !options.session_id.empty()) {
    return absl::InvalidArgumentError(
        "--h0 starts a new session with that state; it cannot be combined with --session_id");
  }
  return absl::OkStatus();
}

absl::StatusOr<client::StreamBenchOptions> ToStreamBenchOptions(const CliOptions& options,
                                                                const std::string& model) {
  if (options.channels < 1) return absl::InvalidArgumentError("--channels must be >= 1");
  client::StreamBenchOptions out;
  out.model = model;
  out.sessions = options.sessions;
  out.streams = options.streams;
  out.chunk_steps = options.chunk_steps;
  out.duration_s = options.duration_s;
  out.max_chunks = options.max_chunks;
  out.omit_state = options.omit_state;
  out.encoding = ToClientOptions(options).encoding;
  return out;
}

}  // namespace cli
}  // namespace rnnserve
