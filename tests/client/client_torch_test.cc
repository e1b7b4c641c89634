// The C++ client (rnnserve::client) against an in-process RnnServer (whose core has its own
// rnnserve::ChunkResult and ForwardResult: this binary links both, which the client's namespace
// makes legal), numbers compared with torch's. The models and the expected numbers are the
// parity cases tests/parity/gen_cases.py computes live with torch (ctest fixture parity_cases,
// folder RNNSERVE_PARITY_DIR): unidirectional and bidirectional, batch_first, unbatched, with
// and without h_0. Forward and chunked Stream sessions, in both tensor encodings, must match
// torch within 1e-5; a duplicate chunk_index replays the last chunk's output.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "client/rnnserve_client.h"
#include "core/engine/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/server.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

constexpr double kTolerance = 1e-5;

// Named cases of gen_cases.py, chosen for their layouts; two random ones are added (below).
const char* const kNamedCases[] = {
    "seed_b",                     // 2 layers, h_0 = ones
    "seed_c",                     // bidirectional, h_0
    "edge_n1",                    // batch_first, N = 1
    "edge_unbatched_t1",          // unbatched, bidirectional, T = 1
    "edge_bidir_batch_first_h0",  // bidirectional, batch_first, relu, no bias
    "edge_deep_relu_no_bias",     // 4 layers, relu
};

struct TorchCase {
  std::string name;
  bool batch_first = false;
  bool bidirectional = false;
  bool batched = true;
  Tensor input, output, h_n;
  std::optional<Tensor> h0;

  int64_t time_axis() const { return batched && batch_first ? 1 : 0; }
  int64_t steps() const { return input.shape[time_axis()]; }
  const Tensor* h0_or_null() const { return h0 ? &*h0 : nullptr; }
};

#define EXPECT_TORCH(what, actual, expected)                                            \
  EXPECT_LE(MaxAbsDiff((actual), (expected)), kTolerance)                               \
      << what << ": client shape " << ShapeToString((actual).shape) << ", torch shape " \
      << ShapeToString((expected).shape)

class ClientTorchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("RNNSERVE_PARITY_DIR");
    if (dir == nullptr || *dir == '\0') {
      setup_error_ = "RNNSERVE_PARITY_DIR is not set: run through ctest (fixture parity_cases)";
      return;
    }
    absl::StatusOr<std::string> text = ReadFile(absl::StrCat(dir, "/manifest.json"));
    if (!text.ok()) {
      setup_error_ = absl::StrCat(text.status().ToString(),
                                  ": run /usr/bin/python3 tests/parity/gen_cases.py --out ", dir);
      return;
    }
    const nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, false);
    if (manifest.is_discarded() || !manifest.contains("cases")) {
      setup_error_ = absl::StrCat(dir, "/manifest.json is not a parity manifest");
      return;
    }
    std::vector<const nlohmann::json*> chosen;
    for (const char* name : kNamedCases) {
      for (const auto& c : manifest["cases"]) {
        if (c["name"] == name) chosen.push_back(&c);
      }
    }
    // Unbatched unidirectional, and batch_first unidirectional without h_0, from the random
    // cases (gen_cases.py deals every such combination several times).
    auto first_random = [&](auto&& want) {
      for (const auto& c : manifest["cases"]) {
        if (c["kind"] == "random" && !c["config"]["bidirectional"].get<bool>() && want(c)) {
          chosen.push_back(&c);
          return;
        }
      }
    };
    first_random([](const nlohmann::json& c) { return !c["batched"].get<bool>(); });
    first_random([](const nlohmann::json& c) {
      return c["batched"].get<bool>() && c["config"]["batch_first"].get<bool>() &&
             !c["has_h0"].get<bool>();
    });
    if (chosen.size() != std::size(kNamedCases) + 2) {
      setup_error_ = absl::StrCat("only ", chosen.size(), " of the wanted cases are in ", dir);
      return;
    }

    // A model repository of links to the cases' exported models, one per case name.
    repository_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                            absl::StrCat("client_torch_test_", getpid()));
    std::filesystem::create_directories(*repository_);
    cases_ = new std::vector<TorchCase>;
    for (const nlohmann::json* c : chosen) {
      TorchCase t;
      t.name = (*c)["name"];
      t.batch_first = (*c)["config"]["batch_first"];
      t.bidirectional = (*c)["config"]["bidirectional"];
      t.batched = (*c)["batched"];
      std::filesystem::create_directory_symlink(
          absl::StrCat(dir, "/", (*c)["model_dir"].get<std::string>()), *repository_ / t.name);
      absl::StatusOr<std::string> bytes =
          ReadFile(absl::StrCat(dir, "/", (*c)["case_file"].get<std::string>()));
      absl::StatusOr<ParameterMap> tensors =
          bytes.ok() ? ParseSafetensors(*bytes) : absl::StatusOr<ParameterMap>(bytes.status());
      if (!tensors.ok()) {
        setup_error_ = tensors.status().ToString();
        return;
      }
      t.input = tensors->at("input");
      t.output = tensors->at("output");
      t.h_n = tensors->at("h_n");
      if ((*c)["has_h0"].get<bool>()) t.h0 = tensors->at("h0");
      cases_->push_back(std::move(t));
    }

    ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.metrics_port = -1;
    options.model_repository = repository_->string();
    options.serving.threads = 2;
    absl::StatusOr<std::unique_ptr<RnnServer>> server = RnnServer::Start(options);
    if (!server.ok()) {
      setup_error_ = server.status().ToString();
      return;
    }
    server_ = server->release();
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->DrainAndShutdown();
    delete server_;
    server_ = nullptr;
    if (repository_ != nullptr) std::filesystem::remove_all(*repository_);
    delete repository_;
    delete cases_;
  }

  void SetUp() override { ASSERT_EQ(server_ != nullptr, true) << setup_error_; }

  static std::unique_ptr<client::RnnServeClient> Client(TensorEncoding encoding) {
    client::ClientOptions options;
    options.encoding = encoding;
    return client::RnnServeClient::Connect(absl::StrCat("127.0.0.1:", server_->port()), options)
        .value();
  }

  static inline std::string setup_error_;
  static inline RnnServer* server_ = nullptr;
  static inline std::filesystem::path* repository_ = nullptr;
  static inline std::vector<TorchCase>* cases_ = nullptr;
};

const char* EncodingName(TensorEncoding e) { return e == TensorEncoding::kRaw ? "raw" : "values"; }

TEST_F(ClientTorchTest, ForwardMatchesTorch) {
  for (TensorEncoding encoding : {TensorEncoding::kRaw, TensorEncoding::kValues}) {
    auto client = Client(encoding);
    for (const TorchCase& c : *cases_) {
      SCOPED_TRACE(absl::StrCat(c.name, ", ", EncodingName(encoding)));
      absl::StatusOr<client::ForwardResult> r = client->Forward(c.name, c.input, c.h0_or_null());
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_TORCH("output", r->output, c.output);
      EXPECT_TORCH("h_n", r->h_n, c.h_n);
    }
  }
}

