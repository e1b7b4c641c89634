// ModelRegistry: the models a server serves, by name and version, and the state of every
// version its repository holds (READY, UNAVAILABLE, FAILED with the reason).
//
// Repository layout (docs/model-format.md, "Versions"): repository/NAME/VERSION/ (a positive
// integer folder holding config.json + model.safetensors), or an unversioned repository/NAME/
// with config.json at its top, which is version 1. repository/NAME/serving.json (optional)
// holds the model's serving settings and version policy. Hidden folders, lost+found and
// folders with no model are skipped with one log line each; a version that fails to load is
// recorded with its reason while the others serve (ModelLoadOptions::strict: the first
// failure fails the whole load instead, as before versions).
//
// Reload() rescans the repository: new versions load, changed ones are re-read, versions the
// policy drops or that are deleted become UNAVAILABLE. Every version is read from a
// consistent snapshot of its files (stat, read, stat again and re-read; changed: retried,
// then left as it was), validated and built before it is swapped in under the lock, so a
// folder rewritten while being read never serves a mix.
//
// Thread-safe: mu_ guards the table of versions; lookups hand out shared_ptrs, so a version
// dropped from the table stays alive until its last holder (a session pinned to it, a Forward
// call in flight) lets go. Loading (file reads, model builds) runs outside mu_; load_mu_
// serializes rescans so two never race on one folder.
#ifndef RNNSERVE_CORE_SERVING_MODEL_REGISTRY_H_
#define RNNSERVE_CORE_SERVING_MODEL_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/model_dir.h"
#include "core/engine/rnn_model.h"
#include "core/serving/model_settings.h"

namespace rnnserve {

struct ServedModel {
  std::string name;
  int64_t version = 1;
  std::unique_ptr<RnnModel> model;
  int64_t parameter_count = 0;
  // Its own serving limits (serving.json); defaults: the server's.
  ModelServingSettings settings;
};

// READY: serves new sessions and calls. UNAVAILABLE: unloaded (by the policy, deletion or
// UnloadModel); refuses new work, its live sessions finish on it. FAILED: did not load.
enum class ModelState { kReady, kUnavailable, kFailed };
const char* ModelStateName(ModelState state);  // "READY", "UNAVAILABLE", "FAILED"

// One row of the repository index.
struct ModelVersionStatus {
  std::string name;
  int64_t version = 0;  // 0: a failure of the model as a whole (its folder or serving.json)
  ModelState state = ModelState::kFailed;
  std::string reason;  // why FAILED or UNAVAILABLE; for READY, a failed reload of it, if any
  // Holders besides the registry: sessions pinned to it and calls in flight.
  int64_t live_sessions = 0;
};

// The seed notebook's RNN(100, 10, num_layers=2), seeded init: served as "demo" when no model
// repository is given.
inline constexpr char kDemoModelName[] = "demo";
inline constexpr uint64_t kDemoModelSeed = 20240601;
RnnConfig DemoModelConfig();

// How a model repository is loaded.
struct ModelLoadOptions {
  ModelDirOptions model_dir;  // per-model checks (non-finite weights refused by default)
  // The kernels every model runs: "auto" (the best this CPU has: avx512, else avx2, else the
  // build's baseline) or one of them by name (kernels/kernel_isa.h), e.g. to test a path.
  std::string kernel_isa = "auto";
  // --strict_model_repository: any folder that is not a loadable model (hidden ones and
  // lost+found aside) fails LoadRepository, as before versions. Reload() never fails on one.
  bool strict = false;
};

class ModelRegistry {
 public:
  // Models added later run `isa`'s kernels (one of SupportedKernelIsas()).
  explicit ModelRegistry(KernelIsa isa = BestKernelIsa()) : kernel_isa_(isa) {}

  // Loads the repository `dir` (layout above). Fails only when `dir` is not a readable
  // directory, or in strict mode on the first folder that does not load (errors name the
  // folder/file and the problem; never an exception).
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> LoadRepository(
      const std::string& dir, const ModelLoadOptions& options = {});
  // A registry with only the built-in demo model.
  static std::unique_ptr<ModelRegistry> WithDemoModel(KernelIsa isa = BestKernelIsa());

  absl::Status Add(std::string name, const RnnConfig& config, const ParameterMap& parameters,
                   int64_t version = 1);
  // A whole pipeline (input layer, core, head), parameters under their full names.
  absl::Status Add(std::string name, const PipelineConfig& config,
                   const ParameterMap& parameters, int64_t version = 1);

  // The READY `version` of `name` (0: the latest READY one); nullptr when there is none.
  std::shared_ptr<const ServedModel> Find(const std::string& name, int64_t version = 0) const;
  // As Find, with the error a client gets: NOT_FOUND for an unknown model or version, naming
  // what is served; FAILED_PRECONDITION for a version that is unloaded or failed, with why.
  absl::StatusOr<std::shared_ptr<const ServedModel>> Lookup(const std::string& name,
                                                            int64_t version = 0) const;
  // NOT_FOUND for `name`, naming the models that are served.
  absl::Status UnknownModelError(const std::string& name) const;
  // The latest READY version of each model, sorted by name.
  std::vector<std::shared_ptr<const ServedModel>> All() const;
  // The READY versions of `name`, ascending.
  std::vector<int64_t> ReadyVersions(const std::string& name) const;
  // Every version the registry knows, sorted by (name, version), with model-level failures.
  std::vector<ModelVersionStatus> Index() const;
  // Every model name the repository holds (READY or not), sorted.
  std::vector<std::string> Names() const;
  // Whether `name` is one of Names(): a model the repository holds, in any state.
  bool Holds(const std::string& name) const;
  bool empty() const;
  KernelIsa kernel_isa() const { return kernel_isa_; }
  const std::string& repository() const { return repository_; }

