// Fair compute (issue 11, point 5): long chunks and Forward calls run in slices between other
// work, stay exact, keep their session's order, and the per-request step cap refuses before
// work. Results are compared with RnnModel::Forward over the whole sequence (the engine is
// checked against torch by the parity suite; tests/server/test_slicing.py checks the sliced
// server against live torch). No timing assertions: fairness is shown by the order of answers.
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "core/serving/serving_core.h"
#include "core/serving/slicing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr double kTolerance = 1e-5;

// Blocks the worker inside its first engine call until released, so a test can act while a
// sliced chunk is between its first and second slice.
class GateObserver : public ServingObserver {
 public:
  void BatchRun(const std::string&, int64_t) override {
    if (first_batch_.HasBeenNotified()) return;
    first_batch_.Notify();
    release_.WaitForNotification();
  }
  absl::Notification first_batch_, release_;
};

class ChunkSlicingTest : public ::testing::Test {
 protected:
  void MakeCore(ServingOptions options, bool bidirectional = false, bool batch_first = false,
                bool gated = false) {
    auto registry = std::make_unique<ModelRegistry>();
    config_.input_size = 4;
    config_.hidden_size = 5;
    config_.num_layers = 2;
    config_.bidirectional = bidirectional;
    config_.batch_first = batch_first;
    const ParameterMap params = RandomParameters(config_, 7);
    ASSERT_TRUE(registry->Add("m", config_, params).ok());
    reference_ = std::move(RnnModel::Create(config_, params)).value();
    core_ = std::make_unique<ServingCore>(std::move(registry), options, gated ? &gate_ : nullptr);
  }

  // Submits without waiting; the answer lands in `answers` (and its id in `order`).
  // `input` may be absent (an end-only request).
  std::future<ChunkResult> SubmitAsync(const std::string& id, std::optional<Tensor> input,
                                       bool start, const std::string& label, bool end = false) {
    auto promise = std::make_shared<std::promise<ChunkResult>>();
    ChunkRequest r;
    r.session_id = id;
    r.model = "m";
    r.start = start;
    r.end = end;
    if (input.has_value()) r.input = TensorBytes::FromTensor(*input);
    core_->SubmitChunk(std::move(r), [this, promise, label](ChunkResult result) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        order_.push_back(label);
      }
      promise->set_value(std::move(result));
    });
    return promise->get_future();
  }

  std::future<absl::StatusOr<ForwardResult>> ForwardAsync(Tensor x, std::optional<Tensor> h0,
                                                          const std::string& label) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<ForwardResult>>>();
    core_->Forward("m", std::move(x), std::move(h0),
                   [this, promise, label](absl::StatusOr<ForwardResult> result) {
                     {
                       std::lock_guard<std::mutex> lock(mu_);
                       order_.push_back(label);
                     }
                     promise->set_value(std::move(result));
                   });
    return promise->get_future();
  }

  std::vector<std::string> order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }

  RnnConfig config_;
  std::unique_ptr<RnnModel> reference_;
  GateObserver gate_;  // declared before core_, so it outlives the core's last events
  std::unique_ptr<ServingCore> core_;
  std::mutex mu_;
  std::vector<std::string> order_;
};

TEST(SliceStepsTest, CountsTimestepRowsAndAlwaysAdvances) {
  ServingOptions options;
  options.slice_steps = 100;
  EXPECT_EQ(SliceSteps(1000, 1, options), 100);
  EXPECT_EQ(SliceSteps(1000, 8, options), 12);   // 12 timesteps x 8 rows
  EXPECT_EQ(SliceSteps(1000, 500, options), 1);  // a wide batch still advances
  EXPECT_EQ(SliceSteps(30, 1, options), 30);     // never past the end
  options.slice_steps = 0;
  EXPECT_EQ(SliceSteps(1000, 1, options), 1000);  // off
}