// A session streamed in chunks of `chunk_steps` (the last one with `end`): unidirectional
// models answer each chunk with its part of torch's output; bidirectional ones buffer and
// answer at `end` with all of it. The final h_n is torch's.
TEST_F(ClientTorchTest, ChunkedStreamMatchesTorch) {
  for (TensorEncoding encoding : {TensorEncoding::kRaw, TensorEncoding::kValues}) {
    auto client = Client(encoding);
    absl::StatusOr<std::unique_ptr<client::StreamChannel>> stream = client->OpenStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    for (const TorchCase& c : *cases_) {
      // Raw: about three chunks; values: chunks of 2 steps, so both splits are covered.
      const int64_t chunk_steps =
          encoding == TensorEncoding::kRaw ? std::max<int64_t>(1, (c.steps() + 2) / 3) : 2;
      SCOPED_TRACE(absl::StrCat(c.name, ", ", EncodingName(encoding), ", chunks of ", chunk_steps,
                                " of ", c.steps(), " steps"));
      std::string session_id;
      std::vector<Tensor> outputs;
      client::ChunkResult last;
      for (int64_t at = 0; at < c.steps(); at += chunk_steps) {
        const int64_t len = std::min(chunk_steps, c.steps() - at);
        const bool end = at + len == c.steps();
        const Tensor chunk = Slice(c.input, c.time_axis(), at, len).value();
        absl::StatusOr<client::ChunkResult> r =
            session_id.empty() ? (*stream)->Start(c.name, "", c.h0_or_null(), &chunk, end)
                               : (*stream)->SendChunk(session_id, chunk, end);
        ASSERT_TRUE(r.ok()) << "step " << at << ": " << r.status();
        session_id = r->session_id;
        EXPECT_EQ(r->steps_seen, at + len);
        EXPECT_EQ(r->ended, end);
        ASSERT_TRUE(r->h_n.has_value());
        if (c.bidirectional) {
          if (!end) {
            EXPECT_TRUE(r->output.shape.empty()) << "a bidirectional answer before end";
          }
        } else {
          EXPECT_TORCH("chunk output", r->output, Slice(c.output, c.time_axis(), at, len).value());
        }
        if (r->output.num_elements() > 0) outputs.push_back(r->output);
        last = *std::move(r);
      }
      ASSERT_FALSE(outputs.empty());
      EXPECT_TORCH("output", Concat(outputs, c.time_axis()).value(), c.output);
      EXPECT_TORCH("final h_n", *last.h_n, c.h_n);
    }
    EXPECT_TRUE((*stream)->Finish().ok());
  }
}

// The contract in client/rnnserve_client.h: a resent chunk_index is not applied again; the last
// applied chunk's resend replays its output, an older one gets none; h_n is the current state.
TEST_F(ClientTorchTest, DuplicateChunkIndexReplaysTheLastChunksOutput) {
  const TorchCase* c = nullptr;
  for (const TorchCase& t : *cases_) {
    if (t.name == "seed_b") c = &t;
  }
  ASSERT_NE(c, nullptr);
  ASSERT_GE(c->steps(), 4);
  auto client = Client(TensorEncoding::kRaw);
  std::unique_ptr<client::StreamChannel> stream = client->OpenStream().value();
  const int64_t half = c->steps() / 2;
  const Tensor first = Slice(c->input, c->time_axis(), 0, half).value();
  const Tensor second = Slice(c->input, c->time_axis(), half, c->steps() - half).value();
  auto chunk_request = [&](const Tensor& chunk, uint64_t index) {
    v1::StreamRequest request;
    EncodeTensor(chunk, TensorEncoding::kRaw, request.mutable_input());
    request.set_chunk_index(index);
    return request;
  };

  v1::StreamRequest start = chunk_request(first, 0);
  start.set_model(c->name);
  start.set_start(true);
  EncodeTensor(*c->h0, TensorEncoding::kRaw, start.mutable_h_0());
  client::ChunkResult a = stream->Call(start).value();
  v1::StreamRequest next = chunk_request(second, 1);
  next.set_session_id(a.session_id);
  client::ChunkResult b = stream->Call(next).value();
  EXPECT_FALSE(b.duplicate);
  EXPECT_TORCH("second chunk", b.output,
               Slice(c->output, c->time_axis(), half, c->steps() - half).value());

  client::ChunkResult replay = stream->Call(next).value();
  EXPECT_TRUE(replay.duplicate);
  EXPECT_EQ(replay.chunk_index, std::optional<uint64_t>(1));
  EXPECT_EQ(replay.steps_seen, c->steps()) << "a duplicate must not be applied again";
  EXPECT_TORCH("replayed output", replay.output, b.output);
  EXPECT_TORCH("h_n after the replay", *replay.h_n, c->h_n);

  v1::StreamRequest older = chunk_request(first, 0);
  older.set_session_id(a.session_id);
  client::ChunkResult old = stream->Call(older).value();
  EXPECT_TRUE(old.duplicate);
  EXPECT_TRUE(old.output.shape.empty()) << "an older duplicate has no output to replay";
  EXPECT_EQ(old.steps_seen, c->steps());
  EXPECT_TORCH("h_n after the older duplicate", *old.h_n, c->h_n);
  EXPECT_TRUE(stream->End(a.session_id).ok());
}

}  // namespace
}  // namespace rnnserve
