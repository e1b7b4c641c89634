#include "core/engine/rnn_config.h"

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
  return absl::OkStatus();
}

Shape RnnConfig::StateShape(int64_t batch, bool batched) const {
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
  return input_size == o.input_size && hidden_size == o.hidden_size &&
         num_layers == o.num_layers && nonlinearity == o.nonlinearity && bias == o.bias &&
         batch_first == o.batch_first && dropout == o.dropout && bidirectional == o.bidirectional;
}

std::string ConfigToString(const RnnConfig& c) {
  std::string s = absl::StrCat("RNN(", c.input_size, ", ", c.hidden_size);
  if (c.num_layers != 1) absl::StrAppend(&s, ", num_layers=", c.num_layers);
  if (c.nonlinearity != Nonlinearity::kTanh) absl::StrAppend(&s, ", nonlinearity='relu'");
  if (!c.bias) absl::StrAppend(&s, ", bias=False");
  if (c.batch_first) absl::StrAppend(&s, ", batch_first=True");
  if (c.dropout != 0.0) absl::StrAppend(&s, ", dropout=", c.dropout);
  if (c.bidirectional) absl::StrAppend(&s, ", bidirectional=True");
  return s + ")";
}

std::vector<ParameterSpec> ParameterSpecs(const RnnConfig& c) {
  std::vector<ParameterSpec> specs;
  const int64_t h = c.hidden_size;
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    for (int64_t dir = 0; dir < c.num_directions(); ++dir) {
      const std::string suffix = absl::StrCat("_l", layer, dir == 1 ? "_reverse" : "");
      specs.push_back({"weight_ih" + suffix, {h, c.layer_input_size(layer)}});
      specs.push_back({"weight_hh" + suffix, {h, h}});
      if (c.bias) {
        specs.push_back({"bias_ih" + suffix, {h}});
        specs.push_back({"bias_hh" + suffix, {h}});
      }
    }
  }
  return specs;
}

}  // namespace rnnserve
