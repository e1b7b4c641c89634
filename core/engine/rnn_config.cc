#include "core/engine/rnn_config.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace rnnserve {

absl::StatusOr<Nonlinearity> ParseNonlinearity(absl::string_view name) {
  if (name == "tanh") return Nonlinearity::kTanh;
  if (name == "relu") return Nonlinearity::kRelu;
  return absl::InvalidArgumentError(
      absl::StrCat("Unknown nonlinearity '", name, "'. Select from 'tanh' or 'relu'."));
}

absl::string_view NonlinearityName(Nonlinearity n) {
  return n == Nonlinearity::kRelu ? "relu" : "tanh";
}

absl::StatusOr<RnnModule> ParseModule(absl::string_view name) {
  if (name == "RNN") return RnnModule::kRnn;
  if (name == "GRU") return RnnModule::kGru;
  if (name == "LSTM") return RnnModule::kLstm;
  return absl::InvalidArgumentError(
      absl::StrCat("Unknown module '", name, "'. Select from 'RNN', 'GRU' or 'LSTM'."));
}

absl::string_view ModuleName(RnnModule module) {
  switch (module) {
    case RnnModule::kGru:
      return "GRU";
    case RnnModule::kLstm:
      return "LSTM";
    case RnnModule::kRnn:
      break;
  }
  return "RNN";
}

int64_t RnnConfig::gate_count() const {
  switch (module) {
    case RnnModule::kGru:
      return 3;
    case RnnModule::kLstm:
      return 4;
    case RnnModule::kRnn:
      break;
  }
  return 1;
}

absl::Status RnnConfig::Validate() const {
  if (input_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("input_size must be greater than zero, got ", input_size));
  }
  if (hidden_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden_size must be greater than zero, got ", hidden_size));
  }
  if (num_layers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layers must be greater than zero, got ", num_layers));
  }
  if (input_size > kMaxDimension || hidden_size > kMaxDimension) {
    return absl::InvalidArgumentError(absl::StrCat("input_size and hidden_size may be at most ",
                                                   kMaxDimension, ", got ", input_size, " and ",
                                                   hidden_size));
  }
  if (num_layers > kMaxNumLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layers may be at most ", kMaxNumLayers, ", got ", num_layers));
  }
  // NaN fails both comparisons' negation, so test for the valid range.
  if (!(dropout >= 0.0 && dropout <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dropout should be a number in range [0, 1] representing the probability of an "
        "element being zeroed, got ",
        dropout));
  }
  // torch's messages and order (RNNBase.__init__).
  if (proj_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "proj_size should be a positive integer or zero to disable projections, got ",
        proj_size));
  }
  if (proj_size >= hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "proj_size has to be smaller than hidden_size, got proj_size ", proj_size,
        " and hidden_size ", hidden_size));
  }
  if (proj_size > 0 && module != RnnModule::kLstm) {
    return absl::InvalidArgumentError(absl::StrCat(
        "proj_size argument is only supported for LSTM, not RNN or GRU (module is ",
        ModuleName(module), ")"));
  }
  if (nonlinearity != Nonlinearity::kTanh && module != RnnModule::kRnn) {
    return absl::InvalidArgumentError(absl::StrCat(
        "nonlinearity applies only to RNN; ", ModuleName(module), " has fixed gate functions"));
  }
  return absl::OkStatus();
}

Shape RnnConfig::StateShape(int64_t batch, bool batched) const {
  return batched ? Shape{num_state_rows(), batch, real_hidden_size()}
                 : Shape{num_state_rows(), real_hidden_size()};
}

Shape RnnConfig::CellStateShape(int64_t batch, bool batched) const {
  return batched ? Shape{num_state_rows(), batch, hidden_size}
                 : Shape{num_state_rows(), hidden_size};
}

Shape RnnConfig::OutputShape(int64_t steps, int64_t batch, bool batched) const {
  if (!batched) return {steps, output_size()};
  return batch_first ? Shape{batch, steps, output_size()} : Shape{steps, batch, output_size()};
}

void RnnConfig::InputToTimeMajor(const float* input, int64_t steps, int64_t batch,
                                 float* out) const {
  SwapLeadingDims(input, batch, steps, input_size, out);
}

void RnnConfig::OutputFromTimeMajor(const float* time_major, int64_t steps, int64_t batch,
                                    float* out) const {
  SwapLeadingDims(time_major, steps, batch, output_size(), out);
}

bool RnnConfig::operator==(const RnnConfig& o) const {
  return module == o.module && proj_size == o.proj_size && input_size == o.input_size &&
         hidden_size == o.hidden_size &&
         num_layers == o.num_layers && nonlinearity == o.nonlinearity && bias == o.bias &&
         batch_first == o.batch_first && dropout == o.dropout && bidirectional == o.bidirectional;
}

std::string PythonFloatRepr(double value) {
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  std::string text = buffer;
  if (text.find_first_of(".eni") == std::string::npos) text += ".0";  // not 1e-05, inf, nan
  return text;
}

std::string ConfigToString(const RnnConfig& c) {
  std::string s = absl::StrCat(ModuleName(c.module), "(", c.input_size, ", ", c.hidden_size);
  if (c.proj_size != 0) absl::StrAppend(&s, ", proj_size=", c.proj_size);
  if (c.num_layers != 1) absl::StrAppend(&s, ", num_layers=", c.num_layers);
  if (c.nonlinearity != Nonlinearity::kTanh) absl::StrAppend(&s, ", nonlinearity='relu'");
  if (!c.bias) absl::StrAppend(&s, ", bias=False");
  if (c.batch_first) absl::StrAppend(&s, ", batch_first=True");
  if (c.dropout != 0.0) absl::StrAppend(&s, ", dropout=", PythonFloatRepr(c.dropout));
  if (c.bidirectional) absl::StrAppend(&s, ", bidirectional=True");
  return s + ")";
}

std::vector<ParameterSpec> ParameterSpecs(const RnnConfig& c) {
  std::vector<ParameterSpec> specs;
  const int64_t rows = c.gate_rows();
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    for (int64_t dir = 0; dir < c.num_directions(); ++dir) {
      const std::string suffix = absl::StrCat("_l", layer, dir == 1 ? "_reverse" : "");
      specs.push_back({"weight_ih" + suffix, {rows, c.layer_input_size(layer)}});
      specs.push_back({"weight_hh" + suffix, {rows, c.real_hidden_size()}});
      if (c.bias) {
        specs.push_back({"bias_ih" + suffix, {rows}});
        specs.push_back({"bias_hh" + suffix, {rows}});
      }
      if (c.proj_size > 0) specs.push_back({"weight_hr" + suffix, {c.proj_size, c.hidden_size}});
    }
  }
  return specs;
}

}  // namespace rnnserve
