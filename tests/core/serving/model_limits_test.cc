// Per-model serving settings (serving.json beside a model's config.json), in process: a
// repository of two models, one with tight limits, loaded by ModelRegistry::LoadRepository and
// served by ServingCore. Each limit holds for its model and never blocks the other model, whose
// sessions still start and stream exact results (compared with RnnModel::Forward over the whole
// sequence; the engine itself is checked against torch by the parity suite).
#include <future>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "core/engine/model_dir.h"
#include "core/serving/serving_core.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/serving/batch_observer.h"
#include "tests/temp_dir.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

class ModelLimitsTest : public ::testing::Test {
 protected:
  // "tight" gets `tight_serving_json`, "free" `free_serving_json` ("" for none).
  void MakeCore(const std::string& tight_serving_json, ServingOptions options = {},
                const std::string& free_serving_json = "") {
    ASSERT_TRUE(repo_.ok());
    config_.input_size = 4;
    config_.hidden_size = 5;
    config_.num_layers = 2;
    params_ = RandomParameters(config_, 7);
    for (const char* name : {"tight", "free"}) {
      ASSERT_TRUE(SaveModelDir(repo_.File(name), config_, params_).ok());
    }
    ASSERT_TRUE(WriteFile(repo_.File("tight/serving.json"), tight_serving_json).ok());
    if (!free_serving_json.empty()) {
      ASSERT_TRUE(WriteFile(repo_.File("free/serving.json"), free_serving_json).ok());
    }
    reference_ = std::move(RnnModel::Create(config_, params_)).value();
    absl::StatusOr<std::unique_ptr<ModelRegistry>> registry =
        ModelRegistry::LoadRepository(repo_.path());
    ASSERT_TRUE(registry.ok()) << registry.status();
    if (options.threads == 0) options.threads = 2;
    core_ = std::make_unique<ServingCore>(*std::move(registry), options, &observer_);
  }
  void TearDown() override { core_.reset(); }  // before the observer it reports to

  ChunkResult Submit(ChunkRequest request) {
    std::promise<ChunkResult> promise;
    auto future = promise.get_future();
    core_->SubmitChunk(std::move(request), [&](ChunkResult r) { promise.set_value(std::move(r)); });
    return future.get();
  }
  static ChunkRequest Request(const std::string& id, const std::string& model, const Tensor& x) {
    ChunkRequest r;
    r.session_id = id;
    r.model = model;
    r.start = !model.empty();
    r.input = TensorBytes::FromTensor(x);
    return r;
  }
  ChunkResult Start(const std::string& id, const std::string& model, const Tensor& x) {
    return Submit(Request(id, model, x));
  }

  // Streams x through a new session of `model` in three chunks; the outputs and h_n must equal
  // the whole sequence's.
  void ExpectStreamsExactly(const std::string& id, const std::string& model, uint64_t seed) {
    const Tensor x = Random({9, 2, 4}, seed);
    absl::StatusOr<ForwardResult> whole = reference_->Forward(x);
    ASSERT_TRUE(whole.ok());
    std::vector<float> out;
    ChunkResult last;
    for (auto [b, e] : {std::pair{0, 2}, {2, 7}, {7, 9}}) {
      last = Submit(Request(id, b == 0 ? model : "", LeadingRows(x, b, e)));
      ASSERT_TRUE(last.status.ok()) << last.status;
      out.insert(out.end(), last.output->values().begin(), last.output->values().end());
    }
    EXPECT_LT(MaxAbsDiff(out, whole->output.values), 1e-6);
    EXPECT_LT(MaxAbsDiff(last.h_n->values(), whole->h_n.values), 1e-6);
  }

  TempDir repo_;
  RnnConfig config_;
  ParameterMap params_;
  std::unique_ptr<RnnModel> reference_;
  BatchObserver observer_;
  std::unique_ptr<ServingCore> core_;
};

TEST_F(ModelLimitsTest, SettingsAreReadFromServingJson) {
  MakeCore(R"({"max_batch": 2, "max_sessions": 3, "max_queue_delay": "1ms"})");
  std::shared_ptr<const ServedModel> tight = core_->models().Find("tight");
  ASSERT_NE(tight, nullptr);
  EXPECT_EQ(tight->settings.max_batch, 2);
  EXPECT_EQ(tight->settings.max_sessions, 3);
  EXPECT_EQ(tight->settings.max_queue_delay, absl::Milliseconds(1));
  EXPECT_EQ(core_->models().Find("free")->settings, ModelServingSettings{});
}

