#include "core/engine/rnn_parameters.h"

#include <cmath>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rnnserve {

absl::Status CheckParameters(const RnnConfig& config, const ParameterMap& params) {
  std::vector<std::string> problems;
  std::set<std::string> expected_names;
  for (const ParameterSpec& spec : ParameterSpecs(config)) {
    expected_names.insert(spec.name);
    auto it = params.find(spec.name);
    if (it == params.end()) {
      problems.push_back(absl::StrCat("missing parameter '", spec.name, "' with shape ",
                                      ShapeToString(spec.shape)));
      continue;
    }
    const Tensor& t = it->second;
    if (t.shape != spec.shape) {
      problems.push_back(absl::StrCat("parameter '", spec.name, "' has shape ",
                                      ShapeToString(t.shape), ", expected ",
                                      ShapeToString(spec.shape)));
    } else if (t.num_elements() != NumElements(spec.shape)) {
      problems.push_back(absl::StrCat("parameter '", spec.name, "' holds ", t.num_elements(),
                                      " values, its shape ", ShapeToString(spec.shape),
                                      " needs ", NumElements(spec.shape)));
    }
  }
  for (const auto& [name, tensor] : params) {
    if (!expected_names.count(name)) {
      problems.push_back(absl::StrCat("unexpected parameter '", name, "' for ",
                                      ConfigToString(config)));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  const size_t total = problems.size();
  if (total > kMaxListedProblems) problems.resize(kMaxListedProblems);
  std::string listed = absl::StrJoin(problems, "; ");
  if (total > problems.size()) absl::StrAppend(&listed, "; and ", total - problems.size(), " more");
  return absl::InvalidArgumentError(
      absl::StrCat("parameters do not match ", ConfigToString(config), ": ", listed));
}

int64_t ParameterCount(const RnnConfig& config) {
  const int64_t h = config.hidden_size;
  int64_t count = 0;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const int64_t per_direction =
        h * config.layer_input_size(layer) + h * h + (config.bias ? 2 * h : 0);
    count += per_direction * config.num_directions();
  }
  return count;
}

absl::Status CheckFiniteParameters(const ParameterMap& params) {
  for (const auto& [name, tensor] : params) {
    const std::optional<int64_t> bad = FirstNonFinite(tensor.data(), tensor.num_elements());
    if (bad.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", name, "' holds ", tensor.values[*bad], " at flat index ", *bad,
          "; weights must be finite (--allow_non_finite_weights accepts them)"));
    }
  }
  return absl::OkStatus();
}

ParameterMap RandomParameters(const RnnConfig& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const float bound = 1.0f / std::sqrt(static_cast<float>(config.hidden_size));
  std::uniform_real_distribution<float> uniform(-bound, bound);
  ParameterMap params;
  for (const ParameterSpec& spec : ParameterSpecs(config)) {
    Tensor t = Tensor::Zeros(spec.shape);
    for (float& v : t.values) v = uniform(rng);
    params.emplace(spec.name, std::move(t));
  }
  return params;
}

}  // namespace rnnserve
