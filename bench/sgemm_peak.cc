// GEMM yardsticks in engine_bench's run: OpenBLAS cblas_sgemm at 1 and 2 threads and Eigen's
// GEMM, square 1024 and 2048; plus the engine's exact per-step product shapes through Eigen,
// OpenBLAS and the engine's PackedGemm, to locate where the engine loses time.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "core/engine/packed_gemm.h"

#ifdef RNNSERVE_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace rnnserve::bench {
namespace {

using Matrix = Eigen::MatrixXf;

Matrix RandomMatrix(int64_t rows, int64_t cols, uint32_t seed) {
  return Eigen::Map<const Matrix>(RandomValues(rows * cols, seed).data(), rows, cols);
}

// c (m x n) += a (m x k) * b (k x n), column-major, through the library `lib` names.
enum class Lib { kEigen = 0, kOpenBlas = 1, kPacked = 2 };

void GemmAdd(Lib lib, const float* a, int64_t m, int64_t k, const float* b, int64_t n,
             float* c) {
#ifdef RNNSERVE_HAVE_OPENBLAS
  if (lib == Lib::kOpenBlas) {
    if (n == 1) {
      cblas_sgemv(CblasColMajor, CblasNoTrans, m, k, 1.0f, a, m, b, 1, 1.0f, c, 1);
    } else {
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, m, b, k, 1.0f, c,
                  m);
    }
    return;
  }
#endif
  Eigen::Map<Matrix>(c, m, n).noalias() +=
      Eigen::Map<const Matrix>(a, m, k) * Eigen::Map<const Matrix>(b, k, n);
}

void GemmAdd(Lib lib, const Matrix& a, const Matrix& b, Matrix& c) {
  GemmAdd(lib, a.data(), a.rows(), a.cols(), b.data(), b.cols(), c.data());
}

void SetBlasThreads(int threads) {
#ifdef RNNSERVE_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
}

// Times c += a * b through `lib` and reports GFLOP/s.
void TimeGemm(benchmark::State& state, Lib lib, const Matrix& a, const Matrix& b, Matrix& c) {
  const double total = TimedLoop(state, [&] {
    GemmAdd(lib, a, b, c);
    benchmark::DoNotOptimize(c.data());
    return true;
  });
  const double flops = 2.0 * a.rows() * a.cols() * b.cols();
  state.counters["gflops"] = flops * 1e-9 / SecondsPerCall(state, total);
}

// Square sgemm through OpenBLAS. Args: threads, n.
void BM_SgemmOpenBlas(benchmark::State& state) {
#ifdef RNNSERVE_HAVE_OPENBLAS
  const int threads = static_cast<int>(state.range(0));
  const int64_t n = state.range(1);
  const Matrix a = RandomMatrix(n, n, 1), b = RandomMatrix(n, n, 2);
  Matrix c = Matrix::Zero(n, n);
  SetBlasThreads(threads);
  TimeGemm(state, Lib::kOpenBlas, a, b, c);
  SetBlasThreads(1);
#else
  state.SkipWithError("OpenBLAS not linked");
#endif
}

// Square GEMM through Eigen (single-threaded: the project builds without OpenMP). Args: n.
void BM_EigenGemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Matrix a = RandomMatrix(n, n, 1), b = RandomMatrix(n, n, 2);
  Matrix c = Matrix::Zero(n, n);
  TimeGemm(state, Lib::kEigen, a, b, c);
}

// False (and the benchmark marked skipped) when `lib` is OpenBLAS and it was not linked.
bool LibAvailable(benchmark::State& state, Lib lib) {
#ifndef RNNSERVE_HAVE_OPENBLAS
  if (lib == Lib::kOpenBlas) {
    state.SkipWithError("OpenBLAS not linked");
    return false;
  }
#endif
  return true;
}

