#include "core/engine/config_json.h"

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "core/engine/json_util.h"

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

absl::StatusOr<RnnConfig> ParseConfigJson(absl::string_view json) {
  ASSIGN_OR_RETURN(Json object, ParseJsonObject(json, "config", "key"));
  for (const char* required : {"input_size", "hidden_size"}) {
    if (!object.contains(required)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config is missing required key '", required, "'"));
    }
  }
  RnnConfig config;
  for (const auto& [key, value] : object.items()) {
    RETURN_IF_ERROR(SetConfigKey(key, value, &config));
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

std::string ConfigToJson(const RnnConfig& config) {
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
  return json.dump(2) + "\n";
}

}  // namespace rnnserve
