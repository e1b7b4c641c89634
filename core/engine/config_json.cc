#include "core/engine/config_json.h"

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "core/engine/json_util.h"
#include "core/engine/pipeline_config.h"

namespace rnnserve {
namespace {

using json_internal::DescribeJson;
using json_internal::GetInt64;
using json_internal::Json;
using json_internal::ParseJsonObject;

absl::Status WrongType(absl::string_view key, absl::string_view expected, const Json& value) {
  return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' must be ", expected,
                                                 ", got ", value.type_name(), " ",
                                                 DescribeJson(value)));
}

// The config keys of one JSON type, with the field each one sets.
template <typename T>
struct ConfigField {
  const char* key;
  T RnnConfig::*field;
};
constexpr ConfigField<int64_t> kIntFields[] = {{"input_size", &RnnConfig::input_size},
                                               {"hidden_size", &RnnConfig::hidden_size},
                                               {"num_layers", &RnnConfig::num_layers},
                                               {"proj_size", &RnnConfig::proj_size}};
constexpr ConfigField<bool> kBoolFields[] = {{"bias", &RnnConfig::bias},
                                             {"batch_first", &RnnConfig::batch_first},
                                             {"bidirectional", &RnnConfig::bidirectional}};
// All of them, the module first, then torch's constructor order, for the unknown-key message.
constexpr const char* kConfigKeys[] = {"module",        "input_size", "hidden_size",
                                       "num_layers",    "nonlinearity", "bias",
                                       "batch_first",   "dropout",    "bidirectional",
                                       "proj_size"};

// Sets the field `key` names from `value`, checking its JSON type (not yet its range).
absl::Status SetConfigKey(const std::string& key, const Json& value, RnnConfig* config) {
  for (const ConfigField<int64_t>& f : kIntFields) {
    if (key != f.key) continue;
    if (!GetInt64(value, &(config->*f.field))) return WrongType(key, "an integer", value);
    return absl::OkStatus();
  }
  for (const ConfigField<bool>& f : kBoolFields) {
    if (key != f.key) continue;
    if (!value.is_boolean()) return WrongType(key, "a boolean", value);
    config->*f.field = value.get<bool>();
    return absl::OkStatus();
  }
  if (key == "module") {
    if (!value.is_string()) return WrongType(key, "a string", value);
    ASSIGN_OR_RETURN(config->module, ParseModule(value.get_ref<const std::string&>()));
    return absl::OkStatus();
  }
  if (key == "nonlinearity") {
    if (!value.is_string()) return WrongType(key, "a string", value);
    ASSIGN_OR_RETURN(config->nonlinearity, ParseNonlinearity(value.get_ref<const std::string&>()));
    return absl::OkStatus();
  }
  if (key == "dropout") {
    if (!value.is_number()) return WrongType(key, "a number", value);
    config->dropout = value.get<double>();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "config has unknown key '", key, "'; known keys: ", absl::StrJoin(kConfigKeys, ", ")));
}

}  // namespace

namespace {

// The core's keys from `object` (config.json itself, or a pipeline's "rnn" object, whose
// "path" the caller has taken out). `what` prefixes messages ("config", "config 'rnn'").
absl::StatusOr<RnnConfig> RnnConfigFromObject(const Json& object, absl::string_view what) {
  for (const char* required : {"input_size", "hidden_size"}) {
    if (!object.contains(required)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " is missing required key '", required, "'"));
    }
  }
  RnnConfig config;
  for (const auto& [key, value] : object.items()) {
    absl::Status set = SetConfigKey(key, value, &config);
    if (!set.ok()) return what == "config" ? set : PrefixStatus(what, set);
  }
  // torch.nn.GRU and LSTM take no nonlinearity argument (a TypeError in torch): a config that
  // names one was written for an RNN, whatever its value.
  if (config.module != RnnModule::kRnn && object.contains("nonlinearity")) {
    return absl::InvalidArgumentError(absl::StrCat("config key 'nonlinearity' applies only to "
                                                   "module RNN; this config's module is ",
                                                   ModuleName(config.module)));
  }
  RETURN_IF_ERROR(config.Validate());
  return config;
}

