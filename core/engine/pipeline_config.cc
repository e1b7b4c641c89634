#include "core/engine/pipeline_config.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace rnnserve {
namespace {

struct LayerTypeEntry {
  LayerType type;
  const char* name;
};
constexpr LayerTypeEntry kLayerTypes[] = {
    {LayerType::kLinear, "Linear"},       {LayerType::kEmbedding, "Embedding"},
    {LayerType::kLayerNorm, "LayerNorm"}, {LayerType::kRelu, "ReLU"},
    {LayerType::kTanh, "Tanh"},           {LayerType::kSigmoid, "Sigmoid"},
    {LayerType::kGelu, "GELU"},           {LayerType::kDropout, "Dropout"},
    {LayerType::kSoftmax, "Softmax"},     {LayerType::kLogSoftmax, "LogSoftmax"},
};

bool ValidPath(const std::string& path) {
  if (path.empty() || static_cast<int64_t>(path.size()) > kMaxLayerPathLength) return false;
  for (char c : path) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string Described(const LayerConfig& layer) {
  return absl::StrCat("layer '", layer.path, "' (", LayerTypeName(layer.type), ")");
}

bool HasParameters(LayerType type) {
  return type == LayerType::kLinear || type == LayerType::kEmbedding ||
         type == LayerType::kLayerNorm;
}

// Checks one piece's arguments and that it takes `features` per step; returns what it gives.
absl::StatusOr<int64_t> CheckLayer(const LayerConfig& layer, int64_t features, bool first_input) {
  if (!ValidPath(layer.path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", LayerTypeName(layer.type), " layer's path must be 1 to ", kMaxLayerPathLength,
        " characters of [A-Za-z0-9_.], got '", layer.path.substr(0, 64), "'"));
  }
  switch (layer.type) {
    case LayerType::kEmbedding:
      if (!first_input) {
        return absl::InvalidArgumentError(absl::StrCat(
            Described(layer), ": an Embedding may only be the first piece of the input layer"));
      }
      if (layer.in_features < 1 || layer.in_features > kMaxEmbeddings) {
        return absl::InvalidArgumentError(absl::StrCat(Described(layer),
                                                       ": num_embeddings must be in [1, ",
                                                       kMaxEmbeddings, "], got ",
                                                       layer.in_features));
      }
      if (layer.out_features < 1 || layer.out_features > kMaxLayerFeatures) {
        return absl::InvalidArgumentError(absl::StrCat(Described(layer),
                                                       ": embedding_dim must be in [1, ",
                                                       kMaxLayerFeatures, "], got ",
                                                       layer.out_features));
      }
      if (layer.padding_idx.has_value() &&
          (*layer.padding_idx < -layer.in_features || *layer.padding_idx >= layer.in_features)) {
        return absl::InvalidArgumentError(absl::StrCat(
            Described(layer), ": padding_idx must be within num_embeddings (", layer.in_features,
            "), got ", *layer.padding_idx));
      }
      return layer.out_features;
    case LayerType::kLinear:
      if (layer.in_features != features) {
        return absl::InvalidArgumentError(absl::StrCat(Described(layer), ": in_features is ",
                                                       layer.in_features, " but ", features,
                                                       " features reach it"));
      }
      if (layer.out_features < 1 || layer.out_features > kMaxLayerFeatures) {
        return absl::InvalidArgumentError(absl::StrCat(Described(layer),
                                                       ": out_features must be in [1, ",
                                                       kMaxLayerFeatures, "], got ",
                                                       layer.out_features));
      }
      return layer.out_features;
    case LayerType::kLayerNorm:
      if (layer.in_features != features || layer.out_features != features) {
        return absl::InvalidArgumentError(absl::StrCat(
            Described(layer), ": normalized_shape is (", layer.in_features, ",) but ", features,
            " features reach it (only the last dimension can be normalized)"));
      }
      if (!(layer.eps >= 0.0) || !std::isfinite(layer.eps)) {
        return absl::InvalidArgumentError(
            absl::StrCat(Described(layer), ": eps must be a finite number >= 0"));
      }
      return features;
    case LayerType::kDropout:
      if (!(layer.dropout >= 0.0 && layer.dropout <= 1.0)) {
        return absl::InvalidArgumentError(
            absl::StrCat(Described(layer), ": p must be in [0, 1], got ", layer.dropout));
      }
      return features;
    case LayerType::kSoftmax:
    case LayerType::kLogSoftmax:
      if (layer.dim != -1) {
        return absl::InvalidArgumentError(absl::StrCat(
            Described(layer), ": only dim=-1 (over the features) is served, got dim=",
            layer.dim));
      }
      return features;
    case LayerType::kRelu:
    case LayerType::kTanh:
    case LayerType::kSigmoid:
    case LayerType::kGelu:
      return features;
  }
  return absl::InternalError("unknown layer type");
}

absl::StatusOr<int64_t> CheckStage(const std::vector<LayerConfig>& layers, int64_t features,
                                   bool input_stage, absl::string_view stage) {
  if (static_cast<int64_t>(layers.size()) > kMaxPipelineLayers) {
    return absl::InvalidArgumentError(absl::StrCat("the ", stage, " has ", layers.size(),
                                                   " pieces, more than the ",
                                                   kMaxPipelineLayers, " allowed"));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!input_stage && layers[i].type == LayerType::kEmbedding) {
      return absl::InvalidArgumentError(absl::StrCat(
          Described(layers[i]), ": an Embedding may only be the first piece of the input layer"));
    }
    ASSIGN_OR_RETURN(features, CheckLayer(layers[i], features, input_stage && i == 0));
  }
  return features;
}

