// ModelRegistry's side that reads the repository (model_registry.h has the layout): scans of
// the model folders, consistent snapshots of a version's files, the version policy, and
// LoadModel. The table of versions and the lookups are in model_registry.cc.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/checksum.h"
#include "base/file_io.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "core/engine/model_dir.h"
#include "core/serving/client_text.h"
#include "core/serving/model_registry.h"

namespace rnnserve {
namespace {

namespace fs = std::filesystem;

constexpr char kConfigFile[] = "config.json";
constexpr char kWeightsFile[] = "model.safetensors";
constexpr char kServingFile[] = "serving.json";
// Reads of a version whose files keep changing under it before it is left as it was (the
// next rescan tries again).
constexpr int kSnapshotAttempts = 5;
// How long files must have been left alone before their stamp is trusted to show a rewrite
// (file times advance by clock ticks of up to 10 ms).
constexpr absl::Duration kSettle = absl::Milliseconds(100);

bool IsHidden(const std::string& name) { return !name.empty() && name[0] == '.'; }

// A version folder's name: a positive integer written canonically ("7", not "07").
bool ParseVersion(const std::string& name, int64_t* version) {
  return absl::SimpleAtoi(name, version) && *version > 0 && absl::StrCat(*version) == name;
}

bool Exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::LoadRepository(
    const std::string& dir, const ModelLoadOptions& options) {
  // Only the std::error_code overloads: a symlink loop, a dangling link or an unreadable folder
  // must give an error naming the path, never an uncaught filesystem_error.
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model repository '", dir,
                                            "' is not a readable directory",
                                            ec ? absl::StrCat(": ", ec.message()) : ""));
  }
  ASSIGN_OR_RETURN(const KernelIsa isa, ChooseKernelIsa(options.kernel_isa));
  auto registry = std::make_unique<ModelRegistry>(isa);
  registry->repository_ = dir;
  registry->options_ = options;
  absl::MutexLock lock(&registry->load_mu_);
  RETURN_IF_ERROR(registry->ScanRepository(/*initial=*/true));
  return registry;
}

absl::Status ModelRegistry::Reload() {
  if (repository_.empty()) return absl::OkStatus();
  absl::MutexLock lock(&load_mu_);
  return ScanRepository(/*initial=*/false);
}

absl::Status ModelRegistry::ScanRepository(bool initial) {
  const bool strict = initial && options_.strict;
  std::error_code ec;
  std::vector<fs::path> folders;
  fs::directory_iterator it(repository_, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path& path = it->path();
    const std::string name = path.filename().string();
    if (IsHidden(name) || name == "lost+found") {
      if (skipped_logged_.insert(name).second) {
        LogInfo("model repository: skipping '", path.string(), "' (",
                IsHidden(name) ? "hidden" : "lost+found", ", never a model)");
      }
      continue;
    }
    std::error_code entry_error;
    const fs::file_status status = fs::status(path, entry_error);  // follows links
    if (entry_error) {
      // status() of a dangling symlink is "not found"; say so rather than skip it silently.
      const absl::Status error =
          entry_error == std::errc::no_such_file_or_directory
              ? absl::NotFoundError(absl::StrCat("model repository entry '", path.string(),
                                                 "' is a symlink to nothing"))
              : absl::FailedPreconditionError(absl::StrCat(
                    "model repository entry '", path.string(), "': ", entry_error.message()));
      if (strict) return error;
      if (skipped_logged_.insert(name).second) {
        LogWarning("model repository: skipping: ", error.message());
      }
      continue;
    }
    if (fs::is_directory(status)) folders.push_back(path);
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("listing model repository '", repository_, "': ", ec.message()));
  }
  std::sort(folders.begin(), folders.end());  // deterministic: the first bad model is named
  std::set<std::string> seen;
  for (const fs::path& folder : folders) {
    const std::string name = folder.filename().string();
    bool has_model = Exists(folder / kConfigFile);
    for (fs::directory_iterator v(folder, ec); !has_model && !ec && v != fs::directory_iterator();
         v.increment(ec)) {
      int64_t version = 0;
      has_model = ParseVersion(v->path().filename().string(), &version) &&
                  Exists(v->path() / kConfigFile);
    }
    ec.clear();
    // Strict: an empty folder fails as the model it claims to be (its missing config.json).
    if (!has_model && !strict) {
      bool known = false;
      {
        absl::MutexLock lock(&mu_);
        known = models_.count(name) > 0;
      }
      if (!known) {
        if (skipped_logged_.insert(name).second) {
          LogInfo("model repository: skipping '", folder.string(), "' (no ", kConfigFile,
                  " in it or in a version folder)");
        }
        continue;
      }
    }
    skipped_logged_.erase(name);
    seen.insert(name);
    const std::vector<absl::Status> failures = RescanModel(name, folder.string(), strict);
    if (strict && !failures.empty()) return failures.front();
    ReportFailures(name, failures);
  }
  // Model folders that are gone: their versions are unloaded (sessions finish on them).
  absl::MutexLock lock(&mu_);
  for (auto& [name, entry] : models_) {
    if (seen.count(name)) continue;
    RetireLocked(entry, {}, "its folder was removed from the repository");
    entry.failure.clear();
    for (auto v = entry.versions.begin(); v != entry.versions.end();) {
      v = v->second.state == ModelState::kFailed ? entry.versions.erase(v) : std::next(v);
    }
  }
  return absl::OkStatus();
}