absl::Status LayerWrongType(absl::string_view where, absl::string_view key,
                            absl::string_view expected, const Json& value) {
  return absl::InvalidArgumentError(absl::StrCat(where, " key '", key, "' must be ", expected,
                                                 ", got ", value.type_name(), " ",
                                                 DescribeJson(value)));
}

// The keys each layer type takes besides "type" and "path".
std::vector<const char*> LayerKeys(LayerType type) {
  switch (type) {
    case LayerType::kLinear:
      return {"in_features", "out_features", "bias"};
    case LayerType::kEmbedding:
      return {"num_embeddings", "embedding_dim", "padding_idx"};
    case LayerType::kLayerNorm:
      return {"normalized_shape", "eps", "elementwise_affine"};
    case LayerType::kGelu:
      return {"approximate"};
    case LayerType::kDropout:
      return {"p"};
    case LayerType::kSoftmax:
    case LayerType::kLogSoftmax:
      return {"dim"};
    default:
      return {};
  }
}

absl::StatusOr<LayerConfig> LayerFromJson(const Json& json, absl::string_view where) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " must be an object, got ",
                                                   json.type_name(), " ", DescribeJson(json)));
  }
  LayerConfig layer;
  if (!json.contains("type") || !json["type"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " needs a string key 'type'"));
  }
  absl::StatusOr<LayerType> type = ParseLayerType(json["type"].get_ref<const std::string&>());
  if (!type.ok()) return PrefixStatus(where, type.status());  // which layer, not just what
  layer.type = *type;
  if (!json.contains("path") || !json["path"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " needs a string key 'path'"));
  }
  layer.path = json["path"].get<std::string>();
  const std::vector<const char*> keys = LayerKeys(layer.type);
  auto int_key = [&](const char* key, int64_t* out) -> absl::Status {
    if (!GetInt64(json[key], out)) return LayerWrongType(where, key, "an integer", json[key]);
    return absl::OkStatus();
  };
  auto bool_key = [&](const char* key, bool* out) -> absl::Status {
    if (!json[key].is_boolean()) return LayerWrongType(where, key, "a boolean", json[key]);
    *out = json[key].get<bool>();
    return absl::OkStatus();
  };
  auto number_key = [&](const char* key, double* out) -> absl::Status {
    if (!json[key].is_number()) return LayerWrongType(where, key, "a number", json[key]);
    *out = json[key].get<double>();
    return absl::OkStatus();
  };
  for (const auto& [key, value] : json.items()) {
    if (key == "type" || key == "path") continue;
    bool known = false;
    for (const char* k : keys) known = known || key == k;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " (", LayerTypeName(layer.type), ") has unknown key '", key.substr(0, 64),
          "'; it takes: type, path", keys.empty() ? "" : ", ", absl::StrJoin(keys, ", ")));
    }
  }
  auto required = [&](std::initializer_list<const char*> names) -> absl::Status {
    for (const char* name : names) {
      if (!json.contains(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, " (", LayerTypeName(layer.type), ") is missing key '", name, "'"));
      }
    }
    return absl::OkStatus();
  };
  switch (layer.type) {
    case LayerType::kLinear:
      RETURN_IF_ERROR(required({"in_features", "out_features"}));
      RETURN_IF_ERROR(int_key("in_features", &layer.in_features));
      RETURN_IF_ERROR(int_key("out_features", &layer.out_features));
      if (json.contains("bias")) RETURN_IF_ERROR(bool_key("bias", &layer.bias));
      break;
    case LayerType::kEmbedding:
      RETURN_IF_ERROR(required({"num_embeddings", "embedding_dim"}));
      RETURN_IF_ERROR(int_key("num_embeddings", &layer.in_features));
      RETURN_IF_ERROR(int_key("embedding_dim", &layer.out_features));
      if (json.contains("padding_idx") && !json["padding_idx"].is_null()) {
        int64_t idx = 0;
        RETURN_IF_ERROR(int_key("padding_idx", &idx));
        layer.padding_idx = idx;
      }
      break;
    case LayerType::kLayerNorm: {
      RETURN_IF_ERROR(required({"normalized_shape"}));
      const Json& shape = json["normalized_shape"];
      const Json* dim = &shape;
      if (shape.is_array()) {
        if (shape.size() != 1) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, " (LayerNorm): normalized_shape must have one dimension (the features), "
              "got ", DescribeJson(shape)));
        }
        dim = &shape[0];
      }
      if (!GetInt64(*dim, &layer.in_features)) {
        return LayerWrongType(where, "normalized_shape", "an integer or [integer]", shape);
      }
      layer.out_features = layer.in_features;
      if (json.contains("eps")) RETURN_IF_ERROR(number_key("eps", &layer.eps));
      if (json.contains("elementwise_affine")) {
        RETURN_IF_ERROR(bool_key("elementwise_affine", &layer.bias));
      }
      break;
    }
    case LayerType::kGelu:
      if (json.contains("approximate")) {
        const Json& a = json["approximate"];
        if (!a.is_string() || (a != "none" && a != "tanh")) {
          return LayerWrongType(where, "approximate", "\"none\" or \"tanh\"", a);
        }
        layer.gelu_tanh = a == "tanh";
      }
      break;
    case LayerType::kDropout:
      if (json.contains("p")) RETURN_IF_ERROR(number_key("p", &layer.dropout));
      break;
    case LayerType::kSoftmax:
    case LayerType::kLogSoftmax:
      RETURN_IF_ERROR(required({"dim"}));
      RETURN_IF_ERROR(int_key("dim", &layer.dim));
      break;
    default:
      break;
  }
  return layer;
}