  // Rescans the repository (no-op without one). Returns an error only when the repository
  // itself cannot be listed; per-model failures are recorded (Index) and counted.
  absl::Status Reload();
  // Clears UnloadModel's marks on `name` and rescans it. NOT_FOUND when the repository has no
  // such model folder; the model's failure when no version of it is READY afterwards.
  absl::Status LoadModel(const std::string& name);
  // Makes `version` of `name` (0: every version) UNAVAILABLE until LoadModel(name): no new
  // sessions or calls; live sessions finish on it. NOT_FOUND when nothing READY matches.
  absl::Status UnloadModel(const std::string& name, int64_t version);

  // Called (outside the lock) with the model name each time a version or a model fails to
  // load, for rnnserve_model_load_failures_total. Set before the registry is shared.
  void SetLoadFailureHook(std::function<void(const std::string& model)> hook) {
    load_failure_hook_ = std::move(hook);
  }

 private:
  // What a file looked like: a rewrite changes at least one of these.
  struct FileStamp {
    bool exists = false;
    int64_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    uint64_t inode = 0;
    uint64_t device = 0;
    bool operator==(const FileStamp& o) const {
      return exists == o.exists && size == o.size && mtime_ns == o.mtime_ns &&
             ctime_ns == o.ctime_ns && inode == o.inode && device == o.device;
    }
    bool operator!=(const FileStamp& o) const { return !(*this == o); }
  };
  struct VersionStamp {
    FileStamp config, weights, serving;
    bool operator==(const VersionStamp& o) const {
      return config == o.config && weights == o.weights && serving == o.serving;
    }
  };
  struct VersionEntry {
    ModelState state = ModelState::kFailed;
    std::string reason;
    std::shared_ptr<const ServedModel> served;  // READY
    std::weak_ptr<const ServedModel> draining;  // UNAVAILABLE: held by its sessions only
    VersionStamp stamp;  // of the files `served` (or the failure) came from
    uint64_t content = 0;  // checksum of the bytes `served` was built from
    // The stamp was taken once the files had been quiet for kSettle: a file's times have a
    // clock tick's granularity, so a rewrite within a tick of the read may keep the stamp.
    // Until settled, every rescan reads the files again.
    bool settled = false;
  };
  struct ModelEntry {
    std::string failure;  // the model as a whole (serving.json, no versions); "" if none
    std::map<int64_t, VersionEntry> versions;
    std::set<int64_t> unloaded;  // UnloadModel's marks, until LoadModel
    bool unload_all = false;
  };
  // One version's folder as found by a scan.
  struct FoundVersion {
    int64_t version = 0;
    std::string dir;
  };
  // The READY versions of `entry`, ascending.
  static std::vector<int64_t> ReadyVersionsOf(const ModelEntry& entry);

  static FileStamp Stat(const std::string& path);
  // Reads dir's files as one consistent snapshot and builds the model; sets *stamp and
  // *content (a checksum of the bytes). nullptr (OK) when the bytes' checksum is `unchanged`:
  // nothing is built, the version keeps the object its sessions hold.
  absl::StatusOr<std::shared_ptr<const ServedModel>> LoadVersion(
      const std::string& name, int64_t version, const std::string& dir,
      const ModelServingSettings& settings, std::optional<uint64_t> unchanged,
      VersionStamp* stamp, uint64_t* content) const;
  // Rescans one model folder; records what happened. Returns the model's failures (for the
  // hook and strict mode). Requires load_mu_.
  // `strict`: a folder with no version is tried as version 1 (and fails naming config.json).
  std::vector<absl::Status> RescanModel(const std::string& name, const std::string& dir,
                                        bool strict) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  // Marks every READY version of `name` not in `keep` UNAVAILABLE with `reason`.
  void RetireLocked(ModelEntry& entry, const std::set<int64_t>& keep, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status UnknownModelErrorLocked(const std::string& name) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::shared_ptr<const ServedModel> FindLocked(const std::string& name, int64_t version) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status ScanRepository(bool initial) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  void ReportFailures(const std::string& name, const std::vector<absl::Status>& failures) const;

  const KernelIsa kernel_isa_;
  // Set by LoadRepository before the registry is shared; immutable afterwards.
  std::string repository_;
  ModelLoadOptions options_;
  std::function<void(const std::string&)> load_failure_hook_;

  // Serializes rescans (Reload, LoadModel); taken before mu_, never under it.
  absl::Mutex load_mu_;
  // Names already logged as skipped (hidden, lost+found, no model), so a poll logs them once.
  std::set<std::string> skipped_logged_ ABSL_GUARDED_BY(load_mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, ModelEntry> models_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_MODEL_REGISTRY_H_
