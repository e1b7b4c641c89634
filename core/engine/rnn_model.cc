#include "core/engine/rnn_model.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

// GCC 12 flags the `__Y = __Y` idiom inside its own AVX-512 intrinsics, which Eigen's
// vectorised tanh inlines here: harmless.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace rnnserve {
namespace {

using MatrixMap = Eigen::Map<Eigen::MatrixXf>;
using ConstMatrixMap = Eigen::Map<const Eigen::MatrixXf>;
using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Which backend computes a product with `rows` output rows over `cols` columns. PackedGemm
// (weights packed once at load, bias and activation fused into the product's last pass)
// measured as fast as Eigen's GEMM or faster (up to 3x at 8-10 columns, 4x at H=1024) at every
// shape the engine runs, except the very wide input projections of small layers, where Eigen,
// which packs both operands per call, keeps a ~10% edge (BENCHMARKS.md, "Products at the
// engine's shapes").
constexpr int64_t kEigenMaxRows = 128;
constexpr int64_t kEigenMinCols = 1024;
bool UsePacked(int64_t rows, int64_t cols) {
  return rows > kEigenMaxRows || cols < kEigenMinCols;
}

Epilogue EpilogueFor(Nonlinearity act) {
  return act == Nonlinearity::kTanh ? Epilogue::kTanh : Epilogue::kRelu;
}

// h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.
//
// Layout: activations are column-major (features x columns), one column per (timestep, batch
// row). That is exactly torch's row-major (T, N, features) memory, so inputs and outputs map
// without copies. `block` already holds x_t W_ih^T + b for its columns; this adds the
// recurrent product and applies the nonlinearity in place.
template <typename Block, typename Prev>
void RecurrentStep(const Eigen::MatrixXf& w_hh, const PackedMatrix& packed_hh,
                   const Prev& h_prev, Nonlinearity act, Block&& block) {
  if (UsePacked(block.rows(), block.cols())) {
    // One pass: block = act(block + W_hh h_prev), the activation applied in registers.
    PackedGemm(packed_hh, h_prev.data(), h_prev.outerStride(), block.cols(), nullptr,
               /*accumulate=*/true, EpilogueFor(act), block.data(), block.outerStride());
    return;
  }
  block.noalias() += w_hh * h_prev;
  // A block of whole columns is contiguous: treat it as one flat array, so Eigen vectorises
  // the activation end to end. Column by column, each column's unaligned head and tail run
  // through scalar tanh, which measured 4x slower per element at H=64.
  if (block.outerStride() == block.rows() || block.cols() == 1) {
    Eigen::Map<Eigen::ArrayXf> flat(block.data(), block.size());
    if (act == Nonlinearity::kTanh) {
      flat = flat.tanh();
    } else {
      flat = flat.max(0.0f);
    }
  } else if (act == Nonlinearity::kTanh) {  // a direction's half of a bidirectional layer
    block = block.array().tanh();
  } else {
    block = block.cwiseMax(0.0f);
  }
}

// out = W_ih * in + bias (broadcast over columns): the input projection of a whole chunk as one
// GEMM over all T*N columns.
template <typename Out, typename In>
void ProjectInputs(const Eigen::MatrixXf& w_ih, const PackedMatrix& packed_ih,
                   const Eigen::VectorXf& bias, const In& in, Out&& out) {
  if (UsePacked(out.rows(), out.cols())) {
    PackedGemm(packed_ih, in.data(), in.outerStride(), out.cols(), bias.data(),
               /*accumulate=*/false, Epilogue::kNone, out.data(), out.outerStride());
    return;
  }
  out.noalias() = w_ih * in;
  out.colwise() += bias.head(out.rows());
}

absl::Status InvalidShape(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

}  // namespace

Eigen::Map<Eigen::MatrixXf> Workspace::Matrix(int slot, int64_t rows, int64_t cols) {
  auto& buffer = buffers_[slot];
  const size_t needed = static_cast<size_t>(rows * cols);
  if (buffer.size() < needed) buffer.resize(needed);
  return Eigen::Map<Eigen::MatrixXf>(buffer.data(), rows, cols);
}

int64_t Workspace::bytes() const {
  int64_t total = 0;
  for (const auto& buffer : buffers_) total += buffer.capacity() * sizeof(float);
  for (const auto* index : {&step_width_, &step_offset_, &order_, &column_}) {
    total += index->capacity() * sizeof(int64_t);
  }
  return total;
}

void Workspace::ShrinkTo(int64_t max_bytes) {
  if (bytes() <= max_bytes) return;
  for (auto& buffer : buffers_) {
    std::vector<float, Eigen::aligned_allocator<float>>().swap(buffer);
  }
  for (auto* index : {&step_width_, &step_offset_, &order_, &column_}) {
    std::vector<int64_t>().swap(*index);
  }
}

absl::StatusOr<std::unique_ptr<RnnModel>> RnnModel::Create(const RnnConfig& config,
                                                           const ParameterMap& parameters) {
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(CheckParameters(config, parameters));
  std::unique_ptr<RnnModel> model(new RnnModel(config));
  const int64_t h = config.hidden_size;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    for (int64_t dir = 0; dir < config.num_directions(); ++dir) {
      const std::string suffix = absl::StrCat("_l", layer, dir == 1 ? "_reverse" : "");
      const int64_t in = config.layer_input_size(layer);
      LayerDirection w;
      // torch stores W as row-major (H, in); copy into column-major for Eigen's kernels.
      const float* weight_ih = parameters.at("weight_ih" + suffix).data();
      const float* weight_hh = parameters.at("weight_hh" + suffix).data();
      if (h <= kEigenMaxRows) {  // the only layers that may take Eigen's path
        w.w_ih = Eigen::Map<const RowMajorMatrix>(weight_ih, h, in);
        w.w_hh = Eigen::Map<const RowMajorMatrix>(weight_hh, h, h);
      }
      w.packed_ih = PackedMatrix::FromRowMajor(weight_ih, h, in);
      w.packed_hh = PackedMatrix::FromRowMajor(weight_hh, h, h);
      w.bias = Eigen::VectorXf::Zero(w.packed_hh.padded_rows());
      if (config.bias) {
        // Folded once here, so each step adds one bias vector instead of two.
        w.bias.head(h) +=
            Eigen::Map<const Eigen::VectorXf>(parameters.at("bias_ih" + suffix).data(), h);
        w.bias.head(h) +=
            Eigen::Map<const Eigen::VectorXf>(parameters.at("bias_hh" + suffix).data(), h);
      }
      model->weights_.push_back(std::move(w));
    }
  }
  return model;
}

