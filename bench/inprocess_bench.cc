// inprocess_bench: the in-process ceilings the served throughput of BENCHMARKS.md "## Server" is
// compared with, on a model folder of a model repository, N sessions of batch 1 advancing
// chunks of --chunk_steps steps.
//
//   --mode=engine  RnnModel::StepBatch alone: the sessions are split into near-equal batches
//                  of at most --max_batch (the server's --max_batch), and into at least
//                  --threads batches when there are enough sessions, so that every one of
//                  --threads threads (the server's compute threads) has work; each thread
//                  advances its batches over and over, state carried in place. No queues, no
//                  copies: the engine's best with the server's threads and batch cap.
//   --mode=core    ServingCore in-process, driven as the server's RPC layer drives it, minus
//                  gRPC: N sessions, each with one chunk in flight (SubmitChunk; the callback
//                  submits the next chunk; h_n in every result unless --omit_state, as the
//                  bench client). Adds the scheduler, session table, copies and callbacks.
//
// Prints one JSON object: {"mode", "model", "sessions", "threads", "max_batch", "chunk_steps",
// "seconds", "chunks", "timesteps_per_s", "chunks_per_s", "cpu_s", "mean_batch"}.
//
//   inprocess_bench --repo DIR --model NAME --sessions 1024 [--mode engine|core]
//                   [--threads 2] [--max_batch 256] [--chunk_steps 10] [--duration 2]
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/tensor.h"
#include "bench/session_chunks.h"
#include "core/engine/rnn_model.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_core.h"

namespace rnnserve {
namespace {

struct Args {
  std::string repo;
  std::string model;
  std::string mode = "engine";
  int64_t sessions = 64;
  int threads = 0;  // 0: one per core, as the server
  int max_batch = 256;
  int64_t chunk_steps = 10;
  double duration = 2;
  double warmup = 0.3;
  bool omit_state = false;
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "inprocess_bench: %s\n", message.c_str());
  std::exit(2);
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (arg != "--omit_state") {
      if (i + 1 >= argc) Die(arg + " needs a value");
      value = argv[++i];
    }
    if (arg == "--repo") a.repo = value;
    else if (arg == "--model") a.model = value;
    else if (arg == "--mode") a.mode = value;
    else if (arg == "--sessions") a.sessions = std::atoll(value.c_str());
    else if (arg == "--threads") a.threads = std::atoi(value.c_str());
    else if (arg == "--max_batch") a.max_batch = std::atoi(value.c_str());
    else if (arg == "--chunk_steps") a.chunk_steps = std::atoll(value.c_str());
    else if (arg == "--duration") a.duration = std::atof(value.c_str());
    else if (arg == "--warmup") a.warmup = std::atof(value.c_str());
    else if (arg == "--omit_state") a.omit_state = value.empty() || value == "true" || value == "1";
    else Die("unknown flag " + arg);
  }
  if (a.repo.empty() || a.model.empty()) Die("--repo and --model are required");
  if (a.sessions < 1 || a.max_batch < 1 || a.chunk_steps < 1 || !(a.duration > 0)) {
    Die("--sessions, --max_batch, --chunk_steps and --duration must be positive");
  }
  if (a.mode != "engine" && a.mode != "core") Die("--mode must be engine or core");
  if (a.threads <= 0) a.threads = std::max(1u, std::thread::hardware_concurrency());
  return a;
}

double ProcessCpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

std::vector<float> RandomValues(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(count);
  for (float& v : values) v = normal(rng);
  return values;
}

struct Result {
  double seconds = 0;
  int64_t chunks = 0;
  double cpu_s = 0;
  int threads_used = 0;
  double mean_batch = 0;  // chunks per StepBatch call
};

// Counts engine calls and the chunks they advanced (the server's rnnserve_batch_size).
class BatchCounter : public ServingObserver {
 public:
  void BatchRun(const std::string& model, int64_t chunks) override {
    calls_.fetch_add(1, std::memory_order_relaxed);
    chunks_.fetch_add(chunks, std::memory_order_relaxed);
  }
  void Reset() { calls_ = 0, chunks_ = 0; }
  double mean() const { return calls_ > 0 ? static_cast<double>(chunks_) / calls_ : 0; }