void ModelRegistry::ReportFailures(const std::string& name,
                                   const std::vector<absl::Status>& failures) const {
  for (const absl::Status& failure : failures) {
    LogError("model repository: ", failure.message());
    if (load_failure_hook_) load_failure_hook_(name);
  }
}

ModelRegistry::FileStamp ModelRegistry::Stat(const std::string& path) {
  FileStamp stamp;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return stamp;
  stamp.exists = true;
  stamp.size = st.st_size;
  stamp.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  stamp.ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  stamp.inode = st.st_ino;
  stamp.device = st.st_dev;
  return stamp;
}

absl::StatusOr<std::shared_ptr<const ServedModel>> ModelRegistry::LoadVersion(
    const std::string& name, int64_t version, const std::string& dir,
    const ModelServingSettings& settings, std::optional<uint64_t> unchanged, VersionStamp* stamp,
    uint64_t* content) const {
  const std::string config_path = (fs::path(dir) / kConfigFile).string();
  const std::string weights_path = (fs::path(dir) / kWeightsFile).string();
  const std::string where = absl::StrCat("model '", name, "' version ", version, " in ", dir);
  for (int attempt = 0; attempt < kSnapshotAttempts; ++attempt) {
    // A consistent snapshot: both files read whole twice with the same bytes, and neither's
    // stamp changed across the reads. A writer that is still at work changes one of them.
    const FileStamp config_before = Stat(config_path), weights_before = Stat(weights_path);
    absl::StatusOr<std::string> config = ReadFile(config_path);
    absl::StatusOr<std::string> weights = ReadFile(weights_path);
    absl::StatusOr<std::string> config_again = ReadFile(config_path);
    absl::StatusOr<std::string> weights_again = ReadFile(weights_path);
    if (config_before != Stat(config_path) || weights_before != Stat(weights_path)) continue;
    if (config.ok() != config_again.ok() || weights.ok() != weights_again.ok()) continue;
    if (config.ok() && *config != *config_again) continue;
    if (weights.ok() && *weights != *weights_again) continue;
    stamp->config = config_before;
    stamp->weights = weights_before;
    if (!config.ok()) return PrefixStatus(where, config.status());
    *content = Checksum64(weights.ok() ? absl::string_view(*weights) : absl::string_view(),
                          Checksum64(*config));
    if (weights.ok() && unchanged == *content) return std::shared_ptr<const ServedModel>();
    // A bad config is named before a missing weights file.
    absl::StatusOr<ModelFiles> files =
        ParseModelDir(dir, *config, weights.ok() ? absl::string_view(*weights) : absl::string_view(), options_.model_dir);
    if (!weights.ok() && files.ok()) return PrefixStatus(where, weights.status());
    if (!files.ok()) {
      if (!weights.ok() && absl::StrContains(files.status().message(), kWeightsFile)) {
        return PrefixStatus(where, weights.status());
      }
      return PrefixStatus(where, files.status());
    }
    absl::StatusOr<std::unique_ptr<RnnModel>> model =
        RnnModel::Create(files->config, files->parameters, kernel_isa_);
    if (!model.ok()) return PrefixStatus(where, model.status());
    auto served = std::make_shared<ServedModel>();
    served->name = name;
    served->version = version;
    served->model = *std::move(model);
    served->settings = settings;
    for (const auto& [param, tensor] : files->parameters) {
      served->parameter_count += tensor.num_elements();
    }
    return std::shared_ptr<const ServedModel>(std::move(served));
  }
  return absl::AbortedError(absl::StrCat(where, ": its files kept changing while being read (",
                                         kSnapshotAttempts, " tries); left as it was"));
}