// The features the input layer takes per step and the piece that sets them (null when none
// does): an Embedding takes one id, a Linear or LayerNorm its width. Pieces before the first of
// those (Dropout, activations) take any width, so without one the core's input_size reaches them.
struct InputWidth {
  int64_t features;
  const LayerConfig* set_by;
};
InputWidth InputLayerWidth(const PipelineConfig& config) {
  for (const LayerConfig& layer : config.input_layer) {
    if (layer.type == LayerType::kEmbedding) return {1, &layer};
    if (layer.type == LayerType::kLinear || layer.type == LayerType::kLayerNorm) {
      return {layer.in_features, &layer};
    }
  }
  return {config.rnn.input_size, nullptr};
}

int64_t StageOutput(const std::vector<LayerConfig>& layers, int64_t features) {
  for (const LayerConfig& layer : layers) {
    if (layer.type == LayerType::kLinear || layer.type == LayerType::kEmbedding) {
      features = layer.out_features;
    }
  }
  return features;
}

}  // namespace

absl::string_view LayerTypeName(LayerType type) {
  for (const LayerTypeEntry& e : kLayerTypes) {
    if (e.type == type) return e.name;
  }
  return "unknown";
}

absl::StatusOr<LayerType> ParseLayerType(absl::string_view name) {
  for (const LayerTypeEntry& e : kLayerTypes) {
    if (name == e.name) return e.type;
  }
  std::vector<std::string> names;
  for (const LayerTypeEntry& e : kLayerTypes) names.push_back(e.name);
  return absl::InvalidArgumentError(absl::StrCat("unsupported layer type '",
                                                 name.substr(0, 64), "'; supported: ",
                                                 absl::StrJoin(names, ", ")));
}

bool LayerConfig::operator==(const LayerConfig& o) const {
  return type == o.type && path == o.path && in_features == o.in_features &&
         out_features == o.out_features && bias == o.bias && eps == o.eps &&
         padding_idx == o.padding_idx && gelu_tanh == o.gelu_tanh && dropout == o.dropout &&
         dim == o.dim;
}

LayerConfig MakeLayer(LayerType type, std::string path, int64_t in, int64_t out) {
  LayerConfig layer;
  layer.type = type;
  layer.path = std::move(path);
  layer.in_features = in;
  layer.out_features = out;
  return layer;
}

std::string LayerToString(const LayerConfig& layer) {
  switch (layer.type) {
    case LayerType::kLinear:
      return absl::StrCat("Linear(in_features=", layer.in_features,
                          ", out_features=", layer.out_features,
                          ", bias=", layer.bias ? "True" : "False", ")");
    case LayerType::kEmbedding: {
      std::string s = absl::StrCat("Embedding(", layer.in_features, ", ", layer.out_features);
      if (layer.padding_idx.has_value()) {
        // torch stores a negative padding_idx counted from the end.
        const int64_t idx = *layer.padding_idx < 0 ? *layer.padding_idx + layer.in_features
                                                   : *layer.padding_idx;
        absl::StrAppend(&s, ", padding_idx=", idx);
      }
      return s + ")";
    }
    case LayerType::kLayerNorm:
      return absl::StrCat("LayerNorm((", layer.in_features, ",), eps=", PythonFloatRepr(layer.eps),
                          ", elementwise_affine=", layer.bias ? "True" : "False", ")");
    case LayerType::kGelu:
      return absl::StrCat("GELU(approximate='", layer.gelu_tanh ? "tanh" : "none", "')");
    case LayerType::kDropout:
      return absl::StrCat("Dropout(p=", PythonFloatRepr(layer.dropout), ", inplace=False)");
    case LayerType::kSoftmax:
    case LayerType::kLogSoftmax:
      return absl::StrCat(LayerTypeName(layer.type), "(dim=", layer.dim, ")");
    case LayerType::kRelu:
    case LayerType::kTanh:
    case LayerType::kSigmoid:
      return absl::StrCat(LayerTypeName(layer.type), "()");
  }
  return "unknown";
}

int64_t PipelineConfig::input_features() const { return InputLayerWidth(*this).features; }

int64_t PipelineConfig::num_embeddings() const {
  return takes_ids() ? input_layer.front().in_features : 0;
}

int64_t PipelineConfig::output_features() const {
  return StageOutput(head, rnn.output_size());
}

