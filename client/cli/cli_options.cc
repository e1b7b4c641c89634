#include "client/cli/cli_options.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "absl/time/time.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "client/channel.h"

namespace rnnserve {
namespace cli {

namespace {

// Largest token file read: a token is a line, not a document.
constexpr int64_t kMaxTokenFileBytes = 64 << 10;

TensorEncoding EncodingOf(const CliOptions& options) {
  return options.raw ? TensorEncoding::kRaw : TensorEncoding::kValues;
}

}  // namespace

std::string ConnectionHint(const CliOptions& options, const absl::Status& status) {
  if (status.code() != absl::StatusCode::kUnavailable ||
      !(absl::StrContains(status.message(), "failed to connect") ||
        absl::StrContains(status.message(), "cannot connect"))) {
    return "";
  }
  if (options.tls_ca.empty()) {
    return absl::StrCat(" (is the server up at ", options.server,
                        ", and does it speak plaintext? A TLS server needs --tls_ca)");
  }
  return absl::StrCat(
      " (is the server up at ", options.server,
      " and does it speak TLS? Its certificate must chain to --tls_ca and name the host; a "
      "server that requires client certificates needs --tls_cert/--tls_key from a CA it "
      "trusts)");
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFile(path, kMaxTokenFileBytes);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(),
                        absl::StrCat("--token_file: ", contents.status().message()));
  }
  const absl::string_view first_line = absl::StripAsciiWhitespace(
      absl::string_view(*contents).substr(0, contents->find('\n')));
  if (first_line.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file '", path, "': the first line is empty (expected the token)"));
  }
  return std::string(first_line);
}

absl::StatusOr<client::ClientOptions> ToClientOptions(const CliOptions& options) {
  client::ClientOptions out;
  out.encoding = EncodingOf(options);
  out.timeout = options.timeout_s > 0 ? absl::Seconds(options.timeout_s) : absl::InfiniteDuration();
  // The flags' own names in the messages, rather than the library's field names.
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(options.tls_key.empty() ? "--tls_cert needs --tls_key"
                                                              : "--tls_key needs --tls_cert");
  }
  if (!options.tls_cert.empty() && options.tls_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert/--tls_key (mutual TLS) need --tls_ca, the CA of the server's certificate");
  }
  if (!options.token.empty() && !options.token_file.empty()) {
    return absl::InvalidArgumentError("give --token or --token_file, not both");
  }
  out.tls_ca_file = options.tls_ca;
  out.tls_cert_file = options.tls_cert;
  out.tls_key_file = options.tls_key;
  if (!options.token_file.empty()) {
    ASSIGN_OR_RETURN(out.token, ReadTokenFile(options.token_file));
  } else {
    out.token = options.token;
  }
  absl::Status valid = client::ValidateChannelOptions(out);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.token_file.empty() ? "--token: " : "--token_file: ", valid.message()));
  }
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

Tensor RandomIds(Shape shape, int64_t vocabulary, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> id(0, std::max<int64_t>(vocabulary, 1) - 1);
  Tensor t = Tensor::Zeros(std::move(shape));
  for (float& v : t.values) v = TokenIdAsFloat(id(rng));
  t.ids = true;
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
  for (const auto& [flag, value] : {std::pair<const char*, const std::string*>{"--h0", &options.h0},
                                     {"--c0", &options.c0}}) {
    if (!value->empty() && !options.session_id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag,
          " starts a new session with that state; it cannot be combined with --session_id"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<client::StreamBenchOptions> ToStreamBenchOptions(const CliOptions& options,
                                                                const std::string& model) {
  if (options.channels < 1) return absl::InvalidArgumentError("--channels must be >= 1");
  if (!(options.chunks_per_second >= 0) || options.chunks_per_second > 1e6) {
    return absl::InvalidArgumentError(
        absl::StrCat("--chunks_per_second must be in [0, 1e6] (0: unpaced), got ",
                     options.chunks_per_second));
  }
  client::StreamBenchOptions out;
  out.model = model;
  out.sessions = options.sessions;
  out.streams = options.streams;
  out.chunk_steps = options.chunk_steps;
  out.duration_s = options.duration_s;
  out.max_chunks = options.max_chunks;
  out.chunks_per_second = options.chunks_per_second;
  out.omit_state = options.omit_state;
  out.encoding = EncodingOf(options);
  return out;
}

}  // namespace cli
}  // namespace rnnserve