std::vector<absl::Status> ModelRegistry::RescanModel(const std::string& name,
                                                     const std::string& dir, bool strict) {
  std::vector<absl::Status> failures;
  const FileStamp serving_stamp = Stat((fs::path(dir) / kServingFile).string());
  absl::StatusOr<ServingFile> serving = ReadServingFile(dir);
  if (!serving.ok()) {
    // The model's versions keep serving as they were; the failure is reported.
    const absl::Status failure =
        PrefixStatus(absl::StrCat("model '", name, "' in ", dir), serving.status());
    absl::MutexLock lock(&mu_);
    ModelEntry& entry = models_[name];
    if (entry.failure != failure.message()) failures.push_back(failure);
    entry.failure = std::string(failure.message());
    return failures;
  }
  // The versions on disk.
  std::map<int64_t, std::string> on_disk;
  if (Exists(fs::path(dir) / kConfigFile)) {
    on_disk[1] = dir;
  } else {
    std::error_code ec;
    for (fs::directory_iterator v(dir, ec); !ec && v != fs::directory_iterator();
         v.increment(ec)) {
      int64_t version = 0;
      // A version folder without config.json yet is one being copied in: not a version.
      if (ParseVersion(v->path().filename().string(), &version) &&
          Exists(v->path() / kConfigFile)) {
        on_disk[version] = v->path().string();
      }
    }
  }
  if (strict && on_disk.empty()) on_disk[1] = dir;  // fails naming config.json
  // The version policy picks among them.
  const VersionPolicy& policy = serving->version_policy;
  std::set<int64_t> wanted;
  switch (policy.kind) {
    case VersionPolicy::Kind::kAll:
      for (const auto& [version, path] : on_disk) wanted.insert(version);
      break;
    case VersionPolicy::Kind::kSpecific:
      for (int64_t version : policy.versions) {
        if (on_disk.count(version)) wanted.insert(version);
      }
      break;
    case VersionPolicy::Kind::kLatest:
      for (auto v = on_disk.rbegin();
           v != on_disk.rend() && static_cast<int64_t>(wanted.size()) < policy.latest; ++v) {
        wanted.insert(v->first);
      }
      break;
  }
  std::set<int64_t> unloaded;
  {
    absl::MutexLock lock(&mu_);
    ModelEntry& entry = models_[name];
    entry.failure.clear();
    for (auto v = wanted.begin(); v != wanted.end();) {
      if (entry.unload_all || entry.unloaded.count(*v)) {
        unloaded.insert(*v);
        v = wanted.erase(v);
      } else {
        ++v;
      }
    }
  }
  for (int64_t version : wanted) {
    const std::string& version_dir = on_disk[version];
    VersionStamp now;
    now.config = Stat((fs::path(version_dir) / kConfigFile).string());
    now.weights = Stat((fs::path(version_dir) / kWeightsFile).string());
    now.serving = serving_stamp;
    std::shared_ptr<const ServedModel> revived;
    std::optional<uint64_t> unchanged;  // the bytes the READY version was built from
    {
      absl::MutexLock lock(&mu_);
      ModelEntry& entry = models_[name];
      auto found = entry.versions.find(version);
      if (found != entry.versions.end() && found->second.stamp == now &&
          found->second.settled) {
        VersionEntry& v = found->second;
        if (v.state != ModelState::kUnavailable) continue;  // unchanged since it was read
        revived = v.draining.lock();  // LoadModel after UnloadModel, files unchanged
        if (revived != nullptr) {
          v.served = std::move(revived);
          v.draining.reset();
          v.state = ModelState::kReady;
          v.reason.clear();
          continue;
        }
      }
      if (found != entry.versions.end() && found->second.state == ModelState::kReady &&
          found->second.served->settings == serving->settings) {
        unchanged = found->second.content;
      }
    }
    VersionStamp read = now;
    uint64_t content = 0;
    absl::StatusOr<std::shared_ptr<const ServedModel>> loaded = LoadVersion(
        name, version, version_dir, serving->settings, unchanged, &read, &content);
    read.serving = serving_stamp;
    const int64_t newest = std::max({read.config.mtime_ns, read.config.ctime_ns,
                                     read.weights.mtime_ns, read.weights.ctime_ns,
                                     read.serving.mtime_ns, read.serving.ctime_ns});
    const bool settled = absl::Now() - absl::FromUnixNanos(newest) > kSettle;
    absl::MutexLock lock(&mu_);
    VersionEntry& v = models_[name].versions[version];
    const bool same_files = v.stamp == read;
    v.settled = settled;
    if (loaded.ok() && *loaded == nullptr) {  // the same bytes: its sessions keep sharing it
      v.stamp = read;
      v.reason.clear();
      continue;
    }
    if (loaded.ok()) {
      v.content = content;
      v.served = *std::move(loaded);  // the swap: new sessions get it from now on
      v.draining.reset();
      v.state = ModelState::kReady;
      v.reason.clear();
      v.stamp = read;
      continue;
    }
    // Files still changing: nothing recorded, the next rescan reads them again.
    if (absl::IsAborted(loaded.status())) {
      LogWarning("model repository: ", loaded.status().message());
      continue;
    }
    v.stamp = read;
    // Reported once per change of the files (or of the reason).
    if (!same_files || (v.state == ModelState::kReady ? !absl::StrContains(v.reason, loaded.status().message())
                                                      : v.reason != loaded.status().message())) {
      failures.push_back(loaded.status());
    }
    if (v.state == ModelState::kReady) {
      // A bad rewrite of a serving version: it keeps serving what was read before.
      v.reason = absl::StrCat("reload failed, still serving the version read before: ",
                              loaded.status().message());
    } else {
      v.state = ModelState::kFailed;
      v.reason = std::string(loaded.status().message());
      v.served.reset();
    }
  }
  absl::MutexLock lock(&mu_);
  ModelEntry& entry = models_[name];
  // Availability: a version the policy wants that failed to load never takes down one that
  // serves. Under "latest N", READY versions below it keep the N places; under any policy,
  // a model left with no READY version keeps its highest READY one. (Kept versions are still
  // on disk and not unloaded by UnloadModel.)
  std::set<int64_t> keep;
  for (int64_t version : wanted) {
    auto found = entry.versions.find(version);
    if (found != entry.versions.end() && found->second.state == ModelState::kReady) {
      keep.insert(version);
    }
  }
  const int64_t places = policy.kind == VersionPolicy::Kind::kLatest
                             ? policy.latest
                             : (keep.empty() && !wanted.empty() ? 1 : 0);
  for (auto v = entry.versions.rbegin();
       v != entry.versions.rend() && static_cast<int64_t>(keep.size()) < places; ++v) {
    if (v->second.state != ModelState::kReady || keep.count(v->first) ||
        !on_disk.count(v->first) || entry.unload_all || entry.unloaded.count(v->first)) {
      continue;
    }
    keep.insert(v->first);
    v->second.reason = "kept serving: a newer version the policy wants failed to load";
  }
  for (const auto& [version, v] : entry.versions) {
    if (keep.count(version) || v.state != ModelState::kReady) continue;
    std::string reason = !on_disk.count(version)     ? "its folder was removed"
                         : unloaded.count(version) ? "unloaded by UnloadModel"
                                                     : "not in the model's version policy";
    RetireLocked(entry, keep, reason);
    break;  // RetireLocked retired every such version with the reason of the first
  }
  // Failures of versions no longer wanted are forgotten.
  for (auto v = entry.versions.begin(); v != entry.versions.end();) {
    v = v->second.state == ModelState::kFailed && !wanted.count(v->first)
            ? entry.versions.erase(v)
            : std::next(v);
  }
  if (on_disk.empty() && entry.versions.empty()) {
    entry.failure = absl::StrCat("model '", name, "' in ", dir, ": no ", kConfigFile,
                                 " in it or in a version folder");
  }
  return failures;
}

