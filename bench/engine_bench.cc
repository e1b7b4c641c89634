// engine_bench: RnnModel timing grid (Forward and StepBatch) plus the machine's sgemm peak, in
// one run so that the engine's GFLOP/s can be read as a fraction of that peak.
//
// Forward: RNN(H, H, num_layers=L, tanh), input (T, N, H), h0 = zeros, one reused Workspace.
// StepBatch: N sessions of batch 1, chunks of 10 steps each, one StepBatch call per iteration.
// BM_GruForward/BM_GruStepBatch and BM_LstmForward/BM_LstmStepBatch: the same for GRU(H, H, L)
// and LSTM(H, H, L); BM_LstmProjForward: LSTM(H, H, L, proj_size=P) (issue 12).
// Counters: us_per_step (call time / T), gflops (2 * MacsPerStep * N * T per call: per layer
// G * H_gates * (in + H_out) MACs, G = 1 RNN, 3 GRU, 4 LSTM, plus P * H for the projection), peak_frac
// (gflops / the 1-thread OpenBLAS sgemm peak measured at start-up: best square product from
// 256^3 to 2048^3). Single-threaded.
//
//   build-bench/bench/engine_bench --benchmark_min_time=0.1 --benchmark_filter=BM_Forward
//   build-bench/bench/engine_bench --peak_gflops=0 ...   # skip the start-up sgemm calibration
#include <algorithm>
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
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_model.h"
#include "core/engine/rnn_parameters.h"

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
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", coretype != nullptr ? coretype : "(unset)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
