// RnnModel's checked entry point: CheckShapes (torch's input and state checks, torch's
// messages) and Forward, which converts torch's layouts to and from the time-major kernel.
#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "core/engine/rnn_model.h"

namespace rnnserve {
namespace {

absl::Status InvalidShape(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

std::string Dims(const Shape* shape) { return absl::StrCat(shape->size(), "-D"); }

// torch's rank check of the initial state: hx (RNN, GRU) or hx and cx (LSTM) must have the
// input's rank (3 batched, 2 unbatched).
absl::Status CheckStateRanks(const RnnConfig& config, bool batched, const Shape* h0,
                             const Shape* c0) {
  const size_t rank = batched ? 3 : 2;
  const std::string prefix = batched ? "For batched 3-D input, " : "For unbatched 2-D input, ";
  if (config.has_cell_state() && h0 != nullptr && c0 != nullptr) {
    if (h0->size() == rank && c0->size() == rank) return absl::OkStatus();
    return InvalidShape(absl::StrCat(prefix, "hx and cx should also be ", rank, "-D but got (",
                                     Dims(h0), ", ", Dims(c0), ") tensors"));
  }
  for (const auto& [name, shape] : {std::pair<const char*, const Shape*>{"hx", h0}, {"cx", c0}}) {
    if (shape != nullptr && shape->size() != rank) {
      return InvalidShape(absl::StrCat(prefix, name, " should also be ", rank, "-D but got ",
                                       Dims(shape), " tensor"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckStateShape(const Shape& expected, const Shape* actual, const char* what) {
  if (actual == nullptr || *actual == expected) return absl::OkStatus();
  return InvalidShape(absl::StrCat("Expected ", what, " size ", ShapeToString(expected), ", got [",
                                   absl::StrJoin(*actual, ", "), "]"));
}

bool CountMatches(const Tensor* t) {
  return t == nullptr || t->num_elements() == NumElements(t->shape);
}

}  // namespace

absl::StatusOr<InputDims> RnnModel::CheckShapes(absl::Span<const int64_t> input_shape,
                                                const Shape* h0_shape,
                                                const Shape* c0_shape) const {
  const int64_t dims = static_cast<int64_t>(input_shape.size());
  // Token ids have no feature dimension: (T,) unbatched, (T, N) or (N, T) batched.
  const int64_t unbatched_rank = takes_ids() ? 1 : 2;
  if (takes_ids() && dims != 1 && dims != 2) {
    return InvalidShape(absl::StrCat(
        "token ids: expected input to be 1D (T,) or 2D (", config_.batch_first ? "N, T" : "T, N",
        "), got ", dims, "D tensor instead (shape ", ShapeToString(input_shape), ")"));
  }
  if (!takes_ids() && dims != 2 && dims != 3) {
    return InvalidShape(absl::StrCat(ModuleName(config_.module),
                                     ": Expected input to be 2D or 3D, got ", dims,
                                     "D tensor instead (shape ", ShapeToString(input_shape),
                                     ")"));
  }
  for (int64_t d : input_shape) {
    if (d < 0) {
      return InvalidShape(
          absl::StrCat("input has a negative dimension: ", ShapeToString(input_shape)));
    }
  }
  if (c0_shape != nullptr && !config_.has_cell_state()) {
    return InvalidShape(absl::StrCat("c_0 was given, but ", ConfigToString(config_),
                                     " has no cell state: only an LSTM takes c_0"));
  }
  InputDims result;
  result.batched = dims == unbatched_rank + 1;
  RETURN_IF_ERROR(CheckStateRanks(config_, result.batched, h0_shape, c0_shape));
  if (!takes_ids() && input_shape.back() != input_features_) {
    return InvalidShape(absl::StrCat("input.size(-1) must be equal to ",
                                     pipeline_.input_layer.empty() ? "input_size" : "in_features",
                                     ". Expected ", input_features_, ", got ",
                                     input_shape.back()));
  }
  if (result.batched) {
    result.steps = config_.batch_first ? input_shape[1] : input_shape[0];
    result.batch = config_.batch_first ? input_shape[0] : input_shape[1];
  } else {
    result.steps = input_shape[0];
    result.batch = 1;
  }
  if (result.steps == 0) {
    return InvalidShape("Expected sequence length to be larger than 0 in RNN");
  }
  const bool lstm = config_.has_cell_state();
  RETURN_IF_ERROR(CheckStateShape(config_.StateShape(result.batch, result.batched), h0_shape,
                                  lstm ? "hidden[0]" : "hidden"));
  RETURN_IF_ERROR(CheckStateShape(config_.CellStateShape(result.batch, result.batched),
                                  c0_shape, "hidden[1]"));
  return result;
}

Shape RnnModel::InputShape(int64_t steps, int64_t batch, bool batched) const {
  Shape shape = !batched ? Shape{steps}
                : config_.batch_first ? Shape{batch, steps}
                                      : Shape{steps, batch};
  if (!takes_ids()) shape.push_back(input_features_);
  return shape;
}

Shape RnnModel::OutputShape(int64_t steps, int64_t batch, bool batched) const {
  Shape shape = config_.OutputShape(steps, batch, batched);
  shape.back() = output_features_;
  return shape;
}

absl::Status RnnModel::CheckInputValues(const float* data, int64_t count, bool ids,
                                        absl::string_view what) const {
  if (ids != takes_ids()) {
    if (takes_ids()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": this model takes token ids (", LayerToString(pipeline_.input_layer.front()),
          " first): send them in `", what, ".ids` (int64), not as float values"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": this model takes float features (", input_features_,
        " per step): send them in `", what, ".values` or `", what, ".raw`, not `", what,
        ".ids`"));
  }
  if (!ids) return absl::OkStatus();
  const int64_t vocabulary = pipeline_.num_embeddings();
  for (int64_t i = 0; i < count; ++i) {
    const float id = data[i];
    if (id >= 0.0f && id < static_cast<float>(vocabulary) && id == static_cast<int64_t>(id)) {
      continue;
    }
    // The wire clamps ids outside [-1, 2^24] to those ends (tensor_codec.h).
    const std::string shown = id >= static_cast<float>(kMaxEmbeddings)
                                  ? absl::StrCat(">= ", kMaxEmbeddings)
                              : id < 0.0f ? std::string("negative")
                              // NaN too; and never cast: that is undefined for NaN
                              : id != std::trunc(id) ? absl::StrCat(id, ", not an integer")
                                                     : absl::StrCat(static_cast<int64_t>(id));
    return absl::InvalidArgumentError(absl::StrCat(
        what, ".ids[", i, "] is ", shown, ": ids must be in [0, ", vocabulary, ") for ",
        LayerToString(pipeline_.input_layer.front())));
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardResult> RnnModel::Forward(const Tensor& input, const Tensor* h0,
                                                Workspace* workspace) const {
  return Forward(input, h0, nullptr, workspace);
}

absl::StatusOr<ForwardResult> RnnModel::Forward(const Tensor& input, const Tensor* h0,
                                                const Tensor* c0, Workspace* workspace) const {
  ASSIGN_OR_RETURN(const InputDims dims,
                   CheckShapes(input.shape, h0 == nullptr ? nullptr : &h0->shape,
                               c0 == nullptr ? nullptr : &c0->shape));
  if (CountMatches(&input)) {
    RETURN_IF_ERROR(CheckInputValues(input.data(), input.num_elements(), input.ids));
  }
  if (!CountMatches(&input) || !CountMatches(h0) || !CountMatches(c0)) {
    return absl::InvalidArgumentError("tensor value count does not match its shape");
  }
  thread_local Workspace thread_workspace;
  Workspace& ws = workspace != nullptr ? *workspace : thread_workspace;

  const int64_t steps = dims.steps, batch = dims.batch, cols = steps * batch;
  const bool convert = config_.NeedsTimeMajorConversion(dims.batched);

  ForwardResult result;
  result.h_n = Tensor::Zeros(config_.StateShape(batch, dims.batched));
  if (config_.has_cell_state()) {
    result.c_n = Tensor::Zeros(config_.CellStateShape(batch, dims.batched));
  }
  result.output = Tensor::Zeros(OutputShape(steps, batch, dims.batched));
  if (cols == 0) return result;  // N == 0: torch returns empty tensors.

  // The kernel takes one state buffer (h, then c for LSTM). Without cell state that is h_0 and
  // h_n themselves; an LSTM's h and c are gathered into a scratch slot and run in place.
  const float* state_in = h0 == nullptr ? nullptr : h0->data();
  float* state_out = result.h_n.data();
  if (config_.has_cell_state()) {
    const int64_t h_size = HiddenStateSize(batch), c_size = CellStateSize(batch);
    float* state = ws.Matrix(Workspace::kState, StateSize(batch), 1).data();
    if (h0 != nullptr) {
      std::copy_n(h0->data(), h_size, state);
    } else {
      std::fill_n(state, h_size, 0.0f);
    }
    if (c0 != nullptr) {
      std::copy_n(c0->data(), c_size, state + h_size);
    } else {
      std::fill_n(state + h_size, c_size, 0.0f);
    }
    state_in = state_out = state;
  }

  if (!convert) {  // time-major already: layer 0 reads the input in place
    ForwardTimeMajor(input.data(), steps, batch, state_in, result.output.data(), state_out, ws);
  } else {
    // batch_first: the input is packed time-major once, and the output is written time-major
    // into a scratch slot, then converted to (N, T, D*H_out).
    float* packed = ws.Matrix(2, input_features_, cols).data();
    SwapLeadingDims(input.data(), batch, steps, input_features_, packed);
    float* time_major = ws.Matrix(3, output_features_, cols).data();
    ForwardTimeMajor(packed, steps, batch, state_in, time_major, state_out, ws);
    SwapLeadingDims(time_major, steps, batch, output_features_, result.output.data());
  }
  if (config_.has_cell_state()) {
    std::copy_n(state_out, HiddenStateSize(batch), result.h_n.data());
    std::copy_n(state_out + HiddenStateSize(batch), CellStateSize(batch), result.c_n->data());
  }
  return result;
}

}  // namespace rnnserve
