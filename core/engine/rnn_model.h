// RnnModel: a loaded model, ready for inference with torch's exact semantics: the recurrent
// core (torch.nn.RNN, GRU or LSTM; the cell is RnnConfig::module), with an optional input layer
// before it and an optional head applied to every timestep of its output (PipelineConfig).
// The input is the input layer's (features, or token ids for an Embedding), the output the
// head's; h_n and c_n are always the core's state.
//
// State: a session's state is one contiguous buffer of StateSize(batch) floats: h
// (L*D, N, H_out), then, for LSTM only, c (L*D, N, H). Every pointer named state_in/state_out
// below covers that whole buffer.
//
// Immutable after Create(); every const method is thread-safe. Scratch memory lives in a
// Workspace the caller owns, one per thread, so concurrent calls never share buffers.
//
// Streaming: for unidirectional models, Forward(chunk, h) with the previous call's h_n gives the
// same numbers as one call over the whole sequence. StepBatch() advances one chunk for many
// independent states (sessions) in one set of matrix products: the scheduler's entry point.
#ifndef RNNSERVE_CORE_ENGINE_RNN_MODEL_H_
#define RNNSERVE_CORE_ENGINE_RNN_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <Eigen/Core>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/tensor.h"
#include "core/engine/cell_step.h"
#include "core/engine/kernels/kernel_isa.h"
#include "core/engine/rnn_config.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_parameters.h"
#include "core/engine/step_layers.h"

namespace rnnserve {

// Grow-only scratch buffers reused across calls, so steady-state inference does not allocate.
// Not thread-safe: use one per thread.
class Workspace {
 public:
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Bytes the scratch buffers hold now (their capacity; they only grow while in use).
  int64_t bytes() const;
  // When more than `max_bytes` are held, releases every buffer (they regrow on the next
  // call): one outsized call must not pin its scratch memory for the worker's lifetime.
  void ShrinkTo(int64_t max_bytes);

 private:
  friend class RnnModel;
  // Returns a (rows x cols) column-major matrix view over buffer `slot`, growing it if needed.
  Eigen::Map<Eigen::MatrixXf> Matrix(int slot, int64_t rows, int64_t cols);

  // Slots: 0 and 1 layer outputs (ping-pong), 2 time-major input, 3 time-major output
  // (Forward) or the gathered initial h (StepBatch), then the gated cells' buffers.
  static constexpr int kGates = 4;        // (G*H, columns): input projection of all gates
  static constexpr int kStepScratch = 5;  // GatedScratchRows x batch
  static constexpr int kCell = 6;         // LSTM: (H, batch): the running c of one direction
  static constexpr int kState = 7;        // LSTM Forward(): the h + c state buffer
  // Pipelines: the input layer's output (the core's input), or StepBatch's packed raw input;
  // the core's output before the head, or StepBatch's head output; the stages' ping-pong.
  static constexpr int kStageIn = 8;
  static constexpr int kCoreOut = 9;
  static constexpr int kStageA = 10;
  static constexpr int kStageB = 11;
  static constexpr int kSlots = 12;
  // 64-byte aligned, so full-width kernels start on a vector boundary.
  std::vector<float, CacheLineAllocator<float>> buffers_[kSlots];
  std::vector<int64_t> step_width_;   // active columns at each step (StepBatch)
  std::vector<int64_t> step_offset_;  // first column of each step (StepBatch)
  std::vector<int64_t> order_;        // chunk indices sorted by length (StepBatch)
  std::vector<int64_t> column_;       // each chunk's column offset within a step (StepBatch)
};

// The dimensions of one Forward() call, resolved from the input's shape.
struct InputDims {
  int64_t steps = 0;     // T
  int64_t batch = 0;     // N (1 when unbatched)
  bool batched = true;   // false for (T, C) input
};

struct ForwardResult {
  Tensor output;  // (T, N, D*H_out), (N, T, D*H_out) when batch_first, or (T, D*H_out) unbatched
  Tensor h_n;     // (L*D, N, H_out), or (L*D, H_out) unbatched
  std::optional<Tensor> c_n;  // LSTM only: (L*D, N, H), or (L*D, H) unbatched
};

// Where a ForwardPiece computation is: the layer and direction under way and the timesteps
// done in it, with the buffers that must outlive a piece (the outputs of the layers below the
// last, LSTM's running c). Owned by the caller between pieces; thread-compatible.
struct ForwardCursor {
  int64_t layer = 0;
  int64_t direction = 0;
  int64_t step = 0;
  bool done = false;
  std::vector<float> layer_output[2];  // (T, N, D*H_out) each, ping-pong between layers
  std::vector<float> cell;             // (N, H)
  std::vector<float> stage_input;      // pipelines: the input layer's output, the core's input
  std::vector<float> core_output;      // pipelines with a head: the core's output
};

// One session's chunk for StepBatch(). All pointers are borrowed for the call.
struct StreamChunk {
  const float* input = nullptr;  // (steps, batch, input_features()), time-major, row-major
  int64_t steps = 0;             // T; 0 leaves state untouched and writes nothing
  int64_t batch = 0;             // N
  const float* state_in = nullptr;  // StateSize(batch) floats: h_0 (L, N, H_out) [+ c_0 (L, N, H)]
  float* state_out = nullptr;       // the same layout: h_n [+ c_n]; may equal state_in
  float* output = nullptr;          // (steps, batch, output_features()), written
};

class RnnModel {
 public:
  // Checks the config and the parameters (names, shapes) and lays the weights out for the
  // kernels once (LayOutCellWeights): packed for `isa`'s kernel table (FAILED_PRECONDITION if
  // this build or CPU lacks it), biases folded (b_ih + b_hh; GRU keeps b_hn apart).
  static absl::StatusOr<std::unique_ptr<RnnModel>> Create(const RnnConfig& config,
                                                          const ParameterMap& parameters,
                                                          KernelIsa isa = BestKernelIsa());
  // A whole pipeline: the parameters under their full names (CheckPipelineParameters); the
  // input layer and head are laid out for the same kernels.
  static absl::StatusOr<std::unique_ptr<RnnModel>> Create(const PipelineConfig& pipeline,
                                                          const ParameterMap& parameters,
                                                          KernelIsa isa = BestKernelIsa());