// The engine's products at their exact shapes, 1 thread: c (H x cols) += W (H x H) * x (H x cols).
// cols = N is the recurrent product of one step; cols = T*N the input projection of a chunk.
// Args: lib (0 Eigen, 1 OpenBLAS, 2 the engine's PackedGemm), H, cols.
void BM_GemmShape(benchmark::State& state) {
  const Lib lib = static_cast<Lib>(state.range(0));
  if (!LibAvailable(state, lib)) return;
  const int64_t h = state.range(1), cols = state.range(2);
  const Matrix w = RandomMatrix(h, h, 1), x = RandomMatrix(h, cols, 2);
  Matrix c = Matrix::Zero(h, cols);
  if (lib == Lib::kPacked) {  // the engine's own kernel, weights packed once outside the loop
    const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = w;
    const PackedMatrix packed = PackedMatrix::FromRowMajor(row_major.data(), h, h);
    const double total = TimedLoop(state, [&] {
      PackedGemm(packed, x.data(), h, cols, nullptr, /*accumulate=*/true, Epilogue::kNone,
                 c.data(), h);
      benchmark::DoNotOptimize(c.data());
      return true;
    });
    state.counters["gflops"] = 2.0 * h * h * cols * 1e-9 / SecondsPerCall(state, total);
    return;
  }
  TimeGemm(state, lib, w, x, c);
}

// A stand-in for RnnModel::ForwardTimeMajor (unidirectional, tanh, h_0 zeros) whose products go
// through `lib`: with Eigen it should time like the engine (a check of the stand-in); with
// OpenBLAS it shows what the engine would gain from OpenBLAS's kernels at that shape.
// Per layer: out = bias; out += W_ih * in (all T*N columns); per step out_t += W_hh * h_{t-1},
// out_t = tanh(out_t). Args: lib, H, L, N, T.
void BM_ForwardProto(benchmark::State& state) {
  const Lib lib = static_cast<Lib>(state.range(0));
  if (!LibAvailable(state, lib)) return;
  const int64_t h = state.range(1), layers = state.range(2);
  const int64_t batch = state.range(3), steps = state.range(4), cols = steps * batch;
  const float scale = 1.0f / std::sqrt(static_cast<float>(h));
  std::vector<Matrix> w_ih, w_hh;
  std::vector<Eigen::VectorXf> bias;
  for (int64_t l = 0; l < layers; ++l) {
    w_ih.push_back(RandomMatrix(h, h, 10 + l) * scale);
    w_hh.push_back(RandomMatrix(h, h, 20 + l) * scale);
    bias.push_back(RandomMatrix(h, 1, 30 + l) * scale);
  }
  const Matrix input = RandomMatrix(h, cols, 7);
  const Matrix zeros = Matrix::Zero(h, batch);
  Matrix buffers[2] = {Matrix(h, cols), Matrix(h, cols)};
  const double total = TimedLoop(state, [&] {
    const Matrix* in = &input;
    for (int64_t l = 0; l < layers; ++l) {
      Matrix& out = buffers[l % 2];
      out.colwise() = bias[l];
      GemmAdd(lib, w_ih[l].data(), h, h, in->data(), cols, out.data());
      for (int64_t t = 0; t < steps; ++t) {
        const float* prev = t == 0 ? zeros.data() : out.data() + (t - 1) * batch * h;
        float* block = out.data() + t * batch * h;
        GemmAdd(lib, w_hh[l].data(), h, h, prev, batch, block);
        Eigen::Map<Eigen::ArrayXXf> act(block, h, batch);
        act = act.tanh();
      }
      in = &out;
    }
    benchmark::DoNotOptimize(in->data());
    return true;
  });
  state.counters["gflops"] =
      2.0 * layers * h * 2 * h * cols * 1e-9 / SecondsPerCall(state, total);
}

