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
    std::vector<float, CacheLineAllocator<float>>().swap(buffer);
  }
  for (auto* index : {&step_width_, &step_offset_, &order_, &column_}) {
    std::vector<int64_t>().swap(*index);
  }
}

absl::StatusOr<std::unique_ptr<RnnModel>> RnnModel::Create(const RnnConfig& config,
                                                           const ParameterMap& parameters,
                                                           KernelIsa isa) {
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(CheckParameters(config, parameters));
  RETURN_IF_ERROR(CheckKernelIsaAvailable(isa));
  std::unique_ptr<RnnModel> model(new RnnModel(config, isa));
  model->pipeline_ = CorePipeline(config);
  model->input_features_ = config.input_size;
  model->output_features_ = config.output_size();
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    for (int64_t dir = 0; dir < config.num_directions(); ++dir) {
      model->weights_.push_back(LayOutCellWeights(config, parameters, layer, dir, isa));
    }
  }
  return model;
}

int64_t RnnModel::MacsPerStep() const {
  int64_t macs = 0;
  const int64_t rows = config_.gate_rows(), h_out = config_.real_hidden_size();
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    const int64_t projection = config_.proj_size * config_.hidden_size;
    macs += config_.num_directions() *
            (rows * (config_.layer_input_size(layer) + h_out) + projection);
  }
  return macs + input_layer_.MacsPerColumn() + head_.MacsPerColumn();
}

void RnnModel::CoreForwardTimeMajor(const float* input, int64_t steps, int64_t batch,
                                    const float* state_in, float* output, float* state_out,
                                    Workspace& ws) const {
  const int64_t d = config_.num_directions(), h_out = config_.real_hidden_size();
  if (state_in == nullptr) {
    std::fill_n(state_out, StateSize(batch), 0.0f);
    state_in = state_out;  // each state row is read before it is overwritten
  }
  float* cell = config_.has_cell_state()
                    ? ws.Matrix(Workspace::kCell, config_.hidden_size, batch).data()
                    : nullptr;
  const float* layer_in = input;
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    // The last layer writes straight into `output`; others ping-pong between two slots, which
    // never alias the input (slot 2 at most).
    float* out = layer == config_.num_layers - 1
                     ? output
                     : ws.Matrix(layer % 2, d * h_out, steps * batch).data();
    for (int64_t dir = 0; dir < d; ++dir) {
      RunDirection(layer, dir, layer_in, steps, batch, state_in, out, state_out, 0, steps, cell,
                   ws);
    }
    layer_in = out;
  }
}

bool RnnModel::CorePiece(const float* input, int64_t steps, int64_t batch,
                         const float* state_in, float* output, float* state_out,
                         int64_t max_steps, ForwardCursor& cursor, Workspace& ws) const {
  const bool first = cursor.layer == 0 && cursor.direction == 0 && cursor.step == 0;
  if (state_in == nullptr) {
    // As in ForwardTimeMajor: each state row is read (at its pass's first piece) before its
    // pass overwrites it (at its last).
    if (first) std::fill_n(state_out, StateSize(batch), 0.0f);
    state_in = state_out;
  }
  const int64_t layer = cursor.layer, dir = cursor.direction;
  const float* layer_in = layer == 0 ? input : cursor.layer_output[(layer - 1) % 2].data();
  float* out = output;
  if (layer < config_.num_layers - 1) {
    std::vector<float>& buffer = cursor.layer_output[layer % 2];
    // A layer's output is the core's width (D * H_out), not the model's (the head's).
    if (cursor.step == 0 && dir == 0) buffer.resize(config_.output_size() * steps * batch);
    out = buffer.data();
  }
  if (config_.has_cell_state() && cursor.step == 0) cursor.cell.resize(config_.hidden_size * batch);
  const int64_t end =
      max_steps <= 0 ? steps : std::min(steps, cursor.step + std::max<int64_t>(1, max_steps));
  RunDirection(layer, dir, layer_in, steps, batch, state_in, out, state_out, cursor.step, end,
               cursor.cell.empty() ? nullptr : cursor.cell.data(), ws);
  cursor.step = end;
  if (end == steps) {
    cursor.step = 0;
    if (++cursor.direction == config_.num_directions()) {
      cursor.direction = 0;
      if (++cursor.layer == config_.num_layers) {
        cursor.done = true;
        cursor.layer_output[0] = {};
        cursor.layer_output[1] = {};
        cursor.cell = {};
      }
    }
  }
  return cursor.done;
}

