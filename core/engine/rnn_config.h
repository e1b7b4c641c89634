// RnnConfig: the module (torch.nn.RNN, GRU or LSTM) and its constructor arguments, under
// torch's names and defaults, and the list of parameters (names and shapes, in
// named_parameters() order) that a config implies.
// Plain value types; thread-compatible.
#ifndef RNNSERVE_CORE_ENGINE_RNN_CONFIG_H_
#define RNNSERVE_CORE_ENGINE_RNN_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/tensor.h"

namespace rnnserve {

enum class Nonlinearity { kTanh, kRelu };

// Which torch.nn module: the recurrent cell. Gates per cell: RNN 1, GRU 3 (r, z, n), LSTM 4
// (i, f, g, o), in torch's row order within weight_ih/weight_hh.
enum class RnnModule { kRnn, kGru, kLstm };

// "RNN", "GRU" or "LSTM", exactly as torch names the classes.
absl::StatusOr<RnnModule> ParseModule(absl::string_view name);
absl::string_view ModuleName(RnnModule module);

// "tanh" or "relu", exactly as torch spells them.
absl::StatusOr<Nonlinearity> ParseNonlinearity(absl::string_view name);
absl::string_view NonlinearityName(Nonlinearity n);

struct RnnConfig {
  RnnModule module = RnnModule::kRnn;
  int64_t input_size = 0;   // features per timestep of the input (C); required, > 0
  int64_t hidden_size = 0;  // features of the hidden state (H); required, > 0
  int64_t num_layers = 1;   // stacked layers (L); > 0
  Nonlinearity nonlinearity = Nonlinearity::kTanh;  // RNN only (GRU/LSTM gates are fixed)
  bool bias = true;          // whether bias_ih/bias_hh exist
  bool batch_first = false;  // input/output are (N, T, C) instead of (T, N, C); never h_0/h_n
  double dropout = 0.0;      // in [0, 1]; accepted for compatibility, no effect at inference
  bool bidirectional = false;
  int64_t proj_size = 0;  // LSTM only: 0 (no projection) or in [1, hidden_size)

  int64_t num_directions() const { return bidirectional ? 2 : 1; }
  // Gate blocks stacked in weight_ih/weight_hh: 1 (RNN), 3 (GRU), 4 (LSTM).
  int64_t gate_count() const;
  // G * H: the rows of weight_ih and weight_hh.
  int64_t gate_rows() const { return gate_count() * hidden_size; }
  bool has_cell_state() const { return module == RnnModule::kLstm; }
  // H_out, torch's real_hidden_size: features of h (proj_size when set, else hidden_size).
  int64_t real_hidden_size() const { return proj_size > 0 ? proj_size : hidden_size; }
  // L * D: the first dimension of h_0, h_n, c_0 and c_n.
  int64_t num_state_rows() const { return num_layers * num_directions(); }
  // Features of the output: D * H_out.
  int64_t output_size() const { return num_directions() * real_hidden_size(); }
  // Features entering layer `layer`: input_size for layer 0, D * H_out above.
  int64_t layer_input_size(int64_t layer) const {
    return layer == 0 ? input_size : output_size();
  }

  // The one home of the tensor layouts torch uses. `batched` is false for 2-D (T, C) input.
  // h_0 and h_n: (L*D, N, H_out), or (L*D, H_out) unbatched; batch_first never applies to them.
  Shape StateShape(int64_t batch, bool batched) const;
  // LSTM's c_0 and c_n: (L*D, N, H), or (L*D, H) unbatched.
  Shape CellStateShape(int64_t batch, bool batched) const;
  // The output: (T, N, D*H_out), (N, T, D*H_out) when batch_first, or (T, D*H_out) unbatched.
  Shape OutputShape(int64_t steps, int64_t batch, bool batched) const;
  // The engine computes time-major (T, N, features). True when batched batch_first input and
  // output must be converted to and from that layout (ToTimeMajor, FromTimeMajor).
  bool NeedsTimeMajorConversion(bool batched) const { return batched && batch_first; }
  // batch_first (N, T, C) input into time-major (T, N, C); `out` holds N * T * C floats.
  void InputToTimeMajor(const float* input, int64_t steps, int64_t batch, float* out) const;
  // Time-major (T, N, D*H_out) output into batch_first (N, T, D*H_out).
  void OutputFromTimeMajor(const float* time_major, int64_t steps, int64_t batch,
                           float* out) const;

  // Checks the arguments as torch's constructor does, plus caps (kMaxNumLayers, kMaxDimension)
  // that keep every size derived from a hostile config small enough to compute and compare
  // (with the weights file) before anything is allocated. The message names the bad argument.
  absl::Status Validate() const;
  static constexpr int64_t kMaxNumLayers = 1024;
  static constexpr int64_t kMaxDimension = int64_t{1} << 20;  // input_size and hidden_size

  bool operator==(const RnnConfig& o) const;
  bool operator!=(const RnnConfig& o) const { return !(*this == o); }
};

// "RNN(100, 10, num_layers=2, dropout=0.5)", "LSTM(80, 512, proj_size=128, num_layers=3)":
// as torch prints the module.
std::string ConfigToString(const RnnConfig& config);

// A float as Python's repr() writes it (torch's reprs format dropout and eps so): the shortest
// digits that read back as the same double, with ".0" on whole numbers ("0.5", "1.0", "1e-05").
std::string PythonFloatRepr(double value);

struct ParameterSpec {
  std::string name;  // e.g. "weight_ih_l0_reverse"
  Shape shape;
};

// The parameters torch's module with this config has, in named_parameters() order: per layer,
// per direction (forward, then "_reverse"): weight_ih (G*H, in), weight_hh (G*H, H_out), then
// bias_ih, bias_hh (G*H) when bias is set, then weight_hr (proj_size, H) when proj_size > 0.
std::vector<ParameterSpec> ParameterSpecs(const RnnConfig& config);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_RNN_CONFIG_H_