absl::Status ModelRegistry::LoadModel(const std::string& name) {
  if (repository_.empty()) {
    return absl::FailedPreconditionError("this server has no model repository to load from");
  }
  // `name` is the client's: only a plain folder name of the repository is looked at.
  const fs::path dir = fs::path(repository_) / name;
  std::error_code ec;
  if (name.empty() || IsHidden(name) || name.find('/') != std::string::npos ||
      name == "lost+found" || !fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("the model repository has no model folder ",
                                            Quoted(name)));
  }
  absl::MutexLock load_lock(&load_mu_);
  {
    absl::MutexLock lock(&mu_);
    ModelEntry& entry = models_[name];
    entry.unloaded.clear();
    entry.unload_all = false;
  }
  const std::vector<absl::Status> failures = RescanModel(name, dir.string(), false);
  ReportFailures(name, failures);
  absl::MutexLock lock(&mu_);
  if (FindLocked(name, 0) != nullptr) return absl::OkStatus();
  const ModelEntry& entry = models_[name];
  if (!entry.failure.empty()) return absl::FailedPreconditionError(entry.failure);
  if (!failures.empty()) return failures.front();
  return absl::FailedPreconditionError(
      absl::StrCat("model ", Quoted(name), " has no version that loads"));
}

}  // namespace rnnserve