// A bad serving.json fails its own model, naming the model and the key: reported while the
// others serve, or, with --strict_model_repository, the whole load.
TEST_F(ModelLimitsTest, BadServingJsonFailsItsModelNamingModelAndKey) {
  ASSERT_TRUE(repo_.ok());
  RnnConfig config;
  config.input_size = 1;
  config.hidden_size = 1;
  ASSERT_TRUE(SaveModelDir(repo_.File("bad"), config, RandomParameters(config, 1)).ok());
  ASSERT_TRUE(SaveModelDir(repo_.File("good"), config, RandomParameters(config, 2)).ok());
  ASSERT_TRUE(WriteFile(repo_.File("bad/serving.json"), R"({"max_sesions": 2})").ok());
  absl::StatusOr<std::unique_ptr<ModelRegistry>> registry =
      ModelRegistry::LoadRepository(repo_.path());
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_NE((*registry)->Find("good"), nullptr);
  EXPECT_EQ((*registry)->Find("bad"), nullptr);
  bool reported = false;
  for (const ModelVersionStatus& row : (*registry)->Index()) {
    if (row.name != "bad") continue;
    reported = true;
    EXPECT_EQ(row.state, ModelState::kFailed);
    EXPECT_THAT(row.reason, HasSubstr("unknown key 'max_sesions'"));
  }
  EXPECT_TRUE(reported);

  ModelLoadOptions strict;
  strict.strict = true;
  registry = ModelRegistry::LoadRepository(repo_.path(), strict);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(registry.status().message(), HasSubstr("model 'bad'"));
  EXPECT_THAT(registry.status().message(), HasSubstr("unknown key 'max_sesions'"));
}

TEST_F(ModelLimitsTest, ModelAtItsSessionCapDoesNotBlockAnotherModel) {
  MakeCore(R"({"max_sessions": 2})");
  ASSERT_TRUE(Start("t1", "tight", Random({1, 1, 4}, 1)).status.ok());
  ASSERT_TRUE(Start("t2", "tight", Random({1, 1, 4}, 2)).status.ok());
  ChunkResult refused = Start("t3", "tight", Random({1, 1, 4}, 3));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status.message(),
              HasSubstr("too many sessions of model 'tight': 2 are live, the limit is 2 "
                        "(max_sessions in its serving.json)"));
  EXPECT_FALSE(core_->GetSession("t3", false).ok()) << "a refused start left a session";
  // The other model is not capped by it: several sessions start and stream exactly.
  for (int i = 0; i < 4; ++i) ExpectStreamsExactly(absl::StrCat("f", i), "free", 10 + i);
  EXPECT_EQ(core_->session_count(), 6);
  // A closed session of the capped model makes room for one more.
  ASSERT_TRUE(core_->CloseSession("t1").ok());
  ExpectStreamsExactly("t4", "tight", 20);
}

TEST_F(ModelLimitsTest, PerModelMaxBatchHoldsWhileAnotherModelBatchesMore) {
  // One worker that holds a partial batch until it is full: the tight model's batches are
  // full at 2, the free model's (its serving.json: 16) at 16, whatever the timing.
  ServingOptions options;
  options.threads = 1;
  options.max_batch = 64;
  options.max_queue_delay = absl::Seconds(60);
  options.slice_steps = 0;
  MakeCore(R"({"max_batch": 2})", options, R"({"max_batch": 16})");
  constexpr int kTight = 6, kFree = 16, kRounds = 2;
  struct Stream {
    std::string id, model;
    Tensor x;
    std::vector<float> out;
  };
  std::vector<Stream> streams;
  for (int i = 0; i < kTight + kFree; ++i) {
    const bool tight = i < kTight;
    streams.push_back({absl::StrCat(tight ? "t" : "f", i), tight ? "tight" : "free",
                       Random({2 * kRounds, 1 + i % 3, 4}, 100 + i), {}});
  }
  for (int k = 0; k < kRounds; ++k) {
    std::vector<std::promise<ChunkResult>> promises(streams.size());
    for (size_t i = 0; i < streams.size(); ++i) {
      const Tensor chunk = LeadingRows(streams[i].x, 2 * k, 2 * k + 2);
      core_->SubmitChunk(Request(streams[i].id, k == 0 ? streams[i].model : "", chunk),
                         [&promises, i](ChunkResult r) { promises[i].set_value(std::move(r)); });
    }
    for (size_t i = 0; i < streams.size(); ++i) {
      ChunkResult r = promises[i].get_future().get();
      ASSERT_TRUE(r.status.ok()) << r.status;
      streams[i].out.insert(streams[i].out.end(), r.output->values().begin(),
                            r.output->values().end());
    }
  }
  for (const Stream& s : streams) {
    absl::StatusOr<ForwardResult> whole = reference_->Forward(s.x);
    ASSERT_TRUE(whole.ok());
    EXPECT_LT(MaxAbsDiff(s.out, whole->output.values), 1e-6) << s.id;
  }
  absl::MutexLock lock(&observer_.mu);
  EXPECT_THAT(observer_.runs["tight"], ::testing::Each(2));
  EXPECT_EQ(observer_.runs["tight"].size(), size_t{kRounds * kTight / 2});
  EXPECT_THAT(observer_.runs["free"], ::testing::Each(kFree));
}

