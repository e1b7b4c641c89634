#include "core/engine/rnn_parameters.h"

#include <cmath>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rnnserve {

namespace {

// What module a state_dict's tensors look like, from weight_hh_l0 (G*H, H_out) and weight_hr_l0
// (LSTM with proj_size); empty when they fit none or the config's own module.
std::string LooksLike(const RnnConfig& config, const ParameterMap& params) {
  auto hh = params.find("weight_hh_l0");
  if (hh == params.end() || hh->second.shape.size() != 2) return "";
  const int64_t rows = hh->second.shape[0], cols = hh->second.shape[1];
  std::string looks;
  auto hr = params.find("weight_hr_l0");
  if (hr != params.end() && hr->second.shape.size() == 2) {
    looks = absl::StrCat("an LSTM with proj_size=", hr->second.shape[0],
                         " (it has weight_hr_l0)");
    if (config.module == RnnModule::kLstm && config.proj_size > 0) return "";
  } else if (cols > 0 && rows == cols) {
    if (config.module == RnnModule::kRnn) return "";
    looks = absl::StrCat("an RNN (weight_hh_l0 is ", ShapeToString(hh->second.shape),
                         ": H rows, torch.nn.RNN)");
  } else if (cols > 0 && rows == 3 * cols) {
    if (config.module == RnnModule::kGru) return "";
    looks = absl::StrCat("a GRU (weight_hh_l0 is ", ShapeToString(hh->second.shape),
                         ": 3H rows r, z, n)");
  } else if (cols > 0 && rows == 4 * cols) {
    if (config.module == RnnModule::kLstm && config.proj_size == 0) return "";
    looks = absl::StrCat("an LSTM (weight_hh_l0 is ", ShapeToString(hh->second.shape),
                         ": 4H rows i, f, g, o)");
  } else {
    return "";
  }
  return absl::StrCat("the weights look like ", looks, ", but the config says ",
                      ConfigToString(config), "; ");
}

}  // namespace

absl::Status CheckParameterSpecs(const std::vector<ParameterSpec>& specs,
                                 const ParameterMap& params, absl::string_view model,
                                 absl::string_view prefix) {
  std::vector<std::string> problems;
  std::set<std::string> expected_names;
  for (const ParameterSpec& spec : specs) {
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
      problems.push_back(absl::StrCat("unexpected parameter '", name.substr(0, 256), "' for ",
                                      model));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  const size_t total = problems.size();
  if (total > kMaxListedProblems) problems.resize(kMaxListedProblems);
  std::string listed = absl::StrJoin(problems, "; ");
  if (total > problems.size()) absl::StrAppend(&listed, "; and ", total - problems.size(), " more");
  return absl::InvalidArgumentError(
      absl::StrCat(prefix, "parameters do not match ", model, ": ", listed));
}

absl::Status CheckParameters(const RnnConfig& config, const ParameterMap& params) {
  return CheckParameterSpecs(ParameterSpecs(config), params, ConfigToString(config),
                             LooksLike(config, params));
}

int64_t ParameterCount(const RnnConfig& config) {
  const int64_t rows = config.gate_rows();
  int64_t count = 0;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const int64_t per_direction = rows * config.layer_input_size(layer) +
                                  rows * config.real_hidden_size() + (config.bias ? 2 * rows : 0) +
                                  config.proj_size * config.hidden_size;
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
