// Shared by engine_bench's sources: a timed benchmark loop and the machine's GEMM yardsticks
// (OpenBLAS sgemm when linked, else Eigen's GEMM).
#ifndef RNNSERVE_BENCH_BENCH_UTIL_H_
#define RNNSERVE_BENCH_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace rnnserve::bench {

// Runs `body` once per iteration, reports each iteration's wall time to the benchmark (register
// it with UseManualTime()) and returns the total, so counters can be plain numbers such as
// "gflops=93.1" rather than Google Benchmark's rate counters ("93.1/s"). Returns -1 when `body`
// returns false (it has called state.SkipWithError()).
template <typename Body>
double TimedLoop(benchmark::State& state, Body&& body) {
  double total = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (!body()) return -1;
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(took.count());
    total += took.count();
  }
  return total;
}

// Per-call seconds of a finished TimedLoop.
inline double SecondsPerCall(const benchmark::State& state, double total) {
  return state.iterations() > 0 ? total / static_cast<double>(state.iterations()) : 0;
}

// `count` floats uniform in [-1, 1), the same for the same seed.
std::vector<float> RandomValues(int64_t count, uint32_t seed);

// CPU time of the calling thread, in seconds.
double ThreadCpuSeconds();

struct GemmRate {
  double wall_gflops = 0;  // by wall-clock time
  double cpu_gflops = 0;   // by the calling thread's CPU time: robust to a busy machine, and
                           // meaningful only when the product runs on the calling thread alone
};

// Best GFLOP/s of at least `reps` square n x n x n products (and at least 0.25 s of them) with `threads` OpenBLAS threads (Eigen's
// single-threaded GEMM when OpenBLAS is not linked).
GemmRate MeasureSgemmGflops(int threads, int n, int reps);

// Which library the peak comes from and its core: "OpenBLAS 0.3.21 ... (core SkylakeX)".
std::string GemmLibraryInfo();

// Leaves OpenBLAS at one thread (the engine is single-threaded; torch is measured at 1 thread).
void UseOneBlasThread();

}  // namespace rnnserve::bench

#endif  // RNNSERVE_BENCH_BENCH_UTIL_H_
