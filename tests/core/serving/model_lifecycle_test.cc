// Model versions and reload (issue 14): a resilient repository (stray folders skipped, a bad
// model reported while the others serve), sessions pinned to the version they started on
// across a rollover and an unload (the old version freed when its last session ends), and a
// folder rewritten non-atomically while Reload() runs in a loop never serving a torn model.
// The engine (RnnModel::Forward on each weight set) is the reference; the parity suite checks
// the engine against torch.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "base/file_io.h"
#include "core/engine/model_dir.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

RnnConfig Config() {
  RnnConfig config;
  config.input_size = 3;
  config.hidden_size = 4;
  config.num_layers = 2;
  return config;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string ReadText(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? *text : std::string();
}

class ModelLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(repo_.ok()); }

  std::string Path(const std::string& rel) const { return repo_.File(rel); }
  void Save(const std::string& rel, uint64_t seed) {
    ASSERT_TRUE(SaveModelDir(Path(rel), Config(), RandomParameters(Config(), seed)).ok());
  }
  static std::unique_ptr<RnnModel> Reference(uint64_t seed) {
    return std::move(RnnModel::Create(Config(), RandomParameters(Config(), seed))).value();
  }
  static std::vector<float> WholeOutput(const RnnModel& model, const Tensor& x) {
    absl::StatusOr<ForwardResult> result = model.Forward(x);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->output.values : std::vector<float>();
  }

  void MakeCore(ModelLoadOptions load = {}) {
    absl::StatusOr<std::unique_ptr<ModelRegistry>> registry =
        ModelRegistry::LoadRepository(repo_.path(), load);
    ASSERT_TRUE(registry.ok()) << registry.status();
    ServingOptions options;
    options.threads = 2;
    core_ = std::make_unique<ServingCore>(*std::move(registry), options, nullptr);
  }

  ChunkResult Submit(ChunkRequest request) {
    std::promise<ChunkResult> promise;
    auto future = promise.get_future();
    core_->SubmitChunk(std::move(request), [&](ChunkResult r) { promise.set_value(std::move(r)); });
    return future.get();
  }
  ChunkResult Start(int64_t version, const Tensor& input) {
    ChunkRequest r;
    r.model = "m";
    r.model_version = version;
    r.start = true;
    r.input = TensorBytes::FromTensor(input);
    return Submit(std::move(r));
  }
  ChunkResult Send(const std::string& id, const Tensor& input) {
    ChunkRequest r;
    r.session_id = id;
    r.input = TensorBytes::FromTensor(input);
    return Submit(std::move(r));
  }

  TempDir repo_;
  std::unique_ptr<ServingCore> core_;
};

TEST_F(ModelLifecycleTest, StrayFoldersAreSkippedAndABadModelIsReported) {
  std::filesystem::create_directories(Path("lost+found"));
  Save(".ipynb_checkpoints", 1);  // a model, but hidden: never served
  std::filesystem::create_directories(Path("empty"));
  Save("corrupt", 2);
  const std::string weights = ReadText(Path("corrupt/model.safetensors"));
  WriteText(Path("corrupt/model.safetensors"), weights.substr(0, weights.size() / 2));
  Save("a", 3);
  Save("b/3", 4);  // versioned
  Save("b/1", 5);  // older: not served under the default policy (latest 1)

  ModelLoadOptions strict;
  strict.strict = true;
  absl::StatusOr<std::unique_ptr<ModelRegistry>> failed =
      ModelRegistry::LoadRepository(repo_.path(), strict);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("corrupt"));

  absl::StatusOr<std::unique_ptr<ModelRegistry>> loaded =
      ModelRegistry::LoadRepository(repo_.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ModelRegistry& registry = **loaded;
  ASSERT_NE(registry.Find("a"), nullptr);
  EXPECT_EQ(registry.Find("a")->version, 1);
  ASSERT_NE(registry.Find("b"), nullptr);
  EXPECT_EQ(registry.Find("b")->version, 3);
  EXPECT_EQ(registry.Find("b", 1), nullptr);
  EXPECT_EQ(registry.Find("corrupt"), nullptr);
  EXPECT_EQ(registry.Find(".ipynb_checkpoints"), nullptr);
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"a", "b", "corrupt"}));
  bool corrupt_reported = false;
  for (const ModelVersionStatus& row : registry.Index()) {
    if (row.name == "corrupt") {
      EXPECT_EQ(row.state, ModelState::kFailed);
      EXPECT_THAT(row.reason, HasSubstr("model.safetensors"));
      corrupt_reported = true;
    } else {
      EXPECT_EQ(row.state, ModelState::kReady) << row.name << " " << row.reason;
    }
  }
  EXPECT_TRUE(corrupt_reported);
  absl::StatusOr<std::shared_ptr<const ServedModel>> corrupt = registry.Lookup("corrupt");
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(corrupt.status().message(), HasSubstr("FAILED"));

  // Fixing the model and reloading serves it; the failure hook counted the failure once.
  int failures = 0;
  registry.SetLoadFailureHook([&](const std::string& model) {
    EXPECT_EQ(model, "corrupt");
    ++failures;
  });
  ASSERT_TRUE(registry.Reload().ok());
  EXPECT_EQ(failures, 0);  // unchanged files are not read again
  WriteText(Path("corrupt/model.safetensors"), weights.substr(0, 10));
  ASSERT_TRUE(registry.Reload().ok());
  EXPECT_EQ(failures, 1);
  WriteText(Path("corrupt/model.safetensors"), weights);
  ASSERT_TRUE(registry.Reload().ok());
  EXPECT_NE(registry.Find("corrupt"), nullptr);
}