int64_t RnnModel::MacsPerStep() const {
  int64_t macs = 0;
  const int64_t h = config_.hidden_size;
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    macs += config_.num_directions() * h * (config_.layer_input_size(layer) + h);
  }
  return macs;
}

absl::StatusOr<InputDims> RnnModel::CheckShapes(absl::Span<const int64_t> input_shape,
                                                const Shape* h0_shape) const {
  const int64_t dims = static_cast<int64_t>(input_shape.size());
  if (dims != 2 && dims != 3) {
    return InvalidShape(absl::StrCat("RNN: Expected input to be 2D or 3D, got ", dims,
                                     "D tensor instead (shape ", ShapeToString(input_shape),
                                     ")"));
  }
  for (int64_t d : input_shape) {
    if (d < 0) {
      return InvalidShape(
          absl::StrCat("input has a negative dimension: ", ShapeToString(input_shape)));
    }
  }
  InputDims result;
  result.batched = dims == 3;
  if (h0_shape != nullptr) {
    const int64_t h0_dims = static_cast<int64_t>(h0_shape->size());
    if (result.batched && h0_dims != 3) {
      return InvalidShape(absl::StrCat(
          "For batched 3-D input, hx should also be 3-D but got ", h0_dims, "-D tensor"));
    }
    if (!result.batched && h0_dims != 2) {
      return InvalidShape(absl::StrCat(
          "For unbatched 2-D input, hx should also be 2-D but got ", h0_dims, "-D tensor"));
    }
  }
  if (input_shape.back() != config_.input_size) {
    return InvalidShape(absl::StrCat("input.size(-1) must be equal to input_size. Expected ",
                                     config_.input_size, ", got ", input_shape.back()));
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
  if (h0_shape != nullptr) {
    const Shape expected = config_.StateShape(result.batch, result.batched);
    if (*h0_shape != expected) {
      return InvalidShape(absl::StrCat("Expected hidden size ", ShapeToString(expected),
                                       ", got [", absl::StrJoin(*h0_shape, ", "), "]"));
    }
  }
  return result;
}

absl::StatusOr<ForwardResult> RnnModel::Forward(const Tensor& input, const Tensor* h0,
                                                Workspace* workspace) const {
  ASSIGN_OR_RETURN(const InputDims dims,
                   CheckShapes(input.shape, h0 == nullptr ? nullptr : &h0->shape));
  if (input.num_elements() != NumElements(input.shape) ||
      (h0 != nullptr && h0->num_elements() != NumElements(h0->shape))) {
    return absl::InvalidArgumentError("tensor value count does not match its shape");
  }
  thread_local Workspace thread_workspace;
  Workspace& ws = workspace != nullptr ? *workspace : thread_workspace;

  const int64_t steps = dims.steps, batch = dims.batch, cols = steps * batch;
  const bool convert = config_.NeedsTimeMajorConversion(dims.batched);

  ForwardResult result;
  result.h_n = Tensor::Zeros(config_.StateShape(batch, dims.batched));
  result.output = Tensor::Zeros(config_.OutputShape(steps, batch, dims.batched));
  if (cols == 0) return result;  // N == 0: torch returns empty tensors.

  const float* h0_data = h0 == nullptr ? nullptr : h0->data();
  if (!convert) {  // time-major already: layer 0 reads the input in place
    ForwardTimeMajor(input.data(), steps, batch, h0_data, result.output.data(), result.h_n.data(),
                     ws);
    return result;
  }
  // batch_first: the input is packed time-major once, and the output is written time-major
  // into a scratch slot, then converted to (N, T, D*H).
  MatrixMap packed = ws.Matrix(2, config_.input_size, cols);
  config_.InputToTimeMajor(input.data(), steps, batch, packed.data());
  MatrixMap time_major = ws.Matrix(3, config_.output_size(), cols);
  ForwardTimeMajor(packed.data(), steps, batch, h0_data, time_major.data(), result.h_n.data(), ws);
  config_.OutputFromTimeMajor(time_major.data(), steps, batch, result.output.data());
  return result;
}

void RnnModel::ForwardTimeMajor(const float* input, int64_t steps, int64_t batch,
                                const float* h0, float* output, float* h_n,
                                Workspace& ws) const {
  const int64_t h = config_.hidden_size, d = config_.num_directions();
  const int64_t cols = steps * batch;
  if (h0 == nullptr) {
    std::fill_n(h_n, StateSize(batch), 0.0f);
    h0 = h_n;  // each state row is read before it is overwritten
  }
  const float* layer_in = input;
  int64_t layer_in_rows = config_.input_size;
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    // The last layer writes straight into `output`; others ping-pong between two slots, which
    // never alias the input (slot 2 at most).
    const bool last_layer = layer == config_.num_layers - 1;
    MatrixMap out = last_layer ? MatrixMap(output, d * h, cols) : ws.Matrix(layer % 2, d * h, cols);
    ConstMatrixMap in(layer_in, layer_in_rows, cols);
    for (int64_t dir = 0; dir < d; ++dir) {
      const LayerDirection& w = weights(layer, dir);
      auto rows = out.middleRows(dir * h, h);
      ProjectInputs(w.w_ih, w.packed_ih, w.bias, in, rows);
      const int64_t state_row = layer * d + dir;
      ConstMatrixMap initial(h0 + state_row * batch * h, h, batch);
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = dir == 0 ? s : steps - 1 - s;
        const int64_t prev_t = dir == 0 ? t - 1 : t + 1;
        auto block = rows.middleCols(t * batch, batch);
        if (s == 0) {
          RecurrentStep(w.w_hh, w.packed_hh, initial, config_.nonlinearity, block);
        } else {
          RecurrentStep(w.w_hh, w.packed_hh, rows.middleCols(prev_t * batch, batch),
                        config_.nonlinearity, block);
        }
      }
      const int64_t last_t = dir == 0 ? steps - 1 : 0;
      MatrixMap(h_n + state_row * batch * h, h, batch) = rows.middleCols(last_t * batch, batch);
    }
    layer_in = out.data();
    layer_in_rows = d * h;
  }
}

