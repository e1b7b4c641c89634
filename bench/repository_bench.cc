// repository_bench: what the model lifecycle (issue 14) costs a running server.
//
//   BM_RescanUnchanged/M      one ModelRegistry::Reload() of a repository of M models whose
//                             files have not changed since they were read (settled): the cost
//                             of one --repository_poll_interval tick, paid by the reload thread.
//   BM_RolloverNewVersion/H   a new version of an LSTM(H, H, 2) appears (renamed into place) and
//                             one Reload() reads it from a consistent snapshot, validates it,
//                             builds it and swaps it in: the delay from the rename to new
//                             sessions getting it, beyond the poll interval.
//   BM_LookupLatest           ModelRegistry::Lookup(name, 0): the per-start and per-Forward cost
//                             of versions (a reader lock and a shared_ptr copy).
//
//   build/bench/repository_bench [--benchmark_filter=...]
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "benchmark/benchmark.h"
#include "core/engine/model_dir.h"
#include "core/engine/rnn_parameters.h"
#include "core/serving/model_registry.h"

namespace rnnserve {
namespace {

namespace fs = std::filesystem;

RnnConfig Lstm(int64_t hidden) {
  RnnConfig config;
  config.module = RnnModule::kLstm;
  config.input_size = hidden;
  config.hidden_size = hidden;
  config.num_layers = 2;
  return config;
}

// A fresh folder under the system's temp dir, removed with the object.
class Scratch {
 public:
  Scratch() {
    std::string pattern = (fs::temp_directory_path() / "rnnserve-bench-XXXXXX").string();
    path_ = mkdtemp(pattern.data()) != nullptr ? pattern : "";
  }
  ~Scratch() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::unique_ptr<ModelRegistry> Load(const std::string& repo, benchmark::State& state) {
  absl::StatusOr<std::unique_ptr<ModelRegistry>> registry = ModelRegistry::LoadRepository(repo);
  if (!registry.ok()) {
    state.SkipWithError(std::string(registry.status().message()).c_str());
    return nullptr;
  }
  return *std::move(registry);
}

void BM_RescanUnchanged(benchmark::State& state) {
  Scratch repo;
  const RnnConfig config = Lstm(16);
  for (int64_t m = 0; m < state.range(0); ++m) {
    if (!SaveModelDir(absl::StrCat(repo.path(), "/m", m, "/1"), config,
                      RandomParameters(config, m + 1))
             .ok()) {
      state.SkipWithError("could not write the repository");
      return;
    }
  }
  std::unique_ptr<ModelRegistry> registry = Load(repo.path(), state);
  if (registry == nullptr) return;
  // A file's stamp is trusted once it has been quiet for the settle time (100 ms, see
  // model_registry.h); until then every rescan reads it again. The steady state is measured:
  // past the settle time, one rescan records the stamps as settled.
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  if (!registry->Reload().ok()) {
    state.SkipWithError("rescan failed");
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(registry->Reload());
  }
  state.counters["models"] = static_cast<double>(state.range(0));
}
BENCHMARK(BM_RescanUnchanged)->Arg(1)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond);

void BM_RolloverNewVersion(benchmark::State& state) {
  Scratch repo, staging;
  const RnnConfig config = Lstm(state.range(0));
  const std::string model = repo.path() + "/m";
  if (!SaveModelDir(model + "/1", config, RandomParameters(config, 1)).ok() ||
      !SaveModelDir(staging.path() + "/v", config, RandomParameters(config, 2)).ok()) {
    state.SkipWithError("could not write the repository");
    return;
  }
  std::unique_ptr<ModelRegistry> registry = Load(repo.path(), state);
  if (registry == nullptr) return;
  int64_t version = 1;
  for (auto _ : state) {
    state.PauseTiming();
    ++version;
    // As the docs advise: a copy under a hidden name, renamed into place.
    const std::string hidden = absl::StrCat(model, "/.tmp-", version);
    fs::copy(staging.path() + "/v", hidden, fs::copy_options::recursive);
    fs::rename(hidden, absl::StrCat(model, "/", version));
    state.ResumeTiming();
    benchmark::DoNotOptimize(registry->Reload());
    state.PauseTiming();
    if (registry->Find("m") == nullptr || registry->Find("m")->version != version) {
      state.SkipWithError("the new version did not load");
      break;
    }
    fs::remove_all(absl::StrCat(model, "/", version - 1));
    state.ResumeTiming();
  }
  state.counters["weights_MB"] =
      static_cast<double>(fs::file_size(staging.path() + "/v/model.safetensors")) / 1e6;
}
BENCHMARK(BM_RolloverNewVersion)->Arg(64)->Arg(256)->Arg(512)->Unit(benchmark::kMillisecond);

void BM_LookupLatest(benchmark::State& state) {
  Scratch repo;
  const RnnConfig config = Lstm(16);
  for (int64_t v = 1; v <= 3; ++v) {
    if (!SaveModelDir(absl::StrCat(repo.path(), "/m/", v), config, RandomParameters(config, v))
             .ok()) {
      state.SkipWithError("could not write the repository");
      return;
    }
  }
  std::unique_ptr<ModelRegistry> registry = Load(repo.path(), state);
  if (registry == nullptr) return;
  for (auto _ : state) {
    benchmark::DoNotOptimize(registry->Lookup("m", 0));
  }
}
BENCHMARK(BM_LookupLatest)->ThreadRange(1, 2);

}  // namespace
}  // namespace rnnserve

int main(int argc, char** argv) {
  // The registry logs every load and unload; the benchmark makes thousands.
  rnnserve::SetMinLogLevel(rnnserve::LogLevel::kWarning);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
