#include "core/serving/model_registry.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "core/serving/client_text.h"

namespace rnnserve {
namespace {

std::string VersionList(const std::vector<int64_t>& versions) {
  return versions.empty() ? "none" : absl::StrJoin(versions, ", ");
}

}  // namespace

std::vector<int64_t> ModelRegistry::ReadyVersionsOf(const ModelEntry& entry) {
  std::vector<int64_t> ready;
  for (const auto& [version, v] : entry.versions) {
    if (v.state == ModelState::kReady) ready.push_back(version);
  }
  return ready;
}

const char* ModelStateName(ModelState state) {
  switch (state) {
    case ModelState::kReady:
      return "READY";
    case ModelState::kUnavailable:
      return "UNAVAILABLE";
    case ModelState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

RnnConfig DemoModelConfig() {
  RnnConfig config;
  config.input_size = 100;
  config.hidden_size = 10;
  config.num_layers = 2;
  return config;
}

std::unique_ptr<ModelRegistry> ModelRegistry::WithDemoModel(KernelIsa isa) {
  auto registry = std::make_unique<ModelRegistry>(isa);
  const RnnConfig config = DemoModelConfig();
  absl::Status status =
      registry->Add(kDemoModelName, config, RandomParameters(config, kDemoModelSeed));
  // The demo config and its generated parameters always agree.
  if (!status.ok()) std::abort();
  return registry;
}

void ModelRegistry::RetireLocked(ModelEntry& entry, const std::set<int64_t>& keep,
                                 const std::string& reason) {
  for (auto& [version, v] : entry.versions) {
    if (keep.count(version) || v.state != ModelState::kReady) continue;
    LogInfo("model '", v.served->name, "' version ", version, " unloaded (", reason,
            "); its live sessions finish on it");
    v.draining = v.served;
    v.served.reset();  // freed when its last session ends
    v.state = ModelState::kUnavailable;
    v.reason = reason;
  }
}

absl::Status ModelRegistry::UnloadModel(const std::string& name, int64_t version) {
  absl::MutexLock load_lock(&load_mu_);  // ordered with rescans
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end() || FindLocked(name, version) == nullptr ||
      (version == 0 && it->second.versions.empty())) {
    if (it == models_.end()) return UnknownModelErrorLocked(name);
    const std::vector<int64_t> ready = ReadyVersionsOf(it->second);
    return absl::NotFoundError(absl::StrCat("model ", Quoted(name), " has no READY version ",
                                            version, "; READY versions: ", VersionList(ready)));
  }
  ModelEntry& entry = it->second;
  std::set<int64_t> keep;
  if (version == 0) {
    entry.unload_all = true;
  } else {
    entry.unloaded.insert(version);
    for (const auto& [v, e] : entry.versions) {
      if (v != version) keep.insert(v);
    }
  }
  RetireLocked(entry, keep, "unloaded by UnloadModel");
  return absl::OkStatus();
}

absl::Status ModelRegistry::Add(std::string name, const RnnConfig& config,
                                const ParameterMap& parameters, int64_t version) {
  return Add(std::move(name), CorePipeline(config), parameters, version);
}

absl::Status ModelRegistry::Add(std::string name, const PipelineConfig& config,
                                const ParameterMap& parameters, int64_t version) {
  if (version <= 0) return absl::InvalidArgumentError("a model version must be positive");
  ASSIGN_OR_RETURN(std::unique_ptr<RnnModel> model,
                   RnnModel::Create(config, parameters, kernel_isa_));
  auto served = std::make_shared<ServedModel>();
  served->name = name;
  served->version = version;
  served->model = std::move(model);
  for (const auto& [param_name, tensor] : parameters) served->parameter_count += tensor.num_elements();
  absl::MutexLock lock(&mu_);
  VersionEntry& entry = models_[name].versions[version];
  if (entry.state == ModelState::kReady) {
    return absl::AlreadyExistsError(
        absl::StrCat("model '", name, "' version ", version, " is already loaded"));
  }
  entry.served = std::move(served);
  entry.state = ModelState::kReady;
  entry.reason.clear();
  return absl::OkStatus();
}

std::shared_ptr<const ServedModel> ModelRegistry::FindLocked(const std::string& name,
                                                             int64_t version) const {
  auto it = models_.find(name);
  if (it == models_.end()) return nullptr;
  const auto& versions = it->second.versions;
  if (version != 0) {
    auto v = versions.find(version);
    return v == versions.end() ? nullptr : v->second.served;
  }
  for (auto v = versions.rbegin(); v != versions.rend(); ++v) {
    if (v->second.state == ModelState::kReady) return v->second.served;
  }
  return nullptr;
}

std::shared_ptr<const ServedModel> ModelRegistry::Find(const std::string& name,
                                                       int64_t version) const {
  absl::ReaderMutexLock lock(&mu_);
  return FindLocked(name, version);
}

absl::StatusOr<std::shared_ptr<const ServedModel>> ModelRegistry::Lookup(
    const std::string& name, int64_t version) const {
  absl::ReaderMutexLock lock(&mu_);
  if (version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_version must be 0 (the latest) or positive, got ", version));
  }
  std::shared_ptr<const ServedModel> found = FindLocked(name, version);
  if (found != nullptr) return found;
  auto it = models_.find(name);
  if (it == models_.end()) return UnknownModelErrorLocked(name);
  const ModelEntry& entry = it->second;
  const std::vector<int64_t> ready = ReadyVersionsOf(entry);
  if (version == 0) {
    std::string why = entry.failure;
    for (const auto& [v, e] : entry.versions) {
      absl::StrAppend(&why, why.empty() ? "" : "; ", "version ", v, " is ",
                      ModelStateName(e.state), ": ", e.reason);
    }
    if (ready.empty() && entry.versions.empty() && entry.failure.empty()) {
      return UnknownModelErrorLocked(name);
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", Quoted(name), " has no READY version", why.empty() ? "" : ": ", why));
  }
  auto v = entry.versions.find(version);
  if (v == entry.versions.end()) {
    return absl::NotFoundError(absl::StrCat("model ", Quoted(name), " has no version ", version,
                                            "; READY versions: ", VersionList(ready)));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "version ", version, " of model ", Quoted(name), " is ", ModelStateName(v->second.state),
      " (", v->second.reason, ") and takes no new sessions or calls; READY versions: ",
      VersionList(ready)));
}

absl::Status ModelRegistry::UnknownModelError(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  return UnknownModelErrorLocked(name);
}

absl::Status ModelRegistry::UnknownModelErrorLocked(const std::string& name) const {
  // The requested name is the client's: quoted and bounded. The served names are listed up to
  // kMaxListedModels so the message stays short on a large repository.
  constexpr size_t kMaxListedModels = 20;
  std::vector<std::string> names;
  size_t served = 0;
  for (const auto& [model, entry] : models_) {
    if (FindLocked(model, 0) == nullptr) continue;
    ++served;
    if (names.size() < kMaxListedModels) names.push_back(Quoted(model));
  }
  std::string listed = names.empty() ? "no models" : absl::StrJoin(names, ", ");
  if (served > names.size()) {
    absl::StrAppend(&listed, " and ", served - names.size(), " more (ListModels)");
  }
  return absl::NotFoundError(
      absl::StrCat("unknown model ", Quoted(name), "; this server serves: ", listed));
}

std::vector<std::shared_ptr<const ServedModel>> ModelRegistry::All() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::shared_ptr<const ServedModel>> all;
  for (const auto& [name, entry] : models_) {
    if (std::shared_ptr<const ServedModel> latest = FindLocked(name, 0)) all.push_back(latest);
  }
  return all;
}

std::vector<int64_t> ModelRegistry::ReadyVersions(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  return it == models_.end() ? std::vector<int64_t>() : ReadyVersionsOf(it->second);
}

std::vector<ModelVersionStatus> ModelRegistry::Index() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<ModelVersionStatus> index;
  for (const auto& [name, entry] : models_) {
    if (!entry.failure.empty()) {
      index.push_back({name, 0, ModelState::kFailed, entry.failure, 0});
    }
    for (const auto& [version, v] : entry.versions) {
      ModelVersionStatus row{name, version, v.state, v.reason, 0};
      if (v.state == ModelState::kReady) {
        row.live_sessions = v.served.use_count() - 1;  // the registry's own reference
      } else if (v.state == ModelState::kUnavailable) {
        row.live_sessions = v.draining.use_count();
      }
      index.push_back(std::move(row));
    }
  }
  return index;
}

std::vector<std::string> ModelRegistry::Names() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, entry] : models_) names.push_back(name);
  return names;
}

bool ModelRegistry::Holds(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  return models_.count(name) > 0;
}

bool ModelRegistry::empty() const {
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [name, entry] : models_) {
    if (FindLocked(name, 0) != nullptr) return false;
  }
  return true;
}

}  // namespace rnnserve
