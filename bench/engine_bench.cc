// engine_bench: RnnModel timing grid (Forward and StepBatch) plus the machine's sgemm peak, in
// one run so that the engine's GFLOP/s can be read as a fraction of that peak.
//
// Forward: RNN(H, H, num_layers=L, tanh), input (T, N, H), h0 = zeros, one reused Workspace.
// StepBatch: N sessions of batch 1, chunks of 10 steps each, one StepBatch call per iteration.
// BM_GruForward/BM_GruStepBatch and BM_LstmForward/BM_LstmStepBatch: the same for GRU(H, H, L)
// and LSTM(H, H, L); BM_LstmProjForward: LSTM(H, H, L, proj_size=P) (issue 12).
// BM_PipelineStepBatch (issue 13): what an input layer or a head costs next to the core, see
// PipelineKind below.
// Counters: us_per_step (call time / T), gflops (2 * MacsPerStep * N * T per call: per layer
// G * H_gates * (in + H_out) MACs, G = 1 RNN, 3 GRU, 4 LSTM, plus P * H for the projection), peak_frac
// (gflops / the 1-thread OpenBLAS sgemm peak measured at start-up: best square product from
// 256^3 to 2048^3). Single-threaded.
//
//   build-bench/bench/engine_bench --benchmark_min_time=0.1 --benchmark_filter=BM_Forward
//   build-bench/bench/engine_bench --peak_gflops=0 ...   # skip the start-up sgemm calibration
//   build-bench/bench/engine_bench --benchmark_filter=BM_Pipeline --benchmark_min_time=0.3
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "base/tensor.h"
#include "bench/bench_util.h"
#include "bench/session_chunks.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_model.h"
#include "core/engine/rnn_parameters.h"
#include "core/engine/step_layers.h"

