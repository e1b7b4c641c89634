// The engine's steady state allocates nothing: once a Workspace has grown to a call's size,
// StepBatch and ForwardTimeMajor of a whole pipeline (input layer, core, head) run without a
// single heap allocation. This binary replaces the global operator new to count them.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_model.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, std::align_val_t align) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = static_cast<std::size_t>(align);
  if (void* p = std::aligned_alloc(a, (size + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return operator new(size, align);
}
// Every allocation above comes from malloc or aligned_alloc, so free releases it.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace rnnserve {
namespace {

// Embedding -> Linear+ReLU -> LSTM -> LayerNorm -> Linear -> LogSoftmax, or the features
// variant (Linear+Tanh first), every piece kind that allocates nothing per call by design.
PipelineConfig TestPipeline(bool ids) {
  PipelineConfig config;
  if (ids) {
    config.input_layer.push_back(MakeLayer(LayerType::kEmbedding, "embed", 50, 12));
  } else {
    config.input_layer.push_back(MakeLayer(LayerType::kLinear, "proj", 7, 12));
  }
  config.input_layer.push_back(MakeLayer(LayerType::kLinear, "proj2", 12, 16));
  config.input_layer.push_back(MakeLayer(ids ? LayerType::kRelu : LayerType::kTanh, "act"));
  config.rnn.module = RnnModule::kLstm;
  config.rnn.input_size = 16;
  config.rnn.hidden_size = 24;
  config.rnn.num_layers = 2;
  config.rnn_path = "rnn";
  config.head.push_back(MakeLayer(LayerType::kLayerNorm, "head.0", 24, 24));
  config.head.push_back(MakeLayer(LayerType::kLinear, "head.1", 24, 10));
  config.head.push_back(MakeLayer(LayerType::kGelu, "head.2"));
  LayerConfig softmax = MakeLayer(LayerType::kLogSoftmax, "head.3");
  softmax.dim = -1;
  config.head.push_back(softmax);
  return config;
}

class SteadyStateTest : public ::testing::TestWithParam<bool> {};

TEST_P(SteadyStateTest, StepBatchAndForwardAllocateNothingOnceWarm) {
  const bool ids = GetParam();
  const PipelineConfig config = TestPipeline(ids);
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();
  auto model = RnnModel::Create(config, UniformParameters(PipelineParameterSpecs(config), 0.3f, 7));
  ASSERT_TRUE(model.ok()) << model.status();
  const RnnModel& m = **model;

  // Sessions of different lengths and batch sizes, as the scheduler hands them over.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {3, 2}, {1, 4}, {5, 1}};
  std::vector<std::vector<float>> inputs, states, outputs;
  std::mt19937 rng(3);
  for (auto [steps, batch] : shapes) {
    std::vector<float> in(m.InputSize(steps, batch));
    for (float& v : in) v = ids ? static_cast<float>(rng() % 50) : 0.5f;
    inputs.push_back(std::move(in));
    states.emplace_back(m.StateSize(batch), 0.0f);
    outputs.emplace_back(m.OutputSize(steps, batch), 0.0f);
  }
  std::vector<StreamChunk> chunks;
  for (size_t i = 0; i < shapes.size(); ++i) {
    chunks.push_back(StreamChunk{inputs[i].data(), shapes[i].first, shapes[i].second,
                                 states[i].data(), states[i].data(), outputs[i].data()});
  }
  Workspace ws;
  std::vector<float> forward_out(m.OutputSize(6, 3)), forward_state(m.StateSize(3), 0.0f);
  std::vector<float> forward_in(m.InputSize(6, 3), ids ? 4.0f : 0.25f);
  for (int warm = 0; warm < 2; ++warm) {
    ASSERT_TRUE(m.StepBatch(chunks, &ws).ok());
    m.ForwardTimeMajor(forward_in.data(), 6, 3, nullptr, forward_out.data(),
                       forward_state.data(), ws);
  }
  int64_t step_batch_allocations = 0, forward_allocations = 0;
  for (int round = 0; round < 10; ++round) {
    int64_t before = g_allocations.load();
    absl::Status status = m.StepBatch(chunks, &ws);
    step_batch_allocations += g_allocations.load() - before;
    before = g_allocations.load();
    m.ForwardTimeMajor(forward_in.data(), 6, 3, forward_state.data(), forward_out.data(),
                       forward_state.data(), ws);
    forward_allocations += g_allocations.load() - before;
    if (!status.ok()) ADD_FAILURE() << status;
  }
  EXPECT_EQ(step_batch_allocations, 0) << "heap allocations in 10 warm StepBatch calls";
  EXPECT_EQ(forward_allocations, 0) << "heap allocations in 10 warm ForwardTimeMajor calls";
  for (const std::vector<float>& out : outputs) {
    for (float v : out) ASSERT_TRUE(std::isfinite(v));  // LogSoftmax: finite, <= 0
  }
}

INSTANTIATE_TEST_SUITE_P(InputKinds, SteadyStateTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "TokenIds" : "Features";
                         });

}  // namespace
}  // namespace rnnserve