TEST_F(ModelLifecycleTest, SessionsStayOnTheirVersionAcrossRolloverAndUnload) {
  Save("m/1", 11);
  MakeCore();
  const std::unique_ptr<RnnModel> v1 = Reference(11), v2 = Reference(22);
  const Tensor x = Random({6, 2, 3}, 7);
  const std::vector<float> v1_out = WholeOutput(*v1, x), v2_out = WholeOutput(*v2, x);
  ASSERT_GT(MaxAbsDiff(v1_out, v2_out), 1e-3);

  ChunkResult old_session = Start(0, LeadingRows(x, 0, 2));
  ASSERT_TRUE(old_session.status.ok()) << old_session.status;
  EXPECT_EQ(old_session.model_version, 1);
  std::vector<float> old_out(old_session.output->values().begin(), old_session.output->values().end());
  std::weak_ptr<const ServedModel> v1_alive = core_->models().Find("m", 1);
  // A rescan of files just written reads them again (their times may not show a rewrite yet);
  // the same bytes keep the object the session holds.
  ASSERT_TRUE(core_->mutable_models().Reload().ok());
  EXPECT_EQ(core_->models().Find("m", 1), v1_alive.lock());

  // v2 arrives and becomes the latest; the default policy (latest 1) unloads v1.
  Save("m/2", 22);
  ASSERT_TRUE(core_->mutable_models().Reload().ok());
  EXPECT_EQ(core_->models().Find("m")->version, 2);
  ChunkResult fresh = Start(0, x);
  ASSERT_TRUE(fresh.status.ok()) << fresh.status;
  EXPECT_EQ(fresh.model_version, 2);
  EXPECT_LT(MaxAbsDiff(fresh.output->values(), v2_out), 1e-6);

  // v1 refuses new sessions, naming the version and what is served.
  ChunkResult refused = Start(1, x);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status.message(), HasSubstr("version 1 of model 'm' is UNAVAILABLE"));
  EXPECT_THAT(refused.status.message(), HasSubstr("READY versions: 2"));
  std::promise<absl::Status> forward_done;
  core_->Forward("m", 1, x, std::nullopt, std::nullopt,
                 [&](absl::StatusOr<ForwardResult> r) { forward_done.set_value(r.status()); });
  EXPECT_EQ(forward_done.get_future().get().code(), absl::StatusCode::kFailedPrecondition);

  // The old session continues on v1 with v1's exact outputs.
  for (auto [b, e] : {std::pair{2, 3}, {3, 6}}) {
    ChunkResult next = Send(old_session.session_id, LeadingRows(x, b, e));
    ASSERT_TRUE(next.status.ok()) << next.status;
    EXPECT_EQ(next.model_version, 1);
    old_out.insert(old_out.end(), next.output->values().begin(), next.output->values().end());
  }
  EXPECT_LT(MaxAbsDiff(old_out, v1_out), 1e-6);
  absl::StatusOr<SessionSnapshot> snapshot = core_->GetSession(old_session.session_id, false);
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->model_version, 1);
  bool listed = false;
  for (const ModelVersionStatus& row : core_->models().Index()) {
    if (row.version != 1) continue;
    listed = true;
    EXPECT_EQ(row.state, ModelState::kUnavailable);
    EXPECT_EQ(row.live_sessions, 1);
  }
  EXPECT_TRUE(listed);

  // v1 is freed when its last session ends.
  EXPECT_FALSE(v1_alive.expired());
  ASSERT_TRUE(core_->CloseSession(old_session.session_id).ok());
  // The worker lets go of the last chunk's task (and its session) after answering it.
  ASSERT_TRUE(core_->WaitIdle(absl::InfiniteFuture()));
  EXPECT_TRUE(v1_alive.expired());
}