absl::StatusOr<std::vector<LayerConfig>> StageFromJson(const Json& json, absl::string_view key) {
  if (!json.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key,
                                                   "' must be an array of layers, got ",
                                                   json.type_name(), " ", DescribeJson(json)));
  }
  if (static_cast<int64_t>(json.size()) > kMaxPipelineLayers) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' has ", json.size(),
                                                   " layers, more than the ",
                                                   kMaxPipelineLayers, " allowed"));
  }
  std::vector<LayerConfig> layers;
  for (size_t i = 0; i < json.size(); ++i) {
    ASSIGN_OR_RETURN(LayerConfig layer,
                     LayerFromJson(json[i], absl::StrCat("config '", key, "'[", i, "]")));
    layers.push_back(std::move(layer));
  }
  return layers;
}

nlohmann::ordered_json RnnConfigJson(const RnnConfig& config) {
  // ordered_json keeps torch's constructor order, which reads better than alphabetical.
  nlohmann::ordered_json json;
  json["module"] = std::string(ModuleName(config.module));
  json["input_size"] = config.input_size;
  json["hidden_size"] = config.hidden_size;
  json["num_layers"] = config.num_layers;
  if (config.module == RnnModule::kRnn) {
    json["nonlinearity"] = std::string(NonlinearityName(config.nonlinearity));
  }
  json["bias"] = config.bias;
  json["batch_first"] = config.batch_first;
  json["dropout"] = config.dropout;
  json["bidirectional"] = config.bidirectional;
  if (config.module == RnnModule::kLstm) json["proj_size"] = config.proj_size;
  return json;
}