  // The recurrent core's config (its state shapes are the model's).
  const RnnConfig& config() const { return config_; }
  const PipelineConfig& pipeline() const { return pipeline_; }
  // True when the input is token ids (an Embedding input layer): (T, N), (N, T) or (T,).
  bool takes_ids() const { return pipeline_.takes_ids(); }
  // Features per timestep of the input (1 for ids) and of the output.
  int64_t input_features() const { return input_features_; }
  int64_t output_features() const { return output_features_; }
  // Checks input values that shapes cannot: each id of an ids model is an integer in
  // [0, num_embeddings) (INVALID_ARGUMENT naming the first bad one and the range), and the
  // input's kind matches the model's (`ids` from the wire's Tensor.ids). `what` names the
  // tensor ("input").
  absl::Status CheckInputValues(const float* data, int64_t count, bool ids,
                                absl::string_view what = "input") const;
  // The instruction set of the kernels this model runs (chosen at Create).
  KernelIsa kernel_isa() const { return kernel_isa_; }

  // Checks an input shape (and h_0's and c_0's, when given) exactly as torch does; messages
  // follow torch's ("input.size(-1) must be equal to input_size. Expected 100, got 50",
  // "Expected hidden[1] size (2, 3, 4), got [2, 3, 5]"). A c_0 for a model without cell state
  // is refused.
  absl::StatusOr<InputDims> CheckShapes(absl::Span<const int64_t> input_shape,
                                        const Shape* h0_shape,
                                        const Shape* c0_shape = nullptr) const;

  // torch's `rnn(input, h_0)` (or `lstm(input, (h_0, c_0))`). h0 and c0 may be null (zeros;
  // unlike torch, an LSTM may be given either alone). c_n is set for LSTM. Uses a thread-local
  // Workspace when `workspace` is null.
  absl::StatusOr<ForwardResult> Forward(const Tensor& input, const Tensor* h0 = nullptr,
                                        Workspace* workspace = nullptr) const;
  absl::StatusOr<ForwardResult> Forward(const Tensor& input, const Tensor* h0, const Tensor* c0,
                                        Workspace* workspace) const;

  // The kernel behind Forward(), on time-major (T, N, C) input with no checks: shapes are the
  // caller's contract. state_in (StateSize(batch) floats: h_0 then, for LSTM, c_0) may be null
  // (zeros) or equal state_out. Writes output (T, N, D*H_out) and state_out (h_n [+ c_n]).
  void ForwardTimeMajor(const float* input, int64_t steps, int64_t batch, const float* state_in,
                        float* output, float* state_out, Workspace& workspace) const;

  // ForwardTimeMajor in pieces of at most `max_steps` timesteps of one layer and direction (at
  // least one; <= 0: each pass whole), so that a call that cannot be cut in time (a
  // bidirectional model's reverse direction needs the whole sequence) can give its thread back
  // between pieces. Pass the same arguments and cursor on every call, on any thread; true once
  // done, and output and state_out then equal ForwardTimeMajor's.
  bool ForwardPiece(const float* input, int64_t steps, int64_t batch, const float* state_in,
                    float* output, float* state_out, int64_t max_steps, ForwardCursor& cursor,
                    Workspace& workspace) const;

