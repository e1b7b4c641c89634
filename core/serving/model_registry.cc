#include "core/serving/model_registry.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "core/engine/model_dir.h"
#include "core/serving/client_text.h"

namespace rnnserve {

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

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::LoadRepository(
    const std::string& dir, const ModelLoadOptions& options) {
  namespace fs = std::filesystem;
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
  std::vector<fs::path> folders;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path& path = it->path();
    std::error_code entry_error;
    const fs::file_status status = fs::status(path, entry_error);  // follows links
    if (entry_error && entry_error != std::errc::no_such_file_or_directory) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model repository entry '", path.string(), "': ", entry_error.message()));
    }
    if (entry_error) {
      // status() of a dangling symlink is "not found"; say so rather than skip it silently.
      return absl::NotFoundError(absl::StrCat("model repository entry '", path.string(),
                                              "' is a symlink to nothing"));
    }
    if (fs::is_directory(status)) folders.push_back(path);
  }
  if (ec) {
    return absl::InternalError(absl::StrCat("listing model repository '", dir, "': ", ec.message()));
  }
  std::sort(folders.begin(), folders.end());  // deterministic: the first bad model is named
  for (const fs::path& folder : folders) {
    absl::StatusOr<ModelFiles> files = LoadModelDir(folder.string(), options.model_dir);
    if (!files.ok()) {
      return absl::Status(files.status().code(),
                          absl::StrCat("model '", folder.filename().string(), "' in ",
                                       folder.string(), ": ", files.status().message()));
    }
    const std::string name = folder.filename().string();
    absl::StatusOr<ServingFile> serving = ReadServingFile(folder.string());
    if (!serving.ok()) {
      return absl::Status(serving.status().code(),
                          absl::StrCat("model '", name, "': ", serving.status().message()));
    }
    RETURN_IF_ERROR(registry->Add(name, files->config, files->parameters));
    registry->models_[name]->settings = serving->settings;
  }
  return registry;
}

absl::Status ModelRegistry::Add(std::string name, const RnnConfig& config,
                                const ParameterMap& parameters) {
  return Add(std::move(name), CorePipeline(config), parameters);
}

absl::Status ModelRegistry::Add(std::string name, const PipelineConfig& config,
                                const ParameterMap& parameters) {
  if (models_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("model '", name, "' is already loaded"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<RnnModel> model,
                   RnnModel::Create(config, parameters, kernel_isa_));
  auto served = std::make_unique<ServedModel>();
  served->name = name;
  served->model = std::move(model);
  for (const auto& [param_name, tensor] : parameters) served->parameter_count += tensor.num_elements();
  models_.emplace(std::move(name), std::move(served));
  return absl::OkStatus();
}

const ServedModel* ModelRegistry::Find(const std::string& name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.get();
}

absl::Status ModelRegistry::UnknownModelError(const std::string& name) const {
  // The requested name is the client's: quoted and bounded. The served names are listed up to
  // kMaxListedModels so the message stays short on a large repository.
  constexpr size_t kMaxListedModels = 20;
  std::vector<std::string> names;
  for (const auto& [served, model] : models_) {
    if (names.size() == kMaxListedModels) break;
    names.push_back(Quoted(served));
  }
  std::string listed = names.empty() ? "no models" : absl::StrJoin(names, ", ");
  if (models_.size() > names.size()) {
    absl::StrAppend(&listed, " and ", models_.size() - names.size(), " more (ListModels)");
  }
  return absl::NotFoundError(
      absl::StrCat("unknown model ", Quoted(name), "; this server serves: ", listed));
}

std::vector<const ServedModel*> ModelRegistry::All() const {
  std::vector<const ServedModel*> all;
  for (const auto& [name, model] : models_) all.push_back(model.get());
  return all;
}

}  // namespace rnnserve