absl::Status RnnModel::StepBatch(absl::Span<const StreamChunk> chunks,
                                 Workspace* workspace) const {
  if (config_.bidirectional) {
    return absl::FailedPreconditionError(
        "StepBatch needs a unidirectional model: the reverse direction of a bidirectional RNN "
        "needs the whole sequence; use Forward() on it");
  }
  Workspace& ws = *workspace;
  const int64_t h = config_.hidden_size, c = config_.input_size;

  // Longest chunks first: the sessions still active at step t are then a prefix of the
  // columns, so each step is one GEMM over a contiguous block and finished sessions simply
  // drop off the end.
  ws.order_.clear();
  for (int64_t i = 0; i < static_cast<int64_t>(chunks.size()); ++i) {
    if (chunks[i].steps > 0 && chunks[i].batch > 0) ws.order_.push_back(i);
  }
  if (ws.order_.empty()) return absl::OkStatus();
  std::stable_sort(ws.order_.begin(), ws.order_.end(), [&](int64_t a, int64_t b) {
    return chunks[a].steps > chunks[b].steps;
  });
  const int64_t max_steps = chunks[ws.order_.front()].steps;

  ws.column_.resize(chunks.size());
  int64_t width = 0;
  for (int64_t i : ws.order_) {
    ws.column_[i] = width;
    width += chunks[i].batch;
  }
  ws.step_width_.assign(max_steps, 0);
  ws.step_offset_.assign(max_steps + 1, 0);
  for (int64_t t = 0, active = static_cast<int64_t>(ws.order_.size()); t < max_steps; ++t) {
    while (active > 0 && chunks[ws.order_[active - 1]].steps <= t) --active;
    const int64_t last = ws.order_[active - 1];
    ws.step_width_[t] = ws.column_[last] + chunks[last].batch;
    ws.step_offset_[t + 1] = ws.step_offset_[t] + ws.step_width_[t];
  }
  const int64_t total_cols = ws.step_offset_[max_steps];

  // Pack every chunk's input into step-major order: step t holds its active sessions'
  // columns in sorted order.
  MatrixMap packed = ws.Matrix(2, c, total_cols);
  for (int64_t i : ws.order_) {
    const StreamChunk& chunk = chunks[i];
    for (int64_t t = 0; t < chunk.steps; ++t) {
      std::copy_n(chunk.input + t * chunk.batch * c, chunk.batch * c,
                  packed.col(ws.step_offset_[t] + ws.column_[i]).data());
    }
  }
  MatrixMap initial = ws.Matrix(3, h, width);

  const float* layer_in = packed.data();
  int64_t layer_in_rows = c;
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    const LayerDirection& w = weights(layer, 0);
    for (int64_t i : ws.order_) {
      const StreamChunk& chunk = chunks[i];
      initial.middleCols(ws.column_[i], chunk.batch) =
          ConstMatrixMap(chunk.state_in + layer * chunk.batch * h, h, chunk.batch);
    }
    MatrixMap out = ws.Matrix(layer % 2, h, total_cols);
    ProjectInputs(w.w_ih, w.packed_ih, w.bias, ConstMatrixMap(layer_in, layer_in_rows, total_cols),
                  out);
    for (int64_t t = 0; t < max_steps; ++t) {
      const int64_t active = ws.step_width_[t];
      auto block = out.middleCols(ws.step_offset_[t], active);
      if (t == 0) {
        RecurrentStep(w.w_hh, w.packed_hh, initial.leftCols(active), config_.nonlinearity,
                      block);
      } else {
        RecurrentStep(w.w_hh, w.packed_hh, out.middleCols(ws.step_offset_[t - 1], active),
                      config_.nonlinearity, block);
      }
    }
    for (int64_t i : ws.order_) {
      const StreamChunk& chunk = chunks[i];
      MatrixMap(chunk.state_out + layer * chunk.batch * h, h, chunk.batch) =
          out.middleCols(ws.step_offset_[chunk.steps - 1] + ws.column_[i], chunk.batch);
    }
    layer_in = out.data();
    layer_in_rows = h;
  }

  ConstMatrixMap last(layer_in, h, total_cols);
  for (int64_t i : ws.order_) {
    const StreamChunk& chunk = chunks[i];
    for (int64_t t = 0; t < chunk.steps; ++t) {
      std::copy_n(last.col(ws.step_offset_[t] + ws.column_[i]).data(), chunk.batch * h,
                  chunk.output + t * chunk.batch * h);
    }
  }
  return absl::OkStatus();
}

}  // namespace rnnserve