// Streaming read bandwidth of one core over a buffer of `KiB` (in L2, or beyond it): the bound
// for a product whose weights do not stay in cache, e.g. sgemv at cols = 1 reads 2 bytes per
// FLOP. Args: KiB.
void BM_ReadBandwidth(benchmark::State& state) {
  const int64_t count = state.range(0) * 1024 / sizeof(float);
  const std::vector<float> data = RandomValues(count, 4);
  // Eight independent 16-float partial sums (GCC/Clang vector extension), so the adds do not
  // wait on each other and the loads set the pace.
  typedef float Vec16 __attribute__((vector_size(64)));
  constexpr int64_t kStep = 8 * 16;
  const double total = TimedLoop(state, [&] {
    Vec16 acc[8] = {};
    for (int64_t i = 0; i + kStep <= count; i += kStep) {
      for (int j = 0; j < 8; ++j) {
        Vec16 v;
        std::memcpy(&v, data.data() + i + 16 * j, sizeof(v));
        acc[j] += v;
      }
    }
    benchmark::DoNotOptimize(acc);
    return true;
  });
  state.counters["gbytes_per_s"] = count * sizeof(float) * 1e-9 / SecondsPerCall(state, total);
}

BENCHMARK(BM_SgemmOpenBlas)
    ->ArgNames({"threads", "n"})
    ->ArgsProduct({{1, 2}, {1024, 2048}})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK(BM_EigenGemm)->ArgName("n")->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK(BM_GemmShape)
    ->ArgNames({"lib", "H", "cols"})
    ->ArgsProduct({{0, 1, 2}, {64, 256, 512, 1024}, {1, 8, 10, 64, 100, 256, 2560, 25600}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();
BENCHMARK(BM_ForwardProto)
    ->ArgNames({"lib", "H", "L", "N", "T"})
    ->ArgsProduct({{0, 1}, {64, 256, 512, 1024}, {1, 2}, {1, 8, 64, 256}, {1, 10, 100}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();
BENCHMARK(BM_ReadBandwidth)
    ->ArgName("KiB")
    ->Arg(256)->Arg(1024)->Arg(4096)->Arg(16384)->Arg(65536)
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();
}  // namespace

std::vector<float> RandomValues(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(count);
  for (float& v : values) v = dist(rng);
  return values;
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

GemmRate MeasureSgemmGflops(int threads, int n, int reps) {
  const Matrix a = RandomMatrix(n, n, 1), b = RandomMatrix(n, n, 2);
  Matrix c = Matrix::Zero(n, n);
#ifdef RNNSERVE_HAVE_OPENBLAS
  const Lib lib = Lib::kOpenBlas;
#else
  const Lib lib = Lib::kEigen;
#endif
  SetBlasThreads(threads);
  GemmAdd(lib, a, b, c);  // warm-up: pages, packing buffers, threads
  const double gflop = 2.0 * n * n * n * 1e-9;
  GemmRate best;
  // At least `reps` products and at least 0.25 s: short bursts came out 20-25% below what the
  // same product sustains a moment later (clock ramp on this VM).
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
  for (int r = 0; r < reps || std::chrono::steady_clock::now() < until; ++r) {
    const double cpu_start = ThreadCpuSeconds();
    const auto start = std::chrono::steady_clock::now();
    GemmAdd(lib, a, b, c);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    const double cpu_took = ThreadCpuSeconds() - cpu_start;
    best.wall_gflops = std::max(best.wall_gflops, gflop / took.count());
    best.cpu_gflops = std::max(best.cpu_gflops, gflop / cpu_took);
  }
  benchmark::DoNotOptimize(c.data());
  SetBlasThreads(1);
  return best;
}

std::string GemmLibraryInfo() {
#ifdef RNNSERVE_HAVE_OPENBLAS
  return std::string(openblas_get_config()) + " (core " + openblas_get_corename() + ")";
#else
  return "Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." +
         std::to_string(EIGEN_MAJOR_VERSION) + "." + std::to_string(EIGEN_MINOR_VERSION);
#endif
}

void UseOneBlasThread() { SetBlasThreads(1); }

}  // namespace rnnserve::bench