// Sessions of several batch sizes and layouts, in chunks of many slices each (3 rows a slice),
// several at once so slices of different sessions share engine calls.
TEST_F(ChunkSlicingTest, SlicedChunksEqualTheWholeSequence) {
  for (const bool batch_first : {false, true}) {
    ServingOptions options;
    options.threads = 2;
    options.slice_steps = 3;
    MakeCore(options, /*bidirectional=*/false, batch_first);
    const int64_t kSteps = 40;
    struct Case {
      std::string id;
      Tensor x;  // time-major or batch_first, as the model takes it
    };
    std::vector<Case> cases;
    for (int64_t n : {1, 2, 5}) {
      const Shape shape = batch_first ? Shape{n, kSteps, 4} : Shape{kSteps, n, 4};
      cases.push_back({"s" + std::to_string(n), Random(shape, 100 + n)});
    }
    cases.push_back({"unbatched", Random({kSteps, 4}, 200)});
    // Two chunks per session, 25 and 15 timesteps, all submitted before any answer.
    std::vector<std::vector<std::future<ChunkResult>>> futures(cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      const Tensor& x = cases[i].x;
      const int64_t axis = x.dim() == 3 && batch_first ? 1 : 0;
      futures[i].push_back(SubmitAsync(cases[i].id, *Slice(x, axis, 0, 25), true, "first"));
      futures[i].push_back(SubmitAsync(cases[i].id, *Slice(x, axis, 25, 15), false, "second"));
    }
    for (size_t i = 0; i < cases.size(); ++i) {
      std::vector<Tensor> parts;
      ChunkResult last;
      for (auto& future : futures[i]) {
        last = future.get();
        ASSERT_TRUE(last.status.ok()) << last.status;
        parts.push_back(last.output->ToTensor());
      }
      const Tensor& x = cases[i].x;
      const auto whole = reference_->Forward(x);
      ASSERT_TRUE(whole.ok());
      const Tensor joined = *Concat(parts, x.dim() == 3 && batch_first ? 1 : 0);
      EXPECT_LT(MaxAbsDiff(joined, whole->output), kTolerance) << cases[i].id;
      EXPECT_LT(MaxAbsDiff(last.h_n->ToTensor(), whole->h_n), kTolerance) << cases[i].id;
      EXPECT_EQ(last.steps_seen, kSteps);
    }
  }
}

TEST_F(ChunkSlicingTest, SlicedForwardEqualsOneCall) {
  for (const bool bidirectional : {false, true}) {
    ServingOptions options;
    options.threads = 2;
    options.slice_steps = 3;
    MakeCore(options, bidirectional, /*batch_first=*/true);
    const Tensor x = Random({2, 37, 4}, 5);
    const Tensor h0 = Random({bidirectional ? 4 : 2, 2, 5}, 6);
    auto got = ForwardAsync(x, h0, "forward").get();
    ASSERT_TRUE(got.ok()) << got.status();
    const auto whole = reference_->Forward(x, &h0);
    ASSERT_TRUE(whole.ok());
    EXPECT_LT(MaxAbsDiff(got->output, whole->output), kTolerance);
    EXPECT_LT(MaxAbsDiff(got->h_n, whole->h_n), kTolerance);
  }
}