absl::Status PipelineConfig::Validate() const {
  RETURN_IF_ERROR(rnn.Validate());
  if (core_only()) return absl::OkStatus();
  if (!ValidPath(rnn_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the core's path must be 1 to ", kMaxLayerPathLength,
        " characters of [A-Za-z0-9_.], got '", rnn_path.substr(0, 64), "'"));
  }
  if (!input_layer.empty()) {
    // Later widths are checked against what reaches them; the first is the model's input.
    const InputWidth in = InputLayerWidth(*this);
    if (in.set_by != nullptr && in.set_by->type != LayerType::kEmbedding &&
        (in.features < 1 || in.features > kMaxLayerFeatures)) {
      return absl::InvalidArgumentError(absl::StrCat(
          Described(*in.set_by), ": ",
          in.set_by->type == LayerType::kLinear ? "in_features" : "normalized_shape",
          " must be in [1, ", kMaxLayerFeatures, "], got ", in.features));
    }
    ASSIGN_OR_RETURN(const int64_t features,
                     CheckStage(input_layer, in.features, true, "input layer"));
    if (features != rnn.input_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the input layer gives ", features, " features per step, but the core '", rnn_path,
          "' (", ConfigToString(rnn), ") takes input_size ", rnn.input_size));
    }
  }
  RETURN_IF_ERROR(CheckStage(head, rnn.output_size(), false, "head").status());
  // Parameter names must not collide: one path per parameterised piece, none under the core's.
  std::vector<const std::string*> paths = {&rnn_path};
  for (const auto* stage : {&input_layer, &head}) {
    for (const LayerConfig& layer : *stage) {
      if (!HasParameters(layer.type)) continue;
      for (const std::string* other : paths) {
        if (*other == layer.path) {
          return absl::InvalidArgumentError(absl::StrCat(
              Described(layer), ": its path is used by another piece with parameters"));
        }
      }
      paths.push_back(&layer.path);
    }
  }
  return absl::OkStatus();
}

bool PipelineConfig::operator==(const PipelineConfig& o) const {
  return input_layer == o.input_layer && rnn == o.rnn && rnn_path == o.rnn_path && head == o.head;
}

PipelineConfig CorePipeline(const RnnConfig& rnn) {
  PipelineConfig config;
  config.rnn = rnn;
  return config;
}

std::string PipelineToString(const PipelineConfig& config) {
  std::vector<std::string> pieces;
  for (const LayerConfig& layer : config.input_layer) pieces.push_back(LayerToString(layer));
  pieces.push_back(ConfigToString(config.rnn));
  for (const LayerConfig& layer : config.head) pieces.push_back(LayerToString(layer));
  return absl::StrJoin(pieces, " -> ");
}

std::vector<ParameterSpec> LayerParameterSpecs(const LayerConfig& layer) {
  switch (layer.type) {
    case LayerType::kLinear:
      if (layer.bias) {
        return {{layer.path + ".weight", {layer.out_features, layer.in_features}},
                {layer.path + ".bias", {layer.out_features}}};
      }
      return {{layer.path + ".weight", {layer.out_features, layer.in_features}}};
    case LayerType::kEmbedding:
      return {{layer.path + ".weight", {layer.in_features, layer.out_features}}};
    case LayerType::kLayerNorm:
      if (!layer.bias) return {};
      return {{layer.path + ".weight", {layer.in_features}},
              {layer.path + ".bias", {layer.in_features}}};
    default:
      return {};
  }
}

std::vector<ParameterSpec> PipelineParameterSpecs(const PipelineConfig& config) {
  std::vector<ParameterSpec> core = ParameterSpecs(config.rnn);
  if (config.core_only()) return core;
  std::vector<ParameterSpec> specs;
  for (const LayerConfig& layer : config.input_layer) {
    for (ParameterSpec& spec : LayerParameterSpecs(layer)) specs.push_back(std::move(spec));
  }
  for (ParameterSpec& spec : core) {
    spec.name = absl::StrCat(config.rnn_path, ".", spec.name);
    specs.push_back(std::move(spec));
  }
  for (const LayerConfig& layer : config.head) {
    for (ParameterSpec& spec : LayerParameterSpecs(layer)) specs.push_back(std::move(spec));
  }
  return specs;
}

absl::Status CheckPipelineParameters(const PipelineConfig& config, const ParameterMap& params) {
  if (config.core_only()) return CheckParameters(config.rnn, params);
  return CheckParameterSpecs(PipelineParameterSpecs(config), params, PipelineToString(config));
}

int64_t PipelineParameterCount(const PipelineConfig& config) {
  int64_t count = ParameterCount(config.rnn);
  for (const auto* stage : {&config.input_layer, &config.head}) {
    for (const LayerConfig& layer : *stage) {
      for (const ParameterSpec& spec : LayerParameterSpecs(layer)) {
        count += NumElements(spec.shape);
      }
    }
  }
  return count;
}

ParameterMap CoreParameters(const PipelineConfig& config, const ParameterMap& params) {
  if (config.core_only()) return params;
  ParameterMap core;
  const std::string prefix = config.rnn_path + ".";
  for (const ParameterSpec& spec : ParameterSpecs(config.rnn)) {
    auto it = params.find(prefix + spec.name);
    if (it != params.end()) core.emplace(spec.name, it->second);
  }
  return core;
}

}  // namespace rnnserve
