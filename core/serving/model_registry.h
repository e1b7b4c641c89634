// ModelRegistry: the models a server serves, by name. Filled once at start-up (from a model
// repository folder, or the built-in demo model) and immutable afterwards, so lookups are
// thread-safe without locks. Owns the models; hands out const pointers valid for its lifetime.
#ifndef RNNSERVE_CORE_SERVING_MODEL_REGISTRY_H_
#define RNNSERVE_CORE_SERVING_MODEL_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/engine/model_dir.h"
#include "core/engine/rnn_model.h"
#include "core/serving/model_settings.h"

namespace rnnserve {

struct ServedModel {
  std::string name;
  std::unique_ptr<RnnModel> model;
  int64_t parameter_count = 0;
  // Its own serving limits (serving.json); defaults: the server's.
  ModelServingSettings settings;
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
};

class ModelRegistry {
 public:
  // Models added later run `isa`'s kernels (one of SupportedKernelIsas()).
  explicit ModelRegistry(KernelIsa isa = BestKernelIsa()) : kernel_isa_(isa) {}

  // Loads every subfolder of `dir` as a model named after the folder. An empty folder gives an
  // empty registry. Errors name the folder/file and the problem; a symlink loop, a dangling
  // link or an unreadable entry is an error too (never an exception).
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> LoadRepository(
      const std::string& dir, const ModelLoadOptions& options = {});
  // A registry with only the built-in demo model.
  static std::unique_ptr<ModelRegistry> WithDemoModel(KernelIsa isa = BestKernelIsa());

  absl::Status Add(std::string name, const RnnConfig& config, const ParameterMap& parameters);
  // A whole pipeline (input layer, core, head), parameters under their full names.
  absl::Status Add(std::string name, const PipelineConfig& config,
                   const ParameterMap& parameters);

  // nullptr when unknown.
  const ServedModel* Find(const std::string& name) const;
  // NOT_FOUND for `name`, naming the models that are served.
  absl::Status UnknownModelError(const std::string& name) const;
  std::vector<const ServedModel*> All() const;  // sorted by name
  bool empty() const { return models_.empty(); }
  KernelIsa kernel_isa() const { return kernel_isa_; }

 private:
  KernelIsa kernel_isa_;
  std::map<std::string, std::unique_ptr<ServedModel>> models_;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_SERVING_MODEL_REGISTRY_H_