TEST_F(ModelLifecycleTest, UnloadModelAndLoadModel) {
  Save("m/1", 11);
  Save("m/2", 22);
  WriteText(Path("m/serving.json"), R"({"version_policy": {"all": true}})");
  MakeCore();
  ModelRegistry& registry = core_->mutable_models();
  EXPECT_EQ(registry.ReadyVersions("m"), (std::vector<int64_t>{1, 2}));
  const Tensor x = Random({2, 1, 3}, 3);
  ChunkResult pinned = Start(1, x);
  ASSERT_TRUE(pinned.status.ok()) << pinned.status;
  ASSERT_TRUE(registry.UnloadModel("m", 1).ok());
  EXPECT_EQ(Start(1, x).status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Start(0, x).model_version, 2);
  ASSERT_TRUE(registry.Reload().ok());  // the unload sticks across rescans
  EXPECT_EQ(registry.ReadyVersions("m"), (std::vector<int64_t>{2}));
  EXPECT_TRUE(Send(pinned.session_id, x).status.ok());
  EXPECT_EQ(registry.UnloadModel("m", 7).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.UnloadModel("nope", 0).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(registry.LoadModel("m").ok());
  EXPECT_EQ(registry.ReadyVersions("m"), (std::vector<int64_t>{1, 2}));
  // The revived v1 is the very one the pinned session runs.
  EXPECT_EQ(Start(1, x).model_version, 1);
  EXPECT_EQ(registry.LoadModel("../etc").code(), absl::StatusCode::kNotFound);
}

// A new version that fails to load never takes down the one serving: under "latest 1" the
// old version keeps serving (its reason says why) until the new one is repaired; under a
// specific policy that names only the broken version, the model keeps its highest READY one.
TEST_F(ModelLifecycleTest, ABrokenNewVersionLeavesTheOldOneServing) {
  Save("m/1", 11);
  MakeCore();
  ModelRegistry& registry = core_->mutable_models();
  const Tensor x = Random({2, 1, 3}, 3);
  Save("m/2", 22);
  const std::string weights = Path("m/2/model.safetensors");
  const std::string good = ReadText(weights);
  WriteText(weights, good.substr(0, good.size() / 2));
  ASSERT_TRUE(registry.Reload().ok());
  EXPECT_EQ(registry.ReadyVersions("m"), (std::vector<int64_t>{1}));
  ChunkResult started = Start(0, x);
  ASSERT_TRUE(started.status.ok()) << started.status;
  EXPECT_EQ(started.model_version, 1);
  EXPECT_LT(MaxAbsDiff(started.output->values(), WholeOutput(*Reference(11), x)), 1e-6);
  bool failed = false, kept = false;
  for (const ModelVersionStatus& row : registry.Index()) {
    if (row.version == 2) failed = row.state == ModelState::kFailed;
    if (row.version == 1) {
      kept = row.state == ModelState::kReady &&
             absl::StrContains(row.reason, "newer version the policy wants failed to load");
    }
  }
  EXPECT_TRUE(failed);
  EXPECT_TRUE(kept);

  WriteText(weights, good);  // repaired: it takes over, v1's session finishes on v1
  ASSERT_TRUE(registry.Reload().ok());
  EXPECT_EQ(registry.ReadyVersions("m"), (std::vector<int64_t>{2}));
  EXPECT_EQ(Start(0, x).model_version, 2);
  EXPECT_TRUE(Send(started.session_id, x).status.ok());

  WriteText(Path("m/serving.json"), R"({"version_policy": {"specific": [3]}})");
  Save("m/3", 33);
  WriteText(Path("m/3/config.json"), "{not json");
  ASSERT_TRUE(registry.Reload().ok());
  EXPECT_EQ(registry.ReadyVersions("m"), (std::vector<int64_t>{2}));
}

// A serving.json rewritten badly while the server runs: the model keeps serving as it was
// (its settings too), the index reports the model-level failure; fixed, it is read again.
TEST_F(ModelLifecycleTest, ABadServingJsonRewriteLeavesTheModelServing) {
  Save("m/1", 11);
  WriteText(Path("m/serving.json"), R"({"max_batch": 4})");
  MakeCore();
  ModelRegistry& registry = core_->mutable_models();
  ASSERT_NE(registry.Find("m"), nullptr);
  WriteText(Path("m/serving.json"), R"({"max_batch": "lots"})");
  ASSERT_TRUE(registry.Reload().ok());
  std::shared_ptr<const ServedModel> served = registry.Find("m");
  ASSERT_NE(served, nullptr);
  EXPECT_EQ(served->settings.max_batch, 4);
  bool reported = false;
  for (const ModelVersionStatus& row : registry.Index()) {
    if (row.version == 0) {
      reported = row.state == ModelState::kFailed && absl::StrContains(row.reason, "max_batch");
    }
  }
  EXPECT_TRUE(reported);
  EXPECT_TRUE(Start(0, Random({2, 1, 3}, 3)).status.ok());
  WriteText(Path("m/serving.json"), R"({"max_batch": 8})");
  ASSERT_TRUE(registry.Reload().ok());
  ASSERT_NE(registry.Find("m"), nullptr);
  EXPECT_EQ(registry.Find("m")->settings.max_batch, 8);
}

// One thread rewrites m/1 non-atomically, file by file, alternating two weight sets of one
// config (and now and then a truncated weights file); another reloads in a tight loop while
// Forward calls and streamed sessions run. Every answer must be exactly one weight set's.
TEST_F(ModelLifecycleTest, RewrittenFolderNeverServesATornModel) {
  constexpr int kRewrites = 150;
  Save("m/1", 101);
  std::string config_bytes = ReadText(Path("m/1/config.json"));
  std::string weights[2];
  {
    TempDir other;
    ASSERT_TRUE(SaveModelDir(other.File("a"), Config(), RandomParameters(Config(), 101)).ok());
    ASSERT_TRUE(SaveModelDir(other.File("b"), Config(), RandomParameters(Config(), 202)).ok());
    weights[0] = ReadText(other.File("a/model.safetensors"));
    weights[1] = ReadText(other.File("b/model.safetensors"));
  }
  ASSERT_EQ(weights[0].size(), weights[1].size());
  MakeCore();
  const Tensor x = Random({4, 2, 3}, 5);
  const std::vector<float> refs[2] = {WholeOutput(*Reference(101), x),
                                      WholeOutput(*Reference(202), x)};
  auto matches_one = [&](const std::vector<float>& out) {
    return MaxAbsDiff(out, refs[0]) < 1e-6 || MaxAbsDiff(out, refs[1]) < 1e-6;
  };

  std::atomic<bool> done{false};
  std::atomic<int> reloads{0}, checked{0}, torn{0};
  std::thread writer([&] {
    for (int i = 0; i < kRewrites; ++i) {
      const std::string& w = weights[i % 2];
      WriteText(Path("m/1/config.json"), config_bytes);
      std::ofstream out(Path("m/1/model.safetensors"), std::ios::binary | std::ios::trunc);
      const size_t half = (i % 7 == 3) ? w.size() / 3 : w.size() / 2;
      out.write(w.data(), static_cast<std::streamsize>(half));
      out.flush();
      // Now and then the file is left truncated for a while.
      if (i % 7 != 3) out.write(w.data() + half, static_cast<std::streamsize>(w.size() - half));
    }
    WriteText(Path("m/1/model.safetensors"), weights[1]);
    done = true;
  });
  std::thread reloader([&] {
    while (!done) {
      EXPECT_TRUE(core_->mutable_models().Reload().ok());
      ++reloads;
    }
  });
  std::thread streamer([&] {
    while (!done) {
      ChunkResult first = Start(0, LeadingRows(x, 0, 2));
      if (!first.status.ok()) {
        ADD_FAILURE() << first.status;
        return;
      }
      ChunkResult second = Send(first.session_id, LeadingRows(x, 2, 4));
      ASSERT_TRUE(second.status.ok()) << second.status;
      std::vector<float> out(first.output->values().begin(), first.output->values().end());
      out.insert(out.end(), second.output->values().begin(), second.output->values().end());
      if (!matches_one(out)) ++torn;
      EXPECT_TRUE(core_->CloseSession(first.session_id).ok());
      ++checked;
    }
  });
  while (!done) {
    std::promise<absl::StatusOr<ForwardResult>> promise;
    core_->Forward("m", x, std::nullopt,
                   [&](absl::StatusOr<ForwardResult> r) { promise.set_value(std::move(r)); });
    absl::StatusOr<ForwardResult> result = promise.get_future().get();
    ASSERT_TRUE(result.ok()) << result.status();
    if (!matches_one(result->output.values)) ++torn;
    ++checked;
  }
  writer.join();
  reloader.join();
  streamer.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_GT(checked.load(), 0);
  EXPECT_GT(reloads.load(), 0);
  // Once the writes stop, a rescan serves the last weight set.
  ASSERT_TRUE(core_->mutable_models().Reload().ok());
  std::shared_ptr<const ServedModel> last = core_->models().Find("m");
  ASSERT_NE(last, nullptr);
  EXPECT_LT(MaxAbsDiff(WholeOutput(*last->model, x), refs[1]), 1e-6);
}

}  // namespace
}  // namespace rnnserve
