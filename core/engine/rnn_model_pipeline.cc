// RnnModel's pipeline around the recurrent core (core/engine/pipeline_config.h): building
// the input layer and the head, and running them around the core over whole blocks of
// columns in Forward and in bidirectional pieces. StepBatch's stages are in rnn_model.cc.
#include "core/engine/rnn_model.h"

#include "base/status_macros.h"

namespace rnnserve {

absl::StatusOr<std::unique_ptr<RnnModel>> RnnModel::Create(const PipelineConfig& pipeline,
                                                           const ParameterMap& parameters,
                                                           KernelIsa isa) {
  RETURN_IF_ERROR(pipeline.Validate());
  RETURN_IF_ERROR(CheckPipelineParameters(pipeline, parameters));
  if (pipeline.core_only()) return Create(pipeline.rnn, parameters, isa);
  ASSIGN_OR_RETURN(std::unique_ptr<RnnModel> model,
                   Create(pipeline.rnn, CoreParameters(pipeline, parameters), isa));
  model->pipeline_ = pipeline;
  model->input_features_ = pipeline.input_features();
  model->output_features_ = pipeline.output_features();
  model->input_layer_ =
      StepLayers::Create(pipeline.input_layer, parameters, model->input_features_, isa);
  model->head_ = StepLayers::Create(pipeline.head, parameters, pipeline.rnn.output_size(), isa);
  return model;
}

void RnnModel::ApplyStage(const StepLayers& stage, const float* in, int64_t cols, float* out,
                          Workspace& ws) const {
  float* a = ws.Matrix(Workspace::kStageA, stage.scratch_rows(), cols).data();
  float* b = ws.Matrix(Workspace::kStageB, stage.scratch_rows(), cols).data();
  stage.Apply(in, cols, out, a, b);
}

void RnnModel::ForwardTimeMajor(const float* input, int64_t steps, int64_t batch,
                                const float* state_in, float* output, float* state_out,
                                Workspace& ws) const {
  const int64_t cols = steps * batch;
  const float* core_in = input;
  if (!input_layer_.empty()) {
    float* staged = ws.Matrix(Workspace::kStageIn, config_.input_size, cols).data();
    ApplyStage(input_layer_, input, cols, staged, ws);
    core_in = staged;
  }
  float* core_out =
      head_.empty() ? output : ws.Matrix(Workspace::kCoreOut, config_.output_size(), cols).data();
  CoreForwardTimeMajor(core_in, steps, batch, state_in, core_out, state_out, ws);
  if (!head_.empty()) ApplyStage(head_, core_out, cols, output, ws);
}

bool RnnModel::ForwardPiece(const float* input, int64_t steps, int64_t batch,
                            const float* state_in, float* output, float* state_out,
                            int64_t max_steps, ForwardCursor& cursor, Workspace& ws) const {
  if (cursor.done) return true;
  if (steps == 0 || batch == 0) {
    ForwardTimeMajor(input, steps, batch, state_in, output, state_out, ws);
    cursor.done = true;
    return true;
  }
  // The stages' buffers live in the cursor: the pieces may run on different threads.
  const bool first = cursor.layer == 0 && cursor.direction == 0 && cursor.step == 0;
  const int64_t cols = steps * batch;
  const float* core_in = input;
  if (!input_layer_.empty()) {
    if (first) {
      cursor.stage_input.resize(config_.input_size * cols);
      ApplyStage(input_layer_, input, cols, cursor.stage_input.data(), ws);
    }
    core_in = cursor.stage_input.data();
  }
  float* core_out = output;
  if (!head_.empty()) {
    if (first) cursor.core_output.resize(config_.output_size() * cols);
    core_out = cursor.core_output.data();
  }
  if (!CorePiece(core_in, steps, batch, state_in, core_out, state_out, max_steps, cursor, ws)) {
    return false;
  }
  if (!head_.empty()) ApplyStage(head_, core_out, cols, output, ws);
  cursor.stage_input = {};
  cursor.core_output = {};
  return true;
}

}  // namespace rnnserve