// One worker: a huge chunk of session A is in flight when session B's short chunk and A's own
// next chunk arrive. B is answered first (it runs between A's slices); A's next chunk still
// waits for A's first; both of A's outputs equal the unsliced sequence.
TEST_F(ChunkSlicingTest, ShortChunkIsAnsweredBetweenTheSlicesOfAHugeOne) {
  ServingOptions options;
  options.threads = 1;
  options.slice_steps = 8;
  MakeCore(options, /*bidirectional=*/false, /*batch_first=*/false, /*gated=*/true);
  const int64_t kHuge = 4000;  // 500 slices
  const Tensor a = Random({kHuge + 3, 1, 4}, 1);
  const Tensor b = Random({2, 1, 4}, 2);
  auto a1 = SubmitAsync("A", *Slice(a, 0, 0, kHuge), true, "A1");
  gate_.first_batch_.WaitForNotification();  // A's first slice is computing
  auto a2 = SubmitAsync("A", *Slice(a, 0, kHuge, 3), false, "A2");
  auto b1 = SubmitAsync("B", b, true, "B");
  gate_.release_.Notify();
  const ChunkResult r1 = a1.get(), r2 = a2.get(), rb = b1.get();
  ASSERT_TRUE(r1.status.ok()) << r1.status;
  ASSERT_TRUE(r2.status.ok()) << r2.status;
  ASSERT_TRUE(rb.status.ok()) << rb.status;
  EXPECT_THAT(order(), ElementsAre("B", "A1", "A2"));
  const auto whole = reference_->Forward(a);
  ASSERT_TRUE(whole.ok());
  const Tensor joined = *Concat({r1.output->ToTensor(), r2.output->ToTensor()}, 0);
  EXPECT_LT(MaxAbsDiff(joined, whole->output), kTolerance);
  EXPECT_LT(MaxAbsDiff(r2.h_n->ToTensor(), whole->h_n), kTolerance);
  EXPECT_LT(MaxAbsDiff(rb.output->ToTensor(), reference_->Forward(b)->output), kTolerance);
}

// The same for a stateless Forward: a huge call does not hold the only worker.
TEST_F(ChunkSlicingTest, ShortChunkIsAnsweredBetweenTheSlicesOfAHugeForward) {
  ServingOptions options;
  options.threads = 1;
  options.slice_steps = 8;
  MakeCore(options, /*bidirectional=*/false, /*batch_first=*/false, /*gated=*/true);
  const Tensor huge = Random({4000, 1, 4}, 3);
  const Tensor b = Random({2, 1, 4}, 4);
  // Session C's chunk holds the only worker while the Forward and then B's chunk queue up.
  auto c = SubmitAsync("C", b, true, "C");
  gate_.first_batch_.WaitForNotification();
  auto forward = ForwardAsync(huge, std::nullopt, "forward");
  auto chunk = SubmitAsync("B", b, true, "B");
  gate_.release_.Notify();
  ASSERT_TRUE(c.get().status.ok());
  ASSERT_TRUE(chunk.get().status.ok());
  const auto got = forward.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(order(), ElementsAre("C", "B", "forward"));
  EXPECT_LT(MaxAbsDiff(got->output, reference_->Forward(huge)->output), kTolerance);
}

// A bidirectional model cannot be cut in time: a huge bidirectional Forward runs in pieces of
// one layer and direction, and a short request queued behind it is answered between them.
TEST_F(ChunkSlicingTest, ShortRequestIsAnsweredBetweenThePiecesOfAHugeBidirectionalForward) {
  ServingOptions options;
  options.threads = 1;
  options.slice_steps = 8;
  MakeCore(options, /*bidirectional=*/true, /*batch_first=*/false, /*gated=*/true);
  const Tensor huge = Random({4000, 1, 4}, 3);
  const Tensor b = Random({2, 1, 4}, 4);
  const Tensor h0 = Random({4, 1, 5}, 5);
  // Session C's whole sequence (start and end at once) holds the only worker meanwhile.
  auto c = SubmitAsync("C", b, true, "C", /*end=*/true);
  gate_.first_batch_.WaitForNotification();
  auto forward = ForwardAsync(huge, h0, "forward");
  auto short_forward = ForwardAsync(b, std::nullopt, "short");
  gate_.release_.Notify();
  ASSERT_TRUE(c.get().status.ok());
  ASSERT_TRUE(short_forward.get().ok());
  const auto got = forward.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(order(), ElementsAre("C", "short", "forward"));
  const auto whole = reference_->Forward(huge, &h0);
  ASSERT_TRUE(whole.ok());
  EXPECT_LT(MaxAbsDiff(got->output, whole->output), kTolerance);
  EXPECT_LT(MaxAbsDiff(got->h_n, whole->h_n), kTolerance);
}