  // Advances every chunk by its own number of steps in one batched pass: per layer one GEMM
  // for the input projection of all chunks (all gates), then per timestep one GEMM over the
  // sessions still active at that step (sessions leave the batch when their chunk ends;
  // nothing is padded) and, for GRU/LSTM, one fused gate pass.
  // Results equal separate Forward() calls. Unidirectional models only (FAILED_PRECONDITION
  // otherwise); shapes are the caller's contract.
  absl::Status StepBatch(absl::Span<const StreamChunk> chunks, Workspace* workspace) const;

  // Floats in one session's state for a batch of `batch`: h then (LSTM) c.
  int64_t StateSize(int64_t batch) const { return HiddenStateSize(batch) + CellStateSize(batch); }
  // Floats of h in it: L * D * batch * H_out; h comes first.
  int64_t HiddenStateSize(int64_t batch) const {
    return config_.num_state_rows() * batch * config_.real_hidden_size();
  }
  // Floats of c in it: L * D * batch * H for LSTM, 0 otherwise; c follows h.
  int64_t CellStateSize(int64_t batch) const {
    return config_.has_cell_state() ? config_.num_state_rows() * batch * config_.hidden_size : 0;
  }
  // Floats in the output of a (steps, batch) chunk, and in its input.
  int64_t OutputSize(int64_t steps, int64_t batch) const {
    return steps * batch * output_features_;
  }
  int64_t InputSize(int64_t steps, int64_t batch) const {
    return steps * batch * input_features_;
  }
  // The model's layouts: the input (T, N, C), (N, T, C) batch_first or (T, C) unbatched, C =
  // input_features(); ids models drop C. The output likewise with output_features().
  Shape InputShape(int64_t steps, int64_t batch, bool batched) const;
  Shape OutputShape(int64_t steps, int64_t batch, bool batched) const;
  // batch_first (N, T, C) input into the kernels' time-major (T, N, C), C = input_features();
  // `out` holds InputSize(steps, batch) floats. And time-major output back to (N, T, F).
  void InputToTimeMajor(const float* input, int64_t steps, int64_t batch, float* out) const {
    SwapLeadingDims(input, batch, steps, input_features_, out);
  }
  void OutputFromTimeMajor(const float* time_major, int64_t steps, int64_t batch,
                           float* out) const {
    SwapLeadingDims(time_major, steps, batch, output_features_, out);
  }
  // Multiply-adds per timestep per batch row: the FLOP count benchmarks use (x2 for FLOPs).
  int64_t MacsPerStep() const;

 private:
  RnnModel(const RnnConfig& config, KernelIsa isa) : config_(config), kernel_isa_(isa) {}
  // The core alone (no input layer or head): the former public entry points.
  void CoreForwardTimeMajor(const float* input, int64_t steps, int64_t batch,
                            const float* state_in, float* output, float* state_out,
                            Workspace& workspace) const;
  bool CorePiece(const float* input, int64_t steps, int64_t batch, const float* state_in,
                 float* output, float* state_out, int64_t max_steps, ForwardCursor& cursor,
                 Workspace& workspace) const;
  // Runs a stage over `cols` columns with the workspace's stage scratch.
  void ApplyStage(const StepLayers& stage, const float* in, int64_t cols, float* out,
                  Workspace& ws) const;

  const CellWeights& weights(int64_t layer, int64_t direction) const {
    return weights_[layer * config_.num_directions() + direction];
  }

  // Timesteps [begin, end) of one layer of ForwardTimeMajor in one direction (the reverse
  // direction's step s is column steps-1-s); RnnStep or GatedStep per timestep. h_0 and c_0 are
  // read at step 0, h_n and c_n written at the last step; `cell` (LSTM: hidden x batch) holds
  // the running c in between.
  void RunDirection(int64_t layer, int64_t dir, const float* layer_in, int64_t steps,
                    int64_t batch, const float* state_in, float* output, float* state_out,
                    int64_t begin, int64_t end, float* cell, Workspace& ws) const;

  RnnConfig config_;
  PipelineConfig pipeline_;
  KernelIsa kernel_isa_;
  StepLayers input_layer_;  // empty: the input goes to the core as it is
  StepLayers head_;         // empty: the core's output is the model's
  int64_t input_features_ = 0;
  int64_t output_features_ = 0;
  std::vector<CellWeights> weights_;  // layer-major, forward then reverse
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_RNN_MODEL_H_