namespace rnnserve::bench {
namespace {

constexpr int64_t kChunkSteps = 10;  // StepBatch: steps per session chunk
double g_peak_gflops = 0;            // 1-thread sgemm peak, measured in main()
KernelIsa g_kernel_isa = BestKernelIsa();  // --kernel_isa: the kernels every model runs

// RNN(H, H, num_layers=L) (tanh), GRU or LSTM (proj_size P), unidirectional, with
// torch-style random weights; built once per (module, H, L, P) and kept for the whole run.
const RnnModel& Model(int64_t hidden, int64_t layers, RnnModule module = RnnModule::kRnn,
                      int64_t proj_size = 0) {
  static std::map<std::tuple<RnnModule, int64_t, int64_t, int64_t>, std::unique_ptr<RnnModel>>
      models;
  std::unique_ptr<RnnModel>& model = models[{module, hidden, layers, proj_size}];
  if (model == nullptr) {
    RnnConfig config;
    config.module = module;
    config.input_size = hidden;
    config.hidden_size = hidden;
    config.num_layers = layers;
    config.proj_size = proj_size;
    auto created = RnnModel::Create(config, RandomParameters(config, /*seed=*/42), g_kernel_isa);
    if (!created.ok()) {
      fprintf(stderr, "engine_bench: %s\n", created.status().ToString().c_str());
      std::abort();
    }
    model = std::move(created).value();
  }
  return *model;
}

// A call of `total` seconds over all iterations covers `steps` timesteps of `rows` batch rows
// (steps * batch) in all.
void SetEngineCounters(benchmark::State& state, double total, const RnnModel& model,
                       int64_t rows, int64_t steps) {
  if (total < 0) return;  // skipped with an error
  const double seconds = SecondsPerCall(state, total);
  const double gflops = 2.0 * model.MacsPerStep() * rows * 1e-9 / seconds;
  state.counters["us_per_step"] = seconds * 1e6 / steps;
  state.counters["gflops"] = gflops;
  if (g_peak_gflops > 0) state.counters["peak_frac"] = gflops / g_peak_gflops;
}

// Args: H, L, N, T (proj_size > 0: H, P, L, N, T).
void RunForward(benchmark::State& state, RnnModule module, bool with_proj) {
  const int64_t h = state.range(0), proj = with_proj ? state.range(1) : 0;
  const int a = with_proj ? 2 : 1;
  const int64_t layers = state.range(a), batch = state.range(a + 1), steps = state.range(a + 2);
  const RnnModel& model = Model(h, layers, module, proj);
  const Tensor input({steps, batch, h}, RandomValues(steps * batch * h, 7));
  Workspace workspace;
  const double total = TimedLoop(state, [&] {
    absl::StatusOr<ForwardResult> result = model.Forward(input, nullptr, &workspace);
    if (!result.ok()) {
      state.SkipWithError(result.status().ToString().c_str());
      return false;
    }
    benchmark::DoNotOptimize(result->output.data());
    return true;
  });
  SetEngineCounters(state, total, model, batch * steps, steps);
}

// Args: H, L, N (sessions of batch 1, kChunkSteps steps each).
void RunStepBatch(benchmark::State& state, RnnModule module) {
  const int64_t h = state.range(0), layers = state.range(1), sessions = state.range(2);
  const RnnModel& model = Model(h, layers, module);
  const SessionChunks session_chunks(model, sessions, kChunkSteps,
                                     RandomValues(sessions * kChunkSteps * h, 7));
  Workspace workspace;
  const double total = TimedLoop(state, [&] {
    const absl::Status status = model.StepBatch(session_chunks.chunks(), &workspace);
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return false;
    }
    benchmark::DoNotOptimize(session_chunks.outputs());
    return true;
  });
  SetEngineCounters(state, total, model, sessions * kChunkSteps, kChunkSteps);
}

// Pipelines (issue 13): the core LSTM(256, 256, num_layers=2) alone or with one stage around
// it, each a realistic size for a streaming acoustic model.
enum PipelineKind : int64_t {
  kBareCore = 0,    // the core alone
  kLinearHead = 1,  // head Linear(256, 40)
  kMlpHead = 2,     // head Linear(256, 256), ReLU, Linear(256, 40), LogSoftmax
  kInputLayer = 3,  // input layer Linear(80, 256), ReLU
};
constexpr int64_t kPipelineHidden = 256, kPipelineLayers = 2;


// A pipeline model and its one stage (the head or the input layer) on its own, so that the
// stage can be timed alone over the same columns StepBatch hands it.
struct PipelineBench {
  std::unique_ptr<RnnModel> model;
  StepLayers stage;  // empty for kBareCore
};

const PipelineBench& Pipeline(int64_t kind) {
  static std::map<int64_t, PipelineBench> pipelines;
  PipelineBench& bench = pipelines[kind];
  if (bench.model != nullptr) return bench;
  PipelineConfig config;
  config.rnn.module = RnnModule::kLstm;
  config.rnn.input_size = kPipelineHidden;
  config.rnn.hidden_size = kPipelineHidden;
  config.rnn.num_layers = kPipelineLayers;
  std::vector<LayerConfig>* stage = nullptr;
  if (kind != kBareCore) config.rnn_path = "rnn";
  if (kind == kLinearHead) {
    config.head = {MakeLayer(LayerType::kLinear, "head", kPipelineHidden, 40)};
    stage = &config.head;
  } else if (kind == kMlpHead) {
    config.head = {MakeLayer(LayerType::kLinear, "head.0", kPipelineHidden, kPipelineHidden),
                   MakeLayer(LayerType::kRelu, "head.1"),
                   MakeLayer(LayerType::kLinear, "head.2", kPipelineHidden, 40),
                   MakeLayer(LayerType::kLogSoftmax, "head.3")};
    stage = &config.head;
  } else if (kind == kInputLayer) {
    config.input_layer = {MakeLayer(LayerType::kLinear, "frontend.0", 80, kPipelineHidden),
                          MakeLayer(LayerType::kRelu, "frontend.1")};
    stage = &config.input_layer;
  }
  // The core's torch-style parameters under "<rnn_path>.", each Linear's drawn from
  // U(-1/sqrt(in), 1/sqrt(in)) as torch initialises it; the same on every run.
  ParameterMap params;
  for (auto& [name, tensor] : RandomParameters(config.rnn, /*seed=*/42)) {
    params[config.rnn_path.empty() ? name : config.rnn_path + "." + name] = std::move(tensor);
  }
  uint32_t seed = 100;
  for (const std::vector<LayerConfig>* layers : {&config.input_layer, &config.head}) {
    for (const LayerConfig& layer : *layers) {
      for (const ParameterSpec& spec : LayerParameterSpecs(layer)) {
        std::vector<float> values = RandomValues(NumElements(spec.shape), seed++);
        const float bound = 1.0f / std::sqrt(static_cast<float>(layer.in_features));
        for (float& v : values) v *= bound;
        params[spec.name] = Tensor(spec.shape, std::move(values));
      }
    }
  }
  auto created = RnnModel::Create(config, params, g_kernel_isa);
  if (!created.ok()) {
    fprintf(stderr, "engine_bench: %s\n", created.status().ToString().c_str());
    std::abort();
  }
  bench.model = std::move(created).value();
  if (stage != nullptr) {
    const int64_t in = stage == &config.head ? kPipelineHidden : 80;
    bench.stage = StepLayers::Create(*stage, params, in, g_kernel_isa);
  }
  return bench;
}

bool g_pipeline_cpu_clock = false;  // --pipeline_clock=cpu: BM_PipelineStepBatch by CPU time

// Seconds `body` takes: wall-clock, or with --pipeline_clock=cpu the calling thread's CPU time
// (the engine is single-threaded), which a busy machine inflates far less.
template <typename Body>
double Seconds(Body&& body) {
  if (g_pipeline_cpu_clock) {
    const double start = ThreadCpuSeconds();
    body();
    return ThreadCpuSeconds() - start;
  }
  const auto start = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void StepOrDie(const RnnModel& model, const SessionChunks& chunks, Workspace& workspace) {
  const absl::Status status = model.StepBatch(chunks.chunks(), &workspace);
  if (!status.ok()) {
    fprintf(stderr, "engine_bench: %s\n", status.ToString().c_str());
    std::abort();
  }
  benchmark::DoNotOptimize(chunks.outputs());
}

// Args: P (PipelineKind), S sessions of batch 1, T steps per session per call (1: streaming).
// Each iteration times the pipeline's StepBatch (the benchmark's time), then, untimed by the
// benchmark but timed alongside so that both see the same machine, the bare core's StepBatch
// on the same sessions and the stage alone (StepLayers::Apply) over the S*T columns StepBatch
// hands it; --pipeline_clock=cpu times all three by thread CPU time. Counters:
// us_per_session_step (call time / (S*T)); core_us_per_session_step and
// stage_us_per_session_step; stage_share (stage / pipeline) and added_share ((pipeline -
// core) / pipeline: the stage plus the copies around it).
void BM_PipelineStepBatch(benchmark::State& state) {
  const int64_t kind = state.range(0), sessions = state.range(1), steps = state.range(2);
  const int64_t cols = sessions * steps;
  const PipelineBench& pipeline = Pipeline(kind);
  const RnnModel& model = *pipeline.model;
  const RnnModel& core = Model(kPipelineHidden, kPipelineLayers, RnnModule::kLstm);
  const SessionChunks pipeline_chunks(model, sessions, steps,
                                      RandomValues(model.InputSize(cols, 1), 7));
  const SessionChunks core_chunks(core, sessions, steps, RandomValues(core.InputSize(cols, 1), 7));
  const StepLayers& stage = pipeline.stage;
  const std::vector<float> stage_in = RandomValues(stage.in_features() * cols, 8);
  std::vector<float> stage_out(stage.out_features() * cols);
  std::vector<float> scratch_a(stage.scratch_rows() * cols), scratch_b(scratch_a.size());
  Workspace pipeline_ws, core_ws;
  const auto run_stage = [&] {
    stage.Apply(stage_in.data(), cols, stage_out.data(), scratch_a.data(), scratch_b.data());
    benchmark::DoNotOptimize(stage_out.data());
  };
  // Warm-up: the workspaces' buffers are allocated and touched before anything is timed.
  StepOrDie(model, pipeline_chunks, pipeline_ws);
  if (!stage.empty()) {
    StepOrDie(core, core_chunks, core_ws);
    run_stage();
  }
  double total = 0, core_total = 0, stage_total = 0;
  for (auto _ : state) {
    const double took = Seconds([&] { StepOrDie(model, pipeline_chunks, pipeline_ws); });
    state.SetIterationTime(took);
    total += took;
    if (!stage.empty()) {
      core_total += Seconds([&] { StepOrDie(core, core_chunks, core_ws); });
      stage_total += Seconds(run_stage);
    }
  }
  SetEngineCounters(state, total, model, cols, steps);
  const double per_call = SecondsPerCall(state, total);
  state.counters["us_per_session_step"] = per_call * 1e6 / cols;
  if (!stage.empty()) {
    const double core_call = SecondsPerCall(state, core_total);
    const double stage_call = SecondsPerCall(state, stage_total);
    state.counters["core_us_per_session_step"] = core_call * 1e6 / cols;
    state.counters["stage_us_per_session_step"] = stage_call * 1e6 / cols;
    state.counters["stage_share"] = stage_call / per_call;
    state.counters["added_share"] = (per_call - core_call) / per_call;
  }
}

void BM_Forward(benchmark::State& state) { RunForward(state, RnnModule::kRnn, false); }
void BM_StepBatch(benchmark::State& state) { RunStepBatch(state, RnnModule::kRnn); }
void BM_GruForward(benchmark::State& state) { RunForward(state, RnnModule::kGru, false); }
void BM_GruStepBatch(benchmark::State& state) { RunStepBatch(state, RnnModule::kGru); }
void BM_LstmForward(benchmark::State& state) { RunForward(state, RnnModule::kLstm, false); }
void BM_LstmStepBatch(benchmark::State& state) { RunStepBatch(state, RnnModule::kLstm); }
void BM_LstmProjForward(benchmark::State& state) { RunForward(state, RnnModule::kLstm, true); }

BENCHMARK(BM_Forward)
    ->ArgNames({"H", "L", "N", "T"})
    ->ArgsProduct({{64, 256, 512, 1024}, {1, 2}, {1, 8, 64, 256}, {1, 10, 100}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();
BENCHMARK(BM_StepBatch)
    ->ArgNames({"H", "L", "N"})
    ->ArgsProduct({{64, 256, 512, 1024}, {1, 2}, {1, 64, 256, 1024}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();

// GRU and LSTM (issue 12): the grid of BENCHMARKS.md "## GRU and LSTM".
#define RNNSERVE_GATED_GRID(forward, step_batch)                                  \
  BENCHMARK(forward)                                                              \
      ->ArgNames({"H", "L", "N", "T"})                                            \
      ->ArgsProduct({{256, 512, 1024}, {1, 2}, {1, 8, 64, 256}, {1, 10, 100}})    \
      ->Unit(benchmark::kMicrosecond)                                             \
      ->UseManualTime();                                                          \
  BENCHMARK(step_batch)                                                           \
      ->ArgNames({"H", "L", "N"})                                                 \
      ->ArgsProduct({{256, 512, 1024}, {1, 2}, {1, 8, 64, 256, 1024}})            \
      ->Unit(benchmark::kMicrosecond)                                             \
      ->UseManualTime()
RNNSERVE_GATED_GRID(BM_GruForward, BM_GruStepBatch);
RNNSERVE_GATED_GRID(BM_LstmForward, BM_LstmStepBatch);
BENCHMARK(BM_PipelineStepBatch)
    ->ArgNames({"P", "S", "T"})
    ->ArgsProduct({{kBareCore, kLinearHead, kMlpHead, kInputLayer}, {1, 64, 1024}, {1, 16}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();
BENCHMARK(BM_LstmProjForward)
    ->ArgNames({"H", "P", "L", "N", "T"})
    ->ArgsProduct({{1024}, {256}, {1, 2}, {1, 8, 64, 256}, {1, 10, 100}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();

}  // namespace
}  // namespace rnnserve::bench

int main(int argc, char** argv) {
  namespace rb = rnnserve::bench;
  benchmark::Initialize(&argc, argv);
  // --peak_gflops=X: take X as the sgemm peak instead of measuring it (0: no peak_frac), e.g.
  // to keep the calibration out of a profile.
  // --kernel_isa=auto|avx512|avx2|baseline: the kernels the models run (auto: the CPU's best).
  // --pipeline_clock=wall|cpu: what BM_PipelineStepBatch times (default wall).
  double given_peak = -1;
  for (int i = 1; i < argc;) {
    const std::string arg = argv[i];
    if (arg.rfind("--peak_gflops=", 0) == 0) {
      given_peak = std::atof(arg.c_str() + std::strlen("--peak_gflops="));
    } else if (arg.rfind("--kernel_isa=", 0) == 0) {
      auto isa = rnnserve::ChooseKernelIsa(arg.substr(std::strlen("--kernel_isa=")));
      if (!isa.ok()) {
        fprintf(stderr, "engine_bench: %s\n", isa.status().ToString().c_str());
        return 1;
      }
      rb::g_kernel_isa = *isa;
    } else if (arg == "--pipeline_clock=cpu" || arg == "--pipeline_clock=wall") {
      rb::g_pipeline_cpu_clock = arg == "--pipeline_clock=cpu";
    } else {
      ++i;
      continue;
    }
    std::copy(argv + i + 1, argv + argc, argv + i);
    --argc;
  }
  fprintf(stderr, "engine_bench: kernels %s\n",
          std::string(rnnserve::KernelIsaName(rb::g_kernel_isa)).c_str());
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  rb::UseOneBlasThread();
  // The yardstick: best single-threaded square sgemm from 256^3 (in L2) to 2048^3, by
  // wall-clock time (the peak_frac counter) and by thread CPU time (for comparisons on a busy
  // machine). compare_torch.py calibrates before every group and keeps the run's best.
  double peak_cpu_gflops = given_peak;
  if (given_peak >= 0) {
    rb::g_peak_gflops = given_peak;
  } else {
    for (int n : {256, 512, 1024, 2048}) {
      const rb::GemmRate rate = rb::MeasureSgemmGflops(1, n, n < 1024 ? 30 : 3);
      rb::g_peak_gflops = std::max(rb::g_peak_gflops, rate.wall_gflops);
      peak_cpu_gflops = std::max(peak_cpu_gflops, rate.cpu_gflops);
    }
  }
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("sgemm_peak_1t_gflops", std::to_string(rb::g_peak_gflops));
  benchmark::AddCustomContext("sgemm_peak_1t_gflops_cpu", std::to_string(peak_cpu_gflops));
  benchmark::AddCustomContext("gemm_library", rb::GemmLibraryInfo());
  benchmark::AddCustomContext("kernel_isa", std::string(rnnserve::KernelIsaName(rb::g_kernel_isa)));
  benchmark::AddCustomContext("pipeline_clock", rb::g_pipeline_cpu_clock ? "cpu" : "wall");
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", coretype != nullptr ? coretype : "(unset)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