// The same for a bidirectional session's `end`, which computes its whole buffered sequence:
// session B's short request is answered between the pieces, and A's output equals one call.
TEST_F(ChunkSlicingTest, ShortChunkIsAnsweredBetweenThePiecesOfABidirectionalEnd) {
  ServingOptions options;
  options.threads = 1;
  options.slice_steps = 8;
  MakeCore(options, /*bidirectional=*/true, /*batch_first=*/false, /*gated=*/true);
  const Tensor a = Random({3000, 1, 4}, 6);
  const Tensor b = Random({2, 1, 4}, 7);
  ASSERT_TRUE(SubmitAsync("A", a, true, "A-buffered").get().status.ok());
  // Session C's whole sequence (start and end at once) holds the only worker meanwhile.
  auto c = SubmitAsync("C", b, true, "C", /*end=*/true);
  gate_.first_batch_.WaitForNotification();
  // A's end: its whole buffered sequence computes now.
  auto a_end = SubmitAsync("A", std::nullopt, false, "A-end", /*end=*/true);
  auto short_chunk = SubmitAsync("B", b, true, "B", /*end=*/true);
  gate_.release_.Notify();
  ASSERT_TRUE(c.get().status.ok());
  ASSERT_TRUE(short_chunk.get().status.ok());
  const ChunkResult ended = a_end.get();
  ASSERT_TRUE(ended.status.ok()) << ended.status;
  EXPECT_THAT(order(), ElementsAre("A-buffered", "C", "B", "A-end"));
  const auto whole = reference_->Forward(a);
  ASSERT_TRUE(whole.ok());
  EXPECT_LT(MaxAbsDiff(ended.output->ToTensor(), whole->output), kTolerance);
  EXPECT_LT(MaxAbsDiff(ended.h_n->ToTensor(), whole->h_n), kTolerance);
}

// A session closed between two slices of its chunk: the chunk stops and is refused as not
// applied (NOT_FOUND), like a chunk whose session closed before it ran.
TEST_F(ChunkSlicingTest, SessionClosedBetweenSlicesStopsItsChunk) {
  ServingOptions options;
  options.threads = 1;
  options.slice_steps = 8;
  MakeCore(options, /*bidirectional=*/false, /*batch_first=*/false, /*gated=*/true);
  auto huge = SubmitAsync("A", Random({4000, 1, 4}, 1), true, "A");
  gate_.first_batch_.WaitForNotification();
  ASSERT_TRUE(core_->CloseSession("A", "").ok());
  gate_.release_.Notify();
  const ChunkResult result = huge.get();
  EXPECT_EQ(result.status.code(), absl::StatusCode::kNotFound) << result.status;
  EXPECT_THAT(result.status.message(), HasSubstr("closed"));
  EXPECT_FALSE(result.output.has_value());
}

TEST_F(ChunkSlicingTest, StepCapRefusesBeforeAnyWork) {
  ServingOptions options;
  options.threads = 1;
  options.max_steps_per_request = 10;
  MakeCore(options);
  const Tensor x = Random({11, 1, 4}, 9);
  const ChunkResult refused = SubmitAsync("A", x, true, "A").get();
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status.message(), HasSubstr("T=11"));
  EXPECT_THAT(refused.status.message(), HasSubstr("limit of 10"));
  EXPECT_THAT(refused.status.message(), HasSubstr("--max_steps_per_request"));
  // Not applied: the start failed, so the same id starts afresh with a chunk within the cap.
  const ChunkResult ok = SubmitAsync("A", *Slice(x, 0, 0, 10), true, "A").get();
  ASSERT_TRUE(ok.status.ok()) << ok.status;
  EXPECT_EQ(ok.steps_seen, 10);
  EXPECT_LT(MaxAbsDiff(ok.output->ToTensor(), reference_->Forward(*Slice(x, 0, 0, 10))->output),
            kTolerance);
  const auto forward = ForwardAsync(x, std::nullopt, "forward").get();
  EXPECT_EQ(forward.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(forward.status().message(), HasSubstr("T=11"));
}

}  // namespace
}  // namespace rnnserve