 private:
  std::atomic<int64_t> calls_{0}, chunks_{0};
};

Result RunEngine(const RnnModel& model, const Args& a) {
  const RnnConfig& config = model.config();
  if (config.batch_first || config.bidirectional) Die("engine mode: time-major unidirectional only");
  const int64_t n = a.sessions;
  const bench::SessionChunks sessions(model, n, a.chunk_steps,
                                      RandomValues(n * a.chunk_steps * config.input_size, 7));
  const absl::Span<const StreamChunk> chunks = sessions.chunks();
  // Near-equal batches of at most max_batch, at least one per thread (sessions allowing),
  // dealt round robin to the threads; batch b is sessions [bounds[b], bounds[b + 1]).
  const int64_t num_batches =
      std::max<int64_t>((n + a.max_batch - 1) / a.max_batch, std::min<int64_t>(a.threads, n));
  std::vector<int64_t> bounds(num_batches + 1);
  for (int64_t b = 0; b <= num_batches; ++b) bounds[b] = b * n / num_batches;
  const int threads = static_cast<int>(std::min<int64_t>(a.threads, num_batches));
  // Each thread times its own counted batches, from the start of the first one begun after
  // `measuring` to the end of the last one, so no batch is counted without its time.
  std::atomic<bool> measuring{false}, stop{false};
  std::vector<int64_t> counted(threads, 0);
  std::vector<double> busy_s(threads, 0);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      Workspace workspace;
      int64_t done = 0;
      std::chrono::steady_clock::time_point first;
      for (int64_t b = t; !stop.load(std::memory_order_relaxed); b += threads) {
        if (b >= num_batches) b = t;
        const bool counting = measuring.load(std::memory_order_relaxed);
        if (counting && done == 0) first = std::chrono::steady_clock::now();
        const int64_t begin = bounds[b];
        const int64_t count = bounds[b + 1] - begin;
        absl::Status status =
            model.StepBatch(chunks.subspan(begin, count), &workspace);
        if (!status.ok()) Die(status.ToString());
        if (counting) done += count;
      }
      counted[t] = done;
      if (done > 0) {
        busy_s[t] =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count();
      }
    });
  }
  absl::SleepFor(absl::Seconds(a.warmup));
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  measuring = true;
  absl::SleepFor(absl::Seconds(a.duration));
  stop = true;
  for (std::thread& w : workers) w.join();
  const auto t1 = std::chrono::steady_clock::now();
  Result r;
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  r.cpu_s = ProcessCpuSeconds() - cpu0;
  // Sum of the threads' rates, expressed as chunks over the whole window.
  double chunks_per_s = 0;
  for (int t = 0; t < threads; ++t) {
    if (busy_s[t] > 0) chunks_per_s += static_cast<double>(counted[t]) / busy_s[t];
  }
  r.chunks = static_cast<int64_t>(chunks_per_s * r.seconds + 0.5);
  r.threads_used = threads;
  r.mean_batch = static_cast<double>(n) / static_cast<double>(num_batches);
  return r;
}

// N sessions over ServingCore, each keeping one chunk in flight.
class CoreDriver {
 public:
  CoreDriver(ServingCore* core, const Args& a, int64_t input_size)
      : core_(core), a_(a),
        input_(TensorBytes::FromTensor(Tensor({a.chunk_steps, 1, input_size},
                                              RandomValues(a.chunk_steps * input_size, 7)))),
        ids_(a.sessions) {}

  void Start() {
    for (int64_t i = 0; i < a_.sessions; ++i) Submit(i, /*start=*/true);
  }
  void BeginMeasuring() { chunks_ = 0; }
  void Stop() { stop_ = true; }
  int64_t chunks() const { return chunks_.load(); }
  bool WaitQuiet(absl::Duration timeout) { return quiet_.WaitForNotificationWithTimeout(timeout); }
  int64_t errors() const { return errors_.load(); }

