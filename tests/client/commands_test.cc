// The CLI's commands (RunCli, as main runs them) against an in-process RnnServer serving the
// demo model on a free loopback port: output formats, saved .npy files, exit statuses and
// error messages. The numbers against torch are tests/client/client_torch_test.cc's and
// test_cli_torch.py's job; here the CLI's numbers are checked against the C++ client's.
#include "client/cli/commands.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/proto_json.h"
#include "client/npy.h"
#include "client/rnnserve_client.h"
#include "core/engine/model_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct CliRun {
  int exit_status = -1;
  std::string out, err;
  // out as JSON lines.
  std::vector<Json> JsonLines() const {
    std::vector<Json> lines;
    for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
      lines.push_back(Json::parse(line));
    }
    return lines;
  }
};

// Expects a failed command (exit 1) reporting `code` with `text` in its message.
void ExpectFailure(const CliRun& run, const std::string& code, const std::string& text) {
  EXPECT_EQ(run.exit_status, kExitFailed) << run.out;
  EXPECT_THAT(run.err, StartsWith(absl::StrCat("rnnserve-client: ", code, ": ")));
  EXPECT_THAT(run.err, HasSubstr(text));
}

// A server on a free loopback port serving `model_repository` (empty: the demo model), or
// null after a failed assertion.
RnnServer* StartServer(const std::string& model_repository) {
  ServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.metrics_port = -1;
  options.serving.threads = 2;
  options.model_repository = model_repository;
  auto server = RnnServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(server).value().release() : nullptr;
}

void StopServer(RnnServer*& server) {
  if (server != nullptr) server->DrainAndShutdown();
  delete server;
  server = nullptr;
}

class CommandsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = StartServer(""); }
  static void TearDownTestSuite() { StopServer(server_); }

  void SetUp() override { UseServer(server_); }

  // Points the CLI at `server` and makes this test's scratch folder.
  void UseServer(RnnServer* server) {
    ASSERT_NE(server, nullptr);
    options_.server = absl::StrCat("127.0.0.1:", server->port());
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("commands_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CliRun Run(const std::vector<std::string>& args) {
    std::ostringstream out, err;
    CliRun run;
    run.exit_status = RunCli(args, options_, out, err);
    run.out = out.str();
    run.err = err.str();
    return run;
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  static RnnServer* server_;
  CliOptions options_;
  std::filesystem::path dir_;
};

RnnServer* CommandsTest::server_ = nullptr;

TEST_F(CommandsTest, ModelsTextAndJson) {
  CliRun run = Run({"models"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, StartsWith("demo "));
  EXPECT_THAT(run.out, HasSubstr("RNN(100, 10, num_layers=2)"));
  EXPECT_THAT(run.out, HasSubstr("input features (T, N, C) [-1, -1, 100]"));

  options_.json = true;
  run = Run({"models"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const std::vector<Json> lines = run.JsonLines();
  ASSERT_EQ(lines.size(), 1u);
  const Json& model = lines[0]["models"][0];
  EXPECT_EQ(model["name"], "demo");
  EXPECT_EQ(model["config"]["input_size"], 100);
  EXPECT_EQ(model["input_shape"], Json::parse("[-1, -1, 100]"));
  EXPECT_EQ(model["parameter_count"], 1340);
}

TEST_F(CommandsTest, InfoTextAndJson) {
  CliRun run = Run({"info", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("model       demo\n"));
  EXPECT_THAT(run.out, HasSubstr("state       (L*D, N, H) [2, -1, 10]\n"));
  EXPECT_THAT(run.out, HasSubstr("streaming   output per chunk\n"));
  EXPECT_THAT(run.out, HasSubstr("  weight_ih_l0             (10, 100)\n"));

  options_.json = true;
  run = Run({"info", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const Json info = run.JsonLines().at(0);
  EXPECT_EQ(info["config"]["nonlinearity"], "tanh");
  EXPECT_EQ(info["parameters"][0]["name"], "weight_ih_l0");
  EXPECT_EQ(info["parameters"][0]["shape"], Json::parse("[10, 100]"));

  ExpectFailure(Run({"info", "nope"}), "NOT_FOUND", "nope");
}

TEST_F(CommandsTest, ForwardSavesAndPrintsWhatTheClientComputes) {
  const Tensor x = Random({4, 2, 100}, 1);
  const Tensor h0 = Random({2, 2, 10}, 2);
  ASSERT_TRUE(WriteNpy(Path("x.npy"), x).ok());
  ASSERT_TRUE(WriteNpy(Path("h0.npy"), h0).ok());
  client::RnnServeClient client(
      grpc::CreateChannel(options_.server, grpc::InsecureChannelCredentials()));
  const client::ForwardResult want = client.Forward("demo", x, &h0).value();

  for (bool raw : {true, false}) {
    options_.raw = raw;
    options_.json = true;
    options_.input = Path("x.npy");
    options_.h0 = Path("h0.npy");
    options_.save_output = Path("y.npy");
    options_.save_h_n = Path("h_n.npy");
    CliRun run = Run({"forward", "demo"});
    ASSERT_EQ(run.exit_status, kExitOk) << run.err;
    const Json j = run.JsonLines().at(0);
    EXPECT_EQ(j["output"], TensorJson(want.output));
    EXPECT_EQ(j["h_n"], TensorJson(want.h_n));
    EXPECT_EQ(MaxAbsDiff(ReadNpy(Path("y.npy")).value(), want.output), 0) << raw;
    EXPECT_EQ(MaxAbsDiff(ReadNpy(Path("h_n.npy")).value(), want.h_n), 0) << raw;
  }

  options_.json = false;
  CliRun run = Run({"forward", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, StartsWith("output (4, 2, 10):\n[[["));
  EXPECT_THAT(run.out, HasSubstr("\nh_n (2, 2, 10):\n[[["));
}

TEST_F(CommandsTest, ForwardRandomInputAndItsErrors) {
  options_.shape = "3,100";
  options_.json = true;
  CliRun run = Run({"forward", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_EQ(run.JsonLines().at(0)["output"]["shape"], Json::parse("[3, 10]"));

  options_.shape = "";
  run = Run({"forward", "demo"});
  EXPECT_EQ(run.exit_status, kExitFailed);
  EXPECT_EQ(run.err,
            "rnnserve-client: INVALID_ARGUMENT: forward needs --input FILE.npy or --shape T,N,C\n");
  options_.shape = "5,x";
  ExpectFailure(Run({"forward", "demo"}), "INVALID_ARGUMENT", "is not a list of sizes");
  // The server's refusal comes back with its code.
  options_.shape = "3,2,7";
  ExpectFailure(Run({"forward", "demo"}), "INVALID_ARGUMENT", "Expected 100, got 7");
  options_.shape = "";
  options_.input = Path("missing.npy");
  ExpectFailure(Run({"forward", "demo"}), "NOT_FOUND", "missing.npy");
}

TEST_F(CommandsTest, StreamChunksEqualForwardAndSessionsContinue) {
  const Tensor x = Random({7, 2, 100}, 3);
  ASSERT_TRUE(WriteNpy(Path("x.npy"), x).ok());
  client::RnnServeClient client(
      grpc::CreateChannel(options_.server, grpc::InsecureChannelCredentials()));
  const client::ForwardResult want = client.Forward("demo", x).value();

  options_.json = true;
  options_.input = Path("x.npy");
  options_.chunk_steps = 3;
  options_.save_output = Path("y.npy");
  options_.save_h_n = Path("h_n.npy");
  CliRun run = Run({"stream", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const std::vector<Json> lines = run.JsonLines();
  ASSERT_EQ(lines.size(), 3u) << run.out;
  const std::string id = lines[0]["session_id"];
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(lines[i]["chunk"], i);
    EXPECT_EQ(lines[i]["session_id"], id);
    EXPECT_EQ(lines[i]["first_step"], 3 * i);
    EXPECT_EQ(lines[i]["steps"], i < 2 ? 3 : 1);
    EXPECT_EQ(lines[i]["steps_seen"], i < 2 ? 3 * (i + 1) : 7);
    EXPECT_EQ(lines[i]["ended"], false);
  }
  // Streaming in chunks computes what one stateless call does.
  EXPECT_LE(MaxAbsDiff(ReadNpy(Path("y.npy")).value(), want.output), 1e-5);
  EXPECT_LE(MaxAbsDiff(ReadNpy(Path("h_n.npy")).value(), want.h_n), 1e-5);

  // The session is still open: continue it, then look at it and close it.
  options_.input = "";
  options_.steps = 2;
  options_.batch = 2;
  options_.session_id = id;
  options_.save_output = "";
  run = Run({"stream", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_EQ(run.JsonLines().back()["steps_seen"], 9);

  options_.session_id = "";
  ASSERT_TRUE(std::filesystem::remove(Path("h_n.npy")));
  run = Run({"session", "get", id});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const Json session = run.JsonLines().at(0);
  EXPECT_EQ(session["steps_seen"], 9);
  EXPECT_EQ(session["model"], "demo");
  EXPECT_EQ(session["h_n"]["shape"], Json::parse("[2, 2, 10]"));
  EXPECT_EQ(session["h_n"], TensorJson(ReadNpy(Path("h_n.npy")).value()));
  ASSERT_TRUE(std::filesystem::remove(Path("h_n.npy")));

  options_.json = false;
  run = Run({"session", "close", id});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, StartsWith(absl::StrCat("session      ", id, " (closed)\n")));
  EXPECT_THAT(run.out, HasSubstr("steps_seen   9\n"));
  EXPECT_THAT(run.out, HasSubstr("h_n (2, 2, 10):\n"));
  // --save_h_n: the closed session's final state, as `session get` showed it.
  EXPECT_EQ(TensorJson(ReadNpy(Path("h_n.npy")).value()), session["h_n"]);

  ExpectFailure(Run({"session", "get", id}), "NOT_FOUND", id);
}

TEST_F(CommandsTest, StreamTextEndsTheSessionWithEnd) {
  options_.steps = 5;
  options_.batch = 0;
  options_.chunk_steps = 2;
  options_.end = true;
  CliRun run = Run({"stream", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, StartsWith("chunk 0  session "));
  EXPECT_THAT(run.out, HasSubstr("steps 4..4  steps_seen 5  (ended)\noutput (1, 10):\n"));
  EXPECT_THAT(run.out, HasSubstr("h_n (2, 10):\n"));
  EXPECT_THAT(run.out, HasSubstr(": 5 steps seen, closed\n"));
}

TEST_F(CommandsTest, StreamOptionErrors) {
  options_.chunk_steps = 0;
  ExpectFailure(Run({"stream", "demo"}), "INVALID_ARGUMENT", "--chunk_steps must be >= 1");

  options_.chunk_steps = 2;
  options_.h0 = Path("h0.npy");
  ASSERT_TRUE(WriteNpy(options_.h0, Random({2, 1, 10}, 1)).ok());
  options_.session_id = "some";
  ExpectFailure(Run({"stream", "demo"}), "INVALID_ARGUMENT",
                "cannot be combined with --session_id");

  options_.h0 = "";
  options_.session_id = "";
  options_.input = Path("x.npy");
  ASSERT_TRUE(WriteNpy(options_.input, Random({100}, 1)).ok());
  ExpectFailure(Run({"stream", "demo"}), "INVALID_ARGUMENT",
                "--input has shape (100,); model demo takes (T, N, C) or (T, C)");

  // A chunk the server refuses names the chunk.
  options_.input = "";
  options_.session_id = "no-such-session";
  ExpectFailure(Run({"stream", "demo"}), "NOT_FOUND", "chunk 0: ");
}

TEST_F(CommandsTest, UsageErrorsExitTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{},
                                             {"bogus"},
                                             {"info"},
                                             {"models", "x"},
                                             {"forward"},
                                             {"session", "get"},
                                             {"bench", "a", "b"}}) {
    CliRun run = Run(args);
    EXPECT_EQ(run.exit_status, kExitUsageError) << absl::StrJoin(args, " ");
    EXPECT_THAT(run.err, HasSubstr("(see --help)")) << absl::StrJoin(args, " ");
    EXPECT_TRUE(run.out.empty());
  }
  ExpectFailure(Run({"session", "frob", "x"}), "INVALID_ARGUMENT", "unknown `session frob`");
}

TEST_F(CommandsTest, BenchCountsChunksAndEndsItsSessions) {
  options_.json = true;
  options_.sessions = 3;
  options_.chunk_steps = 2;
  options_.max_chunks = 2;
  options_.duration_s = 20;  // ends sooner: every session stops after max_chunks
  CliRun run = Run({"bench", "demo"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const Json report = run.JsonLines().at(0);
  EXPECT_EQ(report["sessions"], 3);
  EXPECT_EQ(report["chunks"], 6);
  EXPECT_EQ(report["timesteps"], 12);
  EXPECT_EQ(report["errors"], 0);
  EXPECT_EQ(report["encoding"], "raw");
  EXPECT_THAT(run.err, StartsWith("bench: model demo, 3 sessions over 3 streams and 1 channel(s)"));

  options_.channels = 0;
  ExpectFailure(Run({"bench", "demo"}), "INVALID_ARGUMENT", "--channels must be >= 1");
}

// The commands with GRU and LSTM models: a second in-process server whose repository holds
// "lstm" = LSTM(4, 6, num_layers=2, proj_size=3) and "gru" = GRU(4, 5).
class CellCommandsTest : public CommandsTest {
 protected:
  static void SetUpTestSuite() {
    repository_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                            absl::StrCat("commands_test_cells_", getpid()));
    RnnConfig lstm;
    lstm.module = RnnModule::kLstm;
    lstm.input_size = 4;
    lstm.hidden_size = 6;
    lstm.num_layers = 2;
    lstm.proj_size = 3;
    RnnConfig gru;
    gru.module = RnnModule::kGru;
    gru.input_size = 4;
    gru.hidden_size = 5;
    ASSERT_TRUE(
        SaveModelDir((*repository_ / "lstm").string(), lstm, RandomParameters(lstm, 1)).ok());
    ASSERT_TRUE(
        SaveModelDir((*repository_ / "gru").string(), gru, RandomParameters(gru, 2)).ok());
    cell_server_ = StartServer(repository_->string());
  }
  static void TearDownTestSuite() {
    StopServer(cell_server_);
    std::filesystem::remove_all(*repository_);
    delete repository_;
  }
  void SetUp() override { UseServer(cell_server_); }
  client::RnnServeClient Client() const {
    return client::RnnServeClient(
        grpc::CreateChannel(options_.server, grpc::InsecureChannelCredentials()));
  }

  static RnnServer* cell_server_;
  static std::filesystem::path* repository_;
};

RnnServer* CellCommandsTest::cell_server_ = nullptr;
std::filesystem::path* CellCommandsTest::repository_ = nullptr;

TEST_F(CellCommandsTest, InfoShowsTheCellAndBothStateShapes) {
  CliRun run = Run({"info", "lstm"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("cell        LSTM (proj_size 3)\n"));
  EXPECT_THAT(run.out, HasSubstr("state       (L*D, N, H_out) [2, -1, 3]\n"));
  EXPECT_THAT(run.out, HasSubstr("cell state  (L*D, N, H) [2, -1, 6]\n"));
  EXPECT_THAT(run.out, HasSubstr("  weight_hr_l0             (3, 6)\n"));
  run = Run({"info", "gru"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("cell        GRU\n"));
  EXPECT_THAT(run.out, HasSubstr("state       (L*D, N, H) [1, -1, 5]\n"));
  EXPECT_THAT(run.out, HasSubstr("cell state  none (only an LSTM has c)\n"));

  options_.json = true;
  run = Run({"info", "lstm"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const Json info = run.JsonLines().at(0);
  EXPECT_EQ(info["config"]["module"], "LSTM");
  EXPECT_EQ(info["config"]["proj_size"], 3);
  EXPECT_EQ(info["cell_state_shape"], Json::parse("[2, -1, 6]"));
}

TEST_F(CellCommandsTest, ForwardTakesC0AndSavesCn) {
  const Tensor x = Random({5, 2, 4}, 1);
  const Tensor h0 = Random({2, 2, 3}, 2);
  const Tensor c0 = Random({2, 2, 6}, 3);
  ASSERT_TRUE(WriteNpy(Path("x.npy"), x).ok());
  ASSERT_TRUE(WriteNpy(Path("h0.npy"), h0).ok());
  ASSERT_TRUE(WriteNpy(Path("c0.npy"), c0).ok());
  const client::ForwardResult want = Client().Forward("lstm", x, &h0, &c0).value();
  ASSERT_TRUE(want.c_n.has_value());
  // c_0 matters: without it the cell state starts at zeros.
  EXPECT_GT(MaxAbsDiff(Client().Forward("lstm", x, &h0).value().h_n, want.h_n), 1e-4);

  for (bool raw : {true, false}) {
    options_.raw = raw;
    options_.json = true;
    options_.input = Path("x.npy");
    options_.h0 = Path("h0.npy");
    options_.c0 = Path("c0.npy");
    options_.save_h_n = Path("h_n.npy");
    options_.save_c_n = Path("c_n.npy");
    CliRun run = Run({"forward", "lstm"});
    ASSERT_EQ(run.exit_status, kExitOk) << run.err;
    const Json j = run.JsonLines().at(0);
    EXPECT_EQ(j["output"], TensorJson(want.output));
    EXPECT_EQ(j["h_n"], TensorJson(want.h_n));
    EXPECT_EQ(j["c_n"], TensorJson(*want.c_n));
    EXPECT_EQ(MaxAbsDiff(ReadNpy(Path("h_n.npy")).value(), want.h_n), 0) << raw;
    EXPECT_EQ(MaxAbsDiff(ReadNpy(Path("c_n.npy")).value(), *want.c_n), 0) << raw;
  }
  options_.json = false;
  CliRun run = Run({"forward", "lstm"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("\nh_n (2, 2, 3):\n"));
  EXPECT_THAT(run.out, HasSubstr("\nc_n (2, 2, 6):\n"));
}

TEST_F(CellCommandsTest, CellStateFlagsOnAModelWithoutCellState) {
  ASSERT_TRUE(WriteNpy(Path("x.npy"), Random({3, 1, 4}, 1)).ok());
  ASSERT_TRUE(WriteNpy(Path("c0.npy"), Random({1, 1, 5}, 2)).ok());
  options_.input = Path("x.npy");
  options_.json = true;
  // A GRU's JSON has no c_n key.
  CliRun run = Run({"forward", "gru"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_FALSE(run.JsonLines().at(0).contains("c_n"));
  // The server refuses --c0, naming the model; the CLI exits 1.
  options_.c0 = Path("c0.npy");
  ExpectFailure(Run({"forward", "gru"}), "INVALID_ARGUMENT", "only an LSTM takes c_0");
  ExpectFailure(Run({"stream", "gru"}), "INVALID_ARGUMENT", "only an LSTM takes c_0");
  options_.c0 = "";
  options_.save_c_n = Path("c_n.npy");
  ExpectFailure(Run({"forward", "gru"}), "INVALID_ARGUMENT",
                "--save_c_n: model gru returned no c_n (only an LSTM has a cell state)");
  ExpectFailure(Run({"stream", "gru"}), "INVALID_ARGUMENT",
                "--save_c_n: model gru has no cell state");
  EXPECT_FALSE(std::filesystem::exists(Path("c_n.npy")));
}

TEST_F(CellCommandsTest, StreamWithC0AndSessionStateSaveCn) {
  const Tensor x = Random({7, 2, 4}, 4);
  const Tensor h0 = Random({2, 2, 3}, 5);
  const Tensor c0 = Random({2, 2, 6}, 6);
  ASSERT_TRUE(WriteNpy(Path("x.npy"), x).ok());
  ASSERT_TRUE(WriteNpy(Path("h0.npy"), h0).ok());
  ASSERT_TRUE(WriteNpy(Path("c0.npy"), c0).ok());
  const client::ForwardResult want = Client().Forward("lstm", x, &h0, &c0).value();
  options_.json = true;
  options_.input = Path("x.npy");
  options_.h0 = Path("h0.npy");
  options_.c0 = Path("c0.npy");
  options_.chunk_steps = 3;
  options_.save_output = Path("y.npy");
  options_.save_c_n = Path("c_n.npy");
  CliRun run = Run({"stream", "lstm"});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const std::vector<Json> lines = run.JsonLines();
  ASSERT_EQ(lines.size(), 3u) << run.out;
  EXPECT_EQ(lines[2]["c_n"]["shape"], Json::parse("[2, 2, 6]"));
  EXPECT_LE(MaxAbsDiff(ReadNpy(Path("y.npy")).value(), want.output), 1e-5);
  EXPECT_LE(MaxAbsDiff(ReadNpy(Path("c_n.npy")).value(), *want.c_n), 1e-5);

  // The session's state, saved by `session get` and `session close`, is the stream's last.
  const std::string id = lines[0]["session_id"];
  options_ = CliOptions();
  options_.server = absl::StrCat("127.0.0.1:", cell_server_->port());
  options_.save_h_n = Path("got_h_n.npy");
  options_.save_c_n = Path("got_c_n.npy");
  run = Run({"session", "get", id});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("c_n (2, 2, 6):\n"));
  EXPECT_EQ(ReadNpy(Path("got_c_n.npy")).value().values, ReadNpy(Path("c_n.npy")).value().values);
  EXPECT_LE(MaxAbsDiff(ReadNpy(Path("got_h_n.npy")).value(), want.h_n), 1e-5);
  ASSERT_TRUE(std::filesystem::remove(Path("got_c_n.npy")));
  options_.json = true;
  run = Run({"session", "close", id});
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  EXPECT_EQ(run.JsonLines().at(0)["c_n"], TensorJson(ReadNpy(Path("c_n.npy")).value()));
  EXPECT_EQ(ReadNpy(Path("got_c_n.npy")).value().values, ReadNpy(Path("c_n.npy")).value().values);

  // --c0 is a new session's state: not with --session_id.
  options_.c0 = Path("c0.npy");
  options_.session_id = id;
  ExpectFailure(Run({"stream", "lstm"}), "INVALID_ARGUMENT",
                "--c0 starts a new session with that state; it cannot be combined with "
                "--session_id");
}

TEST_F(CommandsTest, PacedBenchKeepsToItsSchedule) {
  // 4 sessions at 20 chunks/s: the last session's slots are at 37.5, 87.5, 137.5 ms, so three
  // chunks each cannot all be answered in under 137 ms however fast the server is.
  options_.json = true;
  options_.sessions = 4;
  options_.chunk_steps = 2;
  options_.max_chunks = 3;
  options_.chunks_per_second = 20;
  options_.duration_s = 20;  // ends sooner: every session stops after max_chunks
  const auto start = std::chrono::steady_clock::now();
  CliRun run = Run({"bench", "demo"});
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(run.exit_status, kExitOk) << run.err;
  const Json report = run.JsonLines().at(0);
  EXPECT_EQ(report["chunks"], 12);
  EXPECT_EQ(report["errors"], 0);
  EXPECT_EQ(report["chunks_per_second"], 20.0);
  EXPECT_GE(took.count(), 0.1375);
  EXPECT_GE(report["elapsed_s"].get<double>(), 0.1375);
  EXPECT_GE(report["sends_late_by_a_period"].get<int64_t>(), 0);
  EXPECT_GE(report["send_lag_ms"]["max"].get<double>(), 0.0);
  EXPECT_THAT(run.err, HasSubstr("paced at 20 chunks/s per session"));

  options_.chunks_per_second = -1;
  ExpectFailure(Run({"bench", "demo"}), "INVALID_ARGUMENT", "--chunks_per_second must be in");
}

}  // namespace
}  // namespace cli
}  // namespace rnnserve