void RnnModel::RunDirection(int64_t layer, int64_t dir, const float* layer_in, int64_t steps,
                            int64_t batch, const float* state_in, float* output,
                            float* state_out, int64_t begin, int64_t end, float* cell,
                            Workspace& ws) const {
  const int64_t d = config_.num_directions(), h_out = config_.real_hidden_size();
  const int64_t hidden = config_.hidden_size, cols = steps * batch;
  const CellWeights& w = weights(layer, dir);
  const ConstMatrixMap in(layer_in, config_.layer_input_size(layer), cols);
  auto rows = MatrixMap(output, d * h_out, cols).middleRows(dir * h_out, h_out);
  const int64_t state_row = layer * d + dir;
  const float* h0 = state_in + state_row * batch * h_out;
  auto step_column = [&](int64_t s) { return dir == 0 ? s : steps - 1 - s; };
  // The timesteps [begin, end) of this direction are one block of columns: the reverse
  // direction walks it from its right end.
  const int64_t first_column = (dir == 0 ? begin : steps - end) * batch;
  const int64_t block_cols = (end - begin) * batch;

  if (config_.module == RnnModule::kRnn) {
    // The input projection lands in the output rows; each step adds the recurrent product and
    // the nonlinearity there in place.
    ProjectInputs(w, in.middleCols(first_column, block_cols),
                  rows.middleCols(first_column, block_cols));
    const ConstMatrixMap initial(h0, h_out, batch);
    for (int64_t s = begin; s < end; ++s) {
      auto block = rows.middleCols(step_column(s) * batch, batch);
      if (s == 0) {
        RnnStep(w, initial, config_.nonlinearity, block);
      } else {
        RnnStep(w, rows.middleCols(step_column(s - 1) * batch, batch), config_.nonlinearity,
                block);
      }
    }
  } else {
    MatrixMap gates = ws.Matrix(Workspace::kGates, config_.gate_rows(), block_cols);
    ProjectInputs(w, in.middleCols(first_column, block_cols), gates);
    const int64_t cell_offset = HiddenStateSize(batch) + state_row * batch * hidden;
    GatedStepIo io;
    io.cols = batch;
    io.ld_gates = config_.gate_rows();
    io.scratch = ws.Matrix(Workspace::kStepScratch, GatedScratchRows(config_), batch).data();
    io.ld_out = d * h_out;
    if (config_.has_cell_state()) {
      // The running c lives in `cell` from the first timestep to the last.
      if (begin == 0) std::copy_n(state_in + cell_offset, batch * hidden, cell);
      io.cell = cell;
    }
    for (int64_t s = begin; s < end; ++s) {
      const int64_t t = step_column(s);
      io.h_prev = s == 0 ? h0 : rows.col(step_column(s - 1) * batch).data();
      io.ld_prev = s == 0 ? h_out : d * h_out;
      io.gates = gates.col(t * batch - first_column).data();
      io.h_out = rows.col(t * batch).data();
      GatedStep(config_, w, io);
    }
    if (io.cell != nullptr && end == steps) {
      std::copy_n(io.cell, batch * hidden, state_out + cell_offset);
    }
  }
  if (end == steps) {
    MatrixMap(state_out + state_row * batch * h_out, h_out, batch) =
        rows.middleCols(step_column(steps - 1) * batch, batch);
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
  const int64_t h_out = config_.real_hidden_size(), c = config_.input_size;
  const int64_t hidden = config_.hidden_size, c_raw = input_features_;

  // Longest chunks first: the sessions still active at step t are then a prefix of the
  // columns, so each step is one GEMM over a contiguous block and finished sessions simply
  // drop off the end.
  ws.order_.clear();
  for (int64_t i = 0; i < static_cast<int64_t>(chunks.size()); ++i) {
    if (chunks[i].steps > 0 && chunks[i].batch > 0) ws.order_.push_back(i);
  }
  if (ws.order_.empty()) return absl::OkStatus();
  // Ties keep the callers' order. std::sort with the index as tie-breaker, not stable_sort,
  // which takes a temporary buffer from the heap on every call.
  std::sort(ws.order_.begin(), ws.order_.end(), [&](int64_t a, int64_t b) {
    if (chunks[a].steps != chunks[b].steps) return chunks[a].steps > chunks[b].steps;
    return a < b;
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
  // columns in sorted order. An input layer then runs once over all of them.
  MatrixMap packed = ws.Matrix(2, c, total_cols);
  float* raw = input_layer_.empty() ? packed.data()
                                    : ws.Matrix(Workspace::kStageIn, c_raw, total_cols).data();
  for (int64_t i : ws.order_) {
    const StreamChunk& chunk = chunks[i];
    for (int64_t t = 0; t < chunk.steps; ++t) {
      std::copy_n(chunk.input + t * chunk.batch * c_raw, chunk.batch * c_raw,
                  raw + (ws.step_offset_[t] + ws.column_[i]) * c_raw);
    }
  }
  if (!input_layer_.empty()) ApplyStage(input_layer_, raw, total_cols, packed.data(), ws);
  // The initial h (and c) of every session side by side, in the sorted column order. Sessions
  // still active at step t are a prefix, so the running c of each step is the first `active`
  // columns of `cell`, and a finished session's c stays in its columns.
  MatrixMap initial = ws.Matrix(3, h_out, width);
  float* cell = config_.has_cell_state() ? ws.Matrix(Workspace::kCell, hidden, width).data()
                                         : nullptr;
  GatedStepIo io;
  if (config_.module != RnnModule::kRnn) {
    io.scratch = ws.Matrix(Workspace::kStepScratch, GatedScratchRows(config_), width).data();
    io.ld_prev = h_out;
    io.ld_gates = config_.gate_rows();
    io.cell = cell;
    io.ld_out = h_out;
  }

  const float* layer_in = packed.data();
  int64_t layer_in_rows = c;
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    const CellWeights& w = weights(layer, 0);
    for (int64_t i : ws.order_) {
      const StreamChunk& chunk = chunks[i];
      initial.middleCols(ws.column_[i], chunk.batch) =
          ConstMatrixMap(chunk.state_in + layer * chunk.batch * h_out, h_out, chunk.batch);
      if (cell != nullptr) {
        std::copy_n(chunk.state_in + HiddenStateSize(chunk.batch) + layer * chunk.batch * hidden,
                    chunk.batch * hidden, cell + ws.column_[i] * hidden);
      }
    }
    MatrixMap out = ws.Matrix(layer % 2, h_out, total_cols);
    const ConstMatrixMap in(layer_in, layer_in_rows, total_cols);
    if (config_.module == RnnModule::kRnn) {
      ProjectInputs(w, in, out);
      for (int64_t t = 0; t < max_steps; ++t) {
        const int64_t active = ws.step_width_[t];
        auto block = out.middleCols(ws.step_offset_[t], active);
        if (t == 0) {
          RnnStep(w, initial.leftCols(active), config_.nonlinearity, block);
        } else {
          RnnStep(w, out.middleCols(ws.step_offset_[t - 1], active), config_.nonlinearity,
                  block);
        }
      }
    } else {
      MatrixMap gates = ws.Matrix(Workspace::kGates, config_.gate_rows(), total_cols);
      ProjectInputs(w, in, gates);
      for (int64_t t = 0; t < max_steps; ++t) {
        io.cols = ws.step_width_[t];
        io.h_prev = t == 0 ? initial.data() : out.col(ws.step_offset_[t - 1]).data();
        io.gates = gates.col(ws.step_offset_[t]).data();
        io.h_out = out.col(ws.step_offset_[t]).data();
        GatedStep(config_, w, io);
      }
    }
    for (int64_t i : ws.order_) {
      const StreamChunk& chunk = chunks[i];
      MatrixMap(chunk.state_out + layer * chunk.batch * h_out, h_out, chunk.batch) =
          out.middleCols(ws.step_offset_[chunk.steps - 1] + ws.column_[i], chunk.batch);
      if (cell != nullptr) {
        std::copy_n(cell + ws.column_[i] * hidden, chunk.batch * hidden,
                    chunk.state_out + HiddenStateSize(chunk.batch) + layer * chunk.batch * hidden);
      }
    }
    layer_in = out.data();
    layer_in_rows = h_out;
  }

  // The head runs once over every session's steps, then each chunk gets its columns.
  const float* last = layer_in;
  const int64_t out_rows = output_features_;
  if (!head_.empty()) {
    float* headed = ws.Matrix(Workspace::kCoreOut, out_rows, total_cols).data();
    ApplyStage(head_, layer_in, total_cols, headed, ws);
    last = headed;
  }
  for (int64_t i : ws.order_) {
    const StreamChunk& chunk = chunks[i];
    for (int64_t t = 0; t < chunk.steps; ++t) {
      std::copy_n(last + (ws.step_offset_[t] + ws.column_[i]) * out_rows, chunk.batch * out_rows,
                  chunk.output + t * chunk.batch * out_rows);
    }
  }
  return absl::OkStatus();
}

}  // namespace rnnserve