nlohmann::ordered_json LayerJson(const LayerConfig& layer) {
  nlohmann::ordered_json json;
  json["type"] = std::string(LayerTypeName(layer.type));
  json["path"] = layer.path;
  switch (layer.type) {
    case LayerType::kLinear:
      json["in_features"] = layer.in_features;
      json["out_features"] = layer.out_features;
      json["bias"] = layer.bias;
      break;
    case LayerType::kEmbedding:
      json["num_embeddings"] = layer.in_features;
      json["embedding_dim"] = layer.out_features;
      json["padding_idx"] = layer.padding_idx.has_value() ? nlohmann::ordered_json(*layer.padding_idx)
                                                          : nlohmann::ordered_json(nullptr);
      break;
    case LayerType::kLayerNorm:
      json["normalized_shape"] = {layer.in_features};
      json["eps"] = layer.eps;
      json["elementwise_affine"] = layer.bias;
      break;
    case LayerType::kGelu:
      json["approximate"] = layer.gelu_tanh ? "tanh" : "none";
      break;
    case LayerType::kDropout:
      json["p"] = layer.dropout;
      break;
    case LayerType::kSoftmax:
    case LayerType::kLogSoftmax:
      json["dim"] = layer.dim;
      break;
    default:
      break;
  }
  return json;
}

}  // namespace

absl::StatusOr<RnnConfig> ParseConfigJson(absl::string_view json) {
  ASSIGN_OR_RETURN(Json object, ParseJsonObject(json, "config", "key"));
  return RnnConfigFromObject(object, "config");
}

absl::StatusOr<PipelineConfig> ParsePipelineJson(absl::string_view json) {
  ASSIGN_OR_RETURN(Json object, ParseJsonObject(json, "config", "key"));
  if (!object.contains("rnn")) {
    ASSIGN_OR_RETURN(RnnConfig rnn, RnnConfigFromObject(object, "config"));
    return CorePipeline(rnn);
  }
  PipelineConfig config;
  for (const auto& [key, value] : object.items()) {
    if (key == "rnn") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat("config key 'rnn' must be an object, got ",
                                                       value.type_name(), " ",
                                                       DescribeJson(value)));
      }
      Json core = value;
      if (!core.contains("path") || !core["path"].is_string()) {
        return absl::InvalidArgumentError(
            "config 'rnn' needs a string key 'path' (the core's attribute path, e.g. \"rnn\")");
      }
      config.rnn_path = core["path"].get<std::string>();
      if (config.rnn_path.empty()) {
        return absl::InvalidArgumentError("config 'rnn' key 'path' must not be empty");
      }
      core.erase("path");
      ASSIGN_OR_RETURN(config.rnn, RnnConfigFromObject(core, "config 'rnn'"));
    } else if (key == "input_layer") {
      ASSIGN_OR_RETURN(config.input_layer, StageFromJson(value, key));
    } else if (key == "head") {
      ASSIGN_OR_RETURN(config.head, StageFromJson(value, key));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "config has unknown key '", key.substr(0, 64),
          "'; a pipeline config holds: input_layer, rnn, head"));
    }
  }
  RETURN_IF_ERROR(config.Validate());
  return config;
}

std::string PipelineToJson(const PipelineConfig& config) {
  if (config.core_only()) return ConfigToJson(config.rnn);
  nlohmann::ordered_json json;
  json["input_layer"] = nlohmann::ordered_json::array();
  for (const LayerConfig& layer : config.input_layer) json["input_layer"].push_back(LayerJson(layer));
  nlohmann::ordered_json rnn;
  rnn["path"] = config.rnn_path;
  const nlohmann::ordered_json core = RnnConfigJson(config.rnn);
  for (const auto& [key, value] : core.items()) rnn[key] = value;
  json["rnn"] = rnn;
  json["head"] = nlohmann::ordered_json::array();
  for (const LayerConfig& layer : config.head) json["head"].push_back(LayerJson(layer));
  return json.dump(2) + "\n";
}

std::string ConfigToJson(const RnnConfig& config) {
  return RnnConfigJson(config).dump(2) + "\n";
}

}  // namespace rnnserve