 private:
  void Submit(int64_t i, bool start) {
    ChunkRequest request;
    if (start) {
      request.start = true;
      request.model = a_.model;
    } else {
      request.session_id = ids_[i];
    }
    const bool last = stop_.load(std::memory_order_relaxed);
    request.end = last;
    request.input = input_;  // a copy per chunk, as receiving a request makes one
    request.omit_state = a_.omit_state;
    in_flight_.fetch_add(1);
    core_->SubmitChunk(std::move(request), [this, i](ChunkResult result) {
      if (!result.status.ok()) {
        if (errors_.fetch_add(1) < 3) {
          std::fprintf(stderr, "inprocess_bench: %s\n", result.status.ToString().c_str());
        }
      } else {
        if (ids_[i].empty()) ids_[i] = result.session_id;
        chunks_.fetch_add(1, std::memory_order_relaxed);
        if (!result.ended) Submit(i, false);
      }
      if (in_flight_.fetch_sub(1) == 1 && stop_.load()) quiet_.Notify();
    });
  }

  ServingCore* const core_;
  const Args& a_;
  const TensorBytes input_;
  std::vector<std::string> ids_;  // each touched only by its session's (serialized) callbacks
  std::atomic<int64_t> chunks_{0}, errors_{0}, in_flight_{0};
  std::atomic<bool> stop_{false};
  absl::Notification quiet_;
};

Result RunCore(std::unique_ptr<ModelRegistry> registry, const Args& a) {
  const int64_t input_size = registry->Find(a.model)->model->config().input_size;
  ServingOptions options;
  options.threads = a.threads;
  options.max_batch = a.max_batch;
  options.max_sessions = std::max<int64_t>(options.max_sessions, a.sessions);
  BatchCounter batches;
  ServingCore core(std::move(registry), options, &batches);
  CoreDriver driver(&core, a, input_size);
  driver.Start();
  absl::SleepFor(absl::Seconds(a.warmup));
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  driver.BeginMeasuring();
  batches.Reset();
  absl::SleepFor(absl::Seconds(a.duration));
  Result r;
  r.chunks = driver.chunks();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.cpu_s = ProcessCpuSeconds() - cpu0;
  r.threads_used = a.threads;
  r.mean_batch = batches.mean();
  driver.Stop();  // every session's next chunk ends it
  if (!driver.WaitQuiet(absl::Seconds(60))) Die("sessions did not end within 60 s");
  if (driver.errors() > 0) Die("chunks failed");
  return r;
}

}  // namespace
}  // namespace rnnserve

int main(int argc, char** argv) {
  using namespace rnnserve;
  const Args a = ParseArgs(argc, argv);
  absl::StatusOr<std::unique_ptr<ModelRegistry>> registry = ModelRegistry::LoadRepository(a.repo);
  if (!registry.ok()) Die(registry.status().ToString());
  const ServedModel* served = (*registry)->Find(a.model).get();
  if (served == nullptr) Die("no model '" + a.model + "' in " + a.repo);
  Result r = a.mode == "engine" ? RunEngine(*served->model, a) : RunCore(std::move(*registry), a);
  const double chunks_per_s = r.chunks / r.seconds;
  std::printf(
      "{\"mode\": \"%s\", \"model\": \"%s\", \"sessions\": %lld, \"threads\": %d, "
      "\"max_batch\": %d, \"chunk_steps\": %lld, \"seconds\": %.3f, \"chunks\": %lld, "
      "\"timesteps_per_s\": %.1f, \"chunks_per_s\": %.1f, \"cpu_s\": %.3f, "
      "\"mean_batch\": %.1f}\n",
      a.mode.c_str(), a.model.c_str(), static_cast<long long>(a.sessions), r.threads_used,
      a.max_batch, static_cast<long long>(a.chunk_steps), r.seconds,
      static_cast<long long>(r.chunks), chunks_per_s * static_cast<double>(a.chunk_steps),
      chunks_per_s, r.cpu_s, r.mean_batch);
  return 0;
}