TEST_F(ModelLimitsTest, PerModelQueueDelayDoesNotHoldAnotherModel) {
  // The tight model waits up to a minute for a full batch (2); the free model dispatches at
  // once (the server's delay, 0) on the same single worker meanwhile.
  ServingOptions options;
  options.threads = 1;
  MakeCore(R"({"max_batch": 2, "max_queue_delay": "60s"})", options);
  std::promise<ChunkResult> held;
  core_->SubmitChunk(Request("t1", "tight", Random({1, 1, 4}, 1)),
                     [&held](ChunkResult r) { held.set_value(std::move(r)); });
  ExpectStreamsExactly("f", "free", 2);
  std::future<ChunkResult> held_result = held.get_future();
  EXPECT_EQ(held_result.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the tight model's partial batch did not wait for its queue delay";
  // A second chunk fills the tight model's batch: both run at once, together.
  ASSERT_TRUE(Start("t2", "tight", Random({1, 1, 4}, 2)).status.ok());
  EXPECT_TRUE(held_result.get().status.ok());
  absl::MutexLock lock(&observer_.mu);
  EXPECT_THAT(observer_.runs["tight"], ::testing::ElementsAre(2));
}

TEST_F(ModelLimitsTest, PerModelIdleTimeoutExpiresOnlyThatModel) {
  ServingOptions options;
  options.session_idle_timeout = absl::Hours(1);
  MakeCore(R"({"session_idle_timeout": "2m"})", options);
  ASSERT_TRUE(Start("t", "tight", Random({1, 1, 4}, 1)).status.ok());
  ASSERT_TRUE(Start("f", "free", Random({1, 1, 4}, 2)).status.ok());
  absl::StatusOr<SessionSnapshot> snapshot = core_->GetSession("t", false);
  ASSERT_TRUE(snapshot.ok());
  EXPECT_LE(snapshot->expires_in, absl::Minutes(2));
  EXPECT_GT(core_->GetSession("f", false)->expires_in, absl::Minutes(2));
  EXPECT_EQ(core_->ReapIdleSessions(absl::Now() + absl::Minutes(1)), 0);
  EXPECT_EQ(core_->ReapIdleSessions(absl::Now() + absl::Minutes(3)), 1);
  absl::Status expired = core_->GetSession("t", false).status();
  EXPECT_EQ(expired.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(expired.message(), HasSubstr("idle for longer than the session idle timeout (2m)"));
  EXPECT_TRUE(core_->GetSession("f", false).ok());
}

// Each session of N=1 holds 80 bytes of state (2 buffers * 2 layers * 5 * 4 bytes), its
// 2-byte id and the fixed overhead.
constexpr int64_t kSessionBytes = 80 + 2 + kSessionOverheadBytes;

TEST_F(ModelLimitsTest, ModelAtItsMemoryShareIsRefusedWhileAnotherModelStarts) {
  ServingOptions options;
  options.max_state_bytes = 16 * kSessionBytes;
  options.evict_idle_after = absl::Hours(1);  // nothing is evictable
  MakeCore(R"({"state_memory_share": 0.25})", options);  // 4 sessions' worth
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(Start(absl::StrCat("t", i), "tight", Random({1, 1, 4}, i)).status.ok()) << i;
  }
  ChunkResult refused = Start("t4", "tight", Random({1, 1, 4}, 4));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status.message(),
              HasSubstr("session memory share of model 'tight' is full"));
  EXPECT_THAT(refused.status.message(), HasSubstr("state_memory_share 0.25 of --max_state_bytes"));
  EXPECT_LT(refused.status.message().size(), 600u);
  // The other model uses the rest of the budget: more sessions than the tight model's share.
  for (int i = 0; i < 10; ++i) ExpectStreamsExactly(absl::StrCat("f", i), "free", 30 + i);
}

TEST_F(ModelLimitsTest, ModelAtItsMemoryShareEvictsOnlyItsOwnIdleSessions) {
  ServingOptions options;
  options.max_state_bytes = 16 * kSessionBytes;
  options.evict_idle_after = absl::ZeroDuration();  // every idle session is evictable
  MakeCore(R"({"state_memory_share": 0.25})", options);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Start(absl::StrCat("f", i), "free", Random({1, 1, 4}, i)).status.ok());
  }
  // Ids "ta".."tl": all of one length, so that each session takes kSessionBytes.
  for (int i = 0; i < 12; ++i) {
    const std::string id = {'t', static_cast<char>('a' + i)};
    ASSERT_TRUE(Start(id, "tight", Random({1, 1, 4}, 10 + i)).status.ok()) << id;
  }
  // The oldest tight sessions went for the newest; the free model's were never touched.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(core_->GetSession(absl::StrCat("f", i), false).ok());
  EXPECT_THAT(core_->GetSession("ta", false).status().message(), HasSubstr("evicted"));
  for (const char* id : {"ti", "tj", "tk", "tl"}) EXPECT_TRUE(core_->GetSession(id, false).ok());
  EXPECT_EQ(core_->session_count(), 3 + 4);
}

}  // namespace
}  // namespace rnnserve
